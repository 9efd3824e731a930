"""The guards behind tests/test_faults.py, one at a time and fast: the one-writer claim, write errors a user can act
on, the liveness of a recorded process and the ending of MLflow runs whose process is gone."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _store_writer import create, frame_arrays

from steadydepth.errors import InputError, StoreError
from steadydepth.runtime import process_alive, process_host, process_token
from storage.naming import require_teacher_stores, store_uri, teacher_stores_by_state
from storage.writing import exclusive_write, lock_path, require_writable, write_errors

REPO = Path(__file__).resolve().parents[1]


def test_a_second_claim_is_refused_naming_the_holder(tmp_path):
    uri = str(tmp_path / "clip.teacher.zarr")
    refused = pytest.raises(StoreError, match=rf"^clip is being ingested by pid {os.getpid()} on .+; wait for it")
    with exclusive_write(uri, "clip is being ingested"):
        with refused, exclusive_write(uri, "clip is being ingested"):
            pass
        assert lock_path(Path(uri)).name == ".clip.teacher.zarr.lock"
    with exclusive_write(uri, "clip is being ingested"):  # released on exit: free again
        pass
    remote = "memory://bucket/clip.teacher.zarr"
    with exclusive_write(remote, "x"), exclusive_write(remote, "x"):
        pass  # object storage has no locks: the claim is a no-op there


_HOLD = """
import sys, time
from storage.writing import exclusive_write
with exclusive_write(sys.argv[1], "held"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_the_claim_of_a_killed_holder_is_free_at_once(tmp_path):
    uri = str(tmp_path / "clip.teacher.zarr")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, uri], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(StoreError, match=f"by pid {holder.pid} "), exclusive_write(uri, "clip is being ingested"):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with exclusive_write(uri, "clip is being ingested"):  # no stale lock to clear by hand
        pass


def test_a_full_or_read_only_disk_becomes_one_line_naming_the_location():
    for code, reason in ((errno.ENOSPC, "no space left on the device"), (errno.EROFS, "the file system is read-only"),
                         (errno.EDQUOT, "the disk quota is exceeded")):
        with pytest.raises(StoreError) as caught, write_errors("/data/stores", "free space, then rerun"):
            raise OSError(code, os.strerror(code), "/data/stores/clip.teacher.zarr/depth/c/3/0/0")
        where = "/data/stores (/data/stores/clip.teacher.zarr/depth/c/3/0/0)"
        assert str(caught.value) == f"cannot write {where}: {reason}; free space, then rerun"
        assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(ConnectionResetError), write_errors("/data/stores", "x"):  # not a full/read-only disk
        raise ConnectionResetError(errno.ECONNRESET, "reset")


def test_an_unwritable_output_folder_is_named_before_any_work(tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(InputError, match=rf"^cannot write {tmp_path}/a-file/stores \(.+\); .* set store.root to"):
        require_writable(str(tmp_path / "a-file" / "stores"), "store.root")
    require_writable(str(tmp_path / "new" / "stores"), "store.root")  # made, and writable
    assert (tmp_path / "new" / "stores").is_dir() and not list((tmp_path / "new" / "stores").iterdir())
    require_writable("memory://bucket/stores", "store.root")  # remote: left to the writer


def test_unfinished_teacher_stores_are_skipped_and_named(tmp_path):
    root = str(tmp_path)
    done = create(store_uri(root, "done"))
    for i in range(done.num_chunks):
        done.write_chunk(i, **frame_arrays(*done.chunk_bounds(i)))
    done.finalize()
    half = create(store_uri(root, "half"))
    half.write_chunk(0, **frame_arrays(*half.chunk_bounds(0)))
    Path(store_uri(root, "empty")).mkdir()  # a store killed before it had any metadata
    assert teacher_stores_by_state(root) == ([done.uri], [store_uri(root, "empty"), half.uri])
    told = []
    assert require_teacher_stores(root, report=told.append) == [done.uri]
    assert len(told) == 1 and "skipping 2 unfinished teacher store(s)" in told[0] and "empty, half" in told[0]
    done_only = tmp_path / "unfinished-only"
    create(store_uri(str(done_only), "half"))
    with pytest.raises(InputError, match="no complete teacher stores under .*: half unfinished"):
        require_teacher_stores(str(done_only))


def test_a_dead_or_reused_pid_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    pid, token = child.pid, process_token(child.pid)
    child.wait()
    assert not process_alive(pid, token)
    assert process_alive(os.getpid(), process_token())
    if process_token():  # Linux: a live process with another start time is a later one that reuses the pid
        assert not process_alive(os.getpid(), str(int(process_token()) + 1))
    if sys.platform == "linux":  # exited but not yet reaped by its parent: dead too
        zombie = subprocess.Popen([sys.executable, "-c", "pass"])
        deadline = time.monotonic() + 60
        while _state(zombie.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not process_alive(zombie.pid)
        zombie.wait()


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_runs_left_running_by_a_dead_process_are_marked_killed(mlflow_sqlite):
    import mlflow
    from mlflow import MlflowClient

    from steadydepth import tracking
    from steadydepth.config import Config

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    client = MlflowClient()
    experiment = client.create_experiment("orphans")
    dead = client.create_run(experiment, tags={"steadydepth.host": process_host(), "steadydepth.pid": str(child.pid)})
    elsewhere = client.create_run(experiment, tags={"steadydepth.host": "another-host/1", "steadydepth.pid": "1"})
    mine = client.create_run(experiment, tags=dict(zip(tracking.OWNER_TAGS, (
        process_host(), str(os.getpid()), process_token()), strict=True)))
    with tracking.start_run("data", Config(), run_name="next") as run:  # a new run ends the orphans first
        assert run.data.tags["steadydepth.pid"] == str(os.getpid())
    status = [client.get_run(r.info.run_id).info.status for r in (dead, elsewhere, mine)]
    assert status == ["KILLED", "RUNNING", "RUNNING"]  # other hosts' and live processes' runs are left alone
    assert mlflow.active_run() is None
