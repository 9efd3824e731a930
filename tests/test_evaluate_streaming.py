"""Streamed evaluation == the whole-array computation: exact medians, chunked accumulators, and evaluate_dataset on
multi-chunk stores whose chunk boundaries fall in awkward places (teacher chunks of 5, refined chunks of 7, a
temporal-median window of 4 that straddles them), compared with the whole-array functions on the same video."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.accuracy import AlignmentFitStream, fit_alignment
from evaluation.agreement import teacher_agreement
from evaluation.baselines import baseline_filters, run_baselines, run_filter
from evaluation.config import EvaluateConfig
from evaluation.evaluate import evaluate_dataset, evaluate_method, load_video
from evaluation.metric_names import AGREEMENT_METRICS
from evaluation.order_stats import GroupedMedian
from evaluation.temporal import StaticMaskAccumulator, static_mask_from_gt
from steadydepth.errors import InputError
from storage.depth_store import DepthStore

T, H, W = 23, 24, 32
TEACHER_CHUNK, REFINED_CHUNK = 5, 7
SPLITS = (0, 1, 3, 4, 9, 10, 16, 23)  # chunk boundaries for the accumulator tests: 1-frame chunks included


def _chunks(a: np.ndarray, splits: tuple[int, ...] = SPLITS) -> list[np.ndarray]:
    return [a[s:e] for s, e in zip(splits[:-1], splits[1:], strict=True)]


def _run_passes(acc, chunks_of_pass) -> int:
    """Feed acc.add every chunk per pass until end_pass() is True; the number of passes."""
    passes = 0
    while True:
        for args in chunks_of_pass():
            acc.add(*args)
        passes += 1
        if acc.end_pass():
            return passes


# ------------------------------------------------------------------------------------------ exact medians


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 7, 500, 501])
def test_grouped_median_is_np_median_bit_for_bit(dtype, n):
    rng = np.random.default_rng(n)
    x = rng.lognormal(0.0, 2.0, n).astype(dtype)
    x[: n // 3] = x[-1]  # repeated values, the median among them for some n
    med = GroupedMedian(1, abs_deviation=True)
    passes = _run_passes(med, lambda: [(c,) for c in np.array_split(rng.permutation(x), 4)])
    assert passes == (2 if dtype == np.float32 else 4)  # 16-bit digits of 32- or 64-bit keys
    exact = np.median(x.astype(np.float64))
    assert med.median()[0] == exact
    assert med.mean_abs_deviation()[0] == pytest.approx(np.mean(np.abs(x - exact)), rel=1e-12)


def test_grouped_median_within_known_bounds_needs_fewer_passes():
    rng = np.random.default_rng(5)
    values = rng.uniform(2.0, 2.06, (31, 500)).astype(np.float32)  # within 3 %: keys differ in the low 19 bits
    values[:, 7] = 1.99  # one group crosses a power of two
    values[3, 7] = 2.01
    groups = np.broadcast_to(np.arange(500), values.shape)
    bounds = values.min(axis=0), values.max(axis=0)
    med = GroupedMedian(500, bounds=bounds)
    passes = _run_passes(med, lambda: [(values[:10], groups[:10]), (values[10:], groups[10:])])
    assert passes == 2  # 11-bit digits for 500 groups: 2 passes instead of 3
    assert np.array_equal(med.median(), np.median(values.astype(np.float64), axis=0))


def test_grouped_median_per_group_with_an_empty_group():
    rng = np.random.default_rng(0)
    values = rng.uniform(1.0, 2.0, (10, 300)).astype(np.float32)
    groups = np.broadcast_to(np.arange(300), values.shape) % 299  # group 299 gets no value
    med = GroupedMedian(300)
    _run_passes(med, lambda: [(values[:3], groups[:3]), (values[3:], groups[3:])])
    expected = [np.median(values[groups == g].astype(np.float64)) for g in range(299)]
    assert np.array_equal(med.median()[:299], expected) and math.isnan(med.median()[299])
    with pytest.raises(InputError, match="float32 values got float64"):
        fresh = GroupedMedian(1)
        fresh.add(values[0])
        fresh.add(values[1].astype(np.float64))


# ------------------------------------------------------------------------------- chunked accumulators


def _ambiguous_gt() -> np.ndarray:
    """GT of a still scene whose pixels need their median to be decided: spread 1.5 % (between rel_tol and
    2 rel_tol). Rows 0-5 mostly at +0.75 % (median there: static), rows 6-11 mostly at 0 (median low: not static),
    the rest random (some either way), one pixel NaN in one frame."""
    rng = np.random.default_rng(3)
    base = rng.uniform(1.0, 4.0, (H, W))
    level = np.full((T, H, W), 1.0075)
    level[:, 6:12] = 1.0
    level[0], level[1] = 1.0, 1.015  # every pixel spans 1.0 .. 1.015
    level[2:, 12:] = rng.choice([1.0, 1.0075, 1.015], size=(T - 2, H - 12, W))
    gt = base * level
    gt[7, 20, 5] = np.nan
    return gt.astype(np.float32)


def test_static_mask_from_chunks_equals_the_whole_array_mask():
    gt = _ambiguous_gt()
    poses = np.tile(np.eye(4), (T, 1, 1))
    direct = static_mask_from_gt(gt, poses, rel_tol=0.01)
    assert direct[:6].all() and not direct[6:12].any() and 0 < direct[12:].mean() < 1  # the median decides
    acc = StaticMaskAccumulator((H, W), 0.01)
    passes = _run_passes(acc, lambda: zip(_chunks(gt), _chunks(poses), strict=True))
    assert passes > 1  # min / max, then the undecided pixels' exact medians
    assert np.array_equal(acc.mask(), direct)
    moving = poses.copy()
    moving[-1, 0, 3] = 0.01  # the camera moves 1 cm by the last frame: no static pixels, one pass
    acc = StaticMaskAccumulator((H, W), 0.01)
    assert _run_passes(acc, lambda: zip(_chunks(gt), _chunks(moving), strict=True)) == 1 and not acc.mask().any()


@pytest.mark.parametrize("alignment", ["median", "lstsq_disparity"])
def test_alignment_fitted_from_chunks_equals_fit_alignment(alignment):
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.5, 8.0, (T, H, W)).astype(np.float32)
    gt[gt > 7.5] = np.nan
    pred = (1.0 / (0.8 / gt + 0.05) * rng.lognormal(0, 0.02, gt.shape)).astype(np.float32)
    caps = {"min_depth": 0.1, "max_depth": 7.0}
    acc = AlignmentFitStream(**caps, alignment=alignment)
    _run_passes(acc, lambda: zip(_chunks(pred), _chunks(gt), strict=True))
    direct = fit_alignment(pred, gt, **caps, alignment=alignment)
    if alignment == "median":
        assert acc.result() == direct  # exact medians
    else:
        assert acc.result() == pytest.approx(direct, rel=1e-9)  # QR vs SVD least squares


def test_baselines_fed_chunk_by_chunk_equal_the_whole_array_run():
    rng = np.random.default_rng(2)
    depth = (2.0 * np.exp(rng.normal(0, 0.1, (T, H, W)))).astype(np.float32)
    depth[4, 3, 3] = np.nan  # an invalid pixel right at a chunk's end
    cfg = EvaluateConfig(median_window=4)  # windows straddle the chunk boundaries
    whole = run_baselines(depth, cfg)
    filters = baseline_filters(cfg)
    for name, filt in filters.items():
        streamed = np.concatenate([run_filter(filt, c) for c in _chunks(depth)])
        np.testing.assert_array_equal(streamed, whole[name], err_msg=name)


# -------------------------------------------------------------------- evaluate_dataset on multi-chunk stores


def _video() -> dict[str, np.ndarray]:
    """A static-camera clip: GT with undecided static pixels, a flickering teacher, a panning texture as RGB."""
    rng = np.random.default_rng(4)
    gt = _ambiguous_gt()
    scene = np.nan_to_num(gt, nan=2.0)
    teacher = (scene * np.exp(rng.normal(0, 0.04, (T, 1, 1)) + rng.normal(0, 0.02, (T, H, W)))).astype(np.float32)
    texture = rng.integers(0, 256, (H, W + 2 * T, 3), dtype=np.uint8)
    rgb = np.stack([texture[:, 2 * t : 2 * t + W] for t in range(T)])
    K = np.tile(np.array([[30.0, 0, W / 2], [0, 30.0, H / 2], [0, 0, 1]], dtype=np.float32), (T, 1, 1))
    pose = np.tile(np.eye(4), (T, 1, 1))
    pose[:, 0, 3] = 4e-5 * np.arange(T)  # within the static-camera tolerance, but not the identity
    refined = np.sqrt(teacher * scene).astype(np.float32)  # half-way to the GT in log depth
    return {"depth": teacher, "gt_depth": gt, "rgb": rgb, "K": K, "pose": pose, "refined": refined}


def _write(
    uri: str, kind: str, chunk: int, arrays: dict[str, np.ndarray], extra: tuple[str, ...], first_frame: int = 0
) -> str:
    """A store of arrays' depth, K and `extra` variables in chunks of `chunk` frames, numbered from first_frame."""
    store = DepthStore.create(
        uri, num_frames=T, height=H, width=W, chunk_frames=chunk, variables=extra,
        attrs={"source_hash": "streaming", "config_hash": kind, "kind": kind},
    )  # fmt: skip
    for i in range(store.num_chunks):
        a, b = store.chunk_bounds(i)
        fields = {"depth": arrays["depth"][a:b], "K": arrays["K"][a:b], **{v: arrays[v][a:b] for v in extra}}
        frames = np.arange(a, b) + first_frame
        store.write_chunk(i, timestamp=frames / 30.0, frame_index=frames, **fields)
    store.finalize()
    return uri


@pytest.fixture(scope="module")
def clip_stores(tmp_path_factory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("streaming")
    video = _video()
    t_uri = _write(str(root / "clip.teacher.zarr"), "teacher", TEACHER_CHUNK, video, ("gt_depth", "pose", "rgb"))
    r_uri = _write(str(root / "clip.refined.zarr"), "refined", REFINED_CHUNK, {**video, "depth": video["refined"]}, ())
    return t_uri, r_uri


@pytest.mark.parametrize("alignment", ["none", "median", "lstsq_disparity"])
def test_streamed_evaluation_equals_the_whole_array_computation(clip_stores, tmp_path, monkeypatch, alignment):
    t_uri, r_uri = clip_stores
    cfg = EvaluateConfig(max_depth=10.0, median_window=4, alignment=alignment)
    spans = []
    real_read = DepthStore.read
    monkeypatch.setattr(DepthStore, "read", lambda self, a, b, *v: spans.append(b - a) or real_read(self, a, b, *v))
    report = evaluate_dataset([t_uri], [r_uri], cfg, str(tmp_path / "eval"), plots=alignment == "none")
    monkeypatch.undo()
    assert max(spans) == TEACHER_CHUNK  # never more than one chunk of the video at a time

    # the whole video in memory: the baselines on the whole array, each metric function on whole arrays
    video = load_video(t_uri, r_uri, cfg)
    assert video.static_mask is not None and 0 < video.static_mask.mean() < 1
    assert report.video_info["clip"]["static_pixel_fraction"] == video.static_mask.mean()
    streamed = report.per_video["clip"]
    assert list(streamed) == ["teacher", "refined", "ema", "motion_gated_ema", "temporal_median"]
    for method, depth in video.depth.items():
        direct = evaluate_method(depth, video, cfg)
        direct.update(teacher_agreement(video.depth["teacher"], depth, window=cfg.agreement_window))
        assert list(streamed[method]) == list(direct), method  # the same metrics in the same order
        assert set(direct) >= {"absrel", "tae", "static_flicker", "opw", "opw_sequence", *AGREEMENT_METRICS}
        for key, value in direct.items():
            assert math.isfinite(value), (method, key)
            assert streamed[method][key] == pytest.approx(value, rel=1e-12, abs=1e-15), (method, key)


def test_a_refined_store_of_other_frames_is_refused(clip_stores, tmp_path):
    t_uri, _ = clip_stores
    # same length and size: only the frame numbers give it away, in a chunk after the first
    shifted = _write(str(tmp_path / "shifted.refined.zarr"), "refined", REFINED_CHUNK, _video(), (), first_frame=1)
    with pytest.raises(InputError, match="holds other frames"):
        evaluate_dataset([t_uri], [shifted], EvaluateConfig(), str(tmp_path / "eval"), plots=False)
