"""Prefect flows on a real (ephemeral, SQLite) Prefect API: partial failure, caching, resume."""

from __future__ import annotations

import shutil

import pytest
import xarray as xr

from steadydepth.config import load_config


def test_ingest_flow_isolates_a_corrupt_video_and_reruns_are_cached(tmp_path, prefect_server):
    from flows.ingest import run_ingest
    from steadydepth.synth.generate import generate_benchmark

    videos = tmp_path / "videos"
    generate_benchmark(videos, n_videos=2, n_frames=12, size=(48, 64), seed=3)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    cfg = load_config(
        overrides={"store.root": str(tmp_path / "stores"), "teacher.backend": "synthetic", "store.chunk_frames": 4}
    )

    first = run_ingest([str(videos)], cfg)
    assert [r["name"] for r in first["stores"]] == ["00-vr-head", "01-static-camera"]
    assert not any(r["cached"] for r in first["stores"])
    assert [f["video"].rsplit("/", 1)[-1] for f in first["failures"]] == ["broken.mp4"]
    assert "broken.mp4" in first["failures"][0]["error"] and "VideoDecodeError" in first["failures"][0]["error"]
    for r in first["stores"]:
        ds = xr.open_zarr(r["store_uri"])
        assert ds.depth.shape == (12, 48, 64) and "gt_depth" in ds and ds.attrs["teacher"] == "synthetic"

    second = run_ingest([str(videos)], cfg)
    assert all(r["cached"] for r in second["stores"]) and len(second["failures"]) == 1

    # A deleted store is recomputed (the cache never hides a missing output); a new video runs alone.
    shutil.rmtree(first["stores"][0]["store_uri"])
    generate_benchmark(tmp_path / "more", n_videos=3, n_frames=12, size=(48, 64), seed=3)
    for path in (tmp_path / "more").glob("02-*"):
        shutil.move(str(path), videos / path.name)
    third = run_ingest([str(videos)], cfg)
    ran = {r["name"]: r["cached"] for r in third["stores"]}
    assert ran == {"00-vr-head": False, "01-static-camera": True, "02-fast-motion": False}
    assert xr.open_zarr(first["stores"][0]["store_uri"]).depth.shape == (12, 48, 64)


def test_ingest_on_a_local_dask_cluster_uses_several_worker_processes(tmp_path, prefect_server):
    from flows.ingest import run_ingest
    from steadydepth.synth.generate import generate_benchmark

    videos = tmp_path / "videos"
    generate_benchmark(videos, n_videos=4, n_frames=8, size=(48, 64), seed=5)
    cfg = load_config(overrides={"store.root": str(tmp_path / "stores"), "teacher.backend": "synthetic"})
    summary = run_ingest([str(videos)], cfg, dask=True)
    assert not summary["failures"] and len(summary["stores"]) == 4
    workers = {r["worker"] for r in summary["stores"]}
    assert len(workers) >= 2, workers  # videos ran in parallel in different processes
    for r in summary["stores"]:
        assert xr.open_zarr(r["store_uri"]).depth.shape == (8, 48, 64)


def test_flow_run_states_tell_the_truth(tmp_path, prefect_server):
    """A run in which a video failed is red (naming it), all failed is red, nothing to do is green and says so."""
    from flows.common import summary_of
    from flows.ingest import ingest_flow
    from steadydepth.synth.generate import generate_benchmark

    cfg = load_config(overrides={"store.root": str(tmp_path / "stores"), "teacher.backend": "synthetic"})
    cfg_json = cfg.model_dump(mode="json")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "notes.mp4").write_text("this is a text file named .mp4")
    every_failed = ingest_flow([str(broken)], cfg_json, return_state=True)
    assert every_failed.is_failed() and "1 of 1 failed (" in every_failed.message
    assert "notes.mp4" in every_failed.message and summary_of(every_failed)["stores"] == []

    mixed = tmp_path / "mixed"
    generate_benchmark(mixed, n_videos=1, n_frames=4, size=(32, 48), seed=1)
    (mixed / "notes.mp4").write_text("this is a text file named .mp4")
    some_failed = ingest_flow([str(mixed)], cfg_json, return_state=True)
    assert some_failed.is_failed() and "1 of 2 failed" in some_failed.message
    kept = summary_of(some_failed)["stores"]  # the finished video's store is kept and reported
    assert [r["name"] for r in kept] == ["00-vr-head"] and xr.open_zarr(kept[0]["store_uri"]).depth.shape[0] == 4

    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = ingest_flow([str(empty)], cfg_json, return_state=True)
    assert nothing.is_completed() and "nothing to do" in nothing.message


def test_ingest_reports_progress_per_video_in_the_ui(tmp_path, prefect_server):
    """Each video's task run has a progress artifact that ends at 100 % with the frames counted."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType

    from flows.ingest import run_ingest
    from steadydepth.synth.generate import generate_benchmark

    generate_benchmark(tmp_path / "videos", n_videos=1, n_frames=8, size=(32, 48), seed=4)
    for path in (tmp_path / "videos").glob("00-vr-head*"):  # a name no other test's run has in this API
        path.rename(path.with_name(path.name.replace("00-vr-head", "progress-check")))
    cfg = load_config(overrides={"store.root": str(tmp_path / "stores"), "teacher.backend": "synthetic",
                                 "store.chunk_frames": 4})
    assert not run_ingest([str(tmp_path / "videos")], cfg)["failures"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])))
    ours = [a for a in artifacts if (a.description or "").startswith("ingest progress-check")]
    assert len(ours) == 1 and ours[0].data == 100.0 and ours[0].description.endswith("8/8")


def test_a_flow_takes_a_config_a_whole_dict_or_the_fields_it_changes():
    """Outside a deployment's run there is nothing to merge into: a Config, its dump and its set fields give the
    same run config (what the CLI and the pipeline's subflows pass)."""
    from flows.common import run_config

    cfg = load_config(overrides={"store.root": "/data/stores", "train.steps": 7})
    assert run_config(cfg) == cfg == run_config(cfg.model_dump(mode="json"))
    assert run_config({"store": {"root": "/data/stores"}, "train": {"steps": 7}}) == cfg
    assert run_config(None) == load_config()


def test_a_bad_config_fails_the_run_at_once_in_one_line(tmp_path, prefect_server):
    from flows.model_flows import train_flow
    from steadydepth.errors import ConfigError

    bad = {"store": {"root": str(tmp_path / "stores")}, "decode": {"intrinsics": {"fx": 500.0}}}  # fy missing
    state = train_flow(bad, return_state=True)
    assert state.is_failed() and "\n" not in state.message, state.message
    assert state.message.startswith("invalid config decode.intrinsics: give fx and fy (pixels) or hfov_deg;")
    assert "fix decode.intrinsics.FIELD in the run's config parameter" in state.message
    with pytest.raises(ConfigError, match=r"^invalid config train\.steps: .*greater than or equal to 1 \(got 0\)"):
        train_flow({"train": {"steps": 0}})  # a direct call raises it
