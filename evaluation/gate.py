"""The promotion gate: a refined model passes only if it is no less accurate than the teacher per frame,
keeps the teacher's global scale on every video (teacher agreement, evaluation/agreement.py: no GT needed)
and is clearly less flickery. Orchestration promotes a model in the registry only when this passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from evaluation.config import EvaluateConfig
from evaluation.metric_names import SCALE_BIAS, SCALE_DRIFT, TEACHER_BAND


@dataclass
class GateResult:
    """Pass/fail with one human-readable reason per check (each prefixed PASS or FAIL)."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    flicker_metric: str | None = None

    def summary(self) -> str:
        return ("PASS" if self.passed else "FAIL") + ": " + "; ".join(self.reasons)


def _check(reasons: list[str], ok: bool, text: str) -> bool:
    reasons.append(("PASS " if ok else "FAIL ") + text)
    return ok


def agreement_limit(band: float, cfg: EvaluateConfig) -> float:
    """max(agreement_k · teacher band, agreement_floor); the floor alone when the band is undefined (< 2 frames)."""
    return max(cfg.agreement_k * band, cfg.agreement_floor) if math.isfinite(band) else cfg.agreement_floor


def _excess(row: Mapping[str, float], cfg: EvaluateConfig) -> float:
    """max(|bias|, drift) / limit of one video; inf when undefined, so a video it cannot see fails the check."""
    worst = max(abs(row.get(SCALE_BIAS, math.nan)), row.get(SCALE_DRIFT, math.nan))
    limit = agreement_limit(row.get(TEACHER_BAND, math.nan), cfg)
    if not math.isfinite(worst):
        return math.inf
    return worst / limit if limit > 0 else (0.0 if worst == 0 else math.inf)


def _agreement_text(name: str, row: Mapping[str, float], cfg: EvaluateConfig) -> str:
    bias, drift = abs(row.get(SCALE_BIAS, math.nan)), row.get(SCALE_DRIFT, math.nan)
    band = row.get(TEACHER_BAND, math.nan)
    limit = agreement_limit(band, cfg)

    def op(v: float) -> str:
        return "<=" if v <= limit else ">"

    return (
        f"teacher agreement ({name}): |scale bias| {bias:.4f} {op(bias)} {limit:.4f}, scale drift {drift:.4f} "
        f"{op(drift)} {limit:.4f} (limit max({cfg.agreement_k:g} × teacher band {band:.4f}, {cfg.agreement_floor:g}))"
    )


def check_agreement(
    reasons: list[str], agreement: Mapping[str, Mapping[str, float]] | None, cfg: EvaluateConfig
) -> bool:
    """Every video's |scale bias| and scale drift within its limit; the reason names the worst video's numbers.

    Judged per video, not on dataset means: opposite drifts on two videos must not cancel out.
    """
    if not agreement:
        return _check(reasons, False, "teacher agreement: no scale bias / drift measured")
    excess = {name: _excess(row, cfg) for name, row in agreement.items()}
    worst = max(excess, key=lambda n: excess[n])
    over = sum(e > 1 for e in excess.values())
    text = _agreement_text(worst, agreement[worst], cfg)
    if len(agreement) > 1:
        text += f"; {over} of {len(agreement)} videos over the limit"
    return _check(reasons, over == 0, text)


def evaluate_gate(
    teacher: Mapping[str, float],
    refined: Mapping[str, float],
    cfg: EvaluateConfig,
    agreement: Mapping[str, Mapping[str, float]] | None = None,
) -> GateResult:
    """Compare dataset-mean metrics of the refined depth with the teacher's, and its scale on each video.

    Accuracy (when ground truth exists): AbsRel ≤ teacher + absrel_tolerance and δ1 ≥ teacher − delta1_tolerance.
    Teacher agreement (always; without GT the only accuracy guard): `agreement` maps each video to its
    scale_bias, scale_drift and teacher_band (evaluation/agreement.py); every video needs |scale_bias| and
    scale_drift ≤ agreement_limit(teacher_band). Without it the gate fails: it cannot rule out a drifting model.
    Flicker: the first metric of cfg.flicker_metrics both sides have must drop by ≥ min_flicker_reduction
    (relative). Without any flicker metric the gate fails: stability is the point of the product.
    """
    reasons: list[str] = []
    ok = True
    if "absrel" in teacher and "absrel" in refined:
        limit = teacher["absrel"] + cfg.absrel_tolerance
        ok &= _check(reasons, refined["absrel"] <= limit, f"AbsRel {refined['absrel']:.4f} <= {limit:.4f}")
    if "delta1" in teacher and "delta1" in refined:
        limit = teacher["delta1"] - cfg.delta1_tolerance
        ok &= _check(reasons, refined["delta1"] >= limit, f"delta1 {refined['delta1']:.4f} >= {limit:.4f}")
    ok &= check_agreement(reasons, agreement, cfg)
    metric = next((m for m in cfg.flicker_metrics if m in teacher and m in refined), None)
    if metric is None:
        return GateResult(False, [*reasons, "FAIL no flicker metric available for both teacher and refined"])
    t, r = teacher[metric], refined[metric]
    reduction = 0.0 if t <= 0 else 1.0 - r / t
    ok &= _check(
        reasons,
        reduction >= cfg.min_flicker_reduction,
        f"{metric} {r:.4g} vs teacher {t:.4g}: {100 * reduction:.1f}% lower"
        f" (need >= {100 * cfg.min_flicker_reduction:.0f}%)",
    )
    return GateResult(bool(ok), reasons, metric)
