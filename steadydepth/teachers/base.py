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
    source_indices: Sequence[int]  # frame numbers in the source
    rgb: torch.Tensor  # (B, 3, H, W) uint8
    K: torch.Tensor | None = None  # (B, 3, 3) float32 known intrinsics, or None
    gt_depth: torch.Tensor | None = None  # (B, 1, H, W) float32 metres, NaN invalid (only if the source has it)


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
    """Check shapes and values; raise TeacherOutputError naming the video and frame on bad depth."""
    b = len(batch.indices)
    h, w = batch.rgb.shape[-2:]
    if tuple(out.depth.shape) != (b, 1, h, w):
        raise TeacherOutputError(
            f"teacher {teacher_id} returned depth of shape {tuple(out.depth.shape)} for video "
            f"{batch.video.name}, expected {(b, 1, h, w)}; check the teacher backend"
        )
    bad = ~torch.isfinite(out.depth) | (out.depth <= 0)
    if bool(bad.any()):
        frame_pos = int(bad.flatten(1).any(dim=1).nonzero()[0, 0])
        frame = batch.indices[frame_pos]
        n_bad = int(bad[frame_pos].sum())
        kind = "NaN/inf" if bool((~torch.isfinite(out.depth[frame_pos])).any()) else "zero or negative"
        raise TeacherOutputError(
            f"teacher {teacher_id} returned {kind} depth at {n_bad} pixels of frame {frame} of video "
            f"{batch.video.name}; check that video's input (or precomputed depth) — stores already written stay valid"
        )
    return out
