"""Crash-resume of depth stores with a real process killed by SIGKILL mid-write."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from steadydepth.errors import StoreError
from storage.depth_store import DepthStore

WRITER = Path(__file__).with_name("_store_writer.py")
REPO = WRITER.parent.parent


def _load_writer():
    # Loaded by path so it works whatever the tests' import mode or package layout.
    spec = importlib.util.spec_from_file_location("_store_writer", WRITER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


writer = _load_writer()


def _run_writer(uri: str, sleep_s: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WRITER), uri, str(sleep_s)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _written(stdout: str) -> list[int]:
    return [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("chunk ")]


def _assert_chunks_exact(store: DepthStore, chunks: list[int]) -> None:
    for i in chunks:
        start, stop = store.chunk_bounds(i)
        expected = writer.frame_arrays(start, stop)
        got = store.read(start, stop, tuple(expected))
        for name, values in expected.items():
            np.testing.assert_array_equal(got[name], values.astype(got[name].dtype), err_msg=f"chunk {i} {name}")


@pytest.mark.timeout(120)
def test_killed_writer_resumes_only_missing_chunks(tmp_path):
    uri = str(tmp_path / "clip.teacher.zarr")
    reported = []
    with _run_writer(uri, sleep_s=0.3) as proc:
        try:
            while len(reported) < 2:
                line = proc.stdout.readline()
                assert line, f"writer exited early: {proc.stderr.read()}"
                reported += _written(line)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    store = DepthStore.open(uri, require_complete=False)
    done, missing = store.done_chunks(), store.missing_chunks()
    assert set(reported) <= set(done)
    assert missing and sorted(done + missing) == list(range(store.num_chunks))
    assert not store.is_complete
    _assert_chunks_exact(store, done)
    start, _ = store.chunk_bounds(missing[-1])
    assert np.isnan(store.read(start, start + 1)["depth"]).all()  # never-written chunks read as fill

    rerun = subprocess.run([sys.executable, str(WRITER), uri], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert _written(rerun.stdout) == missing  # only the missing chunks were written
    assert "finalized" in rerun.stdout

    store = DepthStore.open(uri)
    assert store.is_complete and store.missing_chunks() == []
    _assert_chunks_exact(store, list(range(store.num_chunks)))
    assert set(xr.open_zarr(uri).variables) == set(store.attrs["variables"])  # markers stay out of the Dataset


def test_chunk_with_data_but_no_marker_is_rewritten(tmp_path):
    uri = str(tmp_path / "clip.teacher.zarr")
    store = writer.create(uri)
    for i in range(store.num_chunks):
        if i != 2:
            store.write_chunk(i, **writer.frame_arrays(*store.chunk_bounds(i)))
    # Simulate a process killed after writing chunk 2's data (here: wrong values) but before its marker.
    start, stop = store.chunk_bounds(2)
    store.group["depth"][start:stop] = 99.0
    store.group["time"][start:stop] = -1.0
    assert store.missing_chunks() == [2]
    with pytest.raises(StoreError, match="chunks 2 of 5 are missing"):
        store.finalize()

    resumed = writer.create(uri)  # reopened with the same identity: resume, not overwrite
    assert resumed.missing_chunks() == [2]
    for i in resumed.missing_chunks():
        resumed.write_chunk(i, **writer.frame_arrays(*resumed.chunk_bounds(i)))
    resumed.finalize()
    _assert_chunks_exact(DepthStore.open(uri), list(range(resumed.num_chunks)))


def test_write_interrupted_between_arrays_leaves_chunk_missing(tmp_path, monkeypatch):
    uri = str(tmp_path / "clip.teacher.zarr")
    store = writer.create(uri)
    store.write_chunk(1, **writer.frame_arrays(*store.chunk_bounds(1)))
    setitem = zarr.Array.__setitem__

    def dies_at_K(self, key, value):  # a crash after depth was written, before K and the marker
        if self.basename == "K":
            raise KeyboardInterrupt("killed")
        setitem(self, key, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", dies_at_K)
    for i in (1, 2):  # a rewrite of a done chunk, and a first write
        arrays = writer.frame_arrays(*store.chunk_bounds(i))
        with pytest.raises(KeyboardInterrupt):
            store.write_chunk(i, **(arrays | {"depth": arrays["depth"] + 5}))
    monkeypatch.undo()
    assert store.done_chunks() == [] and 1 in store.missing_chunks() and 2 in store.missing_chunks()
    for i in store.missing_chunks():
        store.write_chunk(i, **writer.frame_arrays(*store.chunk_bounds(i)))
    store.finalize()
    _assert_chunks_exact(DepthStore.open(uri), list(range(store.num_chunks)))


def test_pixel_coordinates_a_crash_left_unfilled_are_rewritten_on_resume(tmp_path):
    uri = str(tmp_path / "clip.teacher.zarr")
    store = writer.create(uri)
    store.group["y"][:] = -1  # as if killed between creating the coordinate array and filling it
    resumed = writer.create(uri)
    for i in resumed.missing_chunks():
        resumed.write_chunk(i, **writer.frame_arrays(*resumed.chunk_bounds(i)))
    resumed.finalize()
    np.testing.assert_array_equal(xr.open_zarr(uri).y.values, np.arange(writer.HEIGHT))
