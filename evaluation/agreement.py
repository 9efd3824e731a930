"""Teacher agreement without ground truth: does the refined depth keep the teacher's global scale?

A smoother may steady the depth, but must not buy that steadiness by drifting away from the teacher's metric
scale, which without GT nothing else would notice. Per frame t, in log units (natural log):

    r_t = median over pixels valid in both of log(D_refined / D_teacher)   the refined depth's scale offset
    m_t = median over the teacher's valid pixels of log D_teacher            the teacher's global log scale

and per video:

    scale_bias   = mean_t r_t                                          a constant scale error
    scale_drift  = max over windows of W consecutive frames of |mean r_t|   the worst local offset (W = T if T < W)
    teacher_band = median_t |m_t − m_{t−1}|                            the teacher's own frame-to-frame scale change

Valid pixels: finite and > 0. Frames without any are left out (of the means, windows and differences). The
gate (evaluation/gate.py) asks |scale_bias| and scale_drift ≤ max(k · teacher_band, floor) for every video,
so a noisy teacher, whose scale cannot be trusted to better than its band, allows a wider offset than a
stable one. Only two floats per frame are kept: stores are read one chunk at a time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluation.metric_names import SCALE_BIAS, SCALE_DRIFT, TEACHER_BAND
from steadydepth.errors import InputError
from storage.depth_store import DepthStore


def _positive(d: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(d) & (d > 0)


def frame_scales(teacher: np.ndarray, refined: np.ndarray) -> tuple[float, float]:
    """(r_t, m_t) of one (H, W) frame pair; each NaN when it has no valid pixel."""
    t_ok = _positive(teacher)
    both = t_ok & _positive(refined)
    m = float(np.median(np.log(teacher[t_ok].astype(np.float64)))) if t_ok.any() else math.nan
    if not both.any():
        return math.nan, m
    ratio = np.log(refined[both].astype(np.float64)) - np.log(teacher[both].astype(np.float64))
    return float(np.median(ratio)), m


def windowed_max_abs_mean(values: np.ndarray, window: int) -> float:
    """max over windows of `window` consecutive entries (all of them if fewer) of |mean of the finite ones|."""
    finite = np.isfinite(values)
    if not finite.any():
        return math.nan
    w = min(window, len(values))
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    s, n = sums[w:] - sums[:-w], counts[w:] - counts[:-w]
    return float(np.max(np.abs(s[n > 0] / n[n > 0])))


def teacher_band(teacher_scales: np.ndarray) -> float:
    """median |m_t − m_{t−1}| over consecutive frames with a valid teacher scale; NaN with fewer than two."""
    m = teacher_scales[np.isfinite(teacher_scales)]
    return float(np.median(np.abs(np.diff(m)))) if len(m) >= 2 else math.nan


@dataclass
class AgreementAccumulator:
    """Collects r_t and m_t frame by frame; `result` gives the per-video metrics."""

    log_ratio: list[float] = field(default_factory=list)
    teacher_scale: list[float] = field(default_factory=list)

    def add(self, teacher: np.ndarray, refined: np.ndarray) -> None:
        if teacher.shape != refined.shape:
            raise InputError(f"teacher frame {teacher.shape} and refined frame {refined.shape} differ; pass matching")
        r, m = frame_scales(teacher, refined)
        self.log_ratio.append(r)
        self.teacher_scale.append(m)

    def add_frames(self, teacher: np.ndarray, refined: np.ndarray) -> None:
        """Every frame of (T, H, W) blocks, one at a time."""
        for t in range(len(teacher)):
            self.add(teacher[t], refined[t])

    def result(self, window: int) -> dict[str, float]:
        r = np.asarray(self.log_ratio, dtype=np.float64)
        finite = r[np.isfinite(r)]
        return {
            SCALE_BIAS: float(np.mean(finite)) if len(finite) else math.nan,
            SCALE_DRIFT: windowed_max_abs_mean(r, window),
            TEACHER_BAND: teacher_band(np.asarray(self.teacher_scale, dtype=np.float64)),
        }


def teacher_agreement(teacher: np.ndarray, refined: np.ndarray, *, window: int) -> dict[str, float]:
    """scale_bias, scale_drift and teacher_band of (T, H, W) depth arrays (see the module docstring)."""
    teacher, refined = np.asarray(teacher), np.asarray(refined)
    if teacher.ndim != 3 or teacher.shape != refined.shape:
        raise InputError(f"teacher {teacher.shape} and refined {refined.shape} must both be (T, H, W)")
    acc = AgreementAccumulator()
    acc.add_frames(teacher, refined)
    return acc.result(window)


def store_agreement(
    teacher_uri: str,
    refined_uri: str,
    *,
    window: int,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """`teacher_agreement` of two stores, read one teacher chunk at a time (never the whole video)."""
    teacher = DepthStore.open(teacher_uri, storage_options)
    refined = DepthStore.open(refined_uri, storage_options)
    if refined.num_frames != teacher.num_frames or refined.size != teacher.size:
        raise InputError(
            f"refined store {refined_uri} ({refined.num_frames} frames of {refined.size}) does not match teacher "
            f"store {teacher_uri} ({teacher.num_frames} of {teacher.size}); pass the refined store of that teacher"
        )
    acc = AgreementAccumulator()
    for i in range(teacher.num_chunks):
        start, stop = teacher.chunk_bounds(i)
        acc.add_frames(teacher.read(start, stop)["depth"], refined.read(start, stop)["depth"])
    return acc.result(window)
