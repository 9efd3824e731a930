"""A real `steadydepth ingest` process killed mid-run; the rerun completes with no lost, duplicated or corrupt
frames (compared with an uninterrupted reference)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import numpy as np

from steadydepth.config import load_config
from steadydepth.errors import StoreError
from storage.depth_store import DepthStore
from storage.naming import list_stores


def _done_chunks(root) -> int:
    total = 0
    for uri in list_stores(str(root)):
        with contextlib.suppress(StoreError, FileNotFoundError, KeyError, ValueError):  # one being created now
            total += len(DepthStore.open(uri, require_complete=False).done_chunks())
    return total


def test_killed_ingest_resumes_without_lost_or_duplicated_frames(tmp_path, prefect_server):
    from flows.ingest import run_ingest
    from steadydepth.ingest import ingest_video
    from steadydepth.synth.generate import generate_benchmark
    from steadydepth.teachers.registry import build_teacher

    videos = tmp_path / "videos"
    generate_benchmark(videos, n_videos=4, n_frames=40, size=(96, 128), seed=2)
    root = tmp_path / "stores"
    overrides = {"store.root": str(root), "teacher.backend": "synthetic", "store.chunk_frames": 4,
                 "orchestration.home": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "steadydepth.cli", "ingest", str(videos)]
    cmd += [arg for k, v in overrides.items() for arg in ("--set", f"{k}={v}")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while _done_chunks(root) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and the Prefect server it started
        proc.wait()
    stores = list_stores(str(root))
    assert stores, "the killed run wrote nothing; it should have been killed after its first chunks"
    assert len(stores) < 4 or any(not DepthStore.open(u, require_complete=False).is_complete for u in stores)

    cfg = load_config(overrides=overrides)
    summary = run_ingest([str(videos)], cfg)
    assert not summary["failures"] and len(summary["stores"]) == 4

    reference = load_config(overrides={**overrides, "store.root": str(tmp_path / "reference")})
    teacher = build_teacher(reference.teacher)
    for result in summary["stores"]:
        resumed = DepthStore.open(result["store_uri"])
        expected = DepthStore.open(ingest_video(result["video"], reference, teacher=teacher).store_uri)
        got, want = resumed.read(0, 40, ("depth", "frame_index")), expected.read(0, 40, ("depth", "frame_index"))
        np.testing.assert_array_equal(got["frame_index"], np.arange(40))  # none lost, none duplicated
        np.testing.assert_array_equal(got["depth"], want["depth"])  # none corrupt
