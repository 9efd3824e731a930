"""Every deployment of prefect.yaml run by a real process worker against a real Prefect server, as a user would.

One module-wide stack: `prefect server start` on a free localhost port (its own PREFECT_HOME under tmp),
`prefect work-pool create` for each pool prefect.yaml names, the teacher's concurrency limit, a result storage
block, `prefect --no-prompt deploy --all` from the repo root, and one `prefect worker start` per pool, each started
outside the checkout and pointed at it only by STEADYDEPTH_CHECKOUT (the pull step), its results going to the
block (PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK). Each deployment is then run with `prefect deployment run -p ...
--watch` on a tiny synthetic video (synthetic teacher, a few training steps); every state and output, and the pool
and worker that ran it, are checked, and the workers and server are stopped with every process they started. See
deploy/README.md for the same steps by hand.
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
RESULT_STORAGE = "local-file-system/steadydepth-results"  # the block the workers' results go to
MODEL_NAME = "steadydepth-smoother"  # the default orchestration.model_name the deployments register under
# what a run falling back to a default would create in the checkout (its working directory on the worker)
PROCESS_STATE_DIRS = ("mlruns", "mlflow.db", ".steadydepth", "data")


@dataclass
class Stack:
    """A running Prefect server and process worker, and the environment every command runs with."""

    root: Path
    api_url: str
    env: dict[str, str]
    worker_logs: dict[str, Path]  # pool name → its worker's log
    server_log: Path
    mlflow_uri: str
    videos: Path
    results: Path  # the shared result storage's folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 6000) -> str:
    text = path.read_text(errors="replace") if path.is_file() else "<no log>"
    return text[-chars:]


def _spawn(args: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> subprocess.Popen:
    """A long-running prefect command in its own session, its output in `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "prefect", *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
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


def _api(stack: Stack, method: str, path: str, body: Any) -> Any:
    """One call to the server's REST API with a JSON body (what the UI does)."""
    request = urllib.request.Request(f"{stack.api_url}{path}", data=json.dumps(body).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else None


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


def _deployment_pools() -> dict[str, str]:
    """Deployment name → the work pool prefect.yaml sends its runs to."""
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return {d["name"]: d["work_pool"]["name"] for d in spec["deployments"]}


def _pool_names() -> list[str]:
    return sorted(set(_deployment_pools().values()))


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
    """The workers' (and so their flow runs') environment: their checkout, the shared result storage, one MLflow
    shared by every run; quick polling."""
    mlflow_uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {**base, "STEADYDEPTH_CHECKOUT": str(REPO), "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK": RESULT_STORAGE,
           "MLFLOW_TRACKING_URI": mlflow_uri,
           "STEADYDEPTH_ARTIFACT_ROOT": str(root / "mlartifacts"),
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1",
           "OMP_NUM_THREADS": "1"}  # tiny tensors: one torch thread beats two on a busy 2-core machine
    return env, mlflow_uri


def _python(code: str, env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    _ok(done, f"python -c {code!r}")


def _set_up_server(env: dict[str, str], results: Path) -> None:
    """What deploy/README.md has a user do once per server: pools, the teacher's limit, a result storage block."""
    for pool in _pool_names():
        _ok(_prefect(["work-pool", "create", pool, "--type", "process"], env), f"work-pool create {pool}")
    _ok(_prefect(["concurrency-limit", "create", "teacher", "1"], env), "concurrency-limit create teacher 1")
    # A local folder stands in for the bucket of deploy/README.md: the same setting names it, another block type.
    _python("from prefect.filesystems import LocalFileSystem; "
            f"LocalFileSystem(basepath={str(results)!r}).save({RESULT_STORAGE.split('/')[1]!r})", env)


def _deploy_everything(env: dict[str, str]) -> None:
    _ok(_prefect(["deploy", "--all"], env, timeout=600), "prefect deploy --all")
    listed = _ok(_prefect(["deployment", "ls"], env), "deployment ls")
    missing = [name for name in _deployment_names() if name not in listed]
    assert not missing, f"not deployed: {missing}\n{listed}"


def _worker_name(pool: str) -> str:
    return f"worker-{pool}"


def _start_worker(pool: str, env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    args = ["worker", "start", "--pool", pool, "--type", "process", "--name", _worker_name(pool)]
    return _spawn(args, env, log, cwd=cwd)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """Server, pools, deployments and a worker per pool, started as a user would; stopped with all their
    processes."""
    from steadydepth.synth.generate import generate_benchmark

    before = {name for name in PROCESS_STATE_DIRS if (REPO / name).exists()}
    root = tmp_path_factory.mktemp("deployments")
    api_url = f"http://127.0.0.1:{_free_port()}/api"
    base = _base_env(root, api_url)
    server_log, results = root / "server.log", root / "results"
    worker_logs = {pool: root / f"{_worker_name(pool)}.log" for pool in _pool_names()}
    port = api_url.rsplit(":", 1)[1].split("/")[0]
    server = _spawn(["server", "start", "--host", "127.0.0.1", "--port", port], _server_env(base), server_log)
    workers = []
    try:
        _wait_healthy(api_url, server, server_log)
        _set_up_server(base, results)
        _deploy_everything(base)
        worker_env, mlflow_uri = _worker_env(base, root)
        elsewhere = root / "elsewhere"  # the workers start outside the checkout: only the pull step leads there
        elsewhere.mkdir()
        workers = [_start_worker(pool, worker_env, log, elsewhere) for pool, log in worker_logs.items()]
        videos = root / "videos"
        generate_benchmark(videos, n_videos=1, n_frames=8, size=(48, 64), seed=11)
        yield Stack(root, api_url, base, worker_logs, server_log, mlflow_uri, videos, results)
    finally:
        for worker in workers:
            _stop(worker)
        _stop(server)
    created = {name for name in PROCESS_STATE_DIRS if (REPO / name).exists()} - before
    assert not created, f"the runs wrote state into the checkout: {sorted(created)}"


def _config(tree: Path) -> dict:
    """A whole config: synthetic teacher, tiny training, all under `tree` (the deployments' own defaults point at
    data/ in the checkout)."""
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


def _run_deployment(stack: Stack, deployment: str, params: dict[str, Any]) -> subprocess.CompletedProcess:
    """`prefect deployment run --watch` with these parameters: the worker runs it, the command waits for it."""
    values = [arg for key, value in params.items() for arg in ("-p", f"{key}={json.dumps(value)}")]
    args = ["deployment", "run", deployment, *values, "--watch", "--watch-timeout", str(RUN_TIMEOUT_S)]
    return _prefect(args, stack.env, timeout=RUN_TIMEOUT_S + 120)


def _flow_run(stack: Stack, deployment: str, params: dict[str, Any]) -> FlowRun:
    """A deployment's run, finished: in the pool prefect.yaml names, picked up by that pool's worker."""
    done = _run_deployment(stack, deployment, params)
    output = done.stdout + done.stderr
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", output)
    assert match, f"deployment run {deployment} created no flow run ({done.returncode}):\n{output[-3000:]}"
    run = FlowRun(_final_record(stack, match.group(1)), output, done.returncode)
    # --watch exits 0 exactly when the run completed: what a script or CI job calling it relies on
    assert (run.returncode == 0) == (run.state.get("type") == "COMPLETED"), _why(stack, run)
    pool = _deployment_pools()[deployment.split("/", 1)[1]]
    assert run.record.get("work_pool_name") == pool, _why(stack, run)
    assert _worker_of(stack, run) == _worker_name(pool), _why(stack, run)
    return run


def _worker_of(stack: Stack, run: FlowRun) -> str | None:
    """The worker that submitted the run, from the run's own logs on the server."""
    body = {"logs": {"flow_run_id": {"any_": [run.record["id"]]}}, "limit": 200}
    for log in _api(stack, "POST", "/logs/filter", body):
        if match := re.search(r"Worker '([^']+)' submitting flow run", log["message"]):
            return match.group(1)
    return None


def _set_deployment_config(stack: Stack, deployment: str, config: dict[str, Any]) -> None:
    """Change a deployment's default `config`, as editing the deployment in the UI does."""
    record = _get_json(f"{stack.api_url}/deployments/name/{deployment}")
    _api(stack, "PATCH", f"/deployments/{record['id']}", {"parameters": {**record["parameters"], "config": config}})


def _final_record(stack: Stack, flow_run_id: str, timeout: float = 60) -> dict[str, Any]:
    """The flow run's record once its state is final (--watch returns on the final event; the record follows)."""
    deadline = time.monotonic() + timeout
    record = _get_json(f"{stack.api_url}/flow_runs/{flow_run_id}")
    while (record.get("state") or {}).get("type") not in FINAL_TYPES and time.monotonic() < deadline:
        time.sleep(1)
        record = _get_json(f"{stack.api_url}/flow_runs/{flow_run_id}")
    return record


def _why(stack: Stack, run: FlowRun) -> str:
    logs = "".join(f"--- {path.name} (tail) ---\n{_tail(path, 3000)}\n" for path in stack.worker_logs.values())
    return (f"{run.record.get('name')}: state {run.state.get('name')!r}: {run.state.get('message')}\n"
            f"--- prefect deployment run --watch (exit {run.returncode}, tail) ---\n{run.output[-2500:]}\n{logs}")


def _assert_state(stack: Stack, run: FlowRun, expected: str) -> None:
    assert run.state.get("name") == expected, f"expected {expected}; {_why(stack, run)}"


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def _mlflow(stack: Stack):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack.mlflow_uri, registry_uri=stack.mlflow_uri)


def _registered_versions(stack: Stack) -> list[str]:
    return sorted(v.version for v in _mlflow(stack).search_model_versions(f"name='{MODEL_NAME}'"))


def _trained_with(stack: Stack, version: str) -> dict[str, str]:
    """The config a registered version was trained with (its training run's params, flattened)."""
    client = _mlflow(stack)
    return client.get_run(client.get_model_version(MODEL_NAME, version).run_id).data.params


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


def _assert_teacher_slots_released(stack: Stack) -> None:
    """The teacher's concurrency limit (deploy/README.md) exists and a finished ingest holds none of its slots."""
    limit = _get_json(f"{stack.api_url}/concurrency_limits/tag/teacher")
    assert limit["concurrency_limit"] == 1 and limit["active_slots"] == [], limit


def _assert_results_shared(stack: Stack) -> None:
    """Results went to the workers' result storage block, none to the local default: what lets a cache hit on one
    worker be seen by another."""
    assert _files(stack.results), f"no result in the shared result storage {stack.results}"
    local_default = stack.root / "prefect-home" / "storage"
    assert not _files(local_default), f"results in the local default {local_default}: {_files(local_default)}"


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
    _assert_teacher_slots_released(stack)

    # A partial override merges into the deployment's config: the run names train.steps only, and still finds the
    # stores and writes its checkpoint where the deployment's store.root and orchestration.home say.
    _set_deployment_config(stack, "train/train", config)
    _assert_state(stack, _flow_run(stack, "train/train", {"config": {"train": {"steps": 3}}}), "Completed")
    (version,) = _assert_trained(stack, tree, n_versions=1)
    trained_with = _trained_with(stack, version)
    assert (trained_with["train.steps"], trained_with["train.batch_size"]) == ("3", "2"), trained_with
    assert trained_with["store.root"] == config["store"]["root"], trained_with

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
    _assert_results_shared(stack)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ingest_deployment_over_a_broken_video_ends_failed(stack: Stack) -> None:
    broken = stack.root / "broken-inbox"
    broken.mkdir()
    (broken / "notes.mp4").write_text("this is a text file, not a video\n")
    run = _flow_run(stack, "ingest/ingest-inbox", {"inputs": [str(broken)], "config": _config(stack.root / "red")})
    _assert_state(stack, run, "Failed")
    assert "1 of 1 failed" in (run.state.get("message") or ""), _why(stack, run)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_bad_config_value_fails_at_once_in_one_line(stack: Stack) -> None:
    # Outside what the parameter schema allows: the server refuses the run; no flow run is created.
    done = _run_deployment(stack, "train/train", {"config": {"train": {"steps": 0}}})
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "UUID:" not in output, output[-3000:]
    assert "config.train.steps" in output and "minimum of 1" in output, output[-3000:]

    # Valid for the schema, not for the config (fx without fy): the run fails before any work, in one line.
    run = _flow_run(stack, "train/train", {"config": {"decode": {"intrinsics": {"fx": 500.0}}}})
    _assert_state(stack, run, "Failed")
    message = run.state.get("message") or ""
    assert message.startswith("invalid config decode.intrinsics"), _why(stack, run)
    assert "give fx and fy" in message and "\n" not in message, _why(stack, run)
    assert "Traceback" not in run.output, _why(stack, run)

