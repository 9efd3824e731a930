"""Per-frame depth accuracy (the Eigen / KITTI suite) with optional per-sequence alignment.

Conventions:
- Valid pixels V_t of frame t: GT finite with min_depth < G < max_depth, prediction finite and > 0.
- Each metric is computed per frame over V_t, then averaged over the frames that have any valid pixel
  (unweighted: every frame counts once). Averaging over sequences is `mean_over_sequences`.
- Alignment is fitted ONCE per sequence over all valid pixels of all frames, never per frame: per-frame
  alignment would hide exactly the flicker the smoother removes. "none" is the default (metric teacher).
  * "median": s = median(G[V]) / median(D[V]) (Monodepth-style ratio of medians), D' = s·D.
  * "lstsq_disparity": least-squares (s, b) minimising Σ_V (s/D + b − 1/G)², then
    D' = 1 / clip(s/D + b, 1/max_depth, 1/min_depth), i.e. D' clamped to [min_depth, max_depth]
    (as the Video Depth Anything benchmark does).
- The prediction is not clipped to the depth caps for "none" and "median".

Streaming: `AccuracyAccumulator` sums the per-frame metrics chunk by chunk (given the alignment), and
`AlignmentFitStream` fits the alignment from chunks in passes: "median" with exact medians (`GroupedMedian`,
the same numbers as `fit_alignment`), "lstsq_disparity" by a QR factorisation updated chunk by chunk (the same
least-squares solution as `np.linalg.lstsq`, to float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np

from evaluation.metric_names import ACCURACY_METRICS
from evaluation.order_stats import GroupedMedian
from steadydepth.errors import InputError

Alignment = Literal["none", "median", "lstsq_disparity"]


def valid_mask(pred: np.ndarray, gt: np.ndarray, *, min_depth: float, max_depth: float) -> np.ndarray:
    """V = finite GT with min_depth < GT < max_depth, and finite pred > 0 (same shape as the inputs)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(gt) & (gt > min_depth) & (gt < max_depth) & np.isfinite(pred) & (pred > 0)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.ndim == 2:
        pred, gt = pred[None], gt[None]
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise InputError(f"pred {pred.shape} and gt {gt.shape} must both be (T, H, W); pass matching arrays")
    return pred, gt


def fit_alignment(
    pred: np.ndarray, gt: np.ndarray, *, min_depth: float, max_depth: float, alignment: Alignment = "none"
) -> tuple[float, float]:
    """One (scale, shift) for the whole sequence; shift is 0 except for "lstsq_disparity".

    median: s = median(G[V]) / median(D[V]).  lstsq_disparity: argmin_{s,b} Σ_V (s/D + b − 1/G)².
    Returns (1, 0) for "none" or when no pixel is valid.
    """
    pred, gt = _check_pair(pred, gt)
    if alignment == "none":
        return 1.0, 0.0
    v = valid_mask(pred, gt, min_depth=min_depth, max_depth=max_depth)
    if not v.any():
        return 1.0, 0.0
    d = pred[v].astype(np.float64)
    g = gt[v].astype(np.float64)
    if alignment == "median":
        return float(np.median(g) / np.median(d)), 0.0
    if alignment == "lstsq_disparity":
        a = np.stack([1.0 / d, np.ones_like(d)], axis=1)
        (s, b), *_ = np.linalg.lstsq(a, 1.0 / g, rcond=None)
        return float(s), float(b)
    raise InputError(f"unknown alignment {alignment!r}; use 'none', 'median' or 'lstsq_disparity'")


def apply_alignment(
    pred: np.ndarray, scale: float, shift: float, *, min_depth: float, max_depth: float, alignment: Alignment
) -> np.ndarray:
    """Apply a fitted alignment to depth: s·D (median) or 1/clip(s/D + b, 1/max, 1/min) (lstsq_disparity)."""
    pred = np.asarray(pred, dtype=np.float64)
    if alignment == "none":
        return pred
    if alignment == "median":
        return pred * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = scale / pred + shift
        hi = 1.0 / min_depth if min_depth > 0 else np.inf
        # the clamp keeps the inverse finite and inside the caps where the affine fit goes <= 0
        return 1.0 / np.clip(disp, 1.0 / max_depth, hi)


def frame_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Eigen metrics over already-valid 1-D pixel arrays (float64).

    AbsRel = mean |D−G|/G; SqRel = mean (D−G)²/G; RMSE = sqrt(mean (D−G)²);
    RMSE log = sqrt(mean (ln D − ln G)²); δk = mean[max(D/G, G/D) < 1.25^k].
    """
    d = pred.astype(np.float64)
    g = gt.astype(np.float64)
    diff = d - g
    ratio = np.maximum(d / g, g / d)
    return {
        "absrel": float(np.mean(np.abs(diff) / g)),
        "sqrel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(d) - np.log(g)) ** 2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


def accuracy_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    min_depth: float,
    max_depth: float,
    alignment: Alignment = "none",
) -> dict[str, float]:
    """Eigen metrics of a (T, H, W) prediction against (T, H, W) GT (NaN = invalid), averaged over frames.

    The alignment (if any) is fitted once over the whole sequence (see module docstring). Frames without a
    valid pixel are skipped; if no frame has one, every metric is NaN.
    """
    pred, gt = _check_pair(pred, gt)
    scale, shift = fit_alignment(pred, gt, min_depth=min_depth, max_depth=max_depth, alignment=alignment)
    acc = AccuracyAccumulator(min_depth=min_depth, max_depth=max_depth, alignment=alignment, scale=scale, shift=shift)
    acc.add(pred, gt)
    return acc.result()


class AccuracyAccumulator:
    """`accuracy_metrics` chunk by chunk, with the alignment (scale, shift) fitted beforehand."""

    def __init__(
        self,
        *,
        min_depth: float,
        max_depth: float,
        alignment: Alignment = "none",
        scale: float = 1.0,
        shift: float = 0.0,
    ) -> None:
        self.min_depth, self.max_depth = min_depth, max_depth
        self.alignment, self.scale, self.shift = alignment, scale, shift
        self.sums = dict.fromkeys(ACCURACY_METRICS, 0.0)
        self.frames = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """The next (n, H, W) frames of prediction and GT."""
        pred, gt = _check_pair(pred, gt)
        caps = {"min_depth": self.min_depth, "max_depth": self.max_depth}
        for t in range(pred.shape[0]):
            # validity is judged on the raw prediction: the lstsq clamp must not turn an invalid pixel valid
            d = apply_alignment(pred[t], self.scale, self.shift, alignment=self.alignment, **caps)
            v = valid_mask(pred[t], gt[t], **caps) & (d > 0) & np.isfinite(d)
            if not v.any():
                continue
            for key, value in frame_errors(d[v], gt[t][v]).items():
                self.sums[key] += value
            self.frames += 1

    def result(self) -> dict[str, float]:
        n = self.frames
        return {key: (self.sums[key] / n if n else math.nan) for key in ACCURACY_METRICS}


class AlignmentFitStream:
    """`fit_alignment` from chunks of (pred, GT), in passes: `add` each chunk, `end_pass()` until True, then
    `result()`. "none" needs no pass (end_pass is True at once), "lstsq_disparity" one, "median" two (float32)
    or four (float64) for its exact medians."""

    def __init__(self, *, min_depth: float, max_depth: float, alignment: Alignment) -> None:
        if alignment not in ("none", "median", "lstsq_disparity"):
            raise InputError(f"unknown alignment {alignment!r}; use 'none', 'median' or 'lstsq_disparity'")
        self.min_depth, self.max_depth, self.alignment = min_depth, max_depth, alignment
        self._medians = (GroupedMedian(1), GroupedMedian(1)) if alignment == "median" else None  # of GT, of pred
        self._r: np.ndarray | None = None  # R of the QR factorisation of [1/D, 1, 1/G] over the rows so far
        self.done = alignment == "none"

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """The next (n, H, W) frames of prediction and GT (the same frames again in each pass)."""
        if self.done:
            return
        pred, gt = _check_pair(pred, gt)
        v = valid_mask(pred, gt, min_depth=self.min_depth, max_depth=self.max_depth)
        if self._medians is not None:
            for median, values in zip(self._medians, (gt[v], pred[v]), strict=True):
                if not median.done:  # a float32 median is done in fewer passes than a float64 one
                    median.add(values)
            return
        d, g = pred[v].astype(np.float64), gt[v].astype(np.float64)
        rows = np.stack([1.0 / d, np.ones_like(d), 1.0 / g], axis=1)
        stacked = rows if self._r is None else np.vstack([self._r, rows])
        if len(stacked):
            self._r = np.linalg.qr(stacked, mode="r")

    def end_pass(self) -> bool:
        if not self.done:
            self.done = self._medians is None or all([m.done or m.end_pass() for m in self._medians])
        return self.done

    def result(self) -> tuple[float, float]:
        """(scale, shift) as `fit_alignment` gives them; (1, 0) for "none" or when no pixel is valid."""
        if self._medians is not None:
            med_g, med_d = (float(m.median()[0]) for m in self._medians)
            return (1.0, 0.0) if not math.isfinite(med_d) else (med_g / med_d, 0.0)
        if self._r is None:
            return 1.0, 0.0
        # min ||A x − b|| over all rows = min ||R11 x − r12||: the rows of R above the last column's own
        (s, b), *_ = np.linalg.lstsq(self._r[:2, :2], self._r[:2, 2], rcond=None)
        return float(s), float(b)


def mean_over_sequences(results: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Unweighted mean over sequences of each key; NaN values (metric undefined for a sequence) are skipped.

    A key present in any dict appears in the output; it is NaN if no sequence has a finite value for it.
    """
    results = list(results)
    keys: list[str] = []
    for r in results:
        keys.extend(k for k in r if k not in keys)
    out: dict[str, float] = {}
    for k in keys:
        vals = [float(r[k]) for r in results if k in r and math.isfinite(float(r[k]))]
        out[k] = float(np.mean(vals)) if vals else math.nan
    return out
