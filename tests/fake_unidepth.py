"""A fake of the UniDepth package for tests: a UniDepthV2-like model and an installer for `unidepth.models`."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable

import pytest
import torch
from torch import nn


class FakeUniDepth(nn.Module):
    """Mimics UniDepthV2.infer: 0–255 input, K rescaled in place, predicted K in out['intrinsics']."""

    PRED_F = 7.0

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(1.0))
        self.calls: list[dict] = []

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def infer(self, rgb: torch.Tensor, camera: torch.Tensor | None = None, normalize: bool = True) -> dict:
        b, _, h, w = rgb.shape
        self.calls.append(
            {
                "dtype": rgb.dtype,
                "max": float(rgb.max()),
                "batch": b,
                "resolution_level": getattr(self, "resolution_level", None),
                "inference_mode": torch.is_inference_mode_enabled(),
            }
        )
        pred = torch.tensor([[self.PRED_F, 0, w / 2], [0, self.PRED_F, h / 2], [0, 0, 1.0]]).expand(b, 3, 3).clone()
        K = camera if camera is not None else pred
        # Depth depends on the K used for the rays, so a drifting K shows up as drifting depth.
        depth = (rgb.float().mean(1, keepdim=True) / 255 + 1) * (K[:, 0, 0] / 10).view(b, 1, 1, 1) * self.gain
        if camera is not None:
            camera[:, :2] *= 0.5  # gotcha 1: the real model resizes the caller's K in place
        log_err = rgb[:, :1].float() / 255 * 3  # predicted abs error in metres, 0..3
        return {"depth": depth, "intrinsics": pred, "confidence": torch.exp(log_err), "points": None}


def install_fake_unidepth(
    monkeypatch: pytest.MonkeyPatch, from_pretrained: Callable[[str], nn.Module] = lambda _src: FakeUniDepth()
) -> list[str]:
    """Make `from unidepth.models import UniDepthV2` give a class whose from_pretrained calls `from_pretrained`;
    returns the sources it was asked to load (undone with the monkeypatch)."""
    seen: list[str] = []

    class UniDepthV2:
        @classmethod
        def from_pretrained(cls, source: str) -> nn.Module:
            seen.append(source)
            return from_pretrained(source)

    pkg, models = types.ModuleType("unidepth"), types.ModuleType("unidepth.models")
    models.UniDepthV2 = UniDepthV2
    pkg.models = models
    monkeypatch.setitem(sys.modules, "unidepth", pkg)
    monkeypatch.setitem(sys.modules, "unidepth.models", models)
    return seen
