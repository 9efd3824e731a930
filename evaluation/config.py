"""The evaluation's config section: depth caps, alignment, the promotion gate's thresholds and the baselines.

Composed into the run's `Config` as `evaluate` (steadydepth/config.py), so YAML and `--set evaluate.FIELD=...`
reach it there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from evaluation.metric_names import GATE_FLICKER_METRICS, GateFlickerMetric
from steadydepth.config_base import Section


class EvaluateConfig(Section):
    """Evaluation and the promotion gate (evaluation/evaluate.py, evaluation/gate.py)."""

    max_depth: float = Field(default=80.0, gt=0, description="GT beyond this (metres) is not scored")
    min_depth: float = Field(default=1e-3, ge=0, description="GT below this (metres) is not scored")
    absrel_tolerance: float = Field(default=0.001, ge=0, description="gate: AbsRel may exceed the teacher's by this")
    delta1_tolerance: float = Field(default=0.002, ge=0, description="gate: δ1 may fall below the teacher's by this")
    min_flicker_reduction: float = Field(
        default=0.2, ge=0, le=1, description="required relative drop of the flicker metric vs the teacher"
    )
    flicker_metrics: list[GateFlickerMetric] = Field(
        default=list(GATE_FLICKER_METRICS),
        description="flicker metric used by the gate: the first one both sides have",
    )
    # 3: a smoother trained on a real network's depth (7-Scenes, mobilePydnet++) drifts up to 2.2 bands from it
    # over 30 frames while improving AbsRel 0.27 -> 0.23; a 10 % scale error against a stable teacher still fails.
    agreement_k: float = Field(
        default=3.0,
        gt=0,
        description="teacher agreement: |scale bias| and scale drift must stay within agreement_k × the teacher band",
    )
    agreement_floor: float = Field(
        default=0.01, ge=0, description="teacher agreement: the smallest limit (log units, about 1 %)"
    )
    agreement_window: int = Field(
        default=30, ge=1, description="teacher agreement: frames in the windowed mean that measures scale drift"
    )
    alignment: Literal["none", "median", "lstsq_disparity"] = Field(
        default="none", description="per-sequence alignment before accuracy/TAE; none for metric depth"
    )
    static_rel_tol: float = Field(
        default=0.01, gt=0, description="static pixels: GT within this relative deviation of its temporal median"
    )
    flow: Literal["dis", "farneback"] = Field(default="dis", description="optical flow of the OPW metric (OpenCV)")
    ema_alpha: float = Field(default=0.5, gt=0, le=1, description="EMA baseline: weight of the new frame")
    gated_ema_alpha: float = Field(default=0.2, gt=0, le=1, description="motion-gated EMA baseline: weight when still")
    gated_ema_threshold: float = Field(
        default=0.2, gt=0, description="motion-gated EMA baseline: |log-depth innovation| at which the gain is halfway"
    )
    gated_ema_softness: float = Field(
        default=0.5, ge=0, lt=1, description="motion-gated EMA baseline: gain ramps over threshold·(1 ± softness)"
    )
    median_window: int = Field(default=3, ge=1, description="causal temporal median baseline: frames in the window")
