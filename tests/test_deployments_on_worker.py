"""Every deployment of prefect.yaml run by a real process worker against a real Prefect server, as a user would.

One module-wide stack: `prefect server start` on a free localhost port (its own PREFECT_HOME under tmp),
`prefect work-pool create` for each pool prefect.yaml names, `prefect --no-prompt deploy --all` from the repo
root, and `prefect worker start`. Each deployment is then run once with `prefect deployment run -p ... --watch` on a
tiny synthetic video (synthetic teacher, a few training steps), every state and output is checked, and the
worker and server are stopped with every process they started. See deploy/README.md, "Run a deployment on a
worker", for the same steps by hand.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from steadydepth.config import load_config

REPO = Path(__file__).resolve().parents[1]
FINAL_TYPES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
RUN_TIMEOUT_S = 600  # one flow run on 2 loaded cores; a tiny run takes about a minute
MODEL_NAME = "steadydepth-smoother"  # the default orchestration.model_name the deployments register under
# what a run falling back to a default would create in the checkout (its working directory on the worker)
PROCESS_STATE_DIRS = ("mlruns", "mlflow.db", ".steadydepth", "data")


@dataclass
class Stack:
    """A running Prefect server and process worker, and the environment every command runs with."""

    root: Path
    api_url: str
    env: dict[str, str]
    worker_log: Path
    server_log: Path
    mlflow_uri: str
    videos: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 6000) -> str:
    text = path.read_text(errors="replace") if path.is_file() else "<no log>"
    return text[-chars:]


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A long-running prefect command in its own session, its output in `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "prefect", *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )


def _prefect(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(done: subprocess.CompletedProcess, what: str) -> str:
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _wait_healthy(api_url: str, server: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    """Until /api/health answers (the first start runs the SQLite migrations: tens of seconds when loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"prefect server exited with {server.returncode}:\n{_tail(log)}"
        try:
            if _get_json(f"{api_url}/health") is True:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            pass
        time.sleep(1)
    raise AssertionError(f"prefect server not healthy after {timeout:.0f} s:\n{_tail(log)}")


def _stop(proc: subprocess.Popen, grace: float = 30) -> None:
    """Stop a process we started and everything it started (flow runs get sessions of their own)."""
    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=grace)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(alive, timeout=10)
    proc.wait(timeout=10)
    left = [m.pid for m in family if _running(m)]
    assert not left, f"processes left running after stopping {proc.args}: {left}"


def _running(process: Any) -> bool:
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _pool_names() -> list[str]:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return sorted({d["work_pool"]["name"] for d in spec["deployments"]})


def _deployment_names() -> list[str]:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return [d["name"] for d in spec["deployments"]]


def _base_env(root: Path, api_url: str) -> dict[str, str]:
    """What every command sees: the server, and Prefect state under tmp (never the user's ~/.prefect)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "STEADYDEPTH_"))}
    return {**env, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(root / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def _server_env(base: dict[str, str]) -> dict[str, str]:
    # No scheduler: the deployments' cron schedules must not start runs on the defaults (data/inbox, UniDepth)
    # while the test runs; no UI: nothing serves it here and building it costs start-up time.
    return {**base, "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}


def _worker_env(base: dict[str, str], root: Path) -> tuple[dict[str, str], str]:
    """The worker's (and so its flow runs') environment: one MLflow shared by every run; quick polling."""
    mlflow_uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {**base, "MLFLOW_TRACKING_URI": mlflow_uri, "STEADYDEPTH_ARTIFACT_ROOT": str(root / "mlartifacts"),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1",
           "OMP_NUM_THREADS": "1"}  # tiny tensors: one torch thread beats two on a busy 2-core machine
    return env, mlflow_uri


def _deploy_everything(env: dict[str, str]) -> None:
    for pool in _pool_names():
        _ok(_prefect(["work-pool", "create", pool, "--type", "process"], env), f"work-pool create {pool}")
    _ok(_prefect(["deploy", "--all"], env, timeout=600), "prefect deploy --all")
    listed = _ok(_prefect(["deployment", "ls"], env), "deployment ls")
    missing = [name for name in _deployment_names() if name not in listed]
    assert not missing, f"not deployed: {missing}\n{listed}"


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    args = ["worker", "start", "--pool", _pool_names()[0], "--type", "process", "--name", "test-worker"]
    return _spawn(args, env, log)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """Server, pools, deployments and a worker, started as a user would; stopped with all their processes."""
    from steadydepth.synth.generate import generate_benchmark

    assert len(_pool_names()) == 1, "this test starts one worker; give each pool its own worker to test more"
    before = {name for name in PROCESS_STATE_DIRS if (REPO / name).exists()}
    root = tmp_path_factory.mktemp("deployments")
    api_url = f"http://127.0.0.1:{_free_port()}/api"
    base = _base_env(root, api_url)
    server_log, worker_log = root / "server.log", root / "worker.log"
    port = api_url.rsplit(":", 1)[1].split("/")[0]
    server = _spawn(["server", "start", "--host", "127.0.0.1", "--port", port], _server_env(base), server_log)
    worker = None
    try:
        _wait_healthy(api_url, server, server_log)
        _deploy_everything(base)
        worker_env, mlflow_uri = _worker_env(base, root)
        worker = _start_worker(worker_env, worker_log)
        videos = root / "videos"
        generate_benchmark(videos, n_videos=1, n_frames=8, size=(48, 64), seed=11)
        yield Stack(root, api_url, base, worker_log, server_log, mlflow_uri, videos)
    finally:
        if worker is not None:
            _stop(worker)
        _stop(server)
    created = {name for name in PROCESS_STATE_DIRS if (REPO / name).exists()} - before
    assert not created, f"the runs wrote state into the checkout: {sorted(created)}"


def _config(tree: Path) -> dict:
    """A whole config (a run's `config` replaces the deployment's): synthetic teacher, tiny training, all under
    `tree`."""
    overrides = {
        "teacher.backend": "synthetic", "store.root": str(tree / "stores"), "store.chunk_frames": 8,
        "orchestration.home": str(tree / "home"),
        "train.steps": 2, "train.batch_size": 2, "train.window": 8, "train.progress": False,
        "export.out_dir": str(tree / "exports"), "export.formats": ["npz", "png16", "preview"],
    }
    return load_config(overrides=overrides).model_dump(mode="json")


@dataclass
class FlowRun:
    """A finished flow run: its record on the server and what `prefect deployment run --watch` printed."""

    record: dict[str, Any]
    output: str
    returncode: int

    @property
    def state(self) -> dict[str, Any]:
        return self.record.get("state") or {}


def _flow_run(stack: Stack, deployment: str, params: dict[str, Any]) -> FlowRun:
    """`prefect deployment run --watch` with these parameters: the worker runs it, the command waits for it."""
    values = [arg for key, value in params.items() for arg in ("-p", f"{key}={json.dumps(value)}")]
    args = ["deployment", "run", deployment, *values, "--watch", "--watch-timeout", str(RUN_TIMEOUT_S)]
    done = _prefect(args, stack.env, timeout=RUN_TIMEOUT_S + 120)
    output = done.stdout + done.stderr
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", output)
    assert match, f"deployment run {deployment} created no flow run ({done.returncode}):\n{output[-3000:]}"
    run = FlowRun(_final_record(stack, match.group(1)), output, done.returncode)
    # --watch exits 0 exactly when the run completed: what a script or CI job calling it relies on
    assert (run.returncode == 0) == (run.state.get("type") == "COMPLETED"), _why(stack, run)
    return run


def _final_record(stack: Stack, flow_run_id: str, timeout: float = 60) -> dict[str, Any]:
    """The flow run's record once its state is final (--watch returns on the final event; the record follows)."""
    deadline = time.monotonic() + timeout
    record = _get_json(f"{stack.api_url}/flow_runs/{flow_run_id}")
    while (record.get("state") or {}).get("type") not in FINAL_TYPES and time.monotonic() < deadline:
        time.sleep(1)
        record = _get_json(f"{stack.api_url}/flow_runs/{flow_run_id}")
    return record


def _why(stack: Stack, run: FlowRun) -> str:
    return (f"{run.record.get('name')}: state {run.state.get('name')!r}: {run.state.get('message')}\n"
            f"--- prefect deployment run --watch (exit {run.returncode}, tail) ---\n{run.output[-2500:]}\n"
            f"--- worker log (tail) ---\n{_tail(stack.worker_log)}")


def _assert_state(stack: Stack, run: FlowRun, expected: str) -> None:
    assert run.state.get("name") == expected, f"expected {expected}; {_why(stack, run)}"


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def _registered_versions(stack: Stack) -> list[str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack.mlflow_uri, registry_uri=stack.mlflow_uri)
    return sorted(v.version for v in client.search_model_versions(f"name='{MODEL_NAME}'"))


def _assert_ingested(tree: Path, n_stores: int = 1) -> None:
    from storage.naming import list_stores

    stores = list_stores(str(tree / "stores"), "teacher")
    assert len(stores) == n_stores, f"teacher stores under {tree / 'stores'}: {stores}"


def _assert_trained(stack: Stack, tree: Path, n_versions: int) -> list[str]:
    checkpoints = list((tree / "home" / "checkpoints").glob("*/last.pt"))
    assert checkpoints, f"no checkpoint under {tree / 'home'}: {_files(tree / 'home')}"
    versions = _registered_versions(stack)
    assert len(versions) == n_versions, f"registered versions of {MODEL_NAME}: {versions}"
    return versions


def _assert_evaluated(tree: Path) -> None:
    report = tree / "home" / "evaluation"
    assert {"report.md", "metrics.json"} <= set(_files(report)), f"evaluation folder: {_files(report)}"
    assert json.loads((report / "metrics.json").read_text()), "empty metrics.json"


def _assert_exported(tree: Path) -> None:
    files = _files(tree / "exports")
    for fmt, suffix in (("npz", ".npz"), ("png16", ".png"), ("preview", ".png")):
        assert any(f"/{fmt}/" in f and f.endswith(suffix) for f in files), f"no {fmt} export in {files}"


def test_no_flow_file_shadows_an_importable_module() -> None:
    """A worker loads an entrypoint file as a module named after the file, with flows/ first on sys.path: a
    flows/smoother.py hid the smoother package from every run that imported it (pipeline, export)."""
    clashes = {}
    for path in sorted((REPO / "flows").glob("*.py")):
        spec = None if path.stem == "__init__" else importlib.util.find_spec(path.stem)
        if spec is not None and Path(spec.origin or "") != path:
            clashes[path.name] = spec.origin
    assert not clashes, f"rename these flow files; each hides a module a run may import: {clashes}"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_every_deployment_runs_on_a_process_worker(stack: Stack) -> None:
    tree = stack.root / "runs"
    config, inputs = _config(tree), [str(stack.videos)]

    _assert_state(stack, _flow_run(stack, "ingest/ingest-inbox", {"inputs": inputs, "config": config}), "Completed")
    _assert_ingested(tree)

    _assert_state(stack, _flow_run(stack, "train/train", {"config": config}), "Completed")
    (version,) = _assert_trained(stack, tree, n_versions=1)

    params = {"model_ref": f"models:/{MODEL_NAME}/{version}", "config": config}
    _assert_state(stack, _flow_run(stack, "evaluate/evaluate", params), "Completed")
    _assert_evaluated(tree)

    _assert_state(stack, _flow_run(stack, "export/export", {"config": config}), "Completed")
    _assert_exported(tree)

    weekly = stack.root / "weekly"  # the whole pipeline from nothing: its own stores, home and exports
    params = {"inputs": inputs, "config": _config(weekly)}
    _assert_state(stack, _flow_run(stack, "pipeline/pipeline-weekly", params), "Completed")
    _assert_ingested(weekly)
    _assert_trained(stack, weekly, n_versions=2)
    _assert_evaluated(weekly)
    _assert_exported(weekly)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ingest_deployment_over_a_broken_video_ends_failed(stack: Stack) -> None:
    broken = stack.root / "broken-inbox"
    broken.mkdir()
    (broken / "notes.mp4").write_text("this is a text file, not a video\n")
    run = _flow_run(stack, "ingest/ingest-inbox", {"inputs": [str(broken)], "config": _config(stack.root / "red")})
    _assert_state(stack, run, "Failed")
    assert "1 of 1 failed" in (run.state.get("message") or ""), _why(stack, run)
