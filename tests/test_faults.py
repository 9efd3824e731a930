"""Faults done to real `steadydepth` processes: kill -9 of train and of a refine, a killed CLI's server and MLflow run,
a half-migrated Prefect database, two runs on one store, full and read-only outputs, unfinished and colliding stores.

Every command runs as its own process (`python -m steadydepth.cli`) on tiny data. One workspace (videos, a Prefect
home, teacher stores) is shared by the module, so Prefect's database is migrated once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from steadydepth.config import load_config
from steadydepth.errors import StoreError
from steadydepth.runtime import process_alive
from storage.depth_store import DepthStore
from storage.naming import list_stores, refined_uri, store_uri, video_name

REPO = Path(__file__).resolve().parents[1]
FRAMES = 48  # per video; 2-frame chunks, so a kill lands between chunk commits
pytestmark = pytest.mark.slow

TINY = {  # a smoother and training that take seconds on a CPU
    "smoother": {"d_model": 16, "n_layers": 1, "headdim": 8, "chunk_size": 4, "depth_long_edge": 16},
    "train": {"steps": 10, "batch_size": 2, "window": 8, "crop_size": 8, "burn_in": 0, "checkpoint_every": 2,
              "progress": False, "num_threads": 1},
}


# ---- running the command ------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    # Nothing of the test session's Prefect/MLflow set-up leaks in: each command uses its own embedded defaults.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "STEADYDEPTH_"))}
    return env | {"OMP_NUM_THREADS": "1"}


def _command(args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "steadydepth.cli", *args]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`steadydepth ARGS` to its end; timeout: a hang fails the test instead of stalling the suite."""
    return subprocess.run(_command(args), capture_output=True, text=True, timeout=timeout, env=_env(), cwd=REPO)


def start_cli(log: Path, *args: str) -> subprocess.Popen:
    """`steadydepth ARGS` in the background, its output to `log`."""
    with log.open("w") as out:
        return subprocess.Popen(_command(args), stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=REPO)


def output(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error: ")]


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    """Poll until condition() holds; fails if the process ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the command ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def kill_cli(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the command's own process only (not its children, as the kernel does to a killed command); returns
    the children it had."""
    kids = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return kids


def assert_all_exit(pids: list[int], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while any(process_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in pids if process_alive(p)]
    assert not left, f"processes {left} outlived the killed command: " + "; ".join(
        Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120] for p in left)


def done_chunks(uri: str) -> list[int]:
    with contextlib.suppress(StoreError, FileNotFoundError, KeyError, ValueError):  # one being created now
        return DepthStore.open(uri, require_complete=False).done_chunks()
    return []


def depth(uri: str) -> np.ndarray:
    store = DepthStore.open(uri)
    return store.read(0, store.num_frames)["depth"]


# ---- the shared workspace -----------------------------------------------------------------------------------------


class Workspace:
    """Videos, a run config, a Prefect/MLflow home and the teacher stores `steadydepth ingest` wrote from them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.videos = root / "videos"
        self.stores = root / "stores"
        self.home = root / "home"
        self.config = root / "run.yaml"

    def args(self, *extra: str) -> tuple[str, ...]:
        return (*extra, "--config", str(self.config))

    def cfg(self, **overrides):
        return load_config(self.config, overrides)

    def store(self, video: str) -> str:
        return store_uri(str(self.stores), video)

    def copy_stores(self, dest: Path, *videos: str) -> list[str]:
        dest.mkdir(parents=True, exist_ok=True)
        for video in videos:
            shutil.copytree(self.store(video), store_uri(str(dest), video))
        return [store_uri(str(dest), v) for v in videos]


# Video names a store must survive: no ASCII letters at all, unicode with a space, dots, a leading dash, 245 chars.
ODD_NAMES = ("日本語", "ü日本 b", "a..b", "-dash", "x" * 245)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    from steadydepth.synth.generate import generate_benchmark

    ws = Workspace(tmp_path_factory.mktemp("faults"))
    generate_benchmark(ws.videos, n_videos=2, n_frames=FRAMES, size=(48, 64), seed=11)
    (short,) = generate_benchmark(ws.root / "short", n_videos=1, n_frames=4, size=(32, 48), seed=12)
    odd = ws.root / "odd"
    for name in ODD_NAMES:  # one short video and its ground truth under other names
        _copy_video(short, odd / f"{name}.mp4")
    ws.config.write_text(yaml.safe_dump({
        "store": {"root": str(ws.stores), "chunk_frames": 2},
        "teacher": {"backend": "synthetic"},
        "orchestration": {"home": str(ws.home), "model_name": "faults"},
        **TINY,
    }, allow_unicode=True))
    done = run_cli("ingest", str(ws.videos), str(odd), *ws.args())
    assert done.returncode == 0, output(done)[-3000:]
    return ws


def video_names(ws: Workspace) -> list[str]:
    return sorted(p.stem for p in ws.videos.glob("*.mp4"))


@pytest.fixture(scope="module")
def checkpoint(workspace: Workspace, tmp_path_factory) -> str:
    """A smoother trained a few steps (so it changes the depth), as a checkpoint file."""
    from smoother.train import train

    cfg = workspace.cfg(**{"train.steps": 3})
    out = tmp_path_factory.mktemp("model")
    return train(cfg, [workspace.store(video_names(workspace)[0])], str(out)).checkpoint


# ---- 1 + 2 + 6: kill -9 of train; the killed command's server and MLflow run; unfinished stores skipped ----------


def _interrupted_store(ws: Workspace, root: Path, video: str) -> str:
    """The store an ingest killed after its first chunks leaves: chunks committed, never finalised."""
    from steadydepth.ingest import ingest_video
    from steadydepth.teachers.registry import build_teacher

    cfg = ws.cfg(**{"store.root": str(root)})

    def killed(done: int, total: int) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_video(str(ws.videos / f"{video}.mp4"), cfg, teacher=build_teacher(cfg.teacher), on_progress=killed)
    uri = store_uri(str(root), video)
    assert not DepthStore.open(uri, require_complete=False).is_complete
    return uri


def _runs(home: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_killed_train_resumes_from_its_checkpoint_and_leaves_no_server_or_running_run(
    workspace, tmp_path, monkeypatch
):
    from smoother.checkpoint import load_checkpoint
    from smoother.train import train
    from steadydepth import tracking

    complete, unfinished = video_names(workspace)
    root = tmp_path / "stores"
    (done_uri,) = workspace.copy_stores(root, complete)
    unfinished_uri = _interrupted_store(workspace, root, unfinished)
    checkpoints = workspace.home / "checkpoints"
    before = set(checkpoints.glob("*/last.pt"))
    args = workspace.args("train", "--store-root", str(root))

    proc = start_cli(tmp_path / "killed.log", *args)
    wait_for(lambda: set(checkpoints.glob("*/last.pt")) - before, proc, "a training checkpoint")
    kids = kill_cli(proc)  # the command only, mid-training, as `kill -9 <pid>` does
    assert kids, "the command had started no Prefect server"
    assert_all_exit(kids)  # its temporary Prefect server (and the watchdog) went with it
    (ckpt,) = set(checkpoints.glob("*/last.pt")) - before
    steps = workspace.cfg().train.steps
    assert load_checkpoint(ckpt)["step"] < steps, "the kill came after the training had finished"
    (left,) = [r for r in _runs(workspace.home) if r.data.tags.get("steadydepth.pid") == str(proc.pid)]
    assert left.info.status == "RUNNING"

    done = run_cli(*args)
    assert done.returncode == 0, output(done)[-3000:]
    # the unfinished store is named as skipped, and training used the complete one only
    skipped = [line for line in output(done).splitlines() if "skipping 1 unfinished teacher store" in line]
    assert skipped and f"under {root}: {unfinished} (" in skipped[0], output(done)[-3000:]
    assert load_checkpoint(ckpt)["store_uris"] == [done_uri] and unfinished_uri not in output(done)
    # the killed run is marked KILLED by the next run; the new one finished
    runs = {r.info.run_id: r for r in _runs(workspace.home)}
    assert runs[left.info.run_id].info.status == "KILLED"
    run_id = re.search(r"MLflow run (\w+)", done.stdout)[1]
    assert runs[run_id].info.status == "FINISHED"
    assert not list(ckpt.parent.glob(".*.tmp"))  # no half-written checkpoint left beside it

    # resumed, not restarted: the same weights as one uninterrupted training (same device, same seed)
    resumed = load_checkpoint(ckpt)
    assert resumed["step"] == steps
    reference = train(workspace.cfg(), [done_uri], str(tmp_path / "reference")).checkpoint
    expected = load_checkpoint(reference)["model"]
    assert all(torch.equal(resumed["model"][k], expected[k]) for k in expected)

    # the registered version loads, and is this model
    uri = re.search(r"registered: (models:/\S+)", done.stdout)[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workspace.home / 'mlflow.db'}")
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    try:
        model = tracking.load_model(uri)
    finally:
        mlflow.set_tracking_uri(None)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


# ---- 1: kill -9 of a refine (steadydepth export) -----------------------------------------------------------------


def _chunk_files(uri: str, chunks: list[int]) -> dict[str, int]:
    """mtime_ns of every file of the depth array's given chunks (rewritten chunks get new files)."""
    return {str(p): p.stat().st_mtime_ns for i in chunks for p in (Path(uri) / "depth" / "c" / str(i)).rglob("*")}


def test_killed_refine_resumes_from_its_finished_chunks_bit_for_bit(workspace, checkpoint, tmp_path):
    from smoother.refine import model_hash, refine_store
    from tasks.smoother import load_model

    teachers = workspace.copy_stores(tmp_path / "stores", *video_names(workspace))
    model = load_model(checkpoint)  # as the command loads it (frozen weights: the same arithmetic to the last bit)
    refined = [refined_uri(t, model_hash(model)) for t in teachers]
    args = workspace.args("export", "--store-root", str(tmp_path / "stores"), "--model", checkpoint,
                          "--formats", "npz", "--out", str(tmp_path / "exports"))

    proc = start_cli(tmp_path / "killed.log", *args)
    wait_for(lambda: any(done_chunks(u) for u in refined), proc, "a refined chunk")
    kill_cli(proc)
    unfinished = [u for u in refined if Path(u).exists() and not DepthStore.open(u, require_complete=False).is_complete]
    assert unfinished, "the kill came after every refined store was finished"
    kept = {u: _chunk_files(u, done_chunks(u)) for u in unfinished}
    assert any(kept.values())

    done = run_cli(*args)
    assert done.returncode == 0, output(done)[-3000:]
    for teacher, uri in zip(teachers, refined, strict=True):
        reference = refine_store(teacher, str(tmp_path / "reference" / Path(uri).name), model)
        np.testing.assert_array_equal(depth(uri), depth(reference.uri))  # complete, and bit for bit
        exported = np.load(tmp_path / "exports" / video_name(teacher) / "npz" / "depth.npz")["depth"]
        np.testing.assert_array_equal(exported, depth(reference.uri))  # and what was exported is that depth
    for uri, files in kept.items():  # chunks finished before the kill were kept, not computed again
        assert _chunk_files(uri, done_chunks(uri)).items() >= files.items()


# ---- 3: a half-migrated Prefect database --------------------------------------------------------------------------


def _half_migrated_copy(ws: Workspace, home: Path, keep_flow_runs: bool) -> Path:
    """The workspace's Prefect database as a failed first set-up leaves it: a migration applied, its revision not
    recorded (re-applying it fails with `duplicate column name: state_timestamp`)."""
    import prefect.server.database

    migration = next((Path(prefect.server.database.__file__).parent / "_migrations" / "versions" / "sqlite")
                     .glob("*_22b7cb02e593_add_state_timestamp.py"))
    before = re.search(r"down_revision = \"(\w+)\"", migration.read_text())[1]
    db = home / "prefect" / "prefect.db"
    db.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(ws.home / "prefect" / "prefect.db")) as source, \
            contextlib.closing(sqlite3.connect(db)) as copy:
        source.backup(copy)
        copy.execute("UPDATE alembic_version SET version_num = ?", (before,))
        if not keep_flow_runs:
            copy.execute("DELETE FROM task_run")
            copy.execute("DELETE FROM flow_run")
        copy.commit()
    return db


def _revision(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_half_migrated_prefect_database_with_flow_runs_is_reported_in_one_line(workspace, tmp_path):
    db = _half_migrated_copy(workspace, tmp_path / "home", keep_flow_runs=True)
    content = hashlib.sha256(db.read_bytes()).hexdigest()
    video = sorted(workspace.videos.glob("*.mp4"))[0]
    done = run_cli(*workspace.args("ingest", str(video), "--store-root", str(tmp_path / "stores"),
                                   "--set", f"orchestration.home={tmp_path / 'home'}"), timeout=240)
    assert done.returncode == 2, output(done)[-3000:]
    (line,) = error_lines(done)
    assert str(db) in line and "duplicate column name: state_timestamp" in line and f"mv {db}" in line, line
    assert hashlib.sha256(db.read_bytes()).hexdigest() == content  # its flow runs are the user's: untouched
    assert list_stores(str(tmp_path / "stores")) == []  # stopped before any work


def test_half_migrated_prefect_database_without_flow_runs_is_moved_aside_and_rebuilt(workspace, tmp_path):
    db = _half_migrated_copy(workspace, tmp_path / "home", keep_flow_runs=False)
    video = sorted(workspace.videos.glob("*.mp4"))[0]
    done = run_cli(*workspace.args("ingest", str(video), "--store-root", str(tmp_path / "stores"),
                                   "--set", f"orchestration.home={tmp_path / 'home'}"), timeout=300)
    assert done.returncode == 0, output(done)[-3000:]
    (aside,) = db.parent.glob("prefect.db.broken-*[0-9TZ]")
    assert f"moved it to {aside}" in done.stderr
    assert _revision(db) == _revision(workspace.home / "prefect" / "prefect.db")  # a fresh, complete database
    assert DepthStore.open(store_uri(str(tmp_path / "stores"), video.stem)).is_complete


# ---- 4: two runs on one store at once -----------------------------------------------------------------------------


def test_a_second_ingest_of_a_store_being_written_is_refused_and_the_store_stays_consistent(workspace, tmp_path):
    from steadydepth.ingest import ingest_video
    from steadydepth.synth.generate import generate_benchmark
    from steadydepth.teachers.registry import build_teacher

    (video,) = generate_benchmark(tmp_path / "videos", n_videos=1, n_frames=160, size=(48, 64), seed=5)
    root = tmp_path / "stores"
    uri = store_uri(str(root), video.stem)
    args = workspace.args("ingest", str(video), "--store-root", str(root))

    first = start_cli(tmp_path / "first.log", *args)
    try:
        wait_for(lambda: done_chunks(uri), first, "a first chunk")
        first.send_signal(signal.SIGSTOP)  # frozen mid-store, holding its claim
        assert not DepthStore.open(uri, require_complete=False).is_complete
        second = run_cli(*args)
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert second.returncode == 1, output(second)[-3000:]
    failed = [line for line in second.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and f"{video.stem} is being ingested by pid {first.pid}" in failed[0], failed

    cfg = workspace.cfg(**{"store.root": str(tmp_path / "reference")})
    expected = ingest_video(str(video), cfg, teacher=build_teacher(cfg.teacher)).store_uri
    np.testing.assert_array_equal(depth(uri), depth(expected))
    store = DepthStore.open(uri)
    np.testing.assert_array_equal(store.read(0, store.num_frames, "frame_index")["frame_index"], np.arange(160))


_HOLD = """
import sys, time
from storage.writing import exclusive_write
with exclusive_write(sys.argv[1], "held by a test"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.filterwarnings("ignore:Artifact creation outside of a flow or task run")  # the task's body, called bare
def test_a_refine_of_a_store_another_process_is_refining_is_refused(workspace, checkpoint, tmp_path, prefect_server):
    from smoother.checkpoint import load_smoother
    from smoother.refine import model_hash
    from tasks.smoother import refine_task

    (teacher,) = workspace.copy_stores(tmp_path / "stores", video_names(workspace)[0])
    refined = refined_uri(teacher, model_hash(load_smoother(checkpoint)))
    cfg_json = workspace.cfg(**{"store.root": str(tmp_path / "stores")}).model_dump(mode="json")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, refined], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match=rf"is being refined with model \w+ by pid {holder.pid} "):
            refine_task.fn(teacher, checkpoint, cfg_json)
        assert not Path(refined).exists()  # refused before anything was written
    finally:
        holder.kill()
        holder.wait()
    assert DepthStore.open(refine_task.fn(teacher, checkpoint, cfg_json)["uri"]).is_complete  # the claim died with it


# ---- 5: full and read-only outputs --------------------------------------------------------------------------------


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make `folder` unwritable: chmod for a user; for root (which ignores modes) a read-only bind mount."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if not (_mount("--bind", str(folder), str(folder)) and _mount("-o", "remount,bind,ro", str(folder))):
        subprocess.run(["umount", str(folder)], capture_output=True)
        pytest.skip("running as root without the right to mount: no way to make a folder read-only here")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_read_only_store_root_is_refused_before_any_work_and_its_stores_stay_intact(workspace, tmp_path):
    video = video_names(workspace)[0]
    root = tmp_path / "stores"
    (uri,) = workspace.copy_stores(root, video)
    with read_only(root):
        done = run_cli(*workspace.args("ingest", str(workspace.videos), "--store-root", str(root)))
    assert done.returncode == 2, output(done)[-3000:]
    (line,) = error_lines(done)
    assert f"cannot write {root} (" in line and "set store.root to another folder" in line, line
    assert "Traceback" not in done.stderr and "state (Prefect" not in done.stderr  # before any server
    np.testing.assert_array_equal(depth(uri), depth(workspace.store(video)))
    assert list_stores(str(root)) == [uri]


def test_read_only_export_folder_is_refused_before_any_work(workspace, tmp_path):
    out = tmp_path / "exports"
    out.mkdir()
    with read_only(out):
        done = run_cli(*workspace.args("export", "--out", str(out), "--formats", "npz"))
    assert done.returncode == 2, output(done)[-3000:]
    (line,) = error_lines(done)
    assert f"cannot write {out} (" in line and "export.out_dir" in line, line


@pytest.fixture
def tiny_disk(tmp_path) -> Iterator[Path]:
    """A 1 MiB file system (tmpfs): room for a few chunks of a store, not for all of them."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)):
        pytest.skip("a full disk needs a tmpfs mount (root); test_write_errors_* cover the error's translation")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_full_store_root_fails_the_video_in_one_line_and_keeps_its_finished_chunks(workspace, tiny_disk):
    video = video_names(workspace)[0]
    done = run_cli(*workspace.args("ingest", str(workspace.videos / f"{video}.mp4"), "--store-root", str(tiny_disk)))
    assert done.returncode == 1, output(done)[-3000:]
    failed = [line for line in done.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and f"cannot write {tiny_disk}" in failed[0] and "no space left" in failed[0], failed
    store = DepthStore.open(store_uri(str(tiny_disk), video), require_complete=False)
    kept = store.done_chunks()
    assert kept and not store.is_complete
    expected = DepthStore.open(workspace.store(video))
    for i in kept:  # what was committed before the disk filled is exactly the teacher's depth
        start, stop = store.chunk_bounds(i)
        np.testing.assert_array_equal(store.read(start, stop)["depth"], expected.read(start, stop)["depth"])


# ---- 7: colliding and unusual video names -------------------------------------------------------------------------


def _copy_video(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dest)
    shutil.copytree(src.with_suffix(".gt.zarr"), dest.with_suffix(".gt.zarr"))


def test_videos_whose_names_collide_are_refused_before_any_work(workspace, tmp_path):
    video = sorted(workspace.videos.glob("*.mp4"))[0]
    _copy_video(video, tmp_path / "same" / "a b.mp4")
    _copy_video(video, tmp_path / "same" / "a_b.mp4")
    _copy_video(video, tmp_path / "one" / "clip.mp4")
    _copy_video(video, tmp_path / "two" / "clip.mp4")
    for inputs, names in (([tmp_path / "same"], ("a b.mp4", "a_b.mp4")),
                          ([tmp_path / "one", tmp_path / "two"], ("one/clip.mp4", "two/clip.mp4"))):
        done = run_cli(*workspace.args("ingest", *map(str, inputs), "--store-root", str(tmp_path / "stores")))
        assert done.returncode == 2, output(done)[-3000:]
        (line,) = error_lines(done)
        assert all(n in line for n in names) and "rename one of them" in line, line
        assert not (tmp_path / "stores").exists()


def test_unusual_video_names_give_stores_inside_the_root(workspace):
    from steadydepth.video.open import source_name

    odd = workspace.root / "odd"
    expected = {store_uri(str(workspace.stores), source_name(odd / f"{n}.mp4")) for n in ODD_NAMES}
    assert len(expected) == len(ODD_NAMES)  # all different
    stores = set(list_stores(str(workspace.stores)))
    assert expected <= stores
    for uri in expected:
        path = Path(uri)
        assert path.parent == workspace.stores and len(path.name.encode()) <= 255 and not path.name.startswith(".")
        assert DepthStore.open(uri).is_complete
    # nothing was written anywhere but the store root and the state folder
    outside = {p.name for p in workspace.root.iterdir()} - {"videos", "short", "odd", "stores", "home", "run.yaml"}
    assert not outside, outside
