"""Deployment steps that prefect.yaml runs on a worker before each flow run."""

from __future__ import annotations

import os
from pathlib import Path

from steadydepth.errors import ConfigError

CHECKOUT_VARIABLE = "STEADYDEPTH_CHECKOUT"


def enter_checkout() -> dict[str, str]:
    """Pull step: make the worker's own checkout, named by STEADYDEPTH_CHECKOUT, the run's working directory.

    Read on the worker when a run starts (not when `prefect deploy` ran), so each machine runs the deployments from
    wherever its checkout is: the entrypoints (flows/*.py) and relative paths in parameters (data/inbox) resolve
    there. Returns the directory, as Prefect's own set_working_directory step does.
    """
    value = os.environ.get(CHECKOUT_VARIABLE, "").strip()
    if not value:
        raise ConfigError(
            f"{CHECKOUT_VARIABLE} is not set on this worker; set it to the path of its SteadyDepth checkout before "
            "`prefect worker start` (deploy/README.md)"
        )
    checkout = Path(value).expanduser()
    if not (checkout / "prefect.yaml").is_file():
        raise ConfigError(
            f"{CHECKOUT_VARIABLE}={value} is not a SteadyDepth checkout (no prefect.yaml there); set it to the folder "
            "that holds prefect.yaml and flows/"
        )
    os.chdir(checkout)
    return {"directory": str(checkout.resolve())}
