"""The smoother's config sections: the model (SmootherConfig), its training (TrainConfig) and losses (LossConfig).

They live with the code that reads them; `steadydepth.config.Config` composes them as its `smoother`, `train` and
`loss` sections (YAML keys and `--set smoother.FIELD=...` paths as before).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from steadydepth.config_base import Section


class SmootherConfig(Section):
    """The Mamba2 residual smoother: the SSM on the low-res grid, the gated temporal filter, the optical-flow inputs."""

    d_model: int = Field(default=32, ge=4, description="width of the SSM blocks")
    n_layers: int = Field(default=2, ge=1, description="Mamba2 blocks")
    d_state: int = Field(default=16, ge=1, description="SSM state size per head")
    headdim: int = Field(default=8, ge=1, description="channels per Mamba2 head (divides expand·d_model)")
    expand: int = Field(default=2, ge=1, description="inner width of a block over d_model")
    chunk_size: int = Field(default=16, ge=1, description="frames per chunk of the SSD scan")
    depth_long_edge: int = Field(default=64, ge=8, description="resolution the SSM works at")
    use_features: bool = Field(default=True, description="per-frame CNN features (spatial context) as inputs")
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
    noise_ref: float = Field(
        default=0.02,
        ge=0,
        description="teacher temporal noise (median |local log-depth change| along the flow on the grid) at which "
        "filter_reset and the losses' depth taus hold as set; a noisier teacher scales them, and the model's change "
        "cues, by its running noise estimate / noise_ref (never below 1; smoother/noise.py). 0 = off",
    )
    noise_span: int = Field(
        default=32, ge=1, description="frames the running teacher-noise estimate averages over (then an EMA)"
    )

    @model_validator(mode="after")
    def _heads_divide_the_width(self) -> SmootherConfig:
        # Mamba2 splits its expand·d_model channels into heads of headdim: a remainder cannot be a head.
        d_inner = self.expand * self.d_model
        if d_inner % self.headdim:
            fits = [h for h in (4, 8, 16, 32, 64) if d_inner % h == 0]
            raise ValueError(f"headdim {self.headdim} must divide expand·d_model = {d_inner} (e.g. {fits})")
        return self


class TrainConfig(Section):
    """Self-supervised training of the smoother on teacher stores (smoother/train.py); GT is never read."""

    steps: int = Field(default=300, ge=1, description="optimizer steps (≈7 min for a 700-frame video on 2 CPU cores)")
    window: int = Field(default=16, ge=3, description="frames per training window (shorter videos are padded)")
    batch_size: int = Field(default=4, ge=1, description="windows per step")
    crop_size: int | None = Field(
        default=24, ge=4, description="random square crop of the model grid per window (CPU speed); None = full grid"
    )
    flip: bool = Field(default=True, description="random horizontal flips")
    max_stride: int = Field(default=3, ge=1, le=8, description="random frame stride 1..max_stride (faster motion)")
    hidden_noise: float = Field(
        default=0.02,
        ge=0,
        description="max std of per-pixel log-noise hidden from the model (trains the filter gate), times the "
        "teacher-noise scale (SmootherConfig.noise_ref)",
    )
    burn_in: int = Field(
        default=48, ge=0, description="up to this many context frames run without gradients before each window"
    )
    use_rgb: bool = Field(default=True, description="feed low-res RGB to the model and the motion cue when stored")
    use_confidence: bool = Field(default=True, description="use the teacher's confidence when stored")
    lr: float = Field(default=2e-3, gt=0, description="peak AdamW learning rate")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="cosine decays to lr · min_lr_ratio")
    warmup_steps: int = Field(default=20, ge=0, description="linear warm-up before the cosine decay")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW; not on biases, norms, A_log/D/dt_bias")
    grad_clip: float | None = Field(default=1.0, gt=0, description="max global grad norm; None = off")
    checkpoint_every: int = Field(default=100, ge=1, description="steps between checkpoints (a killed run resumes)")
    amp: bool = Field(default=True, description="bf16 autocast, on CUDA only")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$", description="auto = CUDA when present")
    cache_mb: float = Field(default=512.0, ge=0, description="in-memory cache of low-res sequences; 0 = off")
    num_threads: int | None = Field(
        default=None, ge=1, description="CPU threads while training (None = torch's default; 1 wins on busy CPUs)"
    )
    progress: bool = Field(default=True, description="tqdm progress bar")
    seed: int = Field(default=0, description="seed of initialisation and window sampling")


class LossConfig(Section):
    """Weights and thresholds of the self-supervised smoother losses (formulas in smoother/losses.py)."""

    anchor: float = Field(default=1.0, ge=0, description="confidence-weighted L1 to the teacher's log-depth")
    anchor_scale: float = Field(
        default=4.0,
        ge=0,
        description="the window's mean frame-median log-ratio to the teacher stays within anchor_scale_band of the "
        "teacher's own band (no slide off its scale; the gate's teacher-agreement check as a loss)",
    )
    anchor_scale_band: float = Field(
        default=1.0, ge=0, description="anchor_scale's tolerance, in teacher bands (median |Δ frame-median log-depth|)"
    )
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
    motion_depth_tau: float = Field(
        default=0.1,
        gt=0,
        description="local |Δ log teacher| scale of the motion cue, on the teacher through motion_median",
    )
    motion_median: int = Field(
        default=5,
        ge=1,
        description="frames of the centred running median the motion cue sees the teacher through (flicker reverts "
        "within them, motion stays); 1 = the raw teacher",
    )
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
    still_depth_tau: float = Field(default=0.6, gt=0, description="|log-depth change| scale of the whole-window test")
    still_rgb_tau: float = Field(default=0.05, gt=0, description="|RGB change| scale of the whole-window test")
    still_camera_tau: float = Field(
        default=0.01, gt=0, description="frame-median |RGB change| scale at which the whole camera counts as moving"
    )

    @field_validator("motion_median")
    @classmethod
    def _median_is_centred(cls, frames: int) -> int:
        # A centred median needs as many frames after the current one as before it.
        if frames % 2 == 0:
            raise ValueError(f"motion_median must be odd (centred on its frame), e.g. {frames - 1} or {frames + 1}")
        return frames
