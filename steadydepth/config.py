"""Configuration: one pydantic model per stage, loaded from YAML and overridable from the CLI.

Every model forbids unknown keys, so a typo fails before any work starts with a message naming the
field (`decode.strid: Extra inputs are not permitted`). Later stages (smoother, train, evaluate,
export, orchestration) have their sections here too so one file configures a whole run; the smoother's own
sections (smoother, train, loss) live in smoother/config.py, the evaluation's (evaluate) in
evaluation/config.py and the export's (export) in steadydepth/export/config.py; all are composed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from evaluation.config import EvaluateConfig
from smoother.config import LossConfig, SmootherConfig, TrainConfig
from steadydepth.config_base import Section as _Section
from steadydepth.errors import ConfigError
from steadydepth.export.config import ExportConfig
from steadydepth.hashing import stable_hash


class IntrinsicsConfig(_Section):
    """Known camera intrinsics of the source video, in pixels of the displayed (rotated) frame.

    Give either fx/fy/cx/cy or a horizontal field of view (then cx, cy default to the image centre).
    """

    fx: float | None = Field(default=None, gt=0, description="focal length in pixels along x (with fy)")
    fy: float | None = Field(default=None, gt=0, description="focal length in pixels along y (with fx)")
    cx: float | None = Field(default=None, description="principal point x in pixels (default: the centre)")
    cy: float | None = Field(default=None, description="principal point y in pixels (default: the centre)")
    hfov_deg: float | None = Field(
        default=None, gt=0, lt=180, description="horizontal field of view (instead of fx, fy)"
    )

    @model_validator(mode="after")
    def _one_way(self) -> IntrinsicsConfig:
        if self.hfov_deg is None and (self.fx is None or self.fy is None):
            raise ValueError("give fx and fy (pixels) or hfov_deg")
        if self.hfov_deg is not None and self.fx is not None:
            raise ValueError("give either fx/fy or hfov_deg, not both")
        return self


class DecodeConfig(_Section):
    """How frames are read from a video or an RGB-D frame folder."""

    stride: int = Field(default=1, ge=1, description="keep every stride-th frame")
    target_fps: float | None = Field(default=None, gt=0, description="resample to at most this fps")
    max_frames: int | None = Field(default=None, ge=1, description="stop after this many output frames")
    long_edge: int | None = Field(default=None, ge=16, description="resize so the long edge has this size")
    pad_multiple: int | None = Field(default=None, ge=1, le=256, description="pad H and W to a multiple")
    intrinsics: IntrinsicsConfig | None = Field(
        default=None, description="camera intrinsics of the source, when known (else the teacher's own estimate)"
    )
    folder_fps: float = Field(default=30.0, gt=0, description="frame rate assumed for frame folders")


class SyntheticTeacherConfig(_Section):
    """Parameters of the simulated teacher error model (steadydepth/synth/teacher_model.py).

    All error terms are in log-depth (multiplicative). Defaults are calibrated to per-frame AbsRel ≈ 5–8 % and
    δ1 ≈ 0.93–0.97 on the synthetic benchmark and on a real 7-Scenes clip (docs/synthetic-benchmark.md).
    """

    seed: int = Field(default=0, description="seed of the simulated errors (per video, with its name)")
    scale_bias: float = Field(default=0.02, ge=0, description="half-range of a constant per-video log-scale error")
    scale_jitter: float = Field(default=0.035, ge=0, description="std of the per-frame global log-scale (flicker)")
    lowfreq_amplitude: float = Field(default=0.035, ge=0, description="std of the smooth spatial log-error")
    outlier_area: float = Field(default=0.04, ge=0, lt=1, description="fraction of each frame in badly wrong regions")
    outlier_strength: float = Field(default=0.3, ge=0, description="extra log-error inside those regions")
    lowfreq_drift: float = Field(default=0.05, ge=0, description="phase drift of the smooth error, rad per frame")
    spatial_jitter: float = Field(default=0.015, ge=0, description="std of a fresh smooth log-error every frame")
    edge_bleed: float = Field(default=0.003, ge=0, description="edge blur sigma as a fraction of the image width")
    pixel_noise: float = Field(default=0.01, ge=0, description="std of per-pixel log-noise")
    burst_rate: float = Field(default=0.03, ge=0, le=1, description="probability that a frame starts a burst")
    burst_max_frames: int = Field(default=5, ge=2, le=64, description="bursts last 2..this many frames")
    burst_strength: float = Field(default=0.08, ge=0, description="extra log-scale error at a burst's peak")


class TeacherConfig(_Section):
    """The frozen per-frame depth model."""

    backend: Literal["unidepth", "precomputed", "synthetic"] = Field(
        default="unidepth",
        description="UniDepthV2 on the GPU, depth files computed elsewhere, or the simulated teacher",
    )
    model: str = Field(
        default="lpiccinelli/unidepth-v2-vits14",
        description="UniDepthV2 hub id or a local directory written by save_pretrained",
    )
    resolution_level: int | None = Field(default=None, ge=0, le=9, description="UniDepth's input resolution level")
    batch_size: int = Field(default=4, ge=1, description="frames per teacher call")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$", description="auto = CUDA when present")
    shared_intrinsics: Literal["none", "median"] = Field(
        default="median",
        description="median: estimate K once per video (median over samples) and reuse it for every frame",
    )
    median_samples: int = Field(default=16, ge=1, description="frames sampled for the video's median K")
    precomputed_dir: str | None = Field(
        default=None, description="root with one sub-folder of per-frame depth per video (name = video stem)"
    )
    precomputed_format: Literal["auto", "npy", "png16", "exr"] = Field(
        default="auto", description="format of the precomputed depth files (auto: from their extension)"
    )
    png_scale: float = Field(default=1000.0, gt=0, description="16-bit PNG value per metre")
    max_invalid_fraction_per_frame: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="a frame with more NaN/inf, zero or negative depth pixels than this is invalid (copied over)",
    )
    max_invalid_frames_fraction: float = Field(
        default=0.2, ge=0, le=1, description="a video fails when more than this fraction of its frames is invalid"
    )
    synthetic: SyntheticTeacherConfig = Field(
        default=SyntheticTeacherConfig(),
        description="the simulated teacher's error model (docs/synthetic-benchmark.md)",
    )


class StoreConfig(_Section):
    """Where and how depth stores are written."""

    root: str = Field(default=".steadydepth/stores", description="local path or fsspec URL")
    chunk_frames: int = Field(default=16, ge=1, le=4096, description="frames per Zarr chunk: the unit of resume")
    compression_level: int = Field(default=3, ge=1, le=22, description="zstd level of the stores")
    save_rgb: bool = Field(default=True, description="also store the decoded RGB frames (uint8)")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for a remote store.root (e.g. S3 credentials)"
    )


class OrchestrationConfig(_Section):
    """Where Prefect and MLflow keep their state, how many videos run at once, the Dask cluster, the model name."""

    home: str = Field(default=".steadydepth", description="project-local dir for Prefect/MLflow state")
    max_parallel_videos: int = Field(default=1, ge=1, description="videos processed at once (thread runner)")
    dask_address: str | None = Field(default=None, description="scheduler address of an existing Dask cluster")
    model_name: str = Field(default="steadydepth-smoother", description="registered model name in MLflow")


class Config(_Section):
    """The whole run's configuration."""

    decode: DecodeConfig = DecodeConfig()
    teacher: TeacherConfig = TeacherConfig()
    store: StoreConfig = StoreConfig()
    smoother: SmootherConfig = SmootherConfig()
    train: TrainConfig = TrainConfig()
    loss: LossConfig = LossConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    export: ExportConfig = ExportConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()

    def section_hash(self, *sections: str) -> str:
        """Stable short hash of the named sections (what a stage's output depends on)."""
        payload = {name: getattr(self, name).model_dump(mode="json") for name in sections}
        return stable_hash(payload, 16)


def _format_validation_error(err: ValidationError, remedy: str) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "<root>"
    got = f" (got {first['input']!r})" if "input" in first and not isinstance(first["input"], dict) else ""
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    msg = first["msg"].removeprefix("Value error, ")
    # A check across fields is located at its section: point at the section's fields, not at the section.
    target = f"{field}.FIELD" if isinstance(first.get("input"), dict) else field
    return f"invalid config {field}: {msg}{got}{more}; " + remedy.replace("{field}", target)


def validate_config(tree: Any, remedy: str) -> Config:
    """A Config from a tree of sections; ConfigError naming the first invalid field in one line otherwise.

    `remedy` ends the message: how to fix the field where the tree came from (`{field}` is its dotted name).
    """
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, remedy)) from None


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"invalid override {dotted}: {key} is not a section; use --set SECTION.FIELD=VALUE")
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `section.field=value` override; the value is read as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"invalid override {text!r}: expected SECTION.FIELD=VALUE, e.g. decode.stride=2")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"invalid override {text!r}: empty field name; expected SECTION.FIELD=VALUE")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Load a Config from an optional YAML file plus `section.field=value` overrides.

    Raises ConfigError with a one-line message naming the first invalid field.
    """
    tree: dict[str, Any] = {}
    source = "the defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found; pass an existing YAML file or omit --config")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not a text (YAML) file; pass a YAML config") from None
        except yaml.YAMLError as err:
            line = getattr(getattr(err, "problem_mark", None), "line", None)
            where = f" at line {line + 1}" if line is not None else ""
            raise ConfigError(f"config file {path} is not valid YAML{where}; fix its syntax") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections (decode:, teacher:, ...)")
        tree = loaded
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides or [])
    for key, value in items:
        _set_dotted(tree, key, value)
    return validate_config(tree, f"fix it in {source} or with --set {{field}}=...")
