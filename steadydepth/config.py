"""Configuration: one pydantic model per stage, loaded from YAML and overridable from the CLI.

Every model forbids unknown keys, so a typo fails before any work starts with a message naming the
field (`decode.strid: Extra inputs are not permitted`). Later stages (smoother, train, evaluate,
export, orchestration) have their sections here too so one file configures a whole run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from steadydepth.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IntrinsicsConfig(_Section):
    """Known camera intrinsics of the source video, in pixels of the displayed (rotated) frame.

    Give either fx/fy/cx/cy or a horizontal field of view (then cx, cy default to the image centre).
    """

    fx: float | None = Field(default=None, gt=0)
    fy: float | None = Field(default=None, gt=0)
    cx: float | None = None
    cy: float | None = None
    hfov_deg: float | None = Field(default=None, gt=0, lt=180)

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
    intrinsics: IntrinsicsConfig | None = None
    folder_fps: float = Field(default=30.0, gt=0, description="frame rate assumed for frame folders")


class SyntheticTeacherConfig(_Section):
    """Parameters of the simulated teacher error model (steadydepth/synth/teacher_model.py).

    All error terms are in log-depth (multiplicative). Defaults are calibrated to per-frame AbsRel ≈ 5–8 % and
    δ1 ≈ 0.93–0.97 on the synthetic benchmark and on a real 7-Scenes clip (docs/synthetic-benchmark.md).
    """

    seed: int = 0
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

    backend: Literal["unidepth", "precomputed", "synthetic"] = "unidepth"
    model: str = Field(
        default="lpiccinelli/unidepth-v2-vits14",
        description="UniDepthV2 hub id or a local directory written by save_pretrained",
    )
    resolution_level: int | None = Field(default=None, ge=0, le=9)
    batch_size: int = Field(default=4, ge=1)
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    shared_intrinsics: Literal["none", "median"] = Field(
        default="median",
        description="median: estimate K once per video (median over samples) and reuse it for every frame",
    )
    median_samples: int = Field(default=16, ge=1)
    precomputed_dir: str | None = Field(
        default=None, description="root with one sub-folder of per-frame depth per video (name = video stem)"
    )
    precomputed_format: Literal["auto", "npy", "png16", "exr"] = "auto"
    png_scale: float = Field(default=1000.0, gt=0, description="16-bit PNG value per metre")
    synthetic: SyntheticTeacherConfig = SyntheticTeacherConfig()


class StoreConfig(_Section):
    """Where and how depth stores are written."""

    root: str = Field(default=".steadydepth/stores", description="local path or fsspec URL")
    chunk_frames: int = Field(default=16, ge=1, le=4096)
    compression_level: int = Field(default=3, ge=1, le=22)
    save_rgb: bool = Field(default=True, description="also store the decoded RGB frames (uint8)")
    storage_options: dict[str, Any] = Field(default_factory=dict)


class SmootherConfig(_Section):
    """The Mamba residual smoother (filled in by the smoother issue)."""

    d_model: int = Field(default=32, ge=4)
    n_layers: int = Field(default=2, ge=1)
    d_state: int = Field(default=16, ge=1)
    headdim: int = Field(default=8, ge=1)
    expand: int = Field(default=2, ge=1)
    chunk_size: int = Field(default=16, ge=1)
    depth_long_edge: int = Field(default=64, ge=8, description="resolution the SSM works at")
    use_features: bool = True
    temporal_filter: Literal["full", "detail", "off"] = Field(
        default="full",
        description="model-gated recursive filter at store resolution (smoother/temporal_filter.py): on all of "
        "log-depth, only on the detail finer than the grid, or off",
    )
    filter_reset: float = Field(
        default=0.5, ge=0, description="|log-depth innovation| scale that shuts the filter's gate per pixel (0 = off)"
    )
    preroll: int = Field(
        default=16,
        ge=0,
        description="refinement first plays frames preroll−1..1 backwards, so frame 0 starts from a warm state",
    )
    flow_warp: bool = Field(
        default=True,
        description="training and refinement warp the filter's memory along the optical flow of the RGB (DIS) "
        "before each frame, so it follows surfaces under camera and object motion",
    )
    flow_cues: bool = Field(
        default=True,
        description="the model's temporal-change cues compare each frame with the one before moved along the optical "
        "flow of the low-res RGB (camera motion removed), not pixel by pixel",
    )


class TrainConfig(_Section):
    """Self-supervised training of the smoother on teacher stores (smoother/train.py); GT is never read."""

    steps: int = Field(default=450, ge=1, description="optimizer steps (≈13 min on 2 shared CPU cores at the defaults)")
    window: int = Field(default=16, ge=3, description="frames per training window (shorter videos are padded)")
    batch_size: int = Field(default=4, ge=1)
    crop_size: int | None = Field(
        default=24, ge=4, description="random square crop of the model grid per window (CPU speed); None = full grid"
    )
    flip: bool = Field(default=True, description="random horizontal flips")
    max_stride: int = Field(default=3, ge=1, le=8, description="random frame stride 1..max_stride (faster motion)")
    hidden_noise: float = Field(
        default=0.02, ge=0, description="max std of per-pixel log-noise hidden from the model (trains the filter gate)"
    )
    burn_in: int = Field(
        default=48, ge=0, description="up to this many context frames run without gradients before each window"
    )
    use_rgb: bool = Field(default=True, description="feed low-res RGB to the model and the motion cue when stored")
    use_confidence: bool = Field(default=True, description="use the teacher's confidence when stored")
    lr: float = Field(default=2e-3, gt=0)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="cosine decays to lr · min_lr_ratio")
    warmup_steps: int = Field(default=20, ge=0)
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW; not on biases, norms, A_log/D/dt_bias")
    grad_clip: float | None = Field(default=1.0, gt=0, description="max global grad norm; None = off")
    checkpoint_every: int = Field(default=100, ge=1)
    amp: bool = Field(default=True, description="bf16 autocast, on CUDA only")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    cache_mb: float = Field(default=512.0, ge=0, description="in-memory cache of low-res sequences; 0 = off")
    num_threads: int | None = Field(
        default=None, ge=1, description="CPU threads while training (None = torch's default; 1 wins on busy CPUs)"
    )
    progress: bool = Field(default=True, description="tqdm progress bar")
    seed: int = 0


class EvaluateConfig(_Section):
    """Evaluation and the promotion gate (filled in by the evaluation issue)."""

    max_depth: float = Field(default=80.0, gt=0)
    min_depth: float = Field(default=1e-3, ge=0)
    absrel_tolerance: float = Field(default=0.001, ge=0)
    delta1_tolerance: float = Field(default=0.002, ge=0)
    min_flicker_reduction: float = Field(
        default=0.2, ge=0, le=1, description="required relative drop of the flicker metric vs the teacher"
    )
    flicker_metrics: list[Literal["tae", "static_flicker", "opw", "frame_change"]] = Field(
        default=["tae", "static_flicker", "opw", "frame_change"],
        description="flicker metric used by the gate: the first one both sides have",
    )
    alignment: Literal["none", "median", "lstsq_disparity"] = Field(
        default="none", description="per-sequence alignment before accuracy/TAE; none for metric depth"
    )
    static_rel_tol: float = Field(
        default=0.01, gt=0, description="static pixels: GT within this relative deviation of its temporal median"
    )
    flow: Literal["dis", "farneback"] = Field(default="dis", description="optical flow of the OPW metric (OpenCV)")
    ema_alpha: float = Field(default=0.5, gt=0, le=1, description="EMA baseline: weight of the new frame")
    gated_ema_alpha: float = Field(default=0.2, gt=0, le=1, description="motion-gated EMA baseline: weight when still")
    gated_ema_threshold: float = Field(
        default=0.2, gt=0, description="motion-gated EMA baseline: |log-depth innovation| at which the gain is halfway"
    )
    gated_ema_softness: float = Field(
        default=0.5, ge=0, lt=1, description="motion-gated EMA baseline: gain ramps over threshold·(1 ± softness)"
    )
    median_window: int = Field(default=3, ge=1, description="causal temporal median baseline: frames in the window")


class ExportConfig(_Section):
    """What `steadydepth.export` writes (formats and their units: docs/export-formats.md)."""

    formats: list[Literal["zarr", "npz", "exr", "png16", "ply", "preview", "stereo"]] = ["zarr"]
    out_dir: str = Field(default=".steadydepth/exports", description="local folder; <out_dir>/<video>/<format>/")
    overwrite: bool = Field(default=False, description="replace existing exports instead of refusing")
    ply_every: int = Field(default=1, ge=1, description="write a point cloud for every k-th frame")
    png16_scale: float | None = Field(
        default=None, gt=0, description="metres per 16-bit PNG step; None = per video, so the max depth fits 65535"
    )
    preview_cmap: str = Field(default="turbo", description="matplotlib colormap of the inverse-depth previews")
    preview_grid_frames: int = Field(default=6, ge=1, le=64, description="sampled frames in the preview grid PNG")
    ipd_m: float = Field(default=0.063, gt=0, description="stereo: interpupillary distance, metres")
    convergence_m: float | None = Field(
        default=None, gt=0, description="stereo: depth shown at screen distance (zero disparity); None = infinity"
    )


class OrchestrationConfig(_Section):
    """Prefect and MLflow settings (filled in by the orchestration issue)."""

    home: str = Field(default=".steadydepth", description="project-local dir for Prefect/MLflow state")
    max_parallel_videos: int = Field(default=1, ge=1, description="videos processed at once (thread runner)")
    dask_address: str | None = Field(default=None, description="scheduler address of an existing Dask cluster")
    model_name: str = Field(default="steadydepth-smoother", description="registered model name in MLflow")


class LossConfig(_Section):
    """Weights and thresholds of the self-supervised smoother losses (formulas in smoother/losses.py)."""

    anchor: float = Field(default=1.0, ge=0, description="confidence-weighted L1 to the teacher's log-depth")
    temporal_static: float = Field(default=2.0, ge=0, description="frame-to-frame change on static pixels")
    temporal_flow: float = Field(
        default=2.0, ge=0, description="frame-to-frame change along the optical flow on surfaces that stayed in view"
    )
    temporal_accel: float = Field(default=1.0, ge=0, description="second temporal difference (jitter)")
    temporal_global: float = Field(
        default=0.0, ge=0, description="second difference of the frame-wide change (off: lags under fast motion)"
    )
    temporal_motion: float = Field(default=1.0, ge=0, description="moving pixels follow the frame-wide correction")
    temporal_long: float = Field(default=1.0, ge=0, description="change over long_span frames on static pixels (drift)")
    long_span: int = Field(default=16, ge=2, description="frames spanned by temporal_long")
    smoothness: float = Field(default=0.1, ge=0, description="edge-aware spatial smoothness of the residual")
    magnitude: float = Field(default=0.01, ge=0, description="L2 of the residual")
    motion_depth_tau: float = Field(default=0.05, gt=0, description="local |Δ log teacher| scale of the motion cue")
    motion_rgb_tau: float = Field(default=0.03, gt=0, description="|Δ RGB| scale of the motion cue (RGB in [0, 1])")
    accel_rgb_tau: float = Field(default=0.1, gt=0, description="looser |Δ RGB| scale gating temporal_accel")
    edge_k: float = Field(default=10.0, ge=0, description="smoothness weight exp(-edge_k·|∇ log teacher|)")
    eps: float = Field(default=1e-3, gt=0, description="Charbonnier ε of the robust penalties (log-depth)")
    flow_compensated: bool = Field(
        default=True,
        description="temporal_flow and temporal_accel compare each frame with the one before moved along the optical "
        "flow of the RGB, so flicker is penalised under camera motion too (needs RGB)",
    )
    anchor_mean: bool = Field(
        default=True, description="anchor pixels static over the whole window to the teacher's mean there"
    )
    still_depth_tau: float = Field(default=0.15, gt=0, description="|log-depth change| scale of the whole-window test")
    still_rgb_tau: float = Field(default=0.05, gt=0, description="|RGB change| scale of the whole-window test")
    still_camera_tau: float = Field(
        default=0.01, gt=0, description="frame-median |RGB change| scale at which the whole camera counts as moving"
    )


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
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "<root>"
    got = f" (got {first['input']!r})" if "input" in first and not isinstance(first["input"], dict) else ""
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"invalid config {field}: {first['msg']}{got}{more}; fix it in {source} or with --set {field}=..."


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
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None
