"""Refinement's per-chunk maths as pure tensors: a chunk of teacher frames and the state in, refined depth and the
state out. No stores, no threads (smoother/refine.py streams stores through `refine_chunk`).

    teacher depth (n, H, W) ─ downsample ─▶ model grid (h, w) ─ ResidualSmoother (state carried) ─▶ ΔD, k (h, w)
                                       (its motion cues follow the optical flow of the grid RGB, as in training)
    guided upsample of ΔD (guide: teacher log-depth) ─▶ ΔD (H, W)
    temporal filter of log teacher + ΔD at (H, W), gate k upsampled, its memory warped along the RGB's optical
    flow, its reset scaled by the model's teacher-noise estimate (smoother/temporal_filter.py) ─▶ refined log-depth
    refined depth = teacher depth · exp(refined log-depth − log teacher)

State: the model's `SmootherState`, the filter's last frame and the last grey images (the flow into the next chunk)
are all the past a chunk needs, so a video fed chunk by chunk, each call given the state the last one returned,
equals one call over the whole video (up to float rounding), in memory independent of the video's length.

Pre-roll (SmootherConfig.preroll): before frame 0 the same maths runs over frames preroll−1, …, 1 played backwards,
nothing kept but the state (`preroll_span`), so the first frames start from a warm state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from smoother.config import SmootherConfig
from smoother.grid import downsample_confidence, downsample_depth, downsample_rgb
from smoother.model import ResidualSmoother, SmootherOutput, SmootherState
from smoother.temporal_filter import apply_filter, grid_flows, memory_flows
from smoother.upsample import DEFAULT_EPS, DEFAULT_RADIUS, guided_upsample, upsample_bilinear


@dataclass
class StreamState:
    """What refinement carries from one chunk to the next: the model's state and the temporal filter's last frame."""

    model: SmootherState | None = None
    filtered: torch.Tensor | None = None  # (1, H, W) the filter's output (log-depth or detail) of the last frame
    gray: np.ndarray | None = None  # (H, W) uint8 the last frame's grey image (flow into the next chunk)
    grid_gray: np.ndarray | None = None  # (h, w) uint8 the same on the model grid (the model's motion cues)


@dataclass
class GridInputs:
    """One chunk's model inputs on the grid, batch of one, in the model's dtype except `depth`."""

    depth: torch.Tensor  # (n, h, w) teacher metres as stored: also the upsampling's low-res guide
    confidence: torch.Tensor | None  # (1, n, 1, h, w)
    rgb: torch.Tensor | None  # (1, n, 3, h, w) in [0, 1]; None when the model has no feature CNN
    flows: torch.Tensor | None  # (1, n, h, w, 2) frame t → t−1 (SmootherConfig.flow_cues)
    gray: np.ndarray | None  # (h, w) uint8 the last frame's grey image on the grid, for the next chunk's flow


def preroll_span(num_frames: int, preroll: int) -> tuple[int, int]:
    """Frames [start, stop) of the pre-roll, played from stop−1 down to start = 1 (frame 0 itself is not replayed).

    A stored video is refined offline, so frame 0 need not start cold: played backwards, the first frames are a
    continuous video ending next to frame 0; run through the model and the filter (nothing written), they leave a
    warm state for frame 0 (without it the first frames pass almost unfiltered and a start-up error lingers).
    Empty (start == stop) for preroll ≤ 1 or a one-frame video.
    """
    return 1, max(1, min(preroll, num_frames))


def grid_inputs(
    cfg: SmootherConfig,
    dtype: torch.dtype,
    depth: torch.Tensor,
    confidence: np.ndarray | None,
    rgb: np.ndarray | None,
    grid: tuple[int, int],
    grid_gray: np.ndarray | None = None,
) -> GridInputs:
    """Downsample one chunk to the model grid: depth (n, H, W) metres on the target device, confidence (n, H, W) and
    rgb (n, H, W, 3) uint8 as stored (or None); grid_gray the previous chunk's last grey image on the grid (None at
    a video's start). The motion cues' flow is computed from the grid RGB as in training."""
    device = depth.device
    small = downsample_depth(depth, grid)  # (n, h, w)
    conf = rgb_lr = flows = gray = None
    if confidence is not None:
        conf = downsample_confidence(torch.from_numpy(confidence).to(device), grid)[None, :, None].to(dtype)
    if rgb is not None and (cfg.use_features or cfg.flow_cues):
        # rgb travels to the device as uint8 and is resampled there (on a GPU, CPU resampling cost more than the model)
        rgb_lr = downsample_rgb(torch.from_numpy(rgb).to(device), grid)[None].to(dtype)  # (1, n, 3, h, w)
        if cfg.flow_cues:  # the model's cues follow the flow of the RGB it sees, computed as in training
            flows, grays = grid_flows(rgb_lr, None if grid_gray is None else [grid_gray])
            flows, gray = flows.to(dtype), grays[0]
        if not cfg.use_features:
            rgb_lr = None
    return GridInputs(small, conf, rgb_lr, flows, gray)


def store_residual(
    cfg: SmootherConfig,
    out: SmootherOutput,
    depth: torch.Tensor,
    small: torch.Tensor,
    rgb: np.ndarray | None,
    stream: StreamState,
    *,
    radius: int = DEFAULT_RADIUS,
    eps: float = DEFAULT_EPS,
    hold: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray | None]:
    """ΔD (n, H, W) in log-depth at store resolution from the model's output on the grid: guided upsampling of its
    residual, then the temporal filter (`apply_filter`) with the gate upsampled and its memory moved along the RGB's
    optical flow. depth (n, H, W) teacher metres, small (n, h, w) the same on the grid (what the model saw), rgb as
    stored, hold (1, n) bool: frames the filter bridges with its memory (`gated_recursion`). Also the filter's last
    frame and the last grey image, for the next chunk's StreamState."""
    guide_hr = depth.clamp_min(1e-6).log()
    guide_lr = small.log()  # the log-depth the model saw
    size = tuple(guide_hr.shape[-2:])
    residual = guided_upsample(out.residual[0, :, 0], guide_lr, guide_hr, radius=radius, eps=eps)
    if cfg.temporal_filter == "off":
        return residual, None, None
    keep = upsample_bilinear(out.keep[0, :, 0].to(residual.dtype), size)
    flows = gray = None
    if cfg.flow_warp and rgb is not None:
        flows, gray = memory_flows(rgb, stream.gray)
        flows = flows[None].to(depth.device)
    detail = None
    if cfg.temporal_filter == "detail":
        detail = (guide_hr - upsample_bilinear(guide_lr, size))[None, :, None]  # finer than the grid
    corrected, filtered = apply_filter(  # on (1, n, 1, H, W), shaped like the model's outputs
        cfg.temporal_filter,
        guide_hr[None, :, None],
        residual[None, :, None],
        keep[None, :, None],
        stream.filtered,
        detail=detail,
        reset=cfg.filter_reset,
        flows=flows,
        reset_scale=out.noise_scale,  # the reset in units of the teacher's noise, as in training
        hold=hold,
    )
    return corrected[0, :, 0], filtered, gray


def refine_chunk(
    model: ResidualSmoother,
    depth: torch.Tensor,
    confidence: np.ndarray | None,
    rgb: np.ndarray | None,
    stream: StreamState,
    grid: tuple[int, int],
    *,
    radius: int = DEFAULT_RADIUS,
    eps: float = DEFAULT_EPS,
    device: torch.device | str = "cpu",
    replay: bool = False,
    frame_valid: np.ndarray | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, StreamState]:
    """One chunk's (refined depth, ΔD), both (n, H, W) on `device`, and the state for the next chunk.

    depth (n, H, W) teacher metres (CPU); confidence (n, H, W) and rgb (n, H, W, 3) uint8 as stored, or None
    (rgb feeds the model's features and, with SmootherConfig.flow_warp, the optical flow that moves the filter's
    memory; `stream.gray` carries the previous frame for it); grid the model grid. ΔD = guided upsample of the
    model's residual, then the temporal filter's change (smoother/temporal_filter.py), in log-depth; refined =
    teacher · exp(ΔD) in float32. replay=True only advances the state (chunks already written, the pre-roll) and
    returns None instead of the pair. frame_valid (n,) as stored (0 = a teacher frame ingest found unusable and
    filled from a neighbour) or None: such frames neither update the model's teacher-noise estimate nor reach the
    output — the temporal filter carries its memory over them (with the filter off they pass as filled).
    Call under torch.inference_mode() with the model in eval mode.
    """
    cfg = model.cfg
    dtype = next(model.parameters()).dtype
    depth_dev = depth.to(device)  # the stored frames go to the device once and are resampled there
    inputs = grid_inputs(cfg, dtype, depth_dev, confidence, rgb, grid, stream.grid_gray)
    valid = None if frame_valid is None else torch.from_numpy(frame_valid.astype(bool))[None].to(device)  # (1, n)
    depth_in = inputs.depth[None, :, None].to(dtype)
    out = model(depth_in, inputs.confidence, inputs.rgb, stream.model, inputs.flows, valid=valid)
    if replay and cfg.temporal_filter == "off":
        return None, StreamState(out.state, None, grid_gray=inputs.gray)  # nothing at store resolution to carry
    hold = None if valid is None else ~valid
    residual, filtered, gray = store_residual(
        cfg, out, depth_dev, inputs.depth, rgb, stream, radius=radius, eps=eps, hold=hold
    )
    state = StreamState(out.state, filtered, gray, inputs.gray)
    if replay:
        return None, state
    # teacher · exp(ΔD), not exp(log teacher + ΔD): ΔD = 0 gives the teacher bit for bit
    refined = (depth_dev.to(residual.dtype) * torch.exp(residual)).float()
    return (refined, residual), state
