"""The teacher's temporal noise, estimated causally from its own video: the unit the smoother's thresholds are in.

The filter's reset (SmootherConfig.filter_reset) and the losses' depth taus (LossConfig.motion_depth_tau,
still_depth_tau) say when a log-depth change is "motion, not flicker". They were tuned on the simulated teacher,
whose frame-to-frame noise is ≈ 0.015–0.02; a real per-frame network's is 3–4× that (7-Scenes with mobilePydnet:
0.05–0.08), so at the same thresholds its flicker reads as motion: the reset shuts the filter and the losses call
every pixel moving. So each video measures its teacher's noise and the thresholds scale with it:

    σ_t  = median_p |m_t|,  m_t = Δℓ_t − median_p Δℓ_t    the model's local-change cue (along the flow with
                                                          flow cues): on mostly static content, the noise
    σ̂_t  = running mean of σ_1..σ_t, an EMA of weight 1/span once span frames are in
    s_t  = max(1, σ̂_t / noise_ref)                        threshold scale (SmootherConfig.noise_ref)

Frame 0 of a video has no change and does not count (σ̂ = 0 there, so s = 1). The floor of 1 keeps a teacher as
quiet as the one the defaults were tuned on exactly where it was; only noisier teachers get looser thresholds.
The estimate is causal and streams with a two-number state, so refinement (after its pre-roll) and training
(after its burn-in context) compute it alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class NoiseState:
    """Running estimate σ̂ (B,) after the last frame seen and how many frames it averages (capped at span)."""

    estimate: torch.Tensor
    frames: torch.Tensor  # (B,) int64

    def detach(self) -> NoiseState:
        return NoiseState(self.estimate.detach(), self.frames)


def running_noise(
    frame_noise: torch.Tensor, state: NoiseState | None, span: int, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, NoiseState]:
    """σ̂ (B, N) from per-frame σ_t (B, N); state None = a video's start (its frame 0 is skipped). No gradient.

    valid (B, N) bool or None (all): frames marked False (an unusable teacher frame, copied from its neighbour by
    ingest, whose change says nothing about the noise) leave the estimate as it was."""
    frame_noise = frame_noise.detach()
    b, n = frame_noise.shape
    est = frame_noise.new_zeros(b) if state is None else state.estimate
    count = torch.zeros(b, dtype=torch.long, device=frame_noise.device) if state is None else state.frames
    out = []
    for t in range(n):
        if state is not None or t > 0:
            counts = torch.ones_like(count, dtype=torch.bool) if valid is None else valid[:, t]
            count = torch.where(counts, (count + 1).clamp_max(span), count)
            step = (frame_noise[:, t] - est) / count.clamp_min(1).to(est.dtype)
            est = torch.where(counts, est + step, est)
        out.append(est)
    return torch.stack(out, dim=1), NoiseState(est, count)


def noise_scale(estimate: torch.Tensor, noise_ref: float) -> torch.Tensor:
    """Threshold scale max(1, σ̂ / noise_ref), same shape as estimate; all ones when noise_ref is 0 (off)."""
    if noise_ref <= 0:
        return torch.ones_like(estimate)
    return (estimate / noise_ref).clamp_min(1.0)
