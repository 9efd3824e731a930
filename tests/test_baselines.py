"""Baseline filters: analytic answers for EMA, gating and the causal median."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.baselines import (
    EMAFilter,
    MotionGatedEMAFilter,
    TemporalMedianFilter,
    ema,
    median_filter_temporal,
    motion_gated_ema,
)
from steadydepth.errors import InputError


def test_ema_of_constant_is_constant() -> None:
    depth = np.full((10, 3, 4), 2.5, dtype=np.float32)
    out = ema(depth, alpha=0.3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, depth, rtol=1e-6)


def test_ema_reduces_iid_jitter_by_analytic_factor() -> None:
    alpha, sigma, t = 0.2, 0.05, 6000
    log_noise = sigma * np.random.default_rng(0).standard_normal((t, 4, 4))
    out = ema(2.0 * np.exp(log_noise), alpha)
    burn_in = 100
    ratio = np.log(out[burn_in:]).std() / log_noise[burn_in:].std()
    assert ratio == pytest.approx(math.sqrt(alpha / (2 - alpha)), rel=0.05)


def test_ema_is_log_domain_recursion() -> None:
    depth = np.array([1.0, 4.0, 2.0])[:, None, None] * np.ones((3, 1, 1))
    out = ema(depth, alpha=0.5)[:, 0, 0]
    assert out == pytest.approx([1.0, 2.0, 2.0])  # exp(0.5 ln 4) = 2; exp(0.5 ln 2 + 0.5 ln 2) = 2


def test_motion_gated_ema_follows_a_step_where_ema_lags() -> None:
    depth = np.ones((20, 2, 2))
    depth[10:, 0, 0] = 2.0  # one pixel steps from 1 m to 2 m
    plain = ema(depth, alpha=0.1)
    gated = motion_gated_ema(depth, alpha=0.1, threshold=0.1)
    assert gated[10, 0, 0] == pytest.approx(2.0)
    assert plain[10, 0, 0] == pytest.approx(2.0**0.1)
    assert gated[10, 1, 1] == pytest.approx(1.0)  # untouched pixels stay smoothed


def test_motion_gated_ema_smooths_small_jitter_like_ema() -> None:
    rng = np.random.default_rng(1)
    depth = 3.0 * np.exp(0.01 * rng.standard_normal((50, 3, 3)))
    np.testing.assert_allclose(motion_gated_ema(depth, alpha=0.2, threshold=0.2), ema(depth, 0.2))


def test_motion_gated_ema_rgb_cue() -> None:
    depth = np.ones((6, 2, 2))
    depth[3:] = 1.05  # a small depth change that the depth cue alone would smooth
    rgb = np.zeros((6, 2, 2, 3), dtype=np.uint8)
    rgb[3:, 0, 0] = 200  # the colour changes at pixel (0, 0) only
    out = motion_gated_ema(depth, rgb, alpha=0.1, threshold=0.1)
    assert out[3, 0, 0] == pytest.approx(1.05)
    assert out[3, 1, 1] == pytest.approx(1.05**0.1)
    with pytest.raises(InputError):
        MotionGatedEMAFilter(0.1, 0.1, cue="rgb").update(depth[0])


def test_soft_gate_ramp() -> None:
    filt = MotionGatedEMAFilter(alpha=0.2, threshold=0.1, softness=0.5)
    g = filt.gain(np.array([0.0, 0.05, 0.1, 0.15, 1.0]))
    assert g == pytest.approx([0.2, 0.2, 0.6, 1.0, 1.0])


def test_explicit_motion_cue() -> None:
    depth = np.ones((3, 1, 2))
    depth[2] = 3.0
    motion = np.zeros((3, 1, 2))
    motion[2, 0, 0] = 5.0
    out = motion_gated_ema(depth, alpha=0.5, threshold=1.0, motion=motion)
    assert out[2, 0, 0] == pytest.approx(3.0)
    assert out[2, 0, 1] == pytest.approx(3.0**0.5)


def test_causal_temporal_median() -> None:
    seq = np.array([1.0, 5.0, 2.0, 100.0, 3.0, 4.0])
    out = median_filter_temporal(seq[:, None, None] * np.ones((6, 1, 1)), window=3)[:, 0, 0]
    assert out == pytest.approx([1.0, 3.0, 2.0, 5.0, 3.0, 4.0])  # the spike at t=3 never comes through alone


def test_invalid_pixels_keep_previous_estimate() -> None:
    depth = np.full((4, 1, 2), 2.0)
    depth[1, 0, 0] = np.nan
    depth[2, 0, 0] = 0.0
    depth[0, 0, 1] = np.nan  # pixel never seen before t = 1
    for filt in (EMAFilter(0.5), MotionGatedEMAFilter(0.5, 0.1), TemporalMedianFilter(3)):
        outs = [filt.update(d) for d in depth]
        assert outs[1][0, 0] == pytest.approx(2.0) and outs[2][0, 0] == pytest.approx(2.0)
        assert math.isnan(outs[0][0, 1]) and outs[1][0, 1] == pytest.approx(2.0)


def test_reset_and_bad_parameters() -> None:
    filt = EMAFilter(0.5)
    filt.update(np.ones((2, 2)))
    filt.reset()
    assert filt.update(np.full((2, 2), 4.0)) == pytest.approx(np.full((2, 2), 4.0))
    with pytest.raises(InputError):
        EMAFilter(0.0)
    with pytest.raises(InputError):
        TemporalMedianFilter(0)
    with pytest.raises(InputError):
        ema(np.ones((2, 2)), 0.5)
