"""Ingest one video (decode → teacher → store): metadata, idempotent reruns, resume, bad teacher output."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from media import make_video

from steadydepth.config import load_config
from steadydepth.errors import TeacherOutputError
from steadydepth.ingest import ingest_video
from steadydepth.teachers.base import FrameBatch, Teacher, TeacherOutput
from storage.depth_store import DepthStore


class RgbTeacher(Teacher):
    """Deterministic stand-in teacher: depth = 1 m + mean RGB / 255; can fail at a chosen frame."""

    id = "test:rgb"
    version = "1"

    def __init__(self, nan_at: int | None = None, crash_at: int | None = None):
        self.nan_at, self.crash_at = nan_at, crash_at
        self.frames_seen: list[int] = []

    def predict(self, batch: FrameBatch) -> TeacherOutput:
        if self.crash_at is not None and self.crash_at in batch.indices:
            raise RuntimeError("simulated crash")
        self.frames_seen.extend(batch.indices)
        depth = 1.0 + batch.rgb.float().mean(dim=1, keepdim=True) / 255.0
        if self.nan_at is not None and self.nan_at in batch.indices:
            depth[list(batch.indices).index(self.nan_at), 0, 0, 0] = float("nan")
        b, _, h, w = depth.shape
        default_K = torch.tensor([[50.0, 0, w / 2], [0, 50.0, h / 2], [0, 0, 1]]).expand(b, 3, 3)
        K = batch.K if batch.K is not None else default_K
        return TeacherOutput(depth=depth, K=K, confidence=torch.full_like(depth, 0.5))


@pytest.fixture
def video(tmp_path):
    return make_video(tmp_path / "clip.mp4", num_frames=18, size=(64, 96))


def _cfg(tmp_path, **extra):
    overrides = {"store.root": str(tmp_path / "stores"), "store.chunk_frames": 4, "teacher.shared_intrinsics": "none"}
    overrides.update(extra)
    return load_config(overrides=overrides)


def test_ingest_writes_an_xarray_readable_store_with_metadata(tmp_path, video):
    cfg = _cfg(tmp_path)
    result = ingest_video(str(video), cfg, teacher=RgbTeacher())
    assert (result.num_frames, result.chunks_written, result.chunks_skipped) == (18, 5, 0)
    ds = xr.open_zarr(result.store_uri)
    assert ds.depth.shape == (18, 64, 96) and ds.depth.attrs["units"] == "m"
    assert ds.attrs["teacher"] == "test:rgb" and ds.attrs["teacher_version"] == "1"
    assert ds.attrs["kind"] == "teacher" and len(ds.attrs["source_hash"]) == 64
    assert ds.attrs["config_hash"] and ds.attrs["source"].endswith("clip.mp4")
    assert ds.K.shape == (18, 3, 3) and float(ds.K[0, 0, 0]) == 50.0
    np.testing.assert_array_equal(ds.frame_index.values, np.arange(18))
    assert np.all(np.diff(ds.time.values) > 0)
    rgb = ds.rgb.values
    np.testing.assert_allclose(ds.depth.values, 1.0 + rgb.astype(np.float32).mean(axis=-1) / 255.0, rtol=1e-5)


def test_rerun_is_a_no_op_and_a_crash_resumes_only_missing_chunks(tmp_path, video):
    cfg = _cfg(tmp_path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest_video(str(video), cfg, teacher=RgbTeacher(crash_at=9))  # dies in chunk 2 (frames 8..11)
    store = DepthStore.open(str(tmp_path / "stores" / "clip.teacher.zarr"), require_complete=False)
    assert store.done_chunks() == [0, 1] and store.missing_chunks() == [2, 3, 4]

    teacher = RgbTeacher()
    result = ingest_video(str(video), cfg, teacher=teacher)
    assert (result.chunks_written, result.chunks_skipped) == (3, 2)
    assert sorted(teacher.frames_seen) == list(range(8, 18))  # the teacher ran on missing frames only

    reference = ingest_video(str(video), _cfg(tmp_path / "ref"), teacher=RgbTeacher())
    resumed, straight = (DepthStore.open(r.store_uri).read(0, 18)["depth"] for r in (result, reference))
    np.testing.assert_array_equal(resumed, straight)

    again = RgbTeacher()
    result = ingest_video(str(video), cfg, teacher=again)
    assert (result.chunks_written, result.chunks_skipped) == (0, 5) and again.frames_seen == []


H, W = 64, 96  # the clip's frame size
BAD_VALUES = torch.tensor([0.0, -0.5, float("nan"), float("inf"), -float("inf")])


def scattered(n: int, seed: int) -> np.ndarray:
    """n bad pixels at random places (what a network gives on glass or black surfaces)."""
    mask = np.zeros(H * W, bool)
    mask[np.random.default_rng(seed).choice(H * W, n, replace=False)] = True
    return mask.reshape(H, W)


def sky(fraction: float) -> np.ndarray:
    """The top rows, `fraction` of the frame (a sky the network returns as zero or negative depth)."""
    mask = np.zeros((H, W), bool)
    mask[: round(H * fraction)] = True
    return mask


def whole_frame() -> np.ndarray:
    return np.ones((H, W), bool)


class FaultyTeacher(RgbTeacher):
    """RgbTeacher whose depth is NaN/inf, zero or negative (cycling) at the masked pixels of chosen frames."""

    id = "test:faulty"

    def __init__(self, faults: dict[int, np.ndarray], crash_at: int | None = None):
        super().__init__(crash_at=crash_at)
        self.faults = faults

    def predict(self, batch: FrameBatch) -> TeacherOutput:
        out = super().predict(batch)
        for pos, i in enumerate(batch.indices):
            if i in self.faults:
                mask = torch.from_numpy(self.faults[i])
                n = int(mask.sum())
                out.depth[pos, 0][mask] = BAD_VALUES.repeat(n // len(BAD_VALUES) + 1)[:n]
        return out


def _read(uri: str) -> dict[str, np.ndarray]:
    store = DepthStore.open(uri)
    return store.read(0, store.num_frames, ("depth", "confidence", "rgb", "invalid_pixels", "frame_valid"))


def _teacher_depth(rgb: np.ndarray) -> np.ndarray:
    return 1.0 + rgb.astype(np.float32).mean(axis=-1) / 255.0


def test_scattered_bad_pixels_are_filled_marked_and_counted(tmp_path, video, caplog):
    faults = {0: scattered(37, 0), 8: scattered(37, 1), 9: scattered(200, 2), 17: sky(0.04)}
    with caplog.at_level(logging.WARNING, logger="steadydepth.ingest"):
        result = ingest_video(str(video), _cfg(tmp_path), teacher=FaultyTeacher(faults))
    data = _read(result.store_uri)
    depth, conf = data["depth"], data["confidence"]
    assert np.isfinite(depth).all() and (depth > 0).all()
    counts = np.zeros(18, np.int64)
    for i, m in faults.items():
        counts[i] = m.sum()
    np.testing.assert_array_equal(data["invalid_pixels"], counts)
    np.testing.assert_array_equal(data["frame_valid"], np.ones(18))  # all under 5 % of their pixels
    totals = {"invalid_pixels_total": int(counts.sum()), "invalid_pixel_frames": 4, "invalid_frames": 0}
    assert {k: getattr(result, k) for k in totals} == totals
    assert {k: DepthStore.open(result.store_uri).attrs[k] for k in totals} == totals
    # Good pixels are the teacher's; bad ones carry the previous frame's depth and have confidence 0.
    bad = np.zeros(depth.shape, bool)
    for i, m in faults.items():
        bad[i] = m
    np.testing.assert_allclose(depth[~bad], _teacher_depth(data["rgb"])[~bad], rtol=1e-6)
    for i in (8, 9, 17):
        np.testing.assert_array_equal(depth[i][faults[i]], depth[i - 1][faults[i]])
    assert (conf[bad] == 0).all() and (conf[~bad] == 0.5).all()
    # Frame 0 has no previous frame: its holes take a neighbour's depth, inside the frame's range.
    good0 = depth[0][~faults[0]]
    assert good0.min() <= depth[0][faults[0]].min() and depth[0][faults[0]].max() <= good0.max()
    lines = [r.getMessage() for r in caplog.records if "NaN/inf, zero or negative" in r.getMessage()]
    assert len(lines) == 1 and f"{counts.sum()} teacher depth pixels" in lines[0] and "in 4 of 18 frames" in lines[0]


def test_a_bad_frame_and_a_run_of_bad_frames_are_copied_from_the_previous_valid_frame(tmp_path, video):
    faults = {0: sky(0.3), 6: whole_frame(), 11: sky(0.5), 12: whole_frame()}  # 4 of 18 frames (22 %)
    cfg = _cfg(tmp_path, **{"teacher.max_invalid_frames_fraction": 0.25})
    result = ingest_video(str(video), cfg, teacher=FaultyTeacher(faults))
    data = _read(result.store_uri)
    depth, conf, valid = data["depth"], data["confidence"], data["frame_valid"]
    np.testing.assert_array_equal(np.flatnonzero(valid == 0), [0, 6, 11, 12])
    assert result.invalid_frames == 4 and np.isfinite(depth).all() and (depth > 0).all()
    np.testing.assert_array_equal(depth[6], depth[5])
    np.testing.assert_array_equal(depth[11], depth[10])
    np.testing.assert_array_equal(depth[12], depth[10])
    np.testing.assert_array_equal(depth[0], depth[1])  # nothing before frame 0: the first valid frame
    assert (conf[[0, 6, 11, 12]] == 0).all() and (conf[valid == 1] == 0.5).all()
    np.testing.assert_allclose(depth[13], _teacher_depth(data["rgb"][13]), rtol=1e-6)


def test_a_video_of_bad_frames_fails_early_with_one_line(tmp_path, video):
    teacher = FaultyTeacher({i: sky(0.2 + 0.01 * i) for i in range(18)})
    with pytest.raises(TeacherOutputError) as info:
        ingest_video(str(video), _cfg(tmp_path), teacher=teacher)
    msg = str(info.value)
    assert "\n" not in msg and "in 4 of the first 4 of 18 frames of video clip" in msg
    assert "over 5% of the pixels" in msg and "first at frames 0, 1, 2, 3 (source frames 0, 1, 2, 3)" in msg
    assert "teacher.max_invalid_frames_fraction" in msg and "test:faulty" in msg
    assert teacher.frames_seen == [0, 1, 2, 3]  # stopped after the first chunk: no teacher time wasted


def test_raising_the_limit_after_a_failure_resumes_the_store(tmp_path, video):
    faults = {i: sky(0.5) for i in range(5)}  # 5 of 18 invalid (28 %), spanning chunks 0 and 1
    with pytest.raises(TeacherOutputError, match="first at frames 0, 1, 2, 3 "):
        ingest_video(str(video), _cfg(tmp_path), teacher=FaultyTeacher(faults))
    cfg = _cfg(tmp_path, **{"teacher.max_invalid_frames_fraction": 0.3})
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest_video(str(video), cfg, teacher=FaultyTeacher(faults, crash_at=13))
    teacher = FaultyTeacher(faults)
    result = ingest_video(str(video), cfg, teacher=teacher)
    assert sorted(teacher.frames_seen) == list(range(12, 18)) and result.invalid_frames == 5
    depth = _read(result.store_uri)["depth"]
    for i in range(5):  # the leading invalid frames got the first valid frame's depth at the end
        np.testing.assert_array_equal(depth[i], depth[5])
    straight = ingest_video(str(video), _cfg(tmp_path / "ref", **{"teacher.max_invalid_frames_fraction": 0.3}),
                            teacher=FaultyTeacher(faults))
    np.testing.assert_array_equal(depth, _read(straight.store_uri)["depth"])


def test_resumed_chunks_carry_the_previous_frame_from_the_store(tmp_path, video):
    faults = {8: scattered(50, 3), 12: whole_frame()}
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest_video(str(video), _cfg(tmp_path), teacher=FaultyTeacher(faults, crash_at=8))
    resumed = ingest_video(str(video), _cfg(tmp_path), teacher=FaultyTeacher(faults))
    straight = ingest_video(str(video), _cfg(tmp_path / "ref"), teacher=FaultyTeacher(faults))
    a, b = _read(resumed.store_uri), _read(straight.store_uri)
    for name in ("depth", "confidence", "invalid_pixels", "frame_valid"):
        np.testing.assert_array_equal(a[name], b[name])
    np.testing.assert_array_equal(a["depth"][8][faults[8]], a["depth"][7][faults[8]])


def test_config_change_is_refused_not_mixed_into_an_existing_store(tmp_path, video):
    from steadydepth.errors import StoreError

    ingest_video(str(video), _cfg(tmp_path), teacher=RgbTeacher())
    with pytest.raises(StoreError, match="different source/config"):
        ingest_video(str(video), _cfg(tmp_path, **{"decode.stride": 2}), teacher=RgbTeacher())


SEVEN_SCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "7scenes-redkitchen-150-199"


@pytest.mark.skipif(not SEVEN_SCENES.is_dir(), reason="7-Scenes clip not in ../shared/data")
def test_seven_scenes_frame_folder_ingests_with_its_ground_truth(tmp_path):
    from steadydepth.teachers.registry import build_teacher

    cfg = _cfg(tmp_path, **{"teacher.backend": "synthetic", "decode.max_frames": 10})
    result = ingest_video(str(SEVEN_SCENES), cfg, teacher=build_teacher(cfg.teacher))
    ds = xr.open_zarr(result.store_uri)
    assert result.intrinsics == "given" and ds.depth.shape == (10, 480, 640)
    np.testing.assert_allclose(ds.K.values[:, 0, 0], 585.0)
    gt = ds.gt_depth.values
    assert ds.gt_depth.attrs["units"] == "m" and 0.5 < np.nanmedian(gt) < 5.0 and np.isnan(gt).any()
    assert ds.pose.shape == (10, 4, 4) and np.allclose(ds.pose.values[:, 3], [0, 0, 0, 1])
    rel = np.nanmean(np.abs(ds.depth.values - gt) / gt)
    assert 0.02 < rel < 0.12  # the simulated teacher is UniDepth-like, not exact
