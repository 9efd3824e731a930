"""Prefect flows on a real (ephemeral, SQLite) Prefect API: partial failure, caching, resume."""

from __future__ import annotations

import shutil

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
