"""Smoother checkpoints: one torch file with everything needed to resume exactly or to rebuild the model.

Contents (all plain types and tensors, so `torch.load(weights_only=True)` reads them):
    format      int, CHECKPOINT_FORMAT
    step        int, optimizer steps done
    config      dict, the full `Config` (model_dump) the run was started with, less store.storage_options
    model       state dict of the ResidualSmoother
    optimizer   AdamW state dict
    scheduler   LR scheduler state dict
    rng         {"torch": ByteTensor, "cuda": list[ByteTensor], "numpy": list, "python": list}
    sampler     WindowSampler.state_dict()
    losses      dict[str, float], the mean losses of the last steps

Writes are atomic: a temporary file in the same folder, then `os.replace`, so a run killed mid-write
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from smoother.model import ResidualSmoother
from steadydepth.config import Config
from steadydepth.errors import InputError

CHECKPOINT_FORMAT = 1
CHECKPOINT_NAME = "last.pt"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write payload to path atomically (tmp file + rename); returns path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": CHECKPOINT_FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by save_checkpoint; InputError if it is missing or not one."""
    if not Path(path).is_file():
        raise InputError(f"smoother checkpoint {path} not found; train first or pass an existing checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise InputError(f"{path} is not a readable smoother checkpoint ({type(err).__name__}); retrain") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path} is not a smoother checkpoint (format {CHECKPOINT_FORMAT}); retrain or pick another")
    return ckpt


def rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy's global generator and python's `random`."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": _to_lists(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of rng_state."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(_to_tuples(state["python"]))


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


# Fields added after checkpoints were first written, with the value that reproduces what those checkpoints did.
LEGACY_DEFAULTS = {"smoother": {"flow_cues": False}, "loss": {"flow_compensated": False}}


def checkpoint_config(ckpt: dict[str, Any], path: str | Path) -> Config:
    """The run config saved in a loaded checkpoint; InputError if this version of SteadyDepth cannot read it.

    A field the checkpoint predates takes its LEGACY_DEFAULTS value, not today's default, so an older model keeps
    running as it was trained."""
    saved = dict(ckpt["config"])
    for section, fields in LEGACY_DEFAULTS.items():
        if isinstance(saved.get(section), dict):
            saved[section] = {**fields, **saved[section]}
    try:
        return Config.model_validate(saved)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InputError(
            f"checkpoint {path} was written by another version of SteadyDepth ({field}: {err['msg']}); "
            "retrain the smoother, or use the version that wrote it"
        ) from None


def load_smoother(checkpoint_path: str | Path, map_location: str | torch.device = "cpu") -> ResidualSmoother:
    """The trained model of a checkpoint, rebuilt from the smoother config saved in it, in eval mode."""
    ckpt = load_checkpoint(checkpoint_path, map_location)
    cfg = checkpoint_config(ckpt, checkpoint_path)
    model = ResidualSmoother(cfg.smoother)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:  # weights of another architecture, e.g. from before a model input was added
        detail = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise InputError(
            f"checkpoint {checkpoint_path} holds weights this version's smoother cannot take ({detail}); "
            "retrain the smoother, or use the version that wrote it"
        ) from None
    return model.to(map_location).eval()
