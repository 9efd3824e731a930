"""Invalid teacher depth (NaN/inf, zero or negative pixels): what ingest does with it, for every backend.

Real networks return a few such pixels (sky, glass, black surfaces), so they are repaired, never fatal:

- a bad pixel gets the last valid depth seen at that pixel (carried from frame to frame); before the first
  valid frame, the depth of the nearest valid pixel of its own frame. Its confidence becomes 0.
- a frame with more than `teacher.max_invalid_fraction_per_frame` of its pixels bad is *invalid*: its depth
  is a copy of the previous valid frame (frames before the first valid one get the first valid frame, at
  the end of ingest) and its confidence is 0 everywhere.
- a video fails when more than `teacher.max_invalid_frames_fraction` of its frames are invalid, or none is valid.

The store records per frame `invalid_pixels` (the count) and `frame_valid` (0 for an invalid frame); see
`storage.depth_store`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from steadydepth.errors import TeacherOutputError

_PLACEHOLDER_M = 1.0  # depth of a frame with no valid pixel at all before any valid frame; replaced later


def invalid_mask(depth: np.ndarray) -> np.ndarray:
    """True where depth is NaN/inf, zero or negative."""
    return ~(np.isfinite(depth) & (depth > 0))


def fill_nearest(depth: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """(H, W) depth with every bad pixel replaced by its nearest good pixel (a constant if none is good)."""
    if not bad.any():
        return depth
    if bad.all():
        return np.full_like(depth, _PLACEHOLDER_M)
    # Indices of the nearest False (good) pixel for every pixel: O(H·W), robust to any hole shape.
    nearest = ndimage.distance_transform_edt(bad, return_distances=False, return_indices=True)
    return depth[tuple(nearest)]


@dataclass
class RepairedChunk:
    """Depth of consecutive frames after repair, with what was found."""

    depth: np.ndarray  # (B, H, W) float32, finite and > 0
    confidence: np.ndarray | None  # (B, H, W) float32, 0 at bad pixels and on invalid frames
    invalid_pixels: np.ndarray  # (B,) int64
    frame_valid: np.ndarray  # (B,) uint8


class DepthRepair:
    """Repairs one video's depth in frame order, carrying the last valid depth from chunk to chunk.

    `previous` is the (H, W) depth of the frame before the first one repaired (when resuming a store),
    or None when no valid frame precedes it.
    """

    def __init__(self, max_invalid_fraction: float, previous: np.ndarray | None = None) -> None:
        self.max_invalid_fraction = max_invalid_fraction
        self.previous = previous

    def __call__(self, depth: np.ndarray, confidence: np.ndarray | None = None) -> RepairedChunk:
        depth = np.array(depth, dtype=np.float32)  # a copy: the teacher's tensors stay untouched
        conf = None if confidence is None else np.array(confidence, dtype=np.float32)
        counts = np.zeros(len(depth), np.int64)
        valid = np.ones(len(depth), np.uint8)
        for i, frame in enumerate(depth):
            bad = invalid_mask(frame)
            counts[i] = int(bad.sum())
            if counts[i] > self.max_invalid_fraction * bad.size or bad.all():
                valid[i] = 0
                depth[i] = self.previous if self.previous is not None else fill_nearest(frame, bad)
                if conf is not None:
                    conf[i] = 0.0
                continue
            if counts[i]:
                carried = self.previous is not None
                depth[i] = np.where(bad, self.previous, frame) if carried else fill_nearest(frame, bad)
                if conf is not None:
                    conf[i][bad] = 0.0
            self.previous = depth[i].copy()
        return RepairedChunk(depth, conf, counts, valid)


@dataclass
class VideoInvalidity:
    """Per-frame invalid counts of one video: those already in its store plus those recorded since.

    `invalid_pixels` is -1 for frames not written yet (the store's fill value), so they count as neither.
    """

    invalid_pixels: np.ndarray  # (T,) int64
    frame_valid: np.ndarray  # (T,) uint8
    source_index: np.ndarray  # (T,) int64 source frame numbers, for messages

    READS = ("invalid_pixels", "frame_valid", "frame_index")  # the store variables `from_arrays` takes

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> VideoInvalidity:
        """From a store's `invalid_pixels`, `frame_valid` and `frame_index` arrays (fill values where unwritten)."""
        return cls(
            np.asarray(arrays["invalid_pixels"], np.int64).copy(),
            np.asarray(arrays["frame_valid"], np.uint8).copy(),
            np.asarray(arrays["frame_index"], np.int64).copy(),
        )

    def record(self, start: int, chunk: RepairedChunk, source_index: list[int]) -> None:
        stop = start + len(chunk.invalid_pixels)
        self.invalid_pixels[start:stop] = chunk.invalid_pixels
        self.frame_valid[start:stop] = chunk.frame_valid
        self.source_index[start:stop] = source_index

    @property
    def written(self) -> np.ndarray:
        return self.invalid_pixels >= 0

    @property
    def invalid_frames(self) -> np.ndarray:
        """Positions of the written frames that are invalid."""
        return np.flatnonzero(self.written & (self.frame_valid == 0))

    def valid_before(self, start: int) -> bool:
        """Whether any frame before `start` is a valid one."""
        return bool((self.written[:start] & (self.frame_valid[:start] == 1)).any())

    def first_valid(self) -> int | None:
        found = np.flatnonzero(self.written & (self.frame_valid == 1))
        return int(found[0]) if found.size else None

    def summary(self) -> dict[str, int]:
        """Per-video totals, as stored in the attrs and reported in the ingest result."""
        counts = self.invalid_pixels[self.written]
        return {
            "invalid_pixels_total": int(counts.sum()),
            "invalid_pixel_frames": int(np.count_nonzero(counts)),
            "invalid_frames": int(self.invalid_frames.size),
        }

    def check(self, *, video: str, teacher: str, max_frames_fraction: float, per_frame: float, final: bool) -> None:
        """Raise TeacherOutputError (one line) when too many frames are invalid (or, when final, none is valid)."""
        bad = self.invalid_frames
        total = len(self.invalid_pixels)
        if bad.size <= max_frames_fraction * total and not (final and self.first_valid() is None):
            return
        first = bad[:5]
        named = ", ".join(str(int(i)) for i in first) + (", ..." if bad.size > first.size else "")
        sources = ", ".join(str(int(self.source_index[i])) for i in first)
        done = int(self.written.sum())
        seen = f"{total}" if done == total else f"the first {done} of {total}"
        raise TeacherOutputError(
            f"teacher {teacher} gave unusable depth (over {per_frame * 100:g}% of the pixels NaN/inf, zero or "
            f"negative) in {bad.size} of {seen} frames of video {video}, more than teacher.max_invalid_frames_fraction="
            f"{max_frames_fraction:g} allows; first at frames {named} (source frames {sources}); check that video's "
            "input (or precomputed depth), or raise teacher.max_invalid_frames_fraction to keep it — stores "
            "already written stay valid"
        )
