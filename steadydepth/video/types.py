"""What every frame source yields: a `VideoInfo` up front, then `Frame`s one at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class VideoInfo:
    """Everything known about a source before decoding it.

    Sizes are (height, width). `K` is the 3×3 pinhole matrix for the frames as yielded (after
    rotation, resize and padding), or None when the source does not know its intrinsics.
    """

    source: str  # path or URI of the video file or frame folder
    name: str  # stem used to name stores and exports (filesystem-safe)
    content_hash: str  # sha256 of the source bytes (frame folders: of their files in order)
    source_fps: float  # frame rate of the source
    fps: float  # frame rate of the yielded sequence (after stride / target fps)
    num_frames: int  # number of frames that will be yielded
    original_size: tuple[int, int]  # displayed size of the source (after rotation), before resize
    size: tuple[int, int]  # size of yielded frames (after resize and padding)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right (pixels added)
    rotation: int = 0  # degrees applied to the coded frames to display them upright
    K: np.ndarray | None = None
    has_ground_truth: bool = False
    extra: dict[str, str] = field(default_factory=dict)  # e.g. codec, container format


@dataclass
class Frame:
    """One decoded frame. `gt_depth` and `pose` are set only when the source carries ground truth."""

    index: int  # position in the yielded sequence: 0, 1, 2, ...
    source_index: int  # frame number in the source (before stride / fps selection)
    timestamp: float  # seconds from the start of the source
    rgb: np.ndarray  # (H, W, 3) uint8
    gt_depth: np.ndarray | None = None  # (H, W) float32 metres, NaN where invalid
    pose: np.ndarray | None = None  # (4, 4) float64 camera-to-world, metres
    # The frame's number where the source names its frames (a frame folder's frame-NNNNNN); None: source_index.
    source_number: int | None = None


class FrameSource(Protocol):
    """A video or frame folder opened for streaming."""

    info: VideoInfo

    def frames(self) -> Iterator[Frame]:
        """Yield frames in order; never holds more than a few frames in memory."""
        ...
