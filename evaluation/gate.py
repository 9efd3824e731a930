"""The promotion gate: a refined model passes only if it is no less accurate than the teacher per frame
and clearly less flickery. Orchestration promotes a model in the registry only when this passes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from evaluation.config import EvaluateConfig


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


def evaluate_gate(teacher: Mapping[str, float], refined: Mapping[str, float], cfg: EvaluateConfig) -> GateResult:
    """Compare dataset-mean metrics of the refined depth with the teacher's.

    Accuracy (when ground truth exists): AbsRel ≤ teacher + absrel_tolerance and δ1 ≥ teacher − delta1_tolerance.
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
