"""The residual smoother: teacher depth windows in, a small log-depth correction out.

    log D = log D_teacher + ΔD

Each pixel's depth over time is a sequence for a stack of Mamba2 blocks (shared over pixels); a small
CNN adds spatial context per frame (where edges are, whether the whole frame jumped, where things
move). The head is zero-initialised, so an untrained model returns the teacher exactly.

A second head channel is the gate k ∈ [0, 1] of the temporal filter (smoother/temporal_filter.py): the residual
lives on the model grid, and k says per pixel how much of the previous refined frame to hold. The model only
predicts k; the caller applies the filter (on the grid in training, at store resolution in refine).

Motion cues (SmootherConfig.flow_cues): the temporal changes the model sees compare each frame with the one
before moved along the optical flow of the low-res RGB (computed by the caller, `temporal_filter.grid_flows`), so
under camera motion what is left is the teacher's flicker plus occlusions, not the motion itself; pixel by pixel a
pan looks like change everywhere and the frame-wide flicker is buried in it.

Teacher noise (SmootherConfig.noise_ref, smoother/noise.py): the temporal-change cues are divided by a causal
running estimate of the teacher's own frame-to-frame noise (never below noise_ref), and its log is a cue, so a
noisy real network's flicker reads to the model as a quiet teacher's does. The same scale (`SmootherOutput.
noise_scale`) loosens the filter's reset and the losses' depth taus.

Everything is causal: frame t sees frames ≤ t only. So the same model runs over a training window in
one call or over a video of any length frame by frame with a fixed-size state (`SmootherState`).

Shapes: B batch, N frames, H×W the (downsampled) depth grid, P = B·H·W pixel sequences, C channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from smoother.config import SmootherConfig
from smoother.noise import NoiseState, noise_scale, running_noise
from smoother.ssm import Mamba2Block, Mamba2State
from smoother.temporal_filter import warp_previous

N_PIXEL_INPUTS = 6  # per-pixel cues the SSM always sees (see `_pixel_inputs`)
N_FLOW_INPUTS = 2  # and with SmootherConfig.flow_cues: how far the pixel and the camera moved


@dataclass
class SmootherState:
    """What streaming carries from one frame to the next; its size does not grow with video length."""

    prev_log_depth: torch.Tensor  # (B, 1, H, W) teacher log-depth of the last frame seen
    prev_rgb: torch.Tensor | None  # (B, 3, H, W) last RGB frame in [0, 1], or None without RGB
    layers: list[Mamba2State]  # one per block, batch P = B·H·W
    noise: NoiseState  # running estimate of the teacher's temporal noise (smoother/noise.py)

    def detach(self) -> SmootherState:
        """Cut the autograd history (truncated backprop between training windows)."""
        rgb = None if self.prev_rgb is None else self.prev_rgb.detach()
        return SmootherState(self.prev_log_depth.detach(), rgb, [s.detach() for s in self.layers], self.noise.detach())


@dataclass
class SmootherOutput:
    depth: torch.Tensor  # (B, N, 1, H, W) teacher · exp(residual), before the temporal filter
    residual: torch.Tensor  # (B, N, 1, H, W) ΔD in log-depth
    keep: torch.Tensor  # (B, N, 1, H, W) temporal-filter gate in [0, 1]; 0 = pass through
    noise_scale: torch.Tensor  # (B, N) ≥ 1: the teacher's running noise / noise_ref; scales the filter reset
    state: SmootherState


class FeatureEncoder(nn.Module):
    """Per-frame CNN: (teacher log-depth structure, confidence, RGB, motion cues) → d_feat channels.

    Inputs per frame (on the depth grid): log-depth minus its frame mean, confidence, RGB (3, zeros
    when absent), |Δ log-depth| and |Δ RGB| to the previous frame, moved along the flow with flow_cues (the
    motion cue). A globally pooled
    copy of the features is added back so every pixel knows what the whole frame did (a global scale
    jump looks the same everywhere; motion does not).
    """

    n_inputs = 7

    def __init__(self, d_feat: int = 16):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(self.n_inputs, d_feat, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(d_feat, d_feat, 3, padding=2, dilation=2),
            nn.GELU(),
            nn.Conv2d(d_feat, d_feat, 3, padding=4, dilation=4),
        )
        self.global_proj = nn.Linear(d_feat, d_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (F, n_inputs, H, W) → (F, d_feat, H, W), F = frames."""
        f = self.convs(x)  # (F, d_feat, H, W)
        g = self.global_proj(f.mean(dim=(2, 3)))  # (F, d_feat): what the whole frame did
        return F.gelu(f + g[:, :, None, None])


def frame_median(x: torch.Tensor) -> torch.Tensor:
    """Per-frame median over pixels: (B, N, 1, H, W) → (B, N, 1, 1, 1)."""
    return x.flatten(2).median(dim=2).values[:, :, None, None, None]


class SmootherBlock(nn.Module):
    """norm → Mamba2 (over time, per pixel) → residual; norm → MLP → residual (nanoGPT layout)."""

    def __init__(self, cfg: SmootherConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model)
        self.mixer = Mamba2Block(
            cfg.d_model, d_state=cfg.d_state, expand=cfg.expand, headdim=cfg.headdim, chunk_size=cfg.chunk_size
        )
        self.norm2 = nn.RMSNorm(cfg.d_model)
        d = cfg.d_model
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor, state: Mamba2State | None) -> tuple[torch.Tensor, Mamba2State]:
        """x (P, N, d_model) → same shape, and the mixer's state after the last frame."""
        y, state = self.mixer(self.norm1(x), state)
        x = x + y
        x = x + self.mlp(self.norm2(x))
        return x, state


class ResidualSmoother(nn.Module):
    """Teacher depth windows (B, N, 1, H, W) → refined depth and the log-depth residual."""

    def __init__(self, cfg: SmootherConfig):
        super().__init__()
        self.cfg = cfg
        d_feat = 16 if cfg.use_features else 0
        self.features = FeatureEncoder(d_feat) if cfg.use_features else None
        self.inp = nn.Linear(N_PIXEL_INPUTS + N_FLOW_INPUTS * cfg.flow_cues + d_feat, cfg.d_model)
        self.blocks = nn.ModuleList(SmootherBlock(cfg) for _ in range(cfg.n_layers))
        self.norm_f = nn.RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, 2)  # (ΔD, filter gate k)
        # ΔD = 0 and k = 0 at initialisation: an untrained smoother is exactly the teacher.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _pixel_inputs(
        self,
        log_d: torch.Tensor,
        conf: torch.Tensor,
        rgb: torch.Tensor | None,
        state: SmootherState | None,
        flows: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, NoiseState]:
        """Per-frame cues (B, N, C, H, W), for the CNN (B, N, 7, H, W), the noise scale (B, N) and the noise state
        after the last frame. Only frames ≤ t are used.

        The temporal changes compare each frame with the one before, moved along `flows` when given (camera and
        object motion removed: what is left is the teacher's flicker, occlusions and flow errors), else pixel by
        pixel. They enter in units of the teacher's running noise (smoother/noise.py), so "a change of 2" means
        the same, flicker or motion, whatever the teacher's noise level; log of the scale says what that level is."""
        b, n, _, h, w = log_d.shape
        prev = log_d[:, 0] if state is None else state.prev_log_depth  # (B, 1, H, W)
        dlog = log_d - warp_previous(log_d, prev, flows)  # temporal change (0 at a video's first frame)
        # Did the whole frame jump? The median, not the mean: under a pan or a close object real depth
        # changes dominate the mean and would pass for scale flicker (the losses use the median too).
        dlog_global = frame_median(dlog)  # (B, N, 1, 1, 1)
        # How much moves locally once that jump is removed: ~0 for pure flicker, large under camera motion.
        local_motion = frame_median((dlog - dlog_global).abs())
        # On mostly still content the local change is the teacher's noise: its running mean sets the unit.
        estimate, noise = running_noise(local_motion[:, :, 0, 0, 0], None if state is None else state.noise,
                                        self.cfg.noise_span, valid)  # fmt: skip
        scale = noise_scale(estimate, self.cfg.noise_ref)  # (B, N) ≥ 1
        unit = scale[:, :, None, None, None].to(log_d.dtype)
        dlog, dlog_global, local_motion = dlog / unit, dlog_global / unit, local_motion / unit
        centred = log_d - log_d.mean(dim=(3, 4), keepdim=True)  # scene structure, scale-free
        frame_cues = torch.cat([dlog_global, local_motion, unit.log()], dim=2).expand(b, n, 3, h, w)
        pixel = torch.cat([dlog, frame_cues, centred, conf], dim=2)  # (B, N, 6, H, W)
        if self.cfg.flow_cues:
            # How far each pixel moved and how far the camera did (frame median): a warped memory is exact for a
            # still camera and blurred, or wrong at occlusions, under fast motion; the cues above no longer say
            # which, since the flow removed the motion from them. Zeros without flow (no RGB).
            speed = log_d.new_zeros(b, n, 1, h, w) if flows is None else flows.norm(dim=-1)[:, :, None]
            pixel = torch.cat([pixel, speed, frame_median(speed).expand(b, n, 1, h, w)], dim=2)  # (B, N, 8, H, W)
        if rgb is None:
            rgb_in, drgb = log_d.new_zeros(b, n, 3, h, w), log_d.new_zeros(b, n, 1, h, w)
        else:
            prev_rgb = rgb[:, 0] if state is None or state.prev_rgb is None else state.prev_rgb
            drgb = (rgb - warp_previous(rgb, prev_rgb, flows)).abs().mean(dim=2, keepdim=True)
            rgb_in = rgb
        cnn = torch.cat([centred, conf, rgb_in, dlog.abs(), drgb], dim=2)  # (B, N, 7, H, W)
        return pixel, cnn, scale, noise

    def forward(
        self,
        depth: torch.Tensor,
        confidence: torch.Tensor | None = None,
        rgb: torch.Tensor | None = None,
        state: SmootherState | None = None,
        flows: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> SmootherOutput:
        """depth (B,N,1,H,W) metres > 0; confidence (B,N,1,H,W) in [0,1]; rgb (B,N,3,H,W) in [0,1].

        flows (B,N,H,W,2): optical flow of the RGB on this grid, frame t → t−1 (`temporal_filter.grid_flows`;
        flows[:, 0] to the frame before this call, zero at a video's start); the motion cues follow it when
        SmootherConfig.flow_cues is on, else they are ignored. With `state` from a previous call on the preceding
        frames (and flows carried likewise), the output equals one call on the concatenated frames (streaming).
        valid (B, N) bool or None (all): False marks a teacher frame ingest found unusable (its depth copied from a
        neighbour); it does not update the teacher-noise estimate. Returns refined depth = depth · exp(residual).
        """
        b, n, _, h, w = depth.shape
        log_d = depth.clamp_min(1e-6).log()
        conf = torch.ones_like(depth) if confidence is None else confidence
        flows = flows if self.cfg.flow_cues else None
        pixel, cnn, scale, noise = self._pixel_inputs(log_d, conf, rgb, state, flows, valid)
        x = pixel
        if self.features is not None:
            feats = self.features(rearrange(cnn, "b n c h w -> (b n) c h w"))
            x = torch.cat([pixel, rearrange(feats, "(b n) c h w -> b n c h w", b=b)], dim=2)
        x = rearrange(x, "b n c h w -> (b h w) n c")  # one sequence per pixel: (P, N, C)
        x = self.inp(x)  # (P, N, d_model)
        new_layers = []
        for i, block in enumerate(self.blocks):
            x, layer_state = block(x, None if state is None else state.layers[i])
            new_layers.append(layer_state)
        out = self.head(self.norm_f(x))  # (P, N, 2)
        out = rearrange(out, "(b h w) n c -> b n c h w", b=b, h=h, w=w)
        residual = out[:, :, :1]
        if self.cfg.temporal_filter != "off":
            # Clamp to [0, 1] with a straight-through gradient: 0 is reachable exactly (identity at init), and
            # a gate pushed below 0 early in training still gets gradients (a plain clamp would freeze it shut).
            z = out[:, :, 1:]
            keep = z + (z.clamp(0.0, 1.0) - z).detach()
        else:
            keep = torch.zeros_like(residual)
        refined = torch.exp(log_d + residual)
        new_state = SmootherState(
            prev_log_depth=log_d[:, -1],
            prev_rgb=None if rgb is None else rgb[:, -1],
            layers=new_layers,
            noise=noise,
        )
        return SmootherOutput(depth=refined, residual=residual, keep=keep, noise_scale=scale, state=new_state)
