"""The temporal filter: the band split and the gated recursion on hand-made cases."""

from __future__ import annotations

import torch

from smoother.config import SmootherConfig
from smoother.model import ResidualSmoother
from smoother.temporal_filter import apply_filter, detail_band, gated_recursion


def test_detail_band_of_smooth_depth_is_small_and_of_noise_is_the_noise():
    flat = torch.full((2, 3, 1, 8, 12), 1.3)
    torch.testing.assert_close(detail_band(flat), torch.zeros_like(flat), atol=1e-6, rtol=0)
    g = torch.Generator().manual_seed(0)
    noise = 0.01 * torch.randn(1, 1, 1, 64, 64, generator=g)
    d = detail_band(flat[:1, :1, :, :1, :1].expand(1, 1, 1, 64, 64) + noise)
    # most of white noise is finer than 2 pixels: the band keeps it (the coarse copy averages 4 pixels)
    assert 0.7 < float(d.std() / noise.std()) < 1.0
    assert detail_band(torch.zeros(5, 7)).shape == (5, 7)  # odd sizes, any leading dims


def test_gated_recursion_passes_holds_and_averages():
    x = torch.tensor([1.0, 3.0, -2.0, 5.0]).reshape(1, 4, 1)
    y, last = gated_recursion(x, torch.zeros_like(x))
    assert torch.equal(y, x) and last.item() == 5.0  # k = 0: exactly the input (an untrained model)
    y, _ = gated_recursion(x, torch.ones_like(x))
    assert torch.equal(y, torch.ones_like(x))  # k = 1: holds the first frame
    y, _ = gated_recursion(x, torch.full_like(x, 0.5))
    torch.testing.assert_close(y.flatten(), torch.tensor([1.0, 2.0, 0.0, 2.5]))  # an EMA with α = 0.5
    y, _ = gated_recursion(x, torch.full_like(x, 0.5), prev=torch.tensor([[3.0]]))
    assert y[0, 0, 0].item() == 2.0  # continues from the previous chunk's last value


def test_gated_recursion_in_chunks_equals_one_pass():
    g = torch.Generator().manual_seed(1)
    x, k = torch.randn(2, 10, 1, 3, 4, generator=g), torch.rand(2, 10, 1, 3, 4, generator=g)
    whole, last = gated_recursion(x, k)
    a, state = gated_recursion(x[:, :4], k[:, :4])
    b, last_b = gated_recursion(x[:, 4:], k[:, 4:], prev=state)
    torch.testing.assert_close(torch.cat([a, b], dim=1), whole)
    torch.testing.assert_close(last_b, last)


def test_model_gate_is_closed_at_init_and_off_when_disabled():
    depth = 1 + torch.rand(1, 5, 1, 6, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(ResidualSmoother(SmootherConfig())(depth).keep, torch.zeros_like(depth))
    model = ResidualSmoother(SmootherConfig(temporal_filter="off"))
    torch.nn.init.constant_(model.head.bias, 0.7)
    assert torch.equal(model(depth).keep, torch.zeros_like(depth))
    model = ResidualSmoother(SmootherConfig())
    torch.nn.init.constant_(model.head.bias, 0.7)
    keep = model(depth).keep
    assert torch.allclose(keep, torch.tensor(0.7)) and keep.shape == depth.shape
    torch.nn.init.constant_(model.head.bias, 1.7)
    assert torch.equal(model(depth).keep, torch.ones_like(depth))  # clamped to [0, 1]


def test_gate_below_zero_is_closed_but_still_learns():
    model = ResidualSmoother(SmootherConfig())
    torch.nn.init.constant_(model.head.bias, -0.5)  # pushed shut, as can happen early in training
    depth = 1 + torch.rand(1, 4, 1, 6, 8, generator=torch.Generator().manual_seed(3))
    keep = model(depth).keep
    assert torch.equal(keep, torch.zeros_like(keep))
    keep.sum().backward()
    assert model.head.bias.grad[1] > 0  # a plain clamp would give 0 here and the gate could never reopen


def test_unseen_noise_is_bounded_seeded_and_off_at_zero():
    from smoother.train import unseen_noise

    depth = torch.ones(3, 16, 1, 20, 20)
    assert torch.equal(unseen_noise(depth, 0.0), torch.zeros_like(depth))
    torch.manual_seed(0)
    a = unseen_noise(depth, 0.02)
    torch.manual_seed(0)
    assert torch.equal(a, unseen_noise(depth, 0.02))  # from torch's RNG, which checkpoints save
    stds = a.flatten(1).std(dim=1)
    assert a.shape == depth.shape and bool((stds < 0.021).all()) and stds.max() > 0.002


def test_reset_shuts_the_gate_where_the_value_jumps():
    # pixel 0 holds still with a little noise, pixel 1 jumps by 0.5 (a moving edge) at frame 2
    x = torch.tensor([[1.0, 1.0], [1.02, 1.0], [0.98, 1.5], [1.0, 1.5]]).reshape(1, 4, 2)
    keep = torch.full_like(x, 0.9)
    y, _ = gated_recursion(x, keep, reset=0.15)
    plain, _ = gated_recursion(x, keep)
    # the still pixel is filtered almost as without the reset (its innovations are ≪ 0.15)
    torch.testing.assert_close(y[0, :, 0], plain[0, :, 0], atol=2e-3, rtol=0)
    # the jump: gain 1 − 0.9·exp(−(0.5/0.15)²) ≈ 1, so the filter takes the new value at once; without the
    # reset it would lag at 1.05
    assert abs(y[0, 2, 1].item() - 1.5) < 1e-4 and abs(plain[0, 2, 1].item() - 1.05) < 1e-6
    z, _ = gated_recursion(x, torch.zeros_like(x), reset=0.15)
    assert torch.equal(z, x)  # k = 0 stays the identity


def test_motion_compensated_recursion_holds_a_moving_pattern_in_place():
    # content moving one pixel left per frame: x_t(c) = P(c + t), so the flow from t to t−1 is +1 in x
    n, h, w = 5, 3, 16
    pattern = torch.linspace(0.0, 1.5, w + n) ** 2
    x = torch.stack([pattern[t : t + w].expand(h, w) for t in range(n)])[None]  # (1, n, h, w)
    keep = torch.ones_like(x)  # hold completely: the output is the memory alone
    flows = torch.zeros(1, n, h, w, 2)
    flows[..., 0] = 1.0
    held, _ = gated_recursion(x, keep, flows=flows)
    lagging, _ = gated_recursion(x, keep)
    inside = slice(0, w - n)  # columns whose source stayed inside the first frame
    assert torch.allclose(held[..., inside], x[..., inside], atol=1e-5)  # the memory followed the motion
    assert (lagging[0, -1] - x[0, -1]).abs()[:, inside].min() > 0.05  # without flow it stays at frame 0



def test_apply_filter_modes():
    g = torch.Generator().manual_seed(4)
    log_d, residual = torch.randn(2, 6, 1, 3, 4, generator=g), 0.1 * torch.randn(2, 6, 1, 3, 4, generator=g)
    keep, detail = torch.rand(2, 6, 1, 3, 4, generator=g), 0.01 * torch.randn(2, 6, 1, 3, 4, generator=g)
    prev = torch.randn(2, 3, 4, generator=g)
    assert apply_filter("off", log_d, residual, keep, prev) == (residual, prev)  # passed through, memory kept
    # full: the corrected log-depth is filtered, and the correction is its change from log_d
    out, last = apply_filter("full", log_d, residual, keep, prev, reset=0.5)
    filtered, want_last = gated_recursion((log_d + residual)[:, :, 0], keep[:, :, 0], prev, 0.5)
    torch.testing.assert_close(out, filtered[:, :, None] - log_d)
    assert torch.equal(last, want_last) and out.shape == residual.shape
    # detail: only the band is filtered; its change joins the residual
    out, _ = apply_filter("detail", log_d, residual, keep, None, detail=detail)
    filtered, _ = gated_recursion(detail[:, :, 0], keep[:, :, 0])
    torch.testing.assert_close(out, residual + filtered[:, :, None] - detail)
    out, _ = apply_filter("full", log_d, residual, torch.zeros_like(keep))
    torch.testing.assert_close(out, residual)  # k = 0: the model's correction unchanged
    # the reset in units of the teacher's noise (smoother/noise.py) reaches the recursion
    scale = 1 + 3 * torch.rand(2, 6, generator=g)
    out, _ = apply_filter("full", log_d, residual, keep, prev, reset=0.5, reset_scale=scale)
    filtered, _ = gated_recursion((log_d + residual)[:, :, 0], keep[:, :, 0], prev, 0.5, reset_scale=scale)
    torch.testing.assert_close(out, filtered[:, :, None] - log_d)
