"""The one list of metric names: every metric of the suite, in report order, with its label and role.

Everything that names metrics (the metric suite, the evaluation driver, the report, the gate's config, the CLI
summary, the benchmarks' tables) derives its names from `METRICS`, so a metric is added or renamed here only.
Kept free of numpy / OpenCV so the config can import it cheaply.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Literal, NamedTuple


class Metric(NamedTuple):
    """One metric: its key in every metrics dict, its label in tables and plots, and what it measures."""

    name: str
    label: str
    # per-frame accuracy against GT, temporal stability (lower = steadier), or agreement with the teacher's scale
    kind: Literal["accuracy", "flicker", "agreement"]
    gate: bool = False  # the promotion gate judges it (accuracy check, a flicker metric it may choose, agreement)
    suite: bool = True  # measured by `evaluate_sequence`; False: a variant the evaluation driver adds


SCALE_BIAS = "scale_bias"  # mean over frames of the refined depth's median log-ratio to the teacher
SCALE_DRIFT = "scale_drift"  # the largest |windowed mean| of that log-ratio
TEACHER_BAND = "teacher_band"  # the teacher's median |frame-to-frame change| of its median log depth

METRICS: tuple[Metric, ...] = (
    Metric("absrel", "AbsRel", "accuracy", gate=True),
    Metric("sqrel", "SqRel", "accuracy"),
    Metric("rmse", "RMSE (m)", "accuracy"),
    Metric("rmse_log", "RMSE log", "accuracy"),
    Metric("delta1", "δ1", "accuracy", gate=True),
    Metric("delta2", "δ2", "accuracy"),
    Metric("delta3", "δ3", "accuracy"),
    # the flicker metrics in the gate's default order of preference (EvaluateConfig.flicker_metrics)
    Metric("tae", "TAE (%)", "flicker", gate=True),
    Metric("static_flicker", "static flicker", "flicker", gate=True),
    Metric("opw", "OPW (frame norm.)", "flicker", gate=True),
    Metric("opw_sequence", "OPW (seq. norm.)", "flicker", suite=False),  # OPW with one normalisation per video
    Metric("frame_change", "frame change", "flicker", gate=True),
    # teacher agreement (evaluation/agreement.py, log units, no GT): the gate's accuracy guard when GT is absent
    Metric(SCALE_BIAS, "scale bias (log)", "agreement", gate=True, suite=False),
    Metric(SCALE_DRIFT, "scale drift (log)", "agreement", gate=True, suite=False),
    Metric(TEACHER_BAND, "teacher band (log)", "agreement", suite=False),
)

METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
METRIC_LABELS: dict[str, str] = {m.name: m.label for m in METRICS}
ACCURACY_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.kind == "accuracy")
SUITE_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.suite)
GATE_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.gate)
GATE_FLICKER_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.gate and m.kind == "flicker")
AGREEMENT_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.kind == "agreement")

# Literal[tuple] is Literal[*names]: the config validates against the same names (built at import, not spelled out)
GateFlickerMetric = Literal[GATE_FLICKER_METRICS]  # type: ignore[valid-type]


def metrics_in_order(names: Container[str]) -> list[str]:
    """The metric names among `names` (a set, a dict's keys, ...), in report order."""
    return [k for k in METRIC_NAMES if k in names]
