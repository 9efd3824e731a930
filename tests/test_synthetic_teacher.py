"""Simulated teacher: determinism, order independence, calibration, confidence and the Teacher wrapper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from steadydepth.config import SyntheticTeacherConfig, TeacherConfig
from steadydepth.errors import TeacherUnavailableError
from steadydepth.synth.calibrate import evaluate, frame_to_frame_change, load_7scenes_depth, run_teacher
from steadydepth.synth.generate import render_video
from steadydepth.synth.teacher_model import MODEL_VERSION, simulate_teacher
from steadydepth.teachers.base import FrameBatch
from steadydepth.teachers.registry import build_teacher
from steadydepth.teachers.synthetic import SyntheticTeacher, default_intrinsics
from steadydepth.video.types import VideoInfo

SEVEN_SCENES = Path(__file__).resolve().parents[2] / "shared/data/7scenes-redkitchen-150-199"
PARAMS = SyntheticTeacherConfig()


@pytest.fixture(scope="module")
def static_video():
    return render_video(1, n_frames=24, size=(96, 160), seed=0)


@pytest.fixture(scope="module")
def vr_video():
    return render_video(0, n_frames=24, size=(96, 160), seed=0)


def _info(name: str, size: tuple[int, int], K: np.ndarray | None = None) -> VideoInfo:
    return VideoInfo(
        source=f"{name}.mp4",
        name=name,
        content_hash="0",
        source_fps=30.0,
        fps=30.0,
        num_frames=100,
        original_size=size,
        size=size,
        K=K,
        has_ground_truth=True,
    )


def _batch(
    depth: np.ndarray,
    frames: list[int],
    name: str = "clip",
    K: torch.Tensor | None = None,
    video_K: np.ndarray | None = None,
) -> FrameBatch:
    h, w = depth.shape[-2:]
    gt = torch.from_numpy(np.stack([depth[f] for f in frames]))[:, None]
    return FrameBatch(
        video=_info(name, (h, w), video_K),
        indices=list(range(len(frames))),
        source_indices=frames,
        rgb=torch.zeros(len(frames), 3, h, w, dtype=torch.uint8),
        K=K,
        gt_depth=gt,
    )


def test_deterministic_and_seeded(vr_video) -> None:
    gt = vr_video.depth[3]
    d1, c1 = simulate_teacher(gt, video_key="v", frame=3, params=PARAMS)
    d2, c2 = simulate_teacher(gt.copy(), video_key="v", frame=3, params=PARAMS)
    assert d1.tobytes() == d2.tobytes() and c1.tobytes() == c2.tobytes()
    other_seed, _ = simulate_teacher(gt, video_key="v", frame=3, params=SyntheticTeacherConfig(seed=1))
    other_key, _ = simulate_teacher(gt, video_key="w", frame=3, params=PARAMS)
    other_frame, _ = simulate_teacher(gt, video_key="v", frame=4, params=PARAMS)
    for other in (other_seed, other_key, other_frame):
        assert not np.array_equal(d1, other)


def test_order_and_batch_independent(vr_video) -> None:
    teacher = SyntheticTeacher(PARAMS)
    alone = teacher.predict(_batch(vr_video.depth, [5]))
    batched = teacher.predict(_batch(vr_video.depth, [2, 9, 5, 3]))
    reversed_ = teacher.predict(_batch(vr_video.depth, [3, 5, 9, 2]))
    assert torch.equal(alone.depth[0], batched.depth[2])
    assert torch.equal(alone.depth[0], reversed_.depth[1])
    assert torch.equal(alone.confidence[0], batched.confidence[2])


def test_output_finite_positive_with_invalid_gt(vr_video) -> None:
    gt = vr_video.depth[0].copy()
    gt[10:40, 20:80] = np.nan
    gt[0, :] = 0.0
    depth, conf = simulate_teacher(gt, video_key="v", frame=0, params=PARAMS)
    assert depth.dtype == np.float32 and conf.dtype == np.float32
    assert np.isfinite(depth).all() and (depth > 0).all()
    assert (conf >= 0).all() and (conf <= 1).all()
    # Filled holes take plausible (nearby) depths.
    assert np.nanmin(gt) * 0.5 < depth[10:40, 20:80].min() and depth[10:40, 20:80].max() < np.nanmax(gt) * 2
    empty, _ = simulate_teacher(np.full((8, 8), np.nan, np.float32), video_key="v", frame=0, params=PARAMS)
    assert np.isfinite(empty).all() and (empty > 0).all()


def test_calibrated_on_generated_video(vr_video, static_video) -> None:
    for video in (vr_video, static_video):
        pred, conf = run_teacher(video.depth, video.plan.name, PARAMS)
        m = evaluate(video.depth, pred, conf)
        assert 0.04 <= m["abs_rel"] <= 0.09, m
        assert 0.90 <= m["delta1"] <= 0.98, m
        assert m["conf_spearman"] < -0.1, m  # confidence is lower where the error is larger


def test_flicker_on_static_pixels(static_video) -> None:
    pred, _ = run_teacher(static_video.depth, static_video.plan.name, PARAMS)
    static = np.all(static_video.depth == static_video.depth[:1], axis=0)
    assert static.mean() > 0.5
    gt_change = frame_to_frame_change(static_video.depth, static)
    teacher_change = frame_to_frame_change(pred, static)
    assert gt_change == 0.0
    assert teacher_change > 0.02  # clearly visible flicker: several percent per frame


def test_confidence_correlates_with_error(vr_video) -> None:
    gt = vr_video.depth[7]
    depth, conf = simulate_teacher(gt, video_key="v", frame=7, params=PARAMS)
    err = np.abs(depth - gt) / gt
    assert np.corrcoef(conf.ravel(), err.ravel())[0, 1] < 0


def test_teacher_needs_ground_truth() -> None:
    batch = FrameBatch(
        video=_info("kitchen", (32, 48)),
        indices=[0],
        source_indices=[0],
        rgb=torch.zeros(1, 3, 32, 48, dtype=torch.uint8),
    )
    with pytest.raises(TeacherUnavailableError, match=r"video kitchen has no kitchen\.gt\.zarr sidecar"):
        SyntheticTeacher().predict(batch)


def test_teacher_identity_and_registry() -> None:
    teacher = build_teacher(TeacherConfig(backend="synthetic"))
    assert isinstance(teacher, SyntheticTeacher)
    assert teacher.id == "synthetic" and teacher.version == MODEL_VERSION == "sim-1"


def test_teacher_intrinsics(vr_video) -> None:
    teacher = SyntheticTeacher()
    given = torch.tensor([[100.0, 0, 50], [0, 100.0, 30], [0, 0, 1]]).expand(2, 3, 3).clone()
    out = teacher.predict(_batch(vr_video.depth, [0, 1], K=given))
    assert torch.equal(out.K, given)
    video_K = np.array([[90.0, 0, 80], [0, 90.0, 48], [0, 0, 1]])
    out = teacher.predict(_batch(vr_video.depth, [0, 1], video_K=video_K))
    assert out.K.shape == (2, 3, 3) and np.allclose(out.K[1].numpy(), video_K)
    out = teacher.predict(_batch(vr_video.depth, [0]))
    np.testing.assert_allclose(out.K[0].numpy(), default_intrinsics((96, 160)), rtol=1e-6)
    assert out.K[0, 0, 0].item() == pytest.approx(0.8 * 160)
    assert out.depth.shape == (1, 1, 96, 160) and out.confidence.shape == (1, 1, 96, 160)


@pytest.mark.skipif(not SEVEN_SCENES.is_dir(), reason="7-Scenes clip not available")
def test_calibrated_on_7scenes() -> None:
    gt = load_7scenes_depth(SEVEN_SCENES)
    assert np.isnan(gt).any()  # real holes exercise the fill
    pred, conf = run_teacher(gt, SEVEN_SCENES.name, PARAMS)
    assert np.isfinite(pred).all() and (pred > 0).all()
    m = evaluate(gt, pred, conf)
    assert 0.04 <= m["abs_rel"] <= 0.09, m
    assert 0.90 <= m["delta1"] <= 0.98, m
    assert m["conf_spearman"] < 0, m
    assert frame_to_frame_change(pred) > 2 * frame_to_frame_change(gt)
