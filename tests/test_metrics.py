"""Metric suite: hand-made cases with known answers."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from evaluation.agreement import teacher_agreement, windowed_max_abs_mean
from evaluation.config import EvaluateConfig
from evaluation.metrics import (
    SUITE_METRICS,
    accuracy_metrics,
    evaluate_sequence,
    flow_warps,
    frame_change,
    mean_over_sequences,
    opw,
    robust_normalize,
    static_flicker,
    static_mask_from_gt,
    static_mask_from_rgb,
    tae,
)
from steadydepth.errors import InputError

CAPS = {"min_depth": 0.1, "max_depth": 10.0}


def _gt(t: int = 4, h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(1.0, 5.0, size=(t, h, w))


# ------------------------------------------------------------------------------------------ accuracy


def test_perfect_prediction() -> None:
    gt = _gt()
    m = accuracy_metrics(gt.copy(), gt, **CAPS)
    assert m["absrel"] == 0 and m["sqrel"] == 0 and m["rmse"] == 0 and m["rmse_log"] == 0
    assert m["delta1"] == m["delta2"] == m["delta3"] == 1.0


def test_constant_overscale_and_median_alignment() -> None:
    gt = _gt()
    pred = 1.1 * gt
    m = accuracy_metrics(pred, gt, **CAPS)
    assert m["absrel"] == pytest.approx(0.1, abs=1e-12)
    assert m["rmse_log"] == pytest.approx(math.log(1.1), abs=1e-12)
    assert m["delta1"] == 1.0
    aligned = accuracy_metrics(pred, gt, **CAPS, alignment="median")
    assert aligned["absrel"] == pytest.approx(0.0, abs=1e-12)
    # a 30 % over-scale leaves delta1 (ratio 1.3 > 1.25) at 0 but delta2 at 1
    m = accuracy_metrics(1.3 * gt, gt, **CAPS)
    assert m["delta1"] == 0.0 and m["delta2"] == 1.0


def test_lstsq_disparity_recovers_affine_disparity_distortion() -> None:
    gt = _gt()
    s, b = 2.0, 0.05  # gt disparity = s * pred disparity + b
    pred = 1.0 / ((1.0 / gt - b) / s)
    assert accuracy_metrics(pred, gt, **CAPS)["absrel"] > 0.1
    m = accuracy_metrics(pred, gt, **CAPS, alignment="lstsq_disparity")
    assert m["absrel"] == pytest.approx(0.0, abs=1e-9)
    assert m["delta1"] == 1.0


def test_per_frame_jitter_survives_per_sequence_alignment() -> None:
    gt = _gt()
    scales = np.array([0.9, 1.0, 1.1, 1.05])
    pred = scales[:, None, None] * gt
    assert accuracy_metrics(pred, gt, **CAPS)["absrel"] == pytest.approx(np.mean(np.abs(scales - 1)), abs=1e-12)
    for alignment in ("median", "lstsq_disparity"):
        assert accuracy_metrics(pred, gt, **CAPS, alignment=alignment)["absrel"] > 0.02


def test_invalid_gt_and_pred_are_excluded() -> None:
    gt = _gt()
    pred = gt.copy()
    gt[0, 0, 0] = np.nan
    gt[0, 0, 1] = 0.0
    gt[1, 0, 2] = 10.0  # == max_depth: outside the open interval
    gt[1, 0, 3] = 50.0
    gt[2, 0, 4] = np.inf
    pred[0, 0, :2] = 100.0  # garbage where GT is invalid
    pred[1, 0, 2:4] = 0.5
    pred[2, 0, 4] = 7.0
    pred[3, 0, 0] = np.nan  # invalid prediction: excluded too
    pred[3, 0, 1] = -1.0
    m = accuracy_metrics(pred, gt, **CAPS)
    assert m["absrel"] == 0 and m["delta1"] == 1


def test_frames_weigh_equally_not_pixels() -> None:
    gt = np.full((2, 4, 4), 2.0)
    gt[0] = np.nan
    gt[0, 0, 0] = 2.0  # frame 0 has one valid pixel, with AbsRel 0.5
    pred = np.full((2, 4, 4), 2.0)
    pred[0, 0, 0] = 3.0
    assert accuracy_metrics(pred, gt, **CAPS)["absrel"] == pytest.approx(0.25)


def test_all_invalid_gives_nan_and_shape_mismatch_raises() -> None:
    gt = np.full((2, 3, 3), np.nan)
    assert math.isnan(accuracy_metrics(np.ones_like(gt), gt, **CAPS)["absrel"])
    with pytest.raises(InputError):
        accuracy_metrics(np.ones((2, 3, 3)), np.ones((2, 3, 4)), **CAPS)


def test_mean_over_sequences_skips_nan() -> None:
    out = mean_over_sequences([{"absrel": 0.1, "tae": math.nan}, {"absrel": 0.3, "tae": 2.0}, {"opw": 1.0}])
    assert out == pytest.approx({"absrel": 0.2, "tae": 2.0, "opw": 1.0})


# ----------------------------------------------------------------------------------------------- TAE

FX, H, W = 100.0, 24, 32
K = np.array([[FX, 0.0, 15.5], [0.0, FX, 11.5], [0.0, 0.0, 1.0]])


def _translating_plane(n: int = 4, depth: float = 2.0, px_per_frame: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Fronto-parallel plane; the camera moves along x so the image shifts by an integer pixel count."""
    tx = px_per_frame * depth / FX
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 0, 3] = tx * np.arange(n)  # camera-to-world
    return np.full((n, H, W), depth), poses


def test_tae_zero_for_consistent_plane() -> None:
    depth, poses = _translating_plane()
    assert tae(depth, K, poses, **CAPS) == 0.0
    assert tae(depth, np.broadcast_to(K, (4, 3, 3)), poses, **CAPS) == 0.0


def test_tae_known_answer_for_one_scaled_frame() -> None:
    depth, poses = _translating_plane(n=4)
    depth[1] *= 1.05  # a 5 % scale error on one interior frame
    # pairs (0,1) and (1,2): fwd/bwd errors 0.05/1.05 (target scaled) and 0.05 (source scaled); pair (2,3): 0
    expected = 100 * 2 * (0.05 / 1.05 + 0.05) / (2 * 3)
    assert tae(depth, K, poses, **CAPS) == pytest.approx(expected, rel=1e-12)


def test_tae_respects_depth_caps_and_no_overlap() -> None:
    depth, poses = _translating_plane(n=3)
    depth[1] = 20.0  # beyond max_depth: frame 1 is invalid, so every direction touching it is left out
    assert math.isnan(tae(depth, K, poses, **CAPS))
    depth, poses = _translating_plane(n=3, px_per_frame=40)  # moves out of view entirely
    assert math.isnan(tae(depth, K, poses, **CAPS))


def test_tae_rotating_camera_on_exact_depth_is_small() -> None:
    """A camera panning about y over a plane: exact GT depth reprojects within the rounding error."""
    n = 3
    poses = np.tile(np.eye(4), (n, 1, 1))
    yy, xx = np.mgrid[:H, :W].astype(np.float64)
    depth = np.empty((n, H, W))
    for i in range(n):
        a = np.radians(1.0 * i)
        r = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        poses[i, :3, :3] = r
        rays = r @ np.stack([(xx - K[0, 2]) / FX, (yy - K[1, 2]) / FX, np.ones_like(xx)]).reshape(3, -1)
        depth[i] = (3.0 / rays[2]).reshape(H, W)  # the plane world z = 3
    assert tae(depth, K, poses, **CAPS) < 0.5


# ----------------------------------------------------------------------------------- static flicker


def test_static_flicker_equals_std_over_mean_of_scales() -> None:
    scales = np.random.default_rng(1).uniform(0.9, 1.1, size=20)
    depth = scales[:, None, None] * np.full((20, 6, 7), 3.0)
    mask = np.zeros((6, 7), dtype=bool)
    mask[2:5, 1:4] = True
    assert static_flicker(depth, mask) == pytest.approx(np.std(scales) / np.mean(scales), rel=1e-12)
    assert static_flicker(np.full((5, 6, 7), 3.0), mask) == 0.0
    assert math.isnan(static_flicker(depth, np.zeros((6, 7), dtype=bool)))


def test_static_flicker_time_varying_mask() -> None:
    depth = np.array([1.0, 3.0, 100.0, 100.0])[:, None, None] * np.ones((4, 2, 2))
    mask = np.zeros((4, 2, 2), dtype=bool)
    mask[:2] = True  # only the first two frames are static
    assert static_flicker(depth, mask) == pytest.approx(1.0 / 2.0)  # std(1, 3) = 1, mean = 2


def test_static_masks() -> None:
    gt = np.full((5, 4, 4), 2.0)
    gt[3, 0, 0] = 2.5  # changes by 25 %
    gt[2, 1, 1] = np.nan
    mask = static_mask_from_gt(gt, rel_tol=0.01)
    assert mask.sum() == 14 and not mask[0, 0] and not mask[1, 1]
    poses = np.tile(np.eye(4), (5, 1, 1))
    assert static_mask_from_gt(gt, poses).sum() == 14
    poses[4, 0, 3] = 0.1  # the camera moved 10 cm: no static-camera pixels
    assert not static_mask_from_gt(gt, poses).any()

    rgb = np.full((5, 4, 4, 3), 100, dtype=np.uint8)
    rgb[2, 3, 3, 1] = 160
    rgb[1, 0, 0, 0] = 102  # small change, under the threshold
    mask = static_mask_from_rgb(rgb, threshold=0.03)
    assert mask.sum() == 15 and not mask[3, 3]


def test_frame_change_known_answer() -> None:
    depth = np.array([1.0, 1.1, 0.99])[:, None, None] * np.full((3, 3, 3), 2.0)
    assert frame_change(depth) == pytest.approx((0.1 + 0.11 / 1.1) / 2, rel=1e-12)
    mask = np.ones((3, 3), dtype=bool)
    depth[1, 0, 0] = 50.0
    mask[0, 0] = False
    assert frame_change(depth, mask) == pytest.approx(0.1, rel=1e-12)
    assert math.isnan(frame_change(depth[:1]))


# ----------------------------------------------------------------------------------------------- OPW


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour texture (uint8) that optical flow can track."""
    noise = np.random.default_rng(seed).uniform(0, 255, size=(h, w, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2.0) * 3 - 255, 0, 255).astype(np.uint8)


def _smooth_depth(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    return 2.0 + np.sin(xx / 9.0) + 0.5 * np.cos(yy / 7.0)


def test_robust_normalize_matches_nvds() -> None:
    d = np.array([[1.0, 2.0, 3.0, 10.0]])
    out = robust_normalize(d, np.ones_like(d, dtype=bool))
    med = 2.5
    assert out == pytest.approx((d - med) / np.mean(np.abs(d - med)))
    assert np.all(robust_normalize(np.full((2, 2), 4.0), np.ones((2, 2), dtype=bool)) == 0)


@pytest.mark.parametrize("flow", ["dis", "farneback"])
def test_opw_static_scene(flow: str) -> None:
    t, h, w = 4, 48, 64
    rgb = np.broadcast_to(_texture(h, w), (t, h, w, 3)).copy()
    assert opw(np.full((t, h, w), 3.0), rgb, flow=flow) == 0.0
    depth = np.broadcast_to(_smooth_depth(h, w), (t, h, w)).copy()
    assert opw(depth, rgb, flow=flow) < 1e-3
    noisy = depth * np.exp(0.05 * np.random.default_rng(0).standard_normal((t, h, w)))
    assert opw(noisy, rgb, flow=flow) > 0.03


def test_opw_frame_normalisation_is_blind_to_global_scale_flicker() -> None:
    t, h, w = 4, 48, 64
    rgb = np.broadcast_to(_texture(h, w), (t, h, w, 3)).copy()
    depth = np.array([1.0, 1.1, 0.9, 1.05])[:, None, None] * _smooth_depth(h, w)
    assert opw(depth, rgb) < 1e-3  # NVDS convention: per-frame scale removed
    assert opw(depth, rgb, normalize="sequence") > 0.1
    assert opw(depth, rgb, normalize="none") > 0.1


@pytest.mark.parametrize("flow", ["dis", "farneback"])
def test_opw_translating_scene_with_consistent_depth(flow: str) -> None:
    t, h, w, shift = 5, 64, 80, 2
    big_rgb = _texture(h, w + shift * t, seed=3)
    big_depth = _smooth_depth(h, w + shift * t)
    rgb = np.stack([big_rgb[:, shift * i : shift * i + w] for i in range(t)])
    depth = np.stack([big_depth[:, shift * i : shift * i + w] for i in range(t)])
    frozen = np.broadcast_to(depth[0], depth.shape).copy()  # ignores the motion
    for normalize in ("sequence", "none"):
        assert opw(depth, rgb, flow=flow, normalize=normalize) < 2e-3
        assert opw(frozen, rgb, flow=flow, normalize=normalize) > 0.1
    # per-frame (NVDS) normalisation: each crop has its own median / scale, so a small residual remains
    consistent = opw(depth, rgb, flow=flow)
    assert consistent < 0.05
    assert opw(frozen, rgb, flow=flow) > 4 * consistent


def test_opw_rejects_bad_shapes() -> None:
    with pytest.raises(InputError):
        opw(np.ones((2, 4, 4)), np.zeros((2, 4, 5, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="do not match"):
        opw(np.ones((3, 32, 32)), warps=flow_warps(np.zeros((2, 32, 32, 3), dtype=np.uint8)))
    with pytest.raises(InputError, match="rgb or its flow_warps"):
        opw(np.ones((2, 4, 4)))


@pytest.mark.parametrize("flow", ["dis", "farneback"])
def test_opw_with_precomputed_flow_warps_is_the_same_number(flow: str) -> None:
    t, h, w, shift = 5, 48, 64, 2
    big_rgb = _texture(h, w + shift * t, seed=4)
    rgb = np.stack([big_rgb[:, shift * i : shift * i + w] for i in range(t)])
    rng = np.random.default_rng(1)
    warps = flow_warps(rgb, flow=flow)
    assert len(warps.maps) == len(warps.masks) == t - 1 and warps.shape == (t, h, w)
    for normalize in ("frame", "sequence", "none"):
        depth = _smooth_depth(h, w) * np.exp(0.05 * rng.standard_normal((t, h, w)))
        depth[0, :3] = np.nan  # invalid pixels take the same path
        expected = opw(depth, rgb, flow=flow, normalize=normalize)
        assert expected > 0.01
        assert opw(depth, warps=warps, normalize=normalize) == expected  # exactly: the same arithmetic


# -------------------------------------------------------------------------------- teacher agreement


def _direct_agreement(teacher: np.ndarray, refined: np.ndarray, window: int) -> tuple[float, float, float]:
    """The module docstring's formulas, written out with plain loops."""
    r, m = [], []
    for t in range(len(teacher)):
        ok_t = np.isfinite(teacher[t]) & (teacher[t] > 0)
        both = ok_t & np.isfinite(refined[t]) & (refined[t] > 0)
        if both.any():
            r.append(np.median(np.log(refined[t][both] / teacher[t][both])))
        if ok_t.any():
            m.append(np.median(np.log(teacher[t][ok_t])))
    w = min(window, len(r))
    drift = max(abs(np.mean(r[i : i + w])) for i in range(len(r) - w + 1))
    return float(np.mean(r)), float(drift), float(np.median(np.abs(np.diff(m))))


def test_teacher_agreement_matches_a_direct_numpy_computation() -> None:
    rng = np.random.default_rng(3)
    t, h, w = 9, 5, 7
    teacher = _gt(t, h, w, seed=5) * np.exp(0.04 * rng.standard_normal((t, 1, 1)))  # global scale jitter
    refined = teacher * np.exp(0.01 * np.arange(t)[:, None, None] + 0.02 * rng.standard_normal((t, h, w)))
    teacher[2, 0, :3] = np.nan
    teacher[4, 1, 1] = 0.0
    refined[6, 2, :] = -1.0
    out = teacher_agreement(teacher, refined, window=4)
    bias, drift, band = _direct_agreement(teacher, refined, 4)
    assert out["scale_bias"] == pytest.approx(bias, rel=1e-12)
    assert out["scale_drift"] == pytest.approx(drift, rel=1e-12)
    assert out["teacher_band"] == pytest.approx(band, rel=1e-12)
    assert 0.02 < out["scale_bias"] < out["scale_drift"]  # the drift's late window sits furthest off


def test_teacher_agreement_of_known_scale_errors() -> None:
    steps = np.log([1.0, 1.02, 1.0, 0.98] * 2 + [1.0, 1.02])  # the teacher's own scale jumps by ~2 % a frame
    teacher = _gt(t=1) * np.exp(steps)[:, None, None]  # one scene, only the scale changes
    same = teacher_agreement(teacher, teacher.copy(), window=3)
    assert same["scale_bias"] == 0 and same["scale_drift"] == 0
    assert same["teacher_band"] == pytest.approx(math.log(1.02), rel=1e-9)
    over = teacher_agreement(teacher, 1.1 * teacher, window=3)
    assert over["scale_bias"] == pytest.approx(math.log(1.1)) and over["scale_drift"] == pytest.approx(math.log(1.1))
    ramp = teacher_agreement(teacher, teacher * np.exp(0.01 * np.arange(10))[:, None, None], window=3)
    assert ramp["scale_bias"] == pytest.approx(0.045) and ramp["scale_drift"] == pytest.approx(0.08)  # frames 7..9
    assert teacher_agreement(teacher, 1.1 * teacher, window=30)["scale_drift"] == pytest.approx(math.log(1.1))


def test_teacher_agreement_skips_frames_without_valid_pixels() -> None:
    teacher = _gt(t=4)
    refined = 1.05 * teacher
    refined[1] = np.nan
    out = teacher_agreement(teacher, refined, window=2)
    assert out["scale_bias"] == pytest.approx(math.log(1.05)) and out["scale_drift"] == pytest.approx(math.log(1.05))
    assert math.isnan(windowed_max_abs_mean(np.array([math.nan, math.nan]), 1))
    assert math.isnan(teacher_agreement(teacher[:1], refined[:1], window=2)["teacher_band"])  # one frame: no band
    with pytest.raises(InputError):
        teacher_agreement(teacher, refined[:3], window=2)


# -------------------------------------------------------------------------------- evaluate_sequence


def test_evaluate_sequence_picks_available_metrics() -> None:
    depth, poses = _translating_plane(n=4)
    rgb = np.broadcast_to(_texture(H, W), (4, H, W, 3)).copy()
    out = evaluate_sequence(
        depth, gt=depth.copy(), K=K, poses=poses, rgb=rgb, static_mask=np.ones((H, W), bool), cfg=EvaluateConfig()
    )
    assert set(out) == set(SUITE_METRICS)
    assert all(isinstance(v, float) for v in out.values())
    assert out["absrel"] == 0 and out["tae"] == 0 and out["static_flicker"] == 0 and out["frame_change"] == 0

    assert set(evaluate_sequence(depth)) == {"frame_change"}
    only_gt = evaluate_sequence(1.1 * depth, gt=depth, min_depth=0.1, max_depth=10.0, alignment="median")
    assert only_gt["absrel"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(InputError):
        evaluate_sequence(depth, gt=depth)  # no depth caps
