"""Prefect flows on a real (ephemeral, SQLite) Prefect API: partial failure and reruns."""

from __future__ import annotations

import xarray as xr

from steadydepth.config import load_config


def test_ingest_flow_isolates_a_corrupt_video_and_reruns_skip_finished_work(tmp_path, prefect_server):
    from flows.ingest import run_ingest
    from steadydepth.synth.generate import generate_benchmark

    videos = tmp_path / "videos"
    generate_benchmark(videos, n_videos=2, n_frames=12, size=(48, 64), seed=3)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    cfg = load_config(
        overrides={"store.root": str(tmp_path / "stores"), "teacher.backend": "synthetic", "store.chunk_frames": 4}
    )

    first = run_ingest([str(videos)], cfg)
    assert sorted(r["name"] for r in first["stores"]) == ["00-vr-head", "01-static-camera"]
    assert [f["video"].rsplit("/", 1)[-1] for f in first["failures"]] == ["broken.mp4"]
    assert "broken.mp4" in first["failures"][0]["error"] and "VideoDecodeError" in first["failures"][0]["error"]
    for r in first["stores"]:
        ds = xr.open_zarr(r["store_uri"])
        assert ds.depth.shape == (12, 48, 64) and "gt_depth" in ds and ds.attrs["teacher"] == "synthetic"

    second = run_ingest([str(videos)], cfg)
    assert all(r["chunks_written"] == 0 and r["chunks_skipped"] == 3 for r in second["stores"])
    assert len(second["failures"]) == 1
