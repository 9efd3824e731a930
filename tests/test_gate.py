"""The promotion gate: accuracy no worse, flicker clearly lower, reasons for every check."""

from __future__ import annotations

from evaluation.config import EvaluateConfig
from evaluation.gate import evaluate_gate

TEACHER = {"absrel": 0.060, "delta1": 0.950, "tae": 2.0, "frame_change": 0.04}


def test_pass_when_accurate_and_stable():
    result = evaluate_gate(TEACHER, {"absrel": 0.058, "delta1": 0.951, "tae": 1.0}, EvaluateConfig())
    assert result.passed and result.flicker_metric == "tae"
    assert all(r.startswith("PASS") for r in result.reasons) and len(result.reasons) == 3


def test_fail_on_accuracy_even_if_flicker_drops():
    result = evaluate_gate(TEACHER, {"absrel": 0.0612, "delta1": 0.951, "tae": 0.5}, EvaluateConfig())
    assert not result.passed
    assert [r.split()[0] + " " + r.split()[1] for r in result.reasons] == ["FAIL AbsRel", "PASS delta1", "PASS tae"]


def test_tolerances_come_from_config():
    refined = {"absrel": 0.0605, "delta1": 0.9495, "tae": 1.5}
    assert evaluate_gate(TEACHER, refined, EvaluateConfig()).passed
    strict = EvaluateConfig(absrel_tolerance=0.0, delta1_tolerance=0.0)
    assert not evaluate_gate(TEACHER, refined, strict).passed


def test_fail_when_flicker_does_not_drop_enough_or_is_missing():
    assert not evaluate_gate(TEACHER, {"absrel": 0.06, "delta1": 0.95, "tae": 1.9}, EvaluateConfig()).passed
    missing = evaluate_gate({"absrel": 0.06}, {"absrel": 0.05}, EvaluateConfig())
    assert not missing.passed and "no flicker metric" in missing.reasons[-1]


def test_falls_back_to_the_next_flicker_metric_without_ground_truth():
    result = evaluate_gate({"frame_change": 0.04}, {"frame_change": 0.02}, EvaluateConfig())
    assert result.passed and result.flicker_metric == "frame_change" and len(result.reasons) == 1
