"""The teacher-noise estimate (smoother/noise.py) and what it scales: the filter's reset, the losses' depth taus."""

from __future__ import annotations

import torch

from smoother.config import LossConfig, SmootherConfig
from smoother.losses import motion_weights
from smoother.model import ResidualSmoother
from smoother.noise import noise_scale, running_noise
from smoother.temporal_filter import gated_recursion


def test_running_noise_skips_the_first_frame_averages_then_forgets_and_streams():
    sigma = torch.tensor([[9.0, 1.0, 3.0, 5.0, 5.0, 5.0]])  # frame 0 of a video has no change: its value is ignored
    est, _ = running_noise(sigma, None, span=2)
    torch.testing.assert_close(est, torch.tensor([[0.0, 1.0, 2.0, 3.5, 4.25, 4.625]]))  # mean, then EMA of 1/2
    a, state = running_noise(sigma[:, :3], None, span=2)
    b, _ = running_noise(sigma[:, 3:], state, span=2)
    torch.testing.assert_close(torch.cat([a, b], dim=1), est)


def test_noise_scale_is_never_below_one_and_off_at_zero_ref():
    est = torch.tensor([0.0, 0.01, 0.02, 0.06])
    torch.testing.assert_close(noise_scale(est, 0.02), torch.tensor([1.0, 1.0, 1.0, 3.0]))
    torch.testing.assert_close(noise_scale(est, 0.0), torch.ones(4))


def test_a_noisy_teachers_flicker_does_not_reset_the_filter_nor_count_as_motion():
    """Per-pixel flicker of std 0.1 (frame-to-frame median |change| ≈ 0.095, ~5× noise_ref): with the scale the
    filter holds and the losses call it static; a quiet teacher (scale 1) gets the thresholds as set."""
    gen = torch.Generator().manual_seed(0)
    n, h, w = 16, 16, 16
    log_d = 0.1 * torch.randn(1, n, 1, h, w, generator=gen)  # per-pixel flicker around 1 m
    model = ResidualSmoother(SmootherConfig(d_model=16, headdim=8, chunk_size=4, noise_ref=0.02))
    with torch.no_grad():
        out = model(log_d.exp())
    assert out.noise_scale[0, 0] == 1.0 and out.noise_scale[0, 1:].min() > 3.0
    keep = torch.full((1, n, h, w), 0.5)
    x = log_d[:, :, 0]
    plain, _ = gated_recursion(x, keep, reset=0.05)
    scaled, _ = gated_recursion(x, keep, reset=0.05, reset_scale=out.noise_scale)
    late = lambda y: y[:, 8:].std()  # noqa: E731  (spread of the filtered flicker once warm)
    assert late(scaled) < 0.85 * late(plain)  # the scaled filter averages the flicker
    assert late(plain) > 0.9 * late(x)  # the fixed reset, a quarter of the flicker, passes it through
    # a depth cue on the raw teacher, as tight as the simulator allows (the default is looser and median-filtered)
    cfg = LossConfig(motion_depth_tau=0.05, motion_median=1)
    s_plain, _, _ = motion_weights(log_d, None, cfg)
    s_scaled, _, _ = motion_weights(log_d, None, cfg, noise_scale=out.noise_scale)
    assert s_scaled.mean() > 0.7 > 0.3 > s_plain.mean()
