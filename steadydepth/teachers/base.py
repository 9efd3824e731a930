"""The teacher interface: batched frames (+ optional K) in, metric depth out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from steadydepth.errors import TeacherOutputError
from steadydepth.video.types import VideoInfo


@dataclass
class FrameBatch:
    """B frames of one video, as the teacher sees them."""

    video: VideoInfo
    indices: Sequence[int]  # positions in the yielded sequence
    source_indices: Sequence[int]  # positions in the source (before stride / fps selection): 0, 1, 2, ...
    rgb: torch.Tensor  # (B, 3, H, W) uint8
    K: torch.Tensor | None = None  # (B, 3, 3) float32 known intrinsics, or None
    gt_depth: torch.Tensor | None = None  # (B, 1, H, W) float32 metres, NaN invalid (only if the source has it)
    # Frame numbers as the source names its frames (a frame folder's frame-NNNNNN); None: the source_indices.
    source_numbers: Sequence[int] | None = None


@dataclass
class TeacherOutput:
    """Metric depth for a batch. confidence is in [0, 1] (higher = more trustworthy) or None."""

    depth: torch.Tensor  # (B, 1, H, W) float32, metres (z-depth)
    K: torch.Tensor  # (B, 3, 3) float32: the intrinsics used (given, shared or predicted)
    confidence: torch.Tensor | None = None  # (B, 1, H, W) float32 in [0, 1]


class Teacher(ABC):
    """A frozen per-frame depth model. Subclasses are in eval mode and never build a graph."""

    id: str = "teacher"  # e.g. "unidepth:lpiccinelli/unidepth-v2-vits14"
    version: str = "0"  # package / weights version, recorded in every store
    has_confidence: bool = True  # False when predict() always returns confidence=None

    @abstractmethod
    def predict(self, batch: FrameBatch) -> TeacherOutput:
        """Predict metric depth for one batch of frames of one video."""

    def estimate_intrinsics(self, batch: FrameBatch) -> torch.Tensor | None:
        """Per-frame K predicted by the model itself, (B, 3, 3), or None if it cannot predict K."""
        return None


def validate_output(out: TeacherOutput, batch: FrameBatch, teacher_id: str) -> TeacherOutput:
    """Check the output's shapes; raise TeacherOutputError naming the video when they do not fit the batch.

    Bad depth values (NaN/inf, zero or negative) are not an error here: ingest repairs and records them for
    every backend (`steadydepth.teachers.invalid`).
    """
    b = len(batch.indices)
    h, w = batch.rgb.shape[-2:]
    expected = {"depth": (b, 1, h, w), "K": (b, 3, 3), "confidence": (b, 1, h, w)}
    for name, shape in expected.items():
        value = getattr(out, name)
        if value is not None and tuple(value.shape) != shape:
            raise TeacherOutputError(
                f"teacher {teacher_id} returned {name} of shape {tuple(value.shape)} for video "
                f"{batch.video.name}, expected {shape}; check the teacher backend"
            )
    return out
