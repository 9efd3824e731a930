"""The metric suite: one call that evaluates a depth video with whatever references are available.

Accuracy lives in evaluation/accuracy.py, temporal metrics in evaluation/temporal.py, the metric names in
evaluation/metric_names.py; all are re-exported here. Teacher, smoother and baselines all go through
`evaluate_sequence`, so their numbers are comparable. `SequenceMetrics` is `evaluate_sequence` fed chunk by chunk
(evaluate_sequence itself feeds it the whole video as one chunk), which is how the evaluation streams stores.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from evaluation.accuracy import (
    AccuracyAccumulator,
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
    FrameChangeAccumulator,
    OPWAccumulator,
    OpwNormalization,
    PairWarp,
    StaticFlickerAccumulator,
    TAEAccumulator,
    flow_warps,
    frame_change,
    opw,
    robust_normalize,
    robust_stats,
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
    "SequenceMetrics",
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

    scale, shift = 1.0, 0.0
    if gt is not None:
        scale, shift = fit_alignment(pred, gt, min_depth=lo, max_depth=hi, alignment=alignment)
    opw_accs = {}
    if rgb is not None or opw_warps is not None:
        # opw's own checks and flow: the same numbers as opw(pred, rgb, ...)
        if opw_warps is None:
            if np.shape(rgb) != (*pred.shape, 3):
                raise InputError(f"rgb {np.shape(rgb)} must be (T, H, W, 3) matching depth {pred.shape}")
            opw_warps = flow_warps(rgb, flow=flow)
        elif opw_warps.shape != pred.shape:
            raise InputError(f"flow warps of a {opw_warps.shape} video do not match depth {pred.shape}")
        median, mad = robust_stats(pred) if opw_normalize == "sequence" else (None, None)
        opw_accs["opw"] = OPWAccumulator(opw_normalize, median=median, mean_abs_dev=mad)
    acc = SequenceMetrics(
        min_depth=lo,
        max_depth=hi,
        accuracy=gt is not None,
        alignment=alignment,
        scale=scale,
        shift=shift,
        tae=K is not None and poses is not None,
        opw=opw_accs,
        static_flicker=static_mask is not None,
    )
    warps = None if opw_warps is None else opw_warps.per_frame()
    acc.add(pred, gt=gt, K=K, poses=poses, static_mask=static_mask, warps=warps)
    return acc.result()


class SequenceMetrics:
    """`evaluate_sequence` chunk by chunk: every metric's running state for one depth video.

    Whole-video statistics come in up front: the alignment's (scale, shift) and each OPW accumulator's sequence
    normalisation (`evaluation.temporal.OPWAccumulator`; its key is the metric name, e.g. "opw", "opw_sequence").
    `add` consecutive chunks, then `result()`: the keys evaluate_sequence gives for the same inputs (plus the
    OPW keys named), in the same order.
    """

    def __init__(
        self,
        *,
        min_depth: float | None,
        max_depth: float | None,
        accuracy: bool = False,
        alignment: Alignment = "none",
        scale: float = 1.0,
        shift: float = 0.0,
        tae: bool = False,
        opw: dict[str, OPWAccumulator] | None = None,
        static_flicker: bool = False,
    ) -> None:
        caps = {"min_depth": min_depth, "max_depth": max_depth}
        self.caps, self.alignment, self.scale, self.shift = caps, alignment, scale, shift
        self.accuracy = AccuracyAccumulator(**caps, alignment=alignment, scale=scale, shift=shift) if accuracy else None
        self.tae = TAEAccumulator(**caps) if tae else None
        self.opw = dict(opw or {})
        self.static_flicker = StaticFlickerAccumulator() if static_flicker else None
        self.frame_change = FrameChangeAccumulator()

    def add(
        self,
        pred: np.ndarray,
        *,
        gt: np.ndarray | None = None,
        K: np.ndarray | None = None,
        poses: np.ndarray | None = None,
        static_mask: np.ndarray | None = None,
        warps: list[PairWarp | None] | None = None,
    ) -> None:
        """The next (n, H, W) frames with the references the accumulator was built for: gt (n, H, W) for accuracy,
        K + poses for TAE, static_mask ((H, W) or (n, H, W)) for static flicker, one warp per frame for OPW."""
        if self.accuracy is not None:
            self.accuracy.add(pred, gt)
        if self.tae is not None:
            aligned = pred
            if gt is not None and self.alignment != "none":  # TAE of the aligned prediction, as evaluate_sequence
                aligned = apply_alignment(pred, self.scale, self.shift, alignment=self.alignment, **self.caps)
            self.tae.add(aligned, K, poses)
        for acc in self.opw.values():
            acc.add(pred, warps)
        if self.static_flicker is not None:
            self.static_flicker.add(pred, static_mask)
        self.frame_change.add(pred)

    def result(self) -> dict[str, float]:
        out: dict[str, float] = {} if self.accuracy is None else self.accuracy.result()
        if self.tae is not None:
            out["tae"] = self.tae.result()
        out.update({name: acc.result() for name, acc in self.opw.items()})
        if self.static_flicker is not None:
            out["static_flicker"] = self.static_flicker.result()
        out["frame_change"] = self.frame_change.result()
        return {k: float(v) if v is not None else math.nan for k, v in out.items()}
