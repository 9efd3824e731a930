"""The promotion gate: accuracy no worse, scale kept on every video, flicker clearly lower, reasons for every check."""

from __future__ import annotations

import math

import pytest

from evaluation.config import EvaluateConfig
from evaluation.gate import agreement_limit, evaluate_gate

TEACHER = {"absrel": 0.060, "delta1": 0.950, "tae": 2.0, "frame_change": 0.04}
AGREES = {"v": {"scale_bias": 0.001, "scale_drift": 0.004, "teacher_band": 0.03}}  # well inside 2 × 0.03


def test_pass_when_accurate_and_stable():
    result = evaluate_gate(TEACHER, {"absrel": 0.058, "delta1": 0.951, "tae": 1.0}, EvaluateConfig(), AGREES)
    assert result.passed and result.flicker_metric == "tae"
    assert all(r.startswith("PASS") for r in result.reasons) and len(result.reasons) == 4


def test_fail_on_accuracy_even_if_flicker_drops():
    result = evaluate_gate(TEACHER, {"absrel": 0.0612, "delta1": 0.951, "tae": 0.5}, EvaluateConfig(), AGREES)
    assert not result.passed
    assert [" ".join(r.split()[:2]) for r in result.reasons] == [
        "FAIL AbsRel", "PASS delta1", "PASS teacher", "PASS tae"
    ]


def test_tolerances_come_from_config():
    refined = {"absrel": 0.0605, "delta1": 0.9495, "tae": 1.5}
    assert evaluate_gate(TEACHER, refined, EvaluateConfig(), AGREES).passed
    strict = EvaluateConfig(absrel_tolerance=0.0, delta1_tolerance=0.0)
    assert not evaluate_gate(TEACHER, refined, strict, AGREES).passed


def test_fail_when_flicker_does_not_drop_enough_or_is_missing():
    cfg = EvaluateConfig()
    assert not evaluate_gate(TEACHER, {"absrel": 0.06, "delta1": 0.95, "tae": 1.9}, cfg, AGREES).passed
    missing = evaluate_gate({"absrel": 0.06}, {"absrel": 0.05}, cfg, AGREES)
    assert not missing.passed and "no flicker metric" in missing.reasons[-1]


def test_falls_back_to_the_next_flicker_metric_without_ground_truth():
    result = evaluate_gate({"frame_change": 0.04}, {"frame_change": 0.02}, EvaluateConfig(), AGREES)
    assert result.passed and result.flicker_metric == "frame_change" and len(result.reasons) == 2


# ------------------------------------------------------------------------------------- teacher agreement


def _agreement_reason(agreement, cfg=None) -> tuple[bool, str]:
    result = evaluate_gate({"frame_change": 0.04}, {"frame_change": 0.02}, cfg or EvaluateConfig(), agreement)
    (reason,) = [r for r in result.reasons if "teacher agreement" in r]
    return result.passed, reason


def test_the_limit_is_k_times_the_teacher_band_with_a_floor():
    cfg = EvaluateConfig()
    assert (cfg.agreement_k, cfg.agreement_floor) == (3.0, 0.01)
    assert agreement_limit(0.03, cfg) == pytest.approx(0.09)
    assert agreement_limit(0.001, cfg) == 0.01  # a near-perfect teacher still allows 1 %
    assert agreement_limit(math.nan, cfg) == 0.01  # one frame: no band
    assert agreement_limit(0.03, EvaluateConfig(agreement_k=2.0)) == 0.06


def test_a_drifting_model_fails_without_ground_truth_and_the_reason_gives_the_numbers():
    drifting = {"v": {"scale_bias": 0.02, "scale_drift": 0.0712, "teacher_band": 0.03}}
    passed, reason = _agreement_reason(drifting, EvaluateConfig(agreement_k=2.0))
    assert not passed
    assert reason == (
        "FAIL teacher agreement (v): |scale bias| 0.0200 <= 0.0600, scale drift 0.0712 > 0.0600"
        " (limit max(2 × teacher band 0.0300, 0.01))"
    )
    # a constant over-scale: the bias alone is over
    passed, reason = _agreement_reason({"v": {"scale_bias": -0.0953, "scale_drift": 0.0953, "teacher_band": 0.005}})
    assert not passed and "|scale bias| 0.0953 > 0.0150" in reason


def test_the_same_offset_passes_against_a_noisier_teacher():
    offset = {"scale_bias": 0.0953, "scale_drift": 0.0953}
    assert not _agreement_reason({"v": {**offset, "teacher_band": 0.02}})[0]  # limit 0.04
    assert _agreement_reason({"v": {**offset, "teacher_band": 0.1}})[0]  # limit 0.2: within the teacher's noise
    assert _agreement_reason({"v": {**offset, "teacher_band": 0.02}}, EvaluateConfig(agreement_k=5.0))[0]


def test_agreement_is_judged_per_video_so_opposite_drifts_do_not_cancel():
    agreement = {
        "a": {"scale_bias": 0.08, "scale_drift": 0.08, "teacher_band": 0.02},
        "b": {"scale_bias": -0.08, "scale_drift": 0.08, "teacher_band": 0.02},
        "c": {"scale_bias": 0.0, "scale_drift": 0.001, "teacher_band": 0.02},
    }
    passed, reason = _agreement_reason(agreement)
    assert not passed and reason.endswith("2 of 3 videos over the limit")
    passed, reason = _agreement_reason({"c": agreement["c"], "d": {**agreement["c"], "scale_drift": 0.03}})
    assert passed and reason.startswith("PASS teacher agreement (d)")  # the worst video is named


def test_missing_or_undefined_agreement_fails_even_when_accurate():
    accurate = {"absrel": 0.05, "delta1": 0.96, "tae": 1.0}
    for agreement in (None, {}, {"v": {"scale_bias": math.nan, "scale_drift": math.nan, "teacher_band": 0.03}}):
        result = evaluate_gate(TEACHER, accurate, EvaluateConfig(), agreement)
        assert not result.passed and any(r.startswith("FAIL teacher agreement") for r in result.reasons), agreement
