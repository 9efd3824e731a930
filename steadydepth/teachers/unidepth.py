"""UniDepthV2 as a frozen teacher: 0–255 input, the caller's K cloned on every call (`infer` edits it in place).

Confidence mapping. UniDepthV2's `confidence` output is `exp(e)` where `e` (clipped to [-8, 8]) is
trained to regress the absolute, median-scale-aligned depth error in metres, so larger means *less*
trustworthy and the value has no fixed scale. We map it per pixel to a trust in [0, 1]:

    trust = exp(-max(e, 0) / depth)        with e = log(confidence)

i.e. exp of minus the predicted *relative* error (a predicted error of 10 % of the depth gives
0.90, one of 100 % gives 0.37). The map is monotone decreasing in the raw value and uses only that
pixel's own outputs, so a frame's confidence never depends on the other frames in its batch.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steadydepth.config import TeacherConfig
from steadydepth.device import resolve_device
from steadydepth.errors import TeacherUnavailableError
from steadydepth.teachers.base import FrameBatch, Teacher, TeacherOutput

INSTALL_HINT = (
    "pip install 'steadydepth[unidepth]' "
    "(or pip install git+https://github.com/lpiccinelli-eth/UniDepth.git torchvision)"
)


def confidence_to_unit(raw: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
    """Map UniDepth's raw confidence (exp of predicted abs error, metres) to a [0, 1] trust per pixel."""
    err = torch.log(raw.float().clamp_min(1e-12)).clamp_min(0.0)
    rel = err / depth.float().clamp_min(1e-6)
    return torch.exp(-rel).clamp(0.0, 1.0)


def _plain(t: torch.Tensor) -> torch.Tensor:
    """float32 CPU copy made outside inference_mode, so callers may modify it in place."""
    return t.detach().float().cpu().clone()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _load_unidepth(model: str) -> nn.Module:
    """Import unidepth lazily and load UniDepthV2 from a hub id or a save_pretrained directory."""
    try:
        from unidepth.models import UniDepthV2  # lazy: optional, heavy
    except ImportError as err:
        raise TeacherUnavailableError(
            f"the unidepth teacher needs the UniDepth package, which is not importable ({_first_line(err)}); "
            f"install it with {INSTALL_HINT}"
        ) from None
    except Exception as err:  # e.g. torchvision built for another torch: "operator torchvision::nms does not exist"
        raise TeacherUnavailableError(
            f"the UniDepth package failed to import ({type(err).__name__}: {_first_line(err)}); "
            f"reinstall torch and torchvision as a matching pair, then {INSTALL_HINT}"
        ) from None
    local = Path(model).expanduser()
    source = str(local) if local.exists() else model
    try:
        return UniDepthV2.from_pretrained(source)
    except Exception as err:  # hub unreachable, id unknown, bad directory: all unrecoverable here
        raise TeacherUnavailableError(
            f"cannot load UniDepthV2 weights {model!r} ({type(err).__name__}: {_first_line(err)}); set "
            "teacher.model to a local directory written by save_pretrained (config.json + model.safetensors) "
            "or to a hub id that is reachable from this machine"
        ) from None


def _package_version() -> str:
    try:
        return metadata.version("unidepth")
    except metadata.PackageNotFoundError:
        return "unknown"


class UniDepthTeacher(Teacher):
    """UniDepthV2 metric depth, frozen, batched, with the caller's K cloned on every call.

    `model` may be an already-built UniDepthV2-like nn.Module (random weights in tests); otherwise
    `cfg.model` (hub id or local directory) is loaded with `UniDepthV2.from_pretrained`.
    Outputs are float32 CPU tensors.
    """

    def __init__(self, cfg: TeacherConfig, model: nn.Module | None = None, *, model_id: str | None = None) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device, "teacher.device")
        if model is None:
            model = _load_unidepth(cfg.model)
            name = cfg.model
        else:
            name = model_id or type(model).__name__
        self.model = model.to(self.device).eval().requires_grad_(False)
        if cfg.resolution_level is not None:
            self.model.resolution_level = cfg.resolution_level
        self.batch_size = cfg.batch_size
        # The real UniDepth needs per-frame cameras for batched K (see _camera); fakes take a plain tensor.
        self._real_unidepth = type(model).__module__.startswith("unidepth.")
        self.id = f"unidepth:{name}"
        self.version = f"unidepth-{_package_version()}:{name}"

    # -- helpers ---------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        # fp16 on CUDA only; CPU stays fp32 (CPU bf16 autocast crashes inside UniDepth).
        if self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _chunks(self, n: int) -> Iterator[slice]:
        for start in range(0, n, self.batch_size):
            yield slice(start, min(start + self.batch_size, n))

    def _camera(self, K: torch.Tensor) -> Any:
        """A private copy of K in the form infer() takes for this batch size."""
        # Gotcha 1: infer() rescales/crops K in place; always hand it a private copy.
        K = K.detach().to(self.device, dtype=torch.float32).clone()
        if K.shape[0] == 1 or not self._real_unidepth:
            return K
        # UniDepth wraps a (B,3,3) tensor as ONE Pinhole whose rays are built for batch 1, so B > 1 fails
        # with a reshape error; a cat of per-frame Pinholes is its batched form (same output as frame by frame).
        from unidepth.utils.camera import Pinhole  # lazy: optional, heavy

        return torch.cat([Pinhole(K=K[i : i + 1]) for i in range(K.shape[0])])

    def _infer(self, rgb: torch.Tensor, K: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """One forward pass on (b, 3, H, W) 0–255 frames; K (b, 3, 3) or None."""
        rgb = rgb.to(self.device, non_blocking=True).float()  # UniDepth wants 0–255 and normalises itself
        camera = self._camera(K) if K is not None else None
        with torch.inference_mode(), self._autocast(), warnings.catch_warnings():
            # resolution_level unset (config null) means UniDepth's default range; silence its per-call warning.
            warnings.filterwarnings("ignore", message=".*resolution_level not set.*")
            return self.model.infer(rgb, camera)

    # -- Teacher API -----------------------------------------------------------------------------

    def predict(self, batch: FrameBatch) -> TeacherOutput:
        """Metric z-depth (B,1,H,W), the K used for the rays (B,3,3) and a [0,1] confidence."""
        depths, Ks, confs = [], [], []
        for sl in self._chunks(batch.rgb.shape[0]):
            given = batch.K[sl] if batch.K is not None else None
            out = self._infer(batch.rgb[sl], given)
            depth = _plain(out["depth"])
            depths.append(depth)
            # Gotcha 2: out["intrinsics"] is the model's own guess even when K was given; the rays used ours.
            Ks.append(_plain(given) if given is not None else _plain(out["intrinsics"]))
            raw = out.get("confidence")
            confs.append(confidence_to_unit(raw.cpu(), depth) if raw is not None else None)
        conf = torch.cat(confs) if all(c is not None for c in confs) else None
        return TeacherOutput(depth=torch.cat(depths), K=torch.cat(Ks), confidence=conf)

    def estimate_intrinsics(self, batch: FrameBatch) -> torch.Tensor:
        """The model's own K prediction per frame (B, 3, 3), ignoring any given K (for median-K-per-video)."""
        Ks = [_plain(self._infer(batch.rgb[sl], None)["intrinsics"]) for sl in self._chunks(batch.rgb.shape[0])]
        return torch.cat(Ks)
