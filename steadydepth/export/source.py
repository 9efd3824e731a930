"""Frames to export, streamed chunk by chunk from a depth store (plus RGB from the teacher store), un-padded.

Stores hold padded frames (`attrs["padding"]` = [top, bottom, left, right]; the pipeline pads bottom/right
only). Exports are cropped back to the real picture and K is shifted by any top/left pad, so pixels and K
agree with the source video.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from steadydepth.errors import InputError
from storage.depth_store import DepthStore
from storage.naming import video_name


@dataclass
class ExportFrame:
    """One cropped frame: depth in metres (non-finite or <= 0 = invalid), K in pixels of the cropped image."""

    position: int  # 0-based position in the store
    frame_index: int  # frame number in the source video
    timestamp: float  # seconds from the source start
    depth: np.ndarray  # (H, W) float32, metres
    K: np.ndarray  # (3, 3) float64
    rgb: np.ndarray | None  # (H, W, 3) uint8
    gt_depth: np.ndarray | None = None  # (H, W) float32 metres, NaN = invalid; only when asked for and stored


class ExportSource:
    """A depth store opened for export, with the RGB store it draws colours from (itself if it has rgb)."""

    def __init__(
        self,
        depth_store_uri: str,
        rgb_store_uri: str | None = None,
        *,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.depth = DepthStore.open(depth_store_uri, storage_options)
        self.rgb: DepthStore | None = None
        if "rgb" in self.depth.variables:
            self.rgb = self.depth
        elif rgb_store_uri is not None:
            self.rgb = DepthStore.open(rgb_store_uri, storage_options)
            if "rgb" not in self.rgb.variables:
                self.rgb = None  # a teacher stored without RGB: exports go without colour
            else:
                self._check_matches(self.rgb)
        top, bottom, left, right = (int(p) for p in self.depth.attrs.get("padding", (0, 0, 0, 0)))
        h, w = self.depth.size
        if top + bottom >= h or left + right >= w:
            raise InputError(f"store {self.depth.uri}: padding {[top, bottom, left, right]} leaves no picture")
        self.crop = (slice(top, h - bottom), slice(left, w - right))
        self.offset = (left, top)

    def _check_matches(self, other: DepthStore) -> None:
        if other.num_frames != self.depth.num_frames or other.size != self.depth.size:
            raise InputError(
                f"RGB store {other.uri} ({other.num_frames} frames of {other.size}) does not match depth store "
                f"{self.depth.uri} ({self.depth.num_frames} frames of {self.depth.size}); pass its teacher store"
            )

    @property
    def name(self) -> str:
        return video_name(self.depth.uri)

    @property
    def num_frames(self) -> int:
        return self.depth.num_frames

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) after cropping the padding."""
        rows, cols = self.crop
        return rows.stop - rows.start, cols.stop - cols.start

    @property
    def fps(self) -> float:
        fps = self.depth.attrs.get("fps") or self.depth.attrs.get("source_fps")
        return float(fps) if fps else 30.0

    @property
    def has_rgb(self) -> bool:
        return self.rgb is not None

    def intrinsics(self) -> np.ndarray:
        """(T, 3, 3) K of the cropped frames (small: read whole)."""
        K = self.depth.read(0, self.num_frames, ["K"])["K"].astype(np.float64)
        K[:, 0, 2] -= self.offset[0]
        K[:, 1, 2] -= self.offset[1]
        return K

    def timing(self) -> tuple[np.ndarray, np.ndarray]:
        """(timestamps in seconds, source frame indices), one per frame."""
        got = self.depth.read(0, self.num_frames, ["timestamp", "frame_index"])
        return got["timestamp"].astype(np.float64), got["frame_index"].astype(np.int64)

    def chunks(self, variables: tuple[str, ...] = ("depth",)) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(start, cropped arrays) per store chunk; 'rgb' is read from the RGB store."""
        rows, cols = self.crop
        own = [v for v in variables if v != "rgb"]
        for i in range(self.depth.num_chunks):
            start, stop = self.depth.chunk_bounds(i)
            got = self.depth.read(start, stop, own) if own else {}
            if "rgb" in variables and self.rgb is not None:
                got["rgb"] = self.rgb.read(start, stop, ["rgb"])["rgb"]
            yield start, {k: (v[:, rows, cols] if v.ndim >= 3 and k != "K" else v) for k, v in got.items()}

    def frames(self, every: int = 1, *, with_rgb: bool = True, with_gt: bool = False) -> Iterator[ExportFrame]:
        """Every `every`-th frame, in order, with RGB (and GT depth) when asked for and stored; one chunk in
        memory at a time."""
        K = self.intrinsics()
        timestamps, frame_index = self.timing()
        wanted = ["depth"]
        if with_rgb and self.has_rgb:
            wanted.append("rgb")
        if with_gt and "gt_depth" in self.depth.variables:
            wanted.append("gt_depth")
        for start, arrays in self.chunks(tuple(wanted)):
            for j in range(arrays["depth"].shape[0]):
                t = start + j
                if t % every:
                    continue
                yield ExportFrame(
                    t,
                    int(frame_index[t]),
                    float(timestamps[t]),
                    arrays["depth"][j],
                    K[t],
                    arrays["rgb"][j] if "rgb" in arrays else None,
                    arrays["gt_depth"][j] if "gt_depth" in arrays else None,
                )

    def depth_range(self) -> tuple[float, float]:
        """(min, max) of valid depth over the whole video, streamed (png16 needs one scale per video)."""
        lo, hi = np.inf, -np.inf
        for _, arrays in self.chunks(("depth",)):
            d = arrays["depth"]
            valid = d[np.isfinite(d) & (d > 0)]
            if valid.size:
                lo, hi = min(lo, float(valid.min())), max(hi, float(valid.max()))
        if not np.isfinite(hi):
            raise InputError(f"store {self.depth.uri} has no valid depth to export")
        return lo, hi
