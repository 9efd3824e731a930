"""The registered smoother as an MLflow pyfunc: servable, described, and loaded without running pickled code."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from smoother.config import SmootherConfig
from smoother.model import ResidualSmoother
from smoother.refine import refine_store
from steadydepth import serving, tracking
from steadydepth.config import Config
from steadydepth.errors import InputError
from storage.depth_store import DepthStore
from storage.naming import store_uri
from tasks.evaluate import promote_task

NAME = "registry-test"
N, H, W = 10, 12, 20
SMALL = SmootherConfig(d_model=16, n_layers=1, headdim=8, chunk_size=4, depth_long_edge=10, preroll=4)
DEPTH_ONLY = SMALL.model_copy(update={"use_features": False, "flow_cues": False, "flow_warp": False})


def _model(cfg: SmootherConfig) -> ResidualSmoother:
    """A 'trained' smoother: random head, the filter's gate partly open, so refinement changes the depth."""
    torch.manual_seed(0)
    model = ResidualSmoother(cfg).eval()
    torch.nn.init.normal_(model.head.weight, std=0.3)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([0.02, 0.5]))
    return model


def _window() -> tuple[np.ndarray, np.ndarray]:
    """Teacher depth (N, H, W) float32 metres with flicker, and RGB (N, H, W, 3) uint8."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    depth = (3.0 + 0.05 * xx + 0.02 * yy)[None] * np.exp(rng.normal(0, 0.03, (N, 1, 1)))
    rgb = rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8)
    return depth.astype(np.float32), rgb


def _teacher_store(root: Path, depth: np.ndarray, rgb: np.ndarray) -> str:
    uri = store_uri(str(root), "clip", kind="teacher")
    attrs = {"source": "synthetic", "source_hash": "src1", "config_hash": "cfg1", "kind": "teacher"}
    store = DepthStore.create(uri, num_frames=N, height=H, width=W, chunk_frames=4, attrs=attrs, variables=["rgb"])
    K = np.tile(np.eye(3, dtype=np.float32), (N, 1, 1))
    for i in store.missing_chunks():
        a, b = store.chunk_bounds(i)
        store.write_chunk(
            i, depth=depth[a:b], rgb=rgb[a:b], K=K[a:b], timestamp=np.arange(a, b) / 30.0, frame_index=np.arange(a, b)
        )
    store.finalize()
    return uri


def _register(cfg: SmootherConfig, store_uris: list[str] | None = None) -> tuple[str, str]:
    """(version, run id) of a model logged and registered the way train_task does it."""
    with tracking.start_run("data/videos", Config(smoother=cfg), run_name="registry") as run:
        version = tracking.log_smoother(_model(cfg), Config(smoother=cfg), model_name=NAME, store_uris=store_uris)
    return version, run.info.run_id


def test_registered_pyfunc_refines_a_window_like_the_store_refinement(mlflow_sqlite, tmp_path):
    depth, rgb = _window()
    teacher = _teacher_store(tmp_path / "stores", depth, rgb)
    version, run_id = _register(SMALL, [teacher])

    predicted = mlflow.pyfunc.load_model(f"models:/{NAME}/{version}").predict({"depth": depth, "rgb": rgb})
    direct = serving.refine_window(_model(SMALL), depth, rgb)
    assert predicted.shape == (N, H, W) and predicted.dtype == np.float32
    np.testing.assert_allclose(predicted, direct, rtol=1e-5)  # the same maths, up to float summation order
    assert np.abs(np.log(predicted / depth)).max() > 0.01  # the model changed the depth: a real comparison
    # the same frames refined as a store (chunked, pre-roll read backwards) give the same depth
    refined = refine_store(teacher, str(tmp_path / "refined.zarr"), _model(SMALL), residual_stats=False)
    np.testing.assert_allclose(DepthStore.open(refined.uri).read(0, N, ["depth"])["depth"], predicted, rtol=2e-5)

    # loading by version, by alias and by run gives the logged weights
    tracking.promote(version, gate_passed=True, metric=None, value=None, model_name=NAME)
    logged = _model(SMALL).state_dict()
    for uri in (f"models:/{NAME}/{version}", f"models:/{NAME}@champion", f"runs:/{run_id}/model"):
        loaded = tracking.load_model(uri)
        assert loaded.cfg == SMALL and not loaded.training
        assert loaded.state_dict().keys() == logged.keys()
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in logged.items())

    # servable: requirements install from a registry, signature and input example logged
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/{version}"))
    requirements = (local / "requirements.txt").read_text().split()
    assert not any(r.lower().startswith("steadydepth") or "+" in r for r in requirements)
    assert any(r.startswith("torch==") for r in requirements)
    assert {p.name for p in (local / "code").iterdir()} >= {"smoother", "steadydepth", "storage"}
    assert not list(local.rglob("*.pkl")) and not (local / "python_model.pkl").exists()  # nothing cloudpickled
    info = mlflow.models.get_model_info(f"models:/{NAME}/{version}")
    assert info.signature.inputs.input_names() == ["depth", "rgb"]
    assert json.loads((local / "serving_input_example.json").read_text())["inputs"].keys() == {"depth", "rgb"}

    # described and tagged; the training stores are the run's dataset input
    client = MlflowClient()
    assert "smoother" in client.get_registered_model(NAME).description
    mv = client.get_model_version(NAME, version)
    assert mv.description.startswith("Residual smoother") and "data/videos" in mv.description
    assert mv.tags["dataset"] == "data/videos" and mv.tags["train.steps"] == str(Config().train.steps)
    assert mv.tags["teacher"].startswith("unidepth:") and mv.tags["inputs"] == "depth, rgb"
    (training,) = client.get_run(run_id).inputs.dataset_inputs
    assert [(t.key, t.value) for t in training.tags] == [("mlflow.data.context", "training")]
    dataset = training.dataset
    assert dataset.name == "videos" and json.loads(dataset.profile)["num_rows"] == 1
    columns = {c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]}
    assert {"uri", "source_hash", "config_hash", "num_frames"} <= columns
    assert json.loads(dataset.source)["uri"] == str((tmp_path / "stores").resolve())
    assert len(dataset.digest) == 16


def test_depth_only_model_takes_a_plain_array_and_records_the_gate(mlflow_sqlite):
    version, _ = _register(DEPTH_ONLY)
    depth, _ = _window()
    predicted = mlflow.pyfunc.load_model(f"models:/{NAME}/{version}").predict(depth)
    np.testing.assert_allclose(predicted, serving.refine_window(_model(DEPTH_ONLY), depth), rtol=1e-5)

    evaluation = {
        "gate_passed": False,
        "flicker_metric": "tae",
        "flicker_value": 1.5,
        "verdict": "gate FAIL: FAIL tae 1.5 ≥ teacher 1.4",
        "means": {"refined": {"tae": 1.5, "absrel": 0.08, "rmse": 0.3}, "teacher": {"tae": 1.4}},
    }
    promoted = promote_task.fn(version, evaluation, NAME)
    assert not promoted["promoted"]
    mv = MlflowClient().get_model_version(NAME, version)
    assert mv.tags["gate"] == "failed" and mv.tags["eval.tae"] == "1.5" and mv.tags["eval.absrel"] == "0.08"
    assert "eval.rmse" not in mv.tags  # key metrics only: those the gate judges
    tracking.tag_version(version, gate_passed=True, verdict="gate PASS: all", metrics={"tae": 1.2}, model_name=NAME)
    mv = MlflowClient().get_model_version(NAME, version)
    assert mv.tags["gate"] == "passed" and mv.tags["eval.tae"] == "1.2"
    assert mv.description.count("Evaluation:") == 1 and mv.description.endswith("gate PASS: all")
    assert mv.description.startswith("Residual smoother")


class _Payload:
    """Unpickling this creates `marker`: what a planted model file would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_planted_pickle_in_place_of_the_weights_is_refused_and_never_runs(mlflow_sqlite, tmp_path):
    version, _ = _register(DEPTH_ONLY)
    (weights,) = (tmp_path / "artifacts").rglob(serving.WEIGHTS_FILE)
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Payload(tmp_path / "probe")))
    assert (tmp_path / "probe").exists()  # the payload is live: plain unpickling runs it
    weights.write_bytes(pickle.dumps(_Payload(marker), protocol=2))  # torch.load's own protocol

    uri = f"models:/{NAME}/{version}"
    with pytest.raises(InputError, match=r"refused to load the weights of models:/registry-test/1.*nothing in it"):
        tracking.load_model(uri)
    from tasks.smoother import load_model as task_load_model  # what `steadydepth evaluate --model URI` calls

    with pytest.raises(InputError, match="refused"):
        task_load_model(uri)
    with pytest.raises(Exception, match="refused"):
        mlflow.pyfunc.load_model(uri)
    assert not marker.exists()

    weights.write_bytes(b"")  # an emptied or truncated file is refused too
    with pytest.raises(InputError, match="refused"):
        tracking.load_model(uri)


def test_a_version_logged_as_a_pickled_pytorch_model_is_not_loaded(mlflow_sqlite):
    import mlflow.pytorch

    with tracking.start_run("data/videos", Config(smoother=DEPTH_ONLY)):
        mlflow.pytorch.log_model(  # what log_smoother used to log: the whole module pickled
            _model(DEPTH_ONLY), name="model", registered_model_name=NAME, pip_requirements=["torch"],
            serialization_format="pickle",
        )
    with pytest.raises(InputError, match="older SteadyDepth as a pickled module, which is never loaded"):
        tracking.load_model(f"models:/{NAME}/1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(proc: subprocess.Popen, port: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "mlflow models serve exited before answering"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"mlflow models serve did not answer /ping within {timeout:.0f} s")


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations(mlflow_sqlite, tmp_path):
    version, _ = _register(DEPTH_ONLY)
    depth, _ = _window()
    port = _free_port()
    venv_bin = str(Path(sys.executable).parent)  # the server execs `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_sqlite, "PATH": venv_bin + os.pathsep + os.environ["PATH"]}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}/{version}"]
    cmd += ["--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)]
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_up(proc, port)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": depth.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = np.asarray(json.loads(response.read())["predictions"], dtype=np.float32)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its uvicorn worker
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    np.testing.assert_allclose(answer, serving.refine_window(_model(DEPTH_ONLY), depth), rtol=1e-5)


def test_a_moved_alias_loads_the_new_model_even_from_the_cache(mlflow_sqlite):
    from smoother.refine import model_hash
    from tasks.smoother import load_model as task_load_model

    first, _ = _register(SmootherConfig(d_model=16, headdim=8, use_features=False))
    second, _ = _register(SmootherConfig(d_model=32, headdim=8, use_features=False))
    client = MlflowClient()
    champion = f"models:/{NAME}@champion"
    client.set_registered_model_alias(NAME, "champion", first)
    assert tracking.pinned_uri(champion) == f"models:/{NAME}/{first}"
    before = model_hash(task_load_model(champion))
    client.set_registered_model_alias(NAME, "champion", second)
    after = model_hash(task_load_model(champion))
    assert before == model_hash(tracking.load_model(f"models:/{NAME}/{first}"))
    assert after == model_hash(tracking.load_model(f"models:/{NAME}/{second}")) != before
