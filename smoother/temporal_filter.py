"""The model-gated temporal filter: a per-pixel recursive filter at full resolution whose gate the model predicts.

The SSM works on a small grid (64 px on the long edge), so its residual r is smooth: it removes frame-wide and
smooth flicker, but cannot average per-pixel noise finer than one grid cell, nor, without a long memory of its
own, the slow drift of a still pixel. So the corrected log-depth x = ℓ + r goes through a recursive filter whose
gate k ∈ [0, 1] the model predicts on its grid from everything it knows (motion cues, history), upsampled:

    y_t = κ_t · y_{t−1} + (1 − κ_t) · x_t,   κ_t = k_t · exp(−((x_t − y_{t−1}) / τ)²)     (y_{−1} = x_0)
    ℓ_refined = y

k = 0 passes x through (an untrained model, whose head is zero, returns the teacher exactly); k → 1 holds it
(still pixels: flicker, noise and drift average out). The reset term (τ = SmootherConfig.filter_reset, times the
model's teacher-noise scale s_t ≥ 1 of smoother/noise.py) opens it per pixel where the value jumps by more than
~τ from the estimate (a moving edge, a disocclusion), finer than the grid the model sees. Like a motion-gated
EMA, but with a gate learned from the losses.

Motion compensation (SmootherConfig.flow_warp): before each frame the memory y_{t−1} is warped along the optical
flow of the RGB from frame t to t−1 (`memory_flows`), ŷ(p) = y_{t−1}(p + f(p)), and ŷ replaces y_{t−1} above, so
the memory follows surfaces under camera and object motion instead of smearing across them; the model's gate and
the reset then judge what is left. Training does the same on its grid crops (flow of the low-res RGB), so the gate
learns what the warped memory leaves to judge, not what an unwarped one would.

SmootherConfig.temporal_filter = "detail" applies the filter only to the band finer than the grid (x = ℓ −
bilinear(ℓ on the grid), the residual added unfiltered); "off" disables it. Training applies the filter on the
model grid (the detail band one octave below it, `detail_band`); refinement applies it at store resolution; both
go through `apply_filter`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from steadydepth.video.optical_flow import flows_to_previous, warp_backward_clamped


def detail_band(log_d: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Fine detail of log-depth (..., H, W): log_d minus its `factor`× coarser copy, upsampled back (bilinear).

    Used in training, where the model grid plays the role of full resolution.
    """
    lead, (h, w) = log_d.shape[:-2], log_d.shape[-2:]
    x = log_d.reshape(-1, 1, h, w)
    coarse = F.avg_pool2d(x, factor, ceil_mode=True, count_include_pad=False)
    low = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (x - low).reshape(*lead, h, w)


def warp_previous(x: torch.Tensor, prev: torch.Tensor, flows: torch.Tensor | None) -> torch.Tensor:
    """Each frame's predecessor moved into it along the flow: x (B, N, C, H, W), prev (B, C, H, W) the frame before
    x[:, 0], flows (B, N, H, W, 2) frame t → t−1 (`memory_flows`) → (B, N, C, H, W) with entry t = x_{t−1}(p + f_t(p))
    (entry 0 from prev). Frame t minus this is the temporal change of what stayed in view, camera motion removed.
    flows None: the predecessor at the same pixel (pixel-by-pixel change)."""
    before = torch.cat([prev[:, None], x[:, :-1]], dim=1)
    if flows is None:
        return before
    b, n, c, h, w = x.shape
    warped = warp_backward_clamped(before.reshape(b * n, c, h, w), flows.reshape(b * n, h, w, 2))
    return warped.reshape(b, n, c, h, w)


def memory_flows(rgb: np.ndarray, gray_before: np.ndarray | None) -> tuple[torch.Tensor, np.ndarray]:
    """Flows (n, H, W, 2) that move the filter's memory: OpenCV DIS from each frame of rgb (n, H, W, 3) uint8 to
    the one before (the first frame: to `gray_before`, the grey image of the frame played before it; zero flow
    when None, a video's start). Also the last frame's grey image, to continue in the next call."""
    flows, gray = flows_to_previous(rgb, gray_before)
    no_flow = np.zeros((*rgb.shape[1:3], 2), np.float32)
    return torch.from_numpy(np.stack([no_flow if f is None else f for f in flows])), gray


def grid_flows(rgb: torch.Tensor, grays: list[np.ndarray] | None = None) -> tuple[torch.Tensor, list[np.ndarray]]:
    """`memory_flows` of each batch item on the model grid: rgb (B, n, 3, h, w) in [0, 1] → flows (B, n, h, w, 2) on
    rgb's device, frame t → t−1 (the first frame: to grays[b], the item's frame before, or zero flow when None),
    and each item's last grey image to carry into the next call. Training and refinement both compute the flows the
    model and the losses see this way, from the same low-res RGB, so the model meets at inference what it learnt on."""
    frames = (rgb.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
    pairs = [memory_flows(f, None if grays is None else grays[b]) for b, f in enumerate(frames)]
    return torch.stack([f for f, _ in pairs]).to(rgb.device), [g for _, g in pairs]


def gated_recursion(
    x: torch.Tensor,
    keep: torch.Tensor,
    prev: torch.Tensor | None = None,
    reset: float = 0.0,
    flows: torch.Tensor | None = None,
    reset_scale: torch.Tensor | None = None,
    hold: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """y_t = κ_t · ŷ_{t−1} + (1 − κ_t) · x_t along dim 1, κ_t = keep_t · exp(−((x_t − ŷ_{t−1}) / (reset·s_t))²).

    x, keep (B, N, ...) with keep in [0, 1]; prev (B, ...) the filtered value of the frame before the first, or
    None at a video's start (then y_{−1} = x_0, so frame 0 passes unchanged); reset 0 = no reset term.
    reset_scale (B, N) or None (1): s_t, the teacher's noise in units of SmootherConfig.noise_ref
    (smoother/noise.py), so a jump resets the pixel only when it is large for this teacher's flicker.
    flows (B, N, H, W, 2) or None: flows[:, t] warps y_{t−1} into frame t (`warp_backward_clamped`), ŷ = warped memory;
    None: ŷ = y (no motion compensation). hold (B, N) bool or None: frames where y_t = ŷ_{t−1} whatever x_t (a
    teacher frame too broken to use: the output bridges it with the memory, still moved along the flow).
    Returns (y (B, N, ...), y of the last frame (B, ...)) — the state for
    the next call. A Python loop over frames: N is a window (training) or a chunk (refinement), and each step is
    one fused elementwise update.
    """
    y = x[:, 0] if prev is None else prev
    out = []
    for t in range(x.shape[1]):
        if flows is not None and (t > 0 or prev is not None):
            y = warp_backward_clamped(y, flows[:, t])
        k = keep[:, t]
        if reset > 0:  # a pixel whose value jumped (motion, disocclusion) takes the new value
            tau = reset if reset_scale is None else reset * reset_scale[:, t].reshape(-1, *([1] * (y.ndim - 1)))
            k = k * torch.exp(-(((x[:, t] - y).detach() / tau) ** 2))
        if hold is not None and (t > 0 or prev is not None):  # at a video's first frame there is nothing to hold
            k = torch.where(hold[:, t].reshape(-1, *([1] * (y.ndim - 1))), torch.ones_like(k), k)
        y = k * y + (1 - k) * x[:, t]
        out.append(y)
    return torch.stack(out, dim=1), y


def apply_filter(
    mode: Literal["full", "detail", "off"],
    log_depth: torch.Tensor,
    residual: torch.Tensor,
    keep: torch.Tensor,
    prev: torch.Tensor | None = None,
    *,
    detail: torch.Tensor | None = None,
    reset: float = 0.0,
    flows: torch.Tensor | None = None,
    reset_scale: torch.Tensor | None = None,
    hold: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's correction after the temporal filter (SmootherConfig.temporal_filter = mode), and its memory.

    log_depth, residual, keep (B, N, 1, H, W), shaped like the model's outputs: the log-depth the correction is
    relative to, the model's correction and its gate in [0, 1]. "full" filters all of the corrected log-depth;
    "detail" filters only `detail` (B, N, 1, H, W), the band finer than the model's grid, and adds its change to the
    residual; "off" returns the residual unchanged. prev (B, H, W), reset, flows (B, N, H, W, 2), reset_scale
    (B, N) and hold (B, N) as in `gated_recursion`, which runs on (B, N, H, W): the warp moves whole frames.
    Returns (correction (B, N, 1, H, W) relative to log_depth, the filter's last frame (B, H, W) for the next call).
    """
    if mode == "off":
        return residual, prev
    keep = keep[:, :, 0]
    if mode == "full":
        corrected = (log_depth + residual)[:, :, 0]
        filtered, prev = gated_recursion(corrected, keep, prev, reset, flows, reset_scale, hold)
        return filtered[:, :, None] - log_depth, prev
    if detail is None:
        raise ValueError("apply_filter('detail') needs the detail band")
    detail = detail[:, :, 0]
    filtered, prev = gated_recursion(detail, keep, prev, reset, flows, reset_scale, hold)
    # the residual is added last: this order of ops fixes autograd's order of gradient sums (training's rounding)
    return residual + (filtered - detail)[:, :, None], prev
