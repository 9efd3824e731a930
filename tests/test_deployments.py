"""prefect.yaml: `prefect deploy --all` registers every deployment against a real (ephemeral) API, with typed
parameters, a pull step that finds each worker's own checkout, and GPU work routed to its own pool."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from smoother.config import TrainConfig
from steadydepth.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PULL_STEPS = [{"flows.deployment_steps.enter_checkout": {}}]


def _spec() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


def _prefect(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_every_flow_has_a_deployment_with_a_valid_entrypoint():
    spec = _spec()
    entrypoints = {d["entrypoint"] for d in spec["deployments"]}
    assert entrypoints == {
        "flows/ingest.py:ingest_flow",
        "flows/model_flows.py:train_flow",
        "flows/model_flows.py:evaluate_flow",
        "flows/export.py:export_flow",
        "flows/pipeline.py:pipeline_flow",
    }
    assert any(d.get("schedules") for d in spec["deployments"])


def test_gpu_work_has_a_pool_of_its_own():
    pools = {d["name"]: (d["work_pool"]["name"], "gpu" in d["tags"]) for d in _spec()["deployments"]}
    assert {pool for pool, _ in pools.values()} == {"steadydepth-gpu", "steadydepth-cpu"}
    expected = {name: "steadydepth-gpu" if gpu else "steadydepth-cpu" for name, (_, gpu) in pools.items()}
    wrong = {name: pool for name, (pool, _) in pools.items() if pool != expected[name]}
    assert not wrong, f"deployments whose pool does not match their gpu tag: {wrong}"


@pytest.mark.parametrize("entrypoint", sorted({d["entrypoint"] for d in _spec()["deployments"]}))
def test_the_parameter_schema_types_config_field_by_field(entrypoint: str) -> None:
    """What the UI's run form and the server's parameter check read: every section and field of Config, with its
    description, default and bounds, not a free-form JSON object."""
    from prefect.utilities.callables import parameter_schema

    path, name = entrypoint.split(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
    schema = parameter_schema(flow).model_dump_for_openapi()
    config = schema["properties"]["config"]
    assert config["$ref"] == "#/definitions/Config" and "merged over the deployment's" in config["description"]
    steps = schema["definitions"]["TrainConfig"]["properties"]["steps"]
    assert (
        steps["type"] == "integer"
        and steps["minimum"] == 1
        and steps["default"] == TrainConfig().steps
        and steps["description"]
    )
    root = schema["definitions"]["StoreConfig"]["properties"]["root"]
    assert root["default"] == ".steadydepth/stores" and root["description"] == "local path or fsspec URL"
    assert schema["definitions"]["Config"]["additionalProperties"] is False  # a misspelt section is refused
    undocumented = [name for name, spec in schema["properties"].items() if not spec.get("description")]
    assert not undocumented, f"parameters without a description (docstring Args:) in {entrypoint}: {undocumented}"


def test_the_pull_step_enters_the_checkout_the_worker_names(tmp_path, monkeypatch):
    from flows.deployment_steps import enter_checkout

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STEADYDEPTH_CHECKOUT", raising=False)
    with pytest.raises(ConfigError, match=r"^STEADYDEPTH_CHECKOUT is not set on this worker; set it to the path"):
        enter_checkout()
    monkeypatch.setenv("STEADYDEPTH_CHECKOUT", str(tmp_path))
    with pytest.raises(ConfigError, match=r"is not a SteadyDepth checkout \(no prefect.yaml there\)"):
        enter_checkout()
    monkeypatch.setenv("STEADYDEPTH_CHECKOUT", str(REPO))
    assert enter_checkout() == {"directory": str(REPO)} and Path.cwd() == REPO


def test_prefect_deploy_all_validates(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(tmp_path)}
    for pool in sorted({d["work_pool"]["name"] for d in _spec()["deployments"]}):
        created = _prefect(["work-pool", "create", pool, "--type", "process"], env)
        assert created.returncode == 0, created.stdout + created.stderr
    deployed = _prefect(["deploy", "--all"], env)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    with get_client(sync_client=True) as client:
        for spec in _spec()["deployments"]:
            flow_name = spec["entrypoint"].rsplit(":", 1)[1].removesuffix("_flow")
            deployment = client.read_deployment_by_name(f"{flow_name}/{spec['name']}")
            # read on the worker at run time, never the absolute path of this checkout
            assert deployment.pull_steps == PULL_STEPS, deployment.pull_steps
            assert deployment.work_pool_name == spec["work_pool"]["name"]
            assert deployment.enforce_parameter_schema  # the server refuses a run whose parameters break the schema
            schema = deployment.parameter_openapi_schema
            assert schema["properties"]["config"]["$ref"] == "#/definitions/Config", schema["properties"]
            assert schema["definitions"]["TrainConfig"]["properties"]["steps"]["description"]
            assert deployment.parameters["config"]["store"]["root"] == "data/stores"
