"""MLflow tracking and the model registry: runs per dataset, the smoother as a pyfunc model, promotion by alias.

Plain MLflow (no Prefect). The tracking URI comes from MLFLOW_TRACKING_URI; `runtime.use_embedded_defaults`
points it at a SQLite file when the user has not set one. Promotion uses the registry alias `champion`
(stages are deprecated) and happens only when the evaluation gate passed and the model beats the current
champion on the gate's flicker metric (lower is better).

What a registered version holds (`log_smoother`): a pyfunc model logged from code (steadydepth/serving_entry.py)
whose artifacts are the weights as a tensor state dict and the smoother config as JSON, the project's packages as
code_paths, registry-installable pip requirements, a tensor signature and an input example; a description and tags
(teacher, dataset, training steps; after evaluation the gate verdict and key metrics, `tag_version`). The training
stores are the run's dataset input.

What loading unpickles: `load_model` downloads only the weights and config files and reads the weights with
torch.load(weights_only=True), which refuses anything but tensors and plain containers; it never imports code from
the artifact store. `mlflow.pyfunc.load_model` / `mlflow models serve` also unpickle nothing (models from code, no
cloudpickle) but do import the model's code shipped in the artifact store, so they trust it like a code install.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from packaging.version import Version

from evaluation.metric_names import GATE_METRICS
from smoother.config import SmootherConfig
from smoother.model import ResidualSmoother
from steadydepth import serving
from steadydepth.config import Config
from steadydepth.runtime import process_alive, process_host, process_token

log = logging.getLogger(__name__)

CHAMPION = "champion"
DEFAULT_MODEL_NAME = "steadydepth-smoother"
KEY_METRICS = GATE_METRICS  # the metrics a version is tagged with after evaluation
EVALUATION_HEADING = "\n\nEvaluation: "  # starts the evaluation paragraph of a version's description
# what the served model's code imports from outside the project (distribution names)
SERVING_DISTRIBUTIONS = ("torch", "numpy", "einops", "pydantic", "PyYAML", "opencv-python-headless")
MODEL_DESCRIPTION = (
    "SteadyDepth residual smoother: makes a per-frame teacher's metric video depth temporally stable. "
    "pyfunc input: teacher depth window (T, H, W) float32 metres, plus RGB (T, H, W, 3) uint8 when the version's "
    "`inputs` tag says so; output: refined depth (T, H, W) float32. The `champion` alias marks the version that "
    "passed the evaluation gate with the best flicker metric."
)


def dataset_slug(dataset: str) -> str:
    """The dataset folder's name, safe for MLflow names: '/data/robot logs/' → 'robot_logs'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(dataset).rstrip("/").rsplit("/", 1)[-1]) or "dataset"


def experiment_name(dataset: str) -> str:
    """One MLflow experiment per dataset: `steadydepth/<dataset folder name>`."""
    return f"steadydepth/{dataset_slug(dataset)}"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'train': {'lr': 0.002}} → {'train.lr': '0.002'} (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return flat


def _use_experiment(name: str) -> None:
    # With a SQLite backend MLflow would put artifacts in ./mlruns of whatever the working directory is;
    # STEADYDEPTH_ARTIFACT_ROOT (set by runtime.use_embedded_defaults) keeps them under the project home.
    if mlflow.get_experiment_by_name(name) is None:
        root = os.environ.get("STEADYDEPTH_ARTIFACT_ROOT")
        location = (Path(root) / name.replace("/", "_")).resolve().as_uri() if root else None
        mlflow.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(name)


@contextmanager
def start_run(dataset: str, cfg: Config, run_name: str | None = None, **tags: str) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run in the dataset's experiment with the whole config logged as params, tagged with the process that
    runs it; runs that a dead process of this host left RUNNING are ended first (`end_orphaned_runs`)."""
    end_orphaned_runs()
    _use_experiment(experiment_name(dataset))
    with mlflow.start_run(run_name=run_name, tags={"dataset": str(dataset), **_owner_tags(), **tags}) as run:
        mlflow.log_params(flatten(cfg.model_dump(mode="json")))
        yield run


# The process running a run: a run whose process is gone (killed with SIGKILL, the machine lost power) stays RUNNING
# in MLflow forever unless someone ends it.
OWNER_TAGS = ("steadydepth.host", "steadydepth.pid", "steadydepth.pid_start")


def _owner_tags() -> dict[str, str]:
    return dict(zip(OWNER_TAGS, (process_host(), str(os.getpid()), process_token()), strict=True))


def end_orphaned_runs() -> list[str]:
    """Mark KILLED every RUNNING run of this tool whose process, on this host, no longer exists; returns their ids.

    Runs of other hosts (or containers) are left alone: whether their process lives cannot be told from here."""
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    host = process_host().replace("'", "")
    runs = client.search_runs(
        experiments, f"attributes.status = 'RUNNING' and tags.`steadydepth.host` = '{host}'", max_results=1000
    )
    ended = []
    for run in runs:
        pid, token = run.data.tags.get("steadydepth.pid", ""), run.data.tags.get("steadydepth.pid_start", "")
        if pid.isdigit() and not process_alive(int(pid), token):
            client.set_terminated(run.info.run_id, "KILLED")
            ended.append(run.info.run_id)
            log.warning("MLflow run %s was left running by process %s, which is gone: marked KILLED",
                        run.info.run_id, pid)
    return ended


def log_step(step: int, values: Mapping[str, float], prefix: str = "train/") -> None:
    """Log losses / learning rate of one training step."""
    mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in values.items()}, step=step)


def pip_requirements() -> list[str]:
    """The served model's pip requirements: the third-party packages its code imports, pinned to the installed
    public versions (a local label such as torch's `+cpu` is not on any registry). SteadyDepth itself travels as
    code_paths, so it is not a requirement (its version is not published)."""
    pinned = []
    for dist in SERVING_DISTRIBUTIONS:
        try:
            pinned.append(f"{dist}=={Version(metadata.version(dist)).public}")
        except metadata.PackageNotFoundError:
            pinned.append(dist)
    return pinned


def code_paths() -> list[str]:
    """The project's packages the served model imports (the smoother, its config and errors, the stores)."""
    import evaluation
    import smoother
    import steadydepth
    import storage

    return [str(Path(pkg.__file__).parent) for pkg in (smoother, steadydepth, storage, evaluation)]


def log_smoother(
    model: ResidualSmoother,
    cfg: Config,
    model_name: str = DEFAULT_MODEL_NAME,
    checkpoint: str | None = None,
    store_uris: list[str] | None = None,
) -> str:
    """Log the smoother as a pyfunc (steadydepth/serving.py), register it and describe the version; returns it.

    store_uris: the teacher stores it was trained on, logged as the run's training dataset."""
    if checkpoint is not None:
        mlflow.log_artifact(checkpoint, artifact_path="checkpoint")
    if store_uris:
        log_training_stores(store_uris, cfg)
    model = model.cpu().eval()
    with tempfile.TemporaryDirectory() as tmp:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(serving.ENTRY_POINT),  # models from code: nothing is cloudpickled
            artifacts=serving.write_artifacts(model, Path(tmp)),
            code_paths=code_paths(),
            signature=serving.signature(model.cfg),
            input_example=serving.input_example(model.cfg),
            pip_requirements=pip_requirements(),
            registered_model_name=model_name,
        )
    version = str(info.registered_model_version)
    describe_version(version, model, cfg, model_name, stores=len(store_uris or ()))
    return version


def _store_row(uri: str, storage_options: Mapping[str, Any]) -> dict[str, Any]:
    from storage.depth_store import DepthStore

    store = DepthStore.open(uri, dict(storage_options), require_complete=False)
    attrs = store.attrs
    return {
        "uri": uri,
        "kind": str(attrs.get("kind", "")),
        "source_hash": str(attrs.get("source_hash", "")),
        "config_hash": str(attrs.get("config_hash", "")),
        "num_frames": float(store.num_frames),  # a float column: MLflow warns that int columns cannot hold NaN
    }


def _dataset_source(uris: list[str], fallback: str) -> Any | None:
    """Where the stores live: their common parent folder (else the store root), as an MLflow dataset source."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    from storage import uri as uris_

    parents = {u.rstrip("/").rsplit("/", 1)[0] for u in uris}
    root = parents.pop() if len(parents) == 1 else fallback
    root = root if uris_.is_url(root) else str(Path(root).resolve())
    with warnings.catch_warnings():
        # MLflow registers its local-file source type twice and warns that a local path matches both
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        try:
            return resolve_dataset_source(root)
        except MlflowException:  # a filesystem MLflow has no source type for (e.g. memory://): the table says it all
            return None


def log_training_stores(store_uris: list[str], cfg: Config) -> None:
    """Log the teacher stores as the active run's training dataset: one row per store with its identity (source
    and config hashes), so the dataset's digest changes exactly when the training data does."""
    import pandas as pd

    rows = [_store_row(u, cfg.store.storage_options) for u in store_uris]
    source = _dataset_source(store_uris, cfg.store.root)
    name = dataset_slug(_run_tag("dataset") or "teacher-stores")
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]  # of the identities
    dataset = mlflow.data.from_pandas(pd.DataFrame(rows), source=source, name=name, digest=digest)
    mlflow.log_input(dataset, context="training")


def _run_tag(key: str) -> str | None:
    run = mlflow.active_run()
    return None if run is None else MlflowClient().get_run(run.info.run_id).data.tags.get(key)


def _teacher(cfg: Config) -> str:
    teacher = cfg.teacher
    return f"{teacher.backend}:{teacher.model}" if teacher.backend == "unidepth" else teacher.backend


def describe_version(version: str, model: ResidualSmoother, cfg: Config, model_name: str, stores: int = 0) -> None:
    """Descriptions of the registered model and this version, and the version's tags (teacher, data, training)."""
    from smoother.refine import model_hash

    client = MlflowClient()
    client.update_registered_model(model_name, description=MODEL_DESCRIPTION)
    dataset = _run_tag("dataset") or ""
    inputs = "depth, rgb" if serving.uses_rgb(model.cfg) else "depth"
    tags = {
        "teacher": _teacher(cfg),
        "dataset": dataset,
        "train.steps": str(cfg.train.steps),
        "train.stores": str(stores),
        "inputs": inputs,
        "model_hash": model_hash(model),
    }
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.update_model_version(model_name, version, description=_version_text(model.cfg, tags))


def _version_text(smoother: SmootherConfig, tags: Mapping[str, str]) -> str:
    data = f" on {tags['train.stores']} teacher store(s)" if tags["train.stores"] != "0" else ""
    data += f" of {tags['dataset']}" if tags["dataset"] else ""
    return (
        f"Residual smoother, {tags['train.steps']} training steps{data}, teacher {tags['teacher']}. "
        f"d_model {smoother.d_model}, {smoother.n_layers} layers, grid long edge {smoother.depth_long_edge}, "
        f"temporal filter {smoother.temporal_filter}. pyfunc inputs: {tags['inputs']}."
    )


def tag_version(
    version: str,
    *,
    gate_passed: bool,
    verdict: str,
    metrics: Mapping[str, float],
    model_name: str = DEFAULT_MODEL_NAME,
) -> None:
    """Record an evaluation on the version: gate tag, key metrics (the gate's) as tags, the verdict in its
    description (replacing an earlier evaluation's)."""
    client = MlflowClient()
    client.set_model_version_tag(model_name, version, "gate", "passed" if gate_passed else "failed")
    for name in KEY_METRICS:
        if metrics.get(name) is not None:
            client.set_model_version_tag(model_name, version, f"eval.{name}", f"{float(metrics[name]):.6g}")
    described = client.get_model_version(model_name, version).description or ""
    base = described.split(EVALUATION_HEADING)[0].rstrip()
    verdict = verdict or f"gate {'passed' if gate_passed else 'failed'}"
    client.update_model_version(model_name, version, description=f"{base}{EVALUATION_HEADING}{verdict}".strip())


@dataclass
class Promotion:
    """What promotion decided, and why (one line)."""

    promoted: bool
    reason: str
    previous_version: str | None = None


def champion_version(model_name: str = DEFAULT_MODEL_NAME) -> Any | None:
    """The ModelVersion holding the `champion` alias, or None."""
    try:
        return MlflowClient().get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def promote(
    version: str, *, gate_passed: bool, metric: str | None, value: float | None, model_name: str = DEFAULT_MODEL_NAME
) -> Promotion:
    """Set `champion` on `version` iff the gate passed and it beats the champion on `metric` (lower wins).

    The comparison uses the metric `eval/<metric>` logged in each version's run.
    """
    client = MlflowClient()
    if not gate_passed:
        return Promotion(False, f"version {version} not promoted: the evaluation gate failed")
    current = champion_version(model_name)
    if current is not None and str(current.version) != str(version) and metric is not None and value is not None:
        best = client.get_run(current.run_id).data.metrics.get(f"eval/{metric}")
        if best is not None and value >= best:
            return Promotion(
                False,
                f"version {version} not promoted: {metric} {value:.4g} does not beat champion v{current.version}"
                f" ({best:.4g})",
                str(current.version),
            )
    before = None if current is None else str(current.version)
    if before == str(version):
        return Promotion(True, f"version {version} is already {CHAMPION}", before)
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    return Promotion(True, f"version {version} is now {CHAMPION}" + (f" (was v{before})" if before else ""), before)


def pinned_uri(uri: str) -> str:
    """`models:/name@alias` -> `models:/name/<version the alias points at now>`; other URIs as they are.

    A cache keyed by the pinned URI never serves the previous champion after the alias moves.
    """
    match = re.fullmatch(r"models:/([^/@]+)@([^/]+)", uri)
    if not match:
        return uri
    try:
        version = MlflowClient().get_model_version_by_alias(match[1], match[2]).version
    except MlflowException:
        return uri  # no such alias: load_model names the problem
    return f"models:/{match[1]}/{version}"


def load_model(uri: str | None = None, model_name: str = DEFAULT_MODEL_NAME) -> ResidualSmoother:
    """The smoother at a model URI (default `models:/<name>@champion`; also models:/name/version, runs:/...) in eval
    mode, rebuilt from its weights and config artifacts only: nothing unpickled but a weights-only state dict, no
    code from the artifact store run (see steadydepth/serving.py)."""
    from steadydepth.errors import InputError

    uri = uri or f"models:/{model_name}@{CHAMPION}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            _fetch(uri, "MLmodel", tmp)
        except _FETCH_ERRORS as err:
            raise InputError(
                f"no smoother at {uri} ({_first_line(err)}); train and promote one (steadydepth run) or pass a "
                "checkpoint"
            ) from None
        try:
            files = [_fetch(uri, f"artifacts/{name}", tmp) for name in (serving.WEIGHTS_FILE, serving.CONFIG_FILE)]
        except _FETCH_ERRORS as err:
            raise InputError(
                f"{uri} has no smoother weights and config ({_first_line(err)}); it was logged by an older SteadyDepth "
                "as a pickled module, which is never loaded (unpickling it could run code): register it again"
            ) from None
        return serving.read_smoother(*files, uri)


_FETCH_ERRORS = (MlflowException, OSError)


def _fetch(uri: str, path: str, dst: str) -> str:
    """A local copy of the file `path` inside the model at `uri` (only that file is downloaded)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(uri).download_artifacts(path, dst_path=dst)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
