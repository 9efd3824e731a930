"""One place that turns a device setting ("auto", "cpu", "cuda", "cuda:1", "mps") into a torch.device."""

from __future__ import annotations

import torch

from steadydepth.errors import ConfigError


def resolve_device(name: str | torch.device, setting: str = "device") -> torch.device:
    """'auto' → CUDA when available, else CPU; any other name as given, once it is known to exist here.

    setting: how the user set it (e.g. "train.device"), named in the error. Raises ConfigError when the device is
    not a device name or is missing on this machine (CUDA without a GPU, cuda:3 on a two-GPU machine, MPS off a Mac),
    before any work starts rather than at the first tensor moved there.
    """
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        hint = f"set {setting} to auto, cpu, cuda, cuda:N or mps"
        raise ConfigError(f"{setting} {name!r} is not a device name; {hint}") from None
    missing = _missing(device)
    if missing:
        raise ConfigError(f"{setting} is {name!r} but {missing}; set {setting} to auto (CUDA when available) or cpu")
    return device


def _missing(device: torch.device) -> str | None:
    """Why `device` cannot be used on this machine, or None when it can."""
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return "this machine has no CUDA GPU"
        if device.index is not None and device.index >= count:
            return f"this machine has {count} CUDA GPU{'s' if count > 1 else ''} (cuda:0..cuda:{count - 1})"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return "MPS is not available on this machine"
    return None
