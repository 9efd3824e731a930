"""MLflow tracking on a real SQLite backend: params, model registration, promotion by alias."""

from __future__ import annotations

import mlflow
import pytest
import torch

from smoother.model import ResidualSmoother
from steadydepth import tracking
from steadydepth.config import load_config
from steadydepth.errors import InputError


def _train_and_register(cfg, eval_value: float, seed: int) -> str:
    torch.manual_seed(seed)
    model = ResidualSmoother(cfg.smoother)
    torch.nn.init.normal_(model.head.weight, std=0.1)
    with tracking.start_run("data/videos", cfg, run_name=f"seed{seed}"):
        tracking.log_step(0, {"total": 1.0, "lr": 1e-3})
        version = tracking.log_smoother(model, cfg, model_name="test-smoother")
        mlflow.log_metric("eval/tae", eval_value)
    return version


def test_params_registration_and_promotion_by_alias(mlflow_sqlite, tmp_path):
    cfg = load_config(overrides={"smoother.d_model": 16})
    v1 = _train_and_register(cfg, eval_value=2.0, seed=0)

    assert list((tmp_path / "artifacts").rglob("MLmodel"))  # artifacts under the project home, not ./mlruns
    run = mlflow.search_runs(experiment_names=["steadydepth/videos"], output_format="list")[0]
    assert run.data.params["smoother.d_model"] == "16" and run.data.params["train.lr"] == str(cfg.train.lr)

    failed = tracking.promote(v1, gate_passed=False, metric="tae", value=2.0, model_name="test-smoother")
    assert not failed.promoted and tracking.champion_version("test-smoother") is None

    first = tracking.promote(v1, gate_passed=True, metric="tae", value=2.0, model_name="test-smoother")
    assert first.promoted and str(tracking.champion_version("test-smoother").version) == v1

    v2 = _train_and_register(cfg, eval_value=2.5, seed=1)
    worse = tracking.promote(v2, gate_passed=True, metric="tae", value=2.5, model_name="test-smoother")
    assert not worse.promoted and str(tracking.champion_version("test-smoother").version) == v1

    v3 = _train_and_register(cfg, eval_value=1.0, seed=2)
    better = tracking.promote(v3, gate_passed=True, metric="tae", value=1.0, model_name="test-smoother")
    assert better.promoted and better.previous_version == v1
    assert str(tracking.champion_version("test-smoother").version) == v3

    loaded = tracking.load_model(model_name="test-smoother")
    depth = 1.0 + torch.rand(1, 3, 1, 4, 6)
    with torch.no_grad():
        assert loaded(depth).depth.shape == depth.shape
    assert not torch.equal(loaded.head.weight, torch.zeros_like(loaded.head.weight))


def test_missing_champion_is_a_clear_error(mlflow_sqlite):
    with pytest.raises(InputError, match="no smoother at models:/nothing@champion"):
        tracking.load_model(model_name="nothing")


def test_experiment_names_and_flat_params():
    assert tracking.experiment_name("/data/robot logs/") == "steadydepth/robot_logs"
    assert tracking.flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": "1", "a.c": "[1, 2]", "d": "None"}
