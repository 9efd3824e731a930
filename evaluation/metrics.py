"""The metric suite: one call that evaluates a depth video with whatever references are available.

Accuracy lives in evaluation/accuracy.py, temporal metrics in evaluation/temporal.py, the metric names in
evaluation/metric_names.py; all are re-exported here. Teacher, smoother and baselines all go through
`evaluate_sequence`, so their numbers are comparable.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from evaluation.accuracy import (
    Alignment,
    accuracy_metrics,
    apply_alignment,
    fit_alignment,
    frame_errors,
    mean_over_sequences,
    valid_mask,
)
from evaluation.metric_names import ACCURACY_METRICS, METRIC_NAMES, SUITE_METRICS
from evaluation.temporal import (
    FlowWarps,
    OpwNormalization,
    flow_warps,
    frame_change,
    opw,
    robust_normalize,
    static_flicker,
    static_mask_from_gt,
    static_mask_from_rgb,
    tae,
)
from steadydepth.errors import InputError
from steadydepth.video.optical_flow import FlowMethod

__all__ = [
    "ACCURACY_METRICS",
    "METRIC_NAMES",
    "SUITE_METRICS",
    "accuracy_metrics",
    "apply_alignment",
    "FlowWarps",
    "evaluate_sequence",
    "fit_alignment",
    "flow_warps",
    "frame_change",
    "frame_errors",
    "mean_over_sequences",
    "opw",
    "robust_normalize",
    "static_flicker",
    "static_mask_from_gt",
    "static_mask_from_rgb",
    "tae",
    "valid_mask",
]


def evaluate_sequence(
    pred: np.ndarray,
    *,
    gt: np.ndarray | None = None,
    K: np.ndarray | None = None,
    poses: np.ndarray | None = None,
    rgb: np.ndarray | None = None,
    static_mask: np.ndarray | None = None,
    cfg: Any = None,
    min_depth: float | None = None,
    max_depth: float | None = None,
    alignment: Alignment = "none",
    flow: FlowMethod = "dis",
    opw_normalize: OpwNormalization = "frame",
    opw_warps: FlowWarps | None = None,
) -> dict[str, float]:
    """Every metric the inputs allow, as a flat dict of floats (keys from SUITE_METRICS).

    pred (T, H, W) depth in metres. gt → absrel, sqrel, rmse, rmse_log, delta1..3 (alignment once per
    sequence); K + poses → tae (GT not needed); rgb (T, H, W, 3) uint8 or its opw_warps (`flow_warps`, computed
    once per video and reused across methods) → opw; static_mask →
    static_flicker; always frame_change. Metrics whose inputs are missing are absent from the dict.
    Depth caps come from the min_depth / max_depth kwargs, else from cfg (an EvaluateConfig-like object
    with .min_depth / .max_depth, or a Config with .evaluate).

    With gt and an alignment other than "none", TAE uses the prediction after that same per-sequence
    alignment; OPW, static flicker and frame change always use the raw prediction.
    """
    pred = np.asarray(pred)
    if pred.ndim != 3:
        raise InputError(f"pred has shape {pred.shape}; pass a (T, H, W) depth array")
    section = getattr(cfg, "evaluate", cfg)
    lo = min_depth if min_depth is not None else getattr(section, "min_depth", None)
    hi = max_depth if max_depth is not None else getattr(section, "max_depth", None)
    needs_caps = gt is not None or (K is not None and poses is not None)
    if needs_caps and (lo is None or hi is None):
        raise InputError("depth caps unknown: pass cfg=EvaluateConfig(...) or min_depth= and max_depth=")

    out: dict[str, float] = {}
    aligned = pred
    if gt is not None:
        out.update(accuracy_metrics(pred, gt, min_depth=lo, max_depth=hi, alignment=alignment))
        if alignment != "none":
            scale, shift = fit_alignment(pred, gt, min_depth=lo, max_depth=hi, alignment=alignment)
            aligned = apply_alignment(pred, scale, shift, min_depth=lo, max_depth=hi, alignment=alignment)
    if K is not None and poses is not None:
        out["tae"] = tae(aligned, K, poses, min_depth=lo, max_depth=hi)
    if rgb is not None or opw_warps is not None:
        out["opw"] = opw(pred, rgb, flow=flow, normalize=opw_normalize, warps=opw_warps)
    if static_mask is not None:
        out["static_flicker"] = static_flicker(pred, static_mask)
    out["frame_change"] = frame_change(pred)
    return {k: float(v) if v is not None else math.nan for k, v in out.items()}
