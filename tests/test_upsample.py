"""Guided upsampling of the log-depth residual: exact zero and constants, edges followed, no new extremes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smoother.grid import downsample_depth
from smoother.upsample import guided_upsample, upsample_bilinear

H, W, h, w = 48, 80, 12, 20  # store resolution and model grid (factor 4)


def _scene(frames: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Textured depth (frames, H, W) in metres and its guides: log-depth at low res and at full res."""
    g = torch.Generator().manual_seed(seed)
    depth = 1.0 + 5.0 * torch.rand(frames, H, W, generator=g)
    small = downsample_depth(depth, (h, w))
    return depth, small.log(), depth.log()


def test_zero_residual_upsamples_to_exact_zero():
    _, guide_lr, guide_hr = _scene()
    out = guided_upsample(torch.zeros(3, h, w), guide_lr, guide_hr)
    assert out.shape == (3, H, W)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(torch.exp(out), torch.ones_like(out))  # teacher · exp(ΔD) is the teacher bit for bit


@pytest.mark.parametrize("value", [0.37, -1.25e-3])
def test_constant_residual_stays_exactly_constant(value):
    _, guide_lr, guide_hr = _scene()
    out = guided_upsample(torch.full((3, h, w), value), guide_lr, guide_hr)
    assert torch.equal(out, torch.full_like(out, value))


def test_batched_leading_dims_and_dtype():
    depth, _, _ = _scene(frames=6)
    depth = depth.reshape(2, 3, H, W).double()
    small = downsample_depth(depth, (h, w)).double()
    residual = torch.randn(2, 3, h, w, dtype=torch.float64)
    out = guided_upsample(residual, small.log(), depth.log())
    assert out.shape == (2, 3, H, W) and out.dtype == torch.float64
    # each frame is filtered on its own: frame (1, 2) alone gives the same result
    alone = guided_upsample(residual[1, 2], small[1, 2].log(), depth[1, 2].log())
    torch.testing.assert_close(out[1, 2], alone, rtol=0, atol=1e-12)


def test_same_size_is_the_identity():
    residual = torch.randn(2, h, w)
    guide = torch.randn(2, h, w)
    assert guided_upsample(residual, guide, guide) is residual


def test_no_new_extremes():
    _, guide_lr, guide_hr = _scene(seed=3)
    residual = 0.1 * torch.randn(3, h, w, generator=torch.Generator().manual_seed(1))
    out = guided_upsample(residual, guide_lr, guide_hr)
    lo, hi = residual.amin(dim=(1, 2)), residual.amax(dim=(1, 2))
    assert (out >= lo[:, None, None] - 1e-7).all() and (out <= hi[:, None, None] + 1e-7).all()


@pytest.mark.parametrize("edge_x", [36, 37, 42])  # on and off the low-res pixel boundaries
def test_residual_follows_a_sharp_depth_edge_better_than_bilinear(edge_x):
    """Foreground 1 m, background 4 m; the true correction differs on the two sides (+0.1 / -0.2)."""
    x = torch.arange(W)
    depth = torch.where(x < edge_x, 1.0, 4.0).expand(2, H, W).contiguous()
    truth = torch.where(x < edge_x, 0.1, -0.2).expand(2, H, W)
    # what an ideal model on the grid would output: the area average of the true residual
    residual = F.interpolate(truth.reshape(-1, 1, H, W), size=(h, w), mode="area").reshape(2, h, w)
    guided = guided_upsample(residual, downsample_depth(depth, (h, w)).log(), depth.log())
    bilinear = upsample_bilinear(residual, (H, W))

    near = (x - edge_x).abs() <= 8  # the band where bilinear bleeds (2 low-res pixels each side)
    err_guided = (guided - truth)[..., near].abs()
    err_bilinear = (bilinear - truth)[..., near].abs()
    assert err_bilinear.mean() > 0.01  # the baseline does bleed here
    assert err_guided.mean() < 0.05 * err_bilinear.mean()
    # every pixel lands on its own side: closer to its own side's value than to the other's
    assert (err_guided < 0.02).all()
    # far from the edge both are exact
    far = ~near
    torch.testing.assert_close(guided[..., far], truth[..., far], rtol=0, atol=1e-5)
