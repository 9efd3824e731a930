"""Every entrypoint of prefect.yaml loads the way a Prefect worker loads it.

A worker runs `load_flow_from_entrypoint("flows/x.py:fn")`, which puts the entrypoint's own folder `flows/`
first on `sys.path` and registers the file under its bare name. A flow module named like a package
(`flows/smoother.py` next to the `smoother` package) then shadows that package and the run crashes on import.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FLOWS = REPO / "flows"

# What a worker does before a run: load the entrypoint from the checkout (the deployment's working directory).
_LOAD = """
import sys
from prefect.flows import load_flow_from_entrypoint
flow = load_flow_from_entrypoint(sys.argv[1])
print(flow.name)
"""


def _entrypoints() -> list[str]:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return sorted({d["entrypoint"] for d in spec["deployments"]})


def _flow_module_names() -> list[str]:
    return sorted(p.stem for p in FLOWS.glob("*.py") if p.stem != "__init__")


def _importable_elsewhere(name: str) -> str | None:
    """Where `import name` would resolve without flows/ on sys.path (None if nowhere)."""
    saved = list(sys.path)
    try:
        sys.path[:] = [p for p in saved if Path(p or ".").resolve() != FLOWS]
        spec = importlib.util.find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
    finally:
        sys.path[:] = saved
    return None if spec is None else str(spec.origin)


@pytest.mark.parametrize("name", _flow_module_names())
def test_no_flow_module_shadows_an_importable_module(name: str) -> None:
    origin = _importable_elsewhere(name)
    assert origin is None, f"flows/{name}.py would shadow {origin} when a worker puts flows/ on sys.path"


@pytest.mark.slow
@pytest.mark.parametrize("entrypoint", _entrypoints())
def test_entrypoint_loads_like_a_worker_loads_it(entrypoint: str) -> None:
    # A fresh interpreter per entrypoint, as on a worker: nothing of ours is imported before the flow file.
    done = subprocess.run(
        [sys.executable, "-c", _LOAD, entrypoint], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == entrypoint.rsplit(":", 1)[1].removesuffix("_flow")
