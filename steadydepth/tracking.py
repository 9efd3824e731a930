"""MLflow tracking and the model registry: runs per dataset, the smoother as a pytorch model, promotion by alias.

Plain MLflow (no Prefect). The tracking URI comes from MLFLOW_TRACKING_URI; `runtime.use_embedded_defaults`
points it at a SQLite file when the user has not set one. Promotion uses the registry alias `champion`
(stages are deprecated) and happens only when the evaluation gate passed and the model beats the current
champion on the gate's flicker metric (lower is better).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from steadydepth.config import Config

CHAMPION = "champion"
DEFAULT_MODEL_NAME = "steadydepth-smoother"


def experiment_name(dataset: str) -> str:
    """One MLflow experiment per dataset: `steadydepth/<dataset folder name>`."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(dataset).rstrip("/").rsplit("/", 1)[-1]) or "dataset"
    return f"steadydepth/{slug}"


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
    """An MLflow run in the dataset's experiment with the whole config logged as params."""
    _use_experiment(experiment_name(dataset))
    with mlflow.start_run(run_name=run_name, tags={"dataset": str(dataset), **tags}) as run:
        mlflow.log_params(flatten(cfg.model_dump(mode="json")))
        yield run


def log_step(step: int, values: Mapping[str, float], prefix: str = "train/") -> None:
    """Log losses / learning rate of one training step."""
    mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in values.items()}, step=step)


def _signature() -> ModelSignature:
    # (batch, frames, 1, H, W) teacher depth in metres in → refined depth out, same shape.
    spec = TensorSpec(np.dtype(np.float32), (-1, -1, 1, -1, -1), "depth")
    return ModelSignature(inputs=Schema([spec]), outputs=Schema([spec]))


def log_smoother(model, cfg: Config, model_name: str = DEFAULT_MODEL_NAME, checkpoint: str | None = None) -> str:
    """Log the smoother (pytorch flavour, signature, config to rebuild it) and register it; returns the version."""
    import mlflow.pytorch

    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "smoother_config.json"
        cfg_path.write_text(json.dumps(cfg.smoother.model_dump(mode="json"), indent=2))
        mlflow.log_artifact(str(cfg_path), artifact_path="model_config")
    if checkpoint is not None:
        mlflow.log_artifact(checkpoint, artifact_path="checkpoint")
    info = mlflow.pytorch.log_model(
        model.cpu().eval(),
        name="model",
        signature=_signature(),
        registered_model_name=model_name,
        serialization_format="pickle",  # pt2 would trace forward(); the model takes optional inputs and state
    )
    return str(info.registered_model_version)


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


def load_model(uri: str | None = None, model_name: str = DEFAULT_MODEL_NAME):
    """Load a smoother from the registry (default `models:/<name>@champion`) in eval mode."""
    import mlflow.pytorch

    from steadydepth.errors import InputError

    uri = uri or f"models:/{model_name}@{CHAMPION}"
    try:
        return mlflow.pytorch.load_model(uri, map_location="cpu").eval()
    except MlflowException as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"no smoother at {uri} ({first}); train and promote one (steadydepth run) or pass a checkpoint"
        ) from None
