"""The smoother as an MLflow pyfunc model: its artifacts, the PythonModel that serves it, its signature.

Artifacts (the logged model's `artifacts/` folder):
    smoother_weights.pt    the ResidualSmoother's state dict: tensors only, read with torch.load(weights_only=True)
    smoother_config.json   the SmootherConfig the model was built with

What loading runs: `read_smoother` unpickles only that state dict, through torch's weights-only unpickler (it
refuses every global but tensors and plain containers, so a planted `__reduce__` payload never runs), and rebuilds
the model from the JSON config with the installed code. `tracking.load_model` reads nothing else.
`mlflow.pyfunc.load_model` (and `mlflow models serve`) in addition imports the model's code from the artifact store:
`serving_entry.py` (models from code, `mlflow.models.set_model`, so no cloudpickle) and the packages shipped as
`code_paths`; it trusts that store as much as installing code from it.

Predict: a teacher depth window (T, H, W) float32 metres, with RGB (T, H, W, 3) uint8 when the model uses RGB,
→ refined depth (T, H, W) float32 (`refine_window`: the same maths as refining a store holding those frames).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import Schema, TensorSpec

from smoother.checkpoint import checkpoint_config
from smoother.config import SmootherConfig
from smoother.grid import model_grid_size
from smoother.model import ResidualSmoother
from smoother.streaming import StreamState, preroll_span, refine_chunk
from steadydepth.device import resolve_device
from steadydepth.errors import InputError

WEIGHTS = "weights"  # artifact names in the pyfunc's MLmodel
CONFIG = "config"
WEIGHTS_FILE = "smoother_weights.pt"
CONFIG_FILE = "smoother_config.json"
ENTRY_POINT = Path(__file__).with_name("serving_entry.py")  # the models-from-code file


def uses_rgb(cfg: SmootherConfig) -> bool:
    """Whether the model reads RGB (features, motion cues or the filter's flow warp), as in refine_store."""
    return cfg.use_features or cfg.flow_cues or cfg.flow_warp


def write_artifacts(model: ResidualSmoother, folder: Path) -> dict[str, str]:
    """The weights (state dict) and config files of `model` in `folder`: {artifact name: path}."""
    weights, config = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, weights)
    config.write_text(json.dumps(model.cfg.model_dump(mode="json"), indent=2))
    return {WEIGHTS: str(weights), CONFIG: str(config)}


def read_smoother(weights: str | Path, config: str | Path, source: str) -> ResidualSmoother:
    """The model of a weights + config pair (`write_artifacts`), in eval mode on the CPU; InputError if either is
    not what write_artifacts writes. source names the model in errors (e.g. its URI)."""
    try:
        saved = json.loads(Path(config).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"the smoother config of {source} is unreadable ({type(err).__name__})") from None
    # checkpoint_config fills fields the config predates with their legacy values, as for checkpoints
    cfg = checkpoint_config({"config": {"smoother": saved}}, f"{source} ({CONFIG_FILE})").smoother
    model = ResidualSmoother(cfg)
    try:
        model.load_state_dict(_read_state_dict(weights, source))
    except RuntimeError as err:  # missing / unexpected keys, wrong shapes
        first = str(err).strip().splitlines()[0]
        raise InputError(f"the weights of {source} do not fit its config ({first})") from None
    return model.eval()


def _read_state_dict(path: str | Path, source: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the weights-only unpickler refuses foreign globals with several error types
        raise InputError(
            f"refused to load the weights of {source}: {WEIGHTS_FILE} is not a plain tensor state dict "
            f"({type(err).__name__}); nothing in it was run. Register the model again from a trusted checkpoint"
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"refused to load the weights of {source}: {WEIGHTS_FILE} is not a tensor state dict")
    return dict(state)


def signature(cfg: SmootherConfig) -> ModelSignature:
    """Depth window (T, H, W) float32 metres [+ rgb (T, H, W, 3) uint8] → refined depth (T, H, W) float32.

    MLflow tensor inputs cannot be optional, so rgb is an input exactly when the model reads it; a depth-only
    model takes a plain array (its one named input)."""
    depth = TensorSpec(np.dtype(np.float32), (-1, -1, -1), "depth")
    inputs = [depth, TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3), "rgb")] if uses_rgb(cfg) else [depth]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1))]))


def input_example(cfg: SmootherConfig, frames: int = 3, height: int = 6, width: int = 8) -> dict[str, np.ndarray]:
    """A small valid request: a slanted plane 2–3 m away with a little flicker [+ a grey ramp as RGB]."""
    t, y, x = np.mgrid[0:frames, 0:height, 0:width]
    depth = (2.0 + 0.1 * x / width + 0.05 * y / height) * (1.0 + 0.01 * (-1.0) ** t)
    example = {"depth": depth.astype(np.float32)}
    if uses_rgb(cfg):
        grey = (255 * (x + y) / (width + height)).astype(np.uint8)
        example["rgb"] = np.repeat(grey[..., None], 3, axis=-1)
    return example


def refine_window(
    model: ResidualSmoother, depth: np.ndarray, rgb: np.ndarray | None = None, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Refined depth (T, H, W) float32 of one in-memory window: the pre-roll (frames preroll−1..1 backwards, only
    advancing the state) then one `refine_chunk` over all frames, as refine_store does over a store of them."""
    grid = model_grid_size(depth.shape[1], depth.shape[2], model.cfg.depth_long_edge)
    stream = StreamState()
    start, stop = preroll_span(depth.shape[0], model.cfg.preroll)
    with torch.inference_mode():
        if stop > start:
            played_depth = torch.from_numpy(np.ascontiguousarray(depth[start:stop][::-1]))
            played_rgb = None if rgb is None else np.ascontiguousarray(rgb[start:stop][::-1])
            _, stream = refine_chunk(model, played_depth, None, played_rgb, stream, grid, device=device, replay=True)
        result, _ = refine_chunk(model, torch.from_numpy(depth), None, rgb, stream, grid, device=device)
    return result[0].cpu().numpy()


def _window(model_input: Any, needs_rgb: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(depth, rgb) of a request: an array (depth) or a mapping with `depth` [and `rgb`]; checked for shape."""
    arrays = model_input if isinstance(model_input, Mapping) else {"depth": model_input}
    depth = np.ascontiguousarray(arrays["depth"], dtype=np.float32)
    rgb = arrays.get("rgb") if needs_rgb else None
    if depth.ndim != 3 or 0 in depth.shape:
        raise MlflowException.invalid_parameter_value(f"depth must be (T, H, W) metres, got shape {depth.shape}")
    if rgb is not None:
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if rgb.shape != (*depth.shape, 3):
            raise MlflowException.invalid_parameter_value(f"rgb must be {(*depth.shape, 3)}, got {rgb.shape}")
    return depth, rgb


class SmootherPyfunc(PythonModel):
    """The pyfunc wrapper: loads the smoother from its artifacts, refines one window per request."""

    def load_context(self, context: PythonModelContext) -> None:
        self.device = resolve_device("auto")
        source = "the logged smoother"
        model = read_smoother(context.artifacts[WEIGHTS], context.artifacts[CONFIG], source)
        self.model = model.to(self.device).requires_grad_(False)

    # model_input is {"depth", "rgb"} arrays for a model that reads RGB; only a bare ndarray hint keeps MLflow from
    # deriving (and warning about) a schema from the hint instead of the logged signature
    def predict(
        self, context: PythonModelContext, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        depth, rgb = _window(model_input, uses_rgb(self.model.cfg))
        return refine_window(self.model, depth, rgb, self.device)

