"""prefect.yaml: `prefect deploy --all` registers every deployment against a real (ephemeral) API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _prefect(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_every_flow_has_a_deployment_with_a_valid_entrypoint():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    entrypoints = {d["entrypoint"] for d in spec["deployments"]}
    assert entrypoints == {
        "flows/ingest.py:ingest_flow", "flows/model_flows.py:train_flow", "flows/model_flows.py:evaluate_flow",
        "flows/export.py:export_flow", "flows/pipeline.py:pipeline_flow",
    }
    assert any(d.get("schedules") for d in spec["deployments"])


def test_prefect_deploy_all_validates(prefect_server, tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PREFECT_HOME": str(tmp_path)}
    pool = _prefect(["work-pool", "create", "steadydepth", "--type", "process"], env)
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deployed = _prefect(["deploy", "--all"], env)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    listed = _prefect(["deployment", "ls"], env)
    for name in ("ingest-inbox", "train", "evaluate", "export", "pipeline-weekly"):
        assert name in listed.stdout
