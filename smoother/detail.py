"""The high band: a recursive filter on the fine detail the model grid cannot resolve, gated by the model.

The SSM works on a small grid (64 px on the long edge), so its residual is smooth: it removes frame-wide and
smooth flicker, but per-pixel noise finer than one grid cell passes straight through the upsampling
(on the synthetic benchmark that is about a third of the refined TAE). So log-depth is split into two bands:

    ℓ = low + detail,   low = the teacher log-depth on the model grid, upsampled back (bilinear)

The low band gets the model's residual r. The detail band gets a per-pixel recursive filter whose gate
k ∈ [0, 1] the model predicts on its grid from everything it knows (motion cues, history):

    detail_hat_t = k_t · detail_hat_{t−1} + (1 − k_t) · detail_t        (detail_hat_{−1} = detail_0)
    ℓ_refined   = ℓ + r + (detail_hat − detail)

k = 0 passes the detail through (an untrained model, whose head is zero, returns the teacher exactly);
k → 1 holds it (static pixels: the noise averages out); under motion the model must open the gate, since
the detail is not motion-compensated. Training applies the same filter on the model grid, with the detail
band one octave below it (`detail_band`); refinement applies it at store resolution with k upsampled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def detail_band(log_d: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Fine detail of log-depth (..., H, W): log_d minus its `factor`× coarser copy, upsampled back (bilinear).

    Used in training, where the model grid plays the role of full resolution.
    """
    lead, (h, w) = log_d.shape[:-2], log_d.shape[-2:]
    x = log_d.reshape(-1, 1, h, w)
    coarse = F.avg_pool2d(x, factor, ceil_mode=True, count_include_pad=False)
    low = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (x - low).reshape(*lead, h, w)


def gated_recursion(
    detail: torch.Tensor, keep: torch.Tensor, prev: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """detail_hat_t = keep_t · detail_hat_{t−1} + (1 − keep_t) · detail_t along dim 1.

    detail, keep (B, N, ...) with keep in [0, 1]; prev (B, ...) the filtered detail of the frame before the
    first, or None at a video's start (then detail_hat_{−1} = detail_0, so frame 0 passes unchanged).
    Returns (detail_hat (B, N, ...), detail_hat of the last frame (B, ...)) — the state for the next call.
    A Python loop over frames: N is a window (training) or a chunk (refinement), and each step is one fused
    elementwise update.
    """
    y = detail[:, 0] if prev is None else prev
    out = []
    for t in range(detail.shape[1]):
        k = keep[:, t]
        y = k * y + (1 - k) * detail[:, t]
        out.append(y)
    return torch.stack(out, dim=1), y
