"""resolve_device: "auto" picks CUDA when there is one; a device this machine lacks is a one-line ConfigError."""

from __future__ import annotations

import pytest
import torch

from steadydepth.device import resolve_device
from steadydepth.errors import ConfigError


def test_auto_and_cpu():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_a_missing_device_names_the_setting_and_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"train.device is 'cuda' but this machine has no CUDA GPU; set train.device"):
        resolve_device("cuda", "train.device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"has 2 CUDA GPUs \(cuda:0..cuda:1\)") as err:
        resolve_device("cuda:2", "teacher.device")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="is not a device name"):
        resolve_device("gpu")
