"""Shared test set-up: test helpers on sys.path; Prefect's ephemeral server started once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `from media import ...`

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SEVEN_SCENES = SHARED_DATA / "7scenes-redkitchen-150-199"


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One ephemeral Prefect API (SQLite) for the whole session: starting it costs tens of seconds."""
    import os

    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


@pytest.fixture
def mlflow_sqlite(tmp_path, monkeypatch):
    """MLflow on a fresh SQLite file with artifacts under tmp_path (what the embedded default does)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("STEADYDEPTH_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one thread is fastest, and much faster than two on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
