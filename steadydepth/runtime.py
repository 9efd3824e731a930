"""Embedded defaults: Prefect's ephemeral server and MLflow on SQLite, all under one project-local folder.

Call `use_embedded_defaults()` before importing prefect. Every variable is only set when the user has
not set it, so pointing at a real Prefect server or MLflow tracking server is just an environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from steadydepth.errors import ConfigError

DEFAULT_HOME = ".steadydepth"


def use_embedded_defaults(home: str | Path | None = None) -> Path:
    """Point Prefect and MLflow at files under `home` (default ./.steadydepth) unless already configured."""
    home = Path(home or os.environ.get("STEADYDEPTH_HOME", DEFAULT_HOME)).resolve()
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"cannot write the state folder {home} ({err.strerror}); set orchestration.home to a writable folder"
        ) from None
    os.environ.setdefault("STEADYDEPTH_HOME", str(home))
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    # The first ephemeral start runs the SQLite migrations: > 20 s on 2 loaded cores.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no phoning home from a laptop
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    os.environ.setdefault("STEADYDEPTH_ARTIFACT_ROOT", str(home / "mlartifacts"))
    return home
