"""Ingest one video (decode → teacher → store): metadata, idempotent reruns, resume, bad teacher output."""

from __future__ import annotations

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


def test_nan_from_the_teacher_names_video_and_frame_and_keeps_finished_chunks(tmp_path, video):
    cfg = _cfg(tmp_path)
    with pytest.raises(TeacherOutputError) as info:
        ingest_video(str(video), cfg, teacher=RgbTeacher(nan_at=13))
    message = str(info.value)
    assert "frame 13" in message and "clip" in message and "\n" not in message
    store = DepthStore.open(str(tmp_path / "stores" / "clip.teacher.zarr"), require_complete=False)
    assert store.done_chunks() == [0, 1, 2]
    assert np.isfinite(store.read(0, 12)["depth"]).all()


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
