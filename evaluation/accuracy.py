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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np

from evaluation.metric_names import ACCURACY_METRICS
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
    sums = dict.fromkeys(ACCURACY_METRICS, 0.0)
    n = 0
    for t in range(pred.shape[0]):
        # validity is judged on the raw prediction: the lstsq clamp must not turn an invalid pixel valid
        d = apply_alignment(pred[t], scale, shift, min_depth=min_depth, max_depth=max_depth, alignment=alignment)
        v = valid_mask(pred[t], gt[t], min_depth=min_depth, max_depth=max_depth) & (d > 0) & np.isfinite(d)
        if not v.any():
            continue
        for key, value in frame_errors(d[v], gt[t][v]).items():
            sums[key] += value
        n += 1
    return {key: (sums[key] / n if n else math.nan) for key in ACCURACY_METRICS}


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
