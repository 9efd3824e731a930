"""The residual smoother: identity at init, streaming == window, causality, shapes."""

from __future__ import annotations

import math

import pytest
import torch

from smoother.config import SmootherConfig
from smoother.model import ResidualSmoother


def _inputs(b=2, n=9, h=6, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    depth = 1.0 + 4.0 * torch.rand(b, n, 1, h, w, generator=g)
    conf = torch.rand(b, n, 1, h, w, generator=g)
    rgb = torch.rand(b, n, 3, h, w, generator=g)
    return depth, conf, rgb


def _randomise_head(model: ResidualSmoother) -> None:
    # A trained model has a non-zero head; use one so the tests below can fail.
    torch.manual_seed(1)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    torch.nn.init.normal_(model.head.bias, std=0.1)


@pytest.mark.parametrize("use_features", [True, False])
def test_untrained_model_returns_the_teacher_exactly(use_features):
    model = ResidualSmoother(SmootherConfig(use_features=use_features)).eval()
    depth, conf, rgb = _inputs()
    out = model(depth, conf, rgb)
    assert torch.equal(out.residual, torch.zeros_like(depth))
    torch.testing.assert_close(out.depth, depth, rtol=1e-6, atol=0)


@pytest.mark.parametrize("use_rgb", [True, False])
def test_streaming_frame_by_frame_equals_one_window(use_rgb):
    torch.manual_seed(0)
    model = ResidualSmoother(SmootherConfig(d_model=16, n_layers=2, headdim=8, chunk_size=4)).double().eval()
    _randomise_head(model)
    model.double()
    depth, conf, rgb = (t.double() for t in _inputs())
    rgb = rgb if use_rgb else None
    with torch.no_grad():
        whole = model(depth, conf, rgb)
        state, pieces = None, []
        for start, stop in [(0, 1), (1, 4), (4, 5), (5, 9)]:
            out = model(depth[:, start:stop], conf[:, start:stop], None if rgb is None else rgb[:, start:stop], state)
            pieces.append(out.depth)
            state = out.state
    assert whole.residual.abs().max() > 1e-3  # the check below compares something non-trivial
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole.depth, rtol=1e-9, atol=1e-9)


def test_causal_future_frames_do_not_change_the_past():
    model = ResidualSmoother(SmootherConfig(d_model=16, headdim=8)).eval()
    _randomise_head(model)
    depth, conf, rgb = _inputs(n=8)
    changed = depth.clone()
    changed[:, 5:] *= 2.0
    with torch.no_grad():
        a, b = model(depth, conf, rgb), model(changed, conf, rgb)
    torch.testing.assert_close(a.depth[:, :5], b.depth[:, :5])
    assert not torch.allclose(a.depth[:, 5:], b.depth[:, 5:])


def test_output_is_positive_and_gradients_reach_every_parameter():
    model = ResidualSmoother(SmootherConfig(d_model=16, headdim=8))
    _randomise_head(model)
    depth, conf, rgb = _inputs()
    out = model(depth, conf, rgb)
    assert out.depth.shape == depth.shape and bool((out.depth > 0).all())
    out.residual.square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_frame_wide_cue_sees_scale_jumps_but_not_a_near_object_moving():
    """The "did the whole frame jump" input is a median: a close object entering a third of the frame is
    local motion, not a scale jump (a frame mean would report it as a jump of ~0.3 · log 4)."""
    model = ResidualSmoother(SmootherConfig(noise_ref=0))  # cues in log units (no teacher-noise scaling)
    depth = torch.full((1, 3, 1, 6, 9), 4.0)
    depth[:, 1] *= 1.1  # frame 1: the whole frame jumps by 10 %
    depth[:, 2] = depth[:, 1]
    depth[:, 2, :, :, :3] = 1.0  # frame 2: a near object covers the left third
    pixel, *_ = model._pixel_inputs(depth.log(), torch.ones_like(depth), None, None)
    dlog_global, local_motion = pixel[0, :, 1, 0, 0], pixel[0, :, 2, 0, 0]  # per frame
    torch.testing.assert_close(dlog_global, torch.tensor([0.0, torch.log(torch.tensor(1.1)).item(), 0.0]))
    torch.testing.assert_close(local_motion, torch.zeros(3))  # most pixels did not move
    # A pan across a slanted wall: every pixel's depth changes by a different amount; that is motion.
    ramp = 2.0 + 0.5 * torch.arange(12.0)
    depth[0, 1, 0] = ramp[None, 2:11]
    depth[0, 2, 0] = ramp[None, :9]
    pixel, *_ = model._pixel_inputs(depth.log(), torch.ones_like(depth), None, None)
    assert pixel[0, 2, 2, 0, 0] > 0.05


def test_flow_cues_see_the_teacher_flicker_under_a_pan_and_stream_with_the_flows():
    """With flows the temporal cues compare each frame with the one before moved along the flow: a pan across a
    textured wall is no change at all, so what is left is the frame-wide jump (the flicker) alone; pixel by pixel
    the pan is motion everywhere. Streaming with the flows split likewise equals one call."""
    n, h, w = 5, 6, 12
    wall = 2.0 + torch.rand(h, w + n, generator=torch.Generator().manual_seed(0))
    jump = torch.tensor([1.0, 1.0, 1.1, 1.1, 1.1])  # the teacher's scale jumps by 10 % at frame 2
    # content moves one pixel left per frame: frame t at column c shows wall column c + t
    depth = torch.stack([wall[:, t : t + w] * jump[t] for t in range(n)])[None, :, None]  # (1, n, 1, h, w)
    flows = torch.zeros(1, n, h, w, 2)
    flows[:, 1:, ..., 0] = 1.0  # frame t samples frame t−1 one pixel to the right; frame 0 has no frame before
    colour = torch.stack([wall[:, t : t + w] for t in range(n)]) / wall.amax()  # the scene's colour does not flicker
    rgb = colour[None, :, None].expand(1, n, 3, h, w).contiguous()
    cfg = SmootherConfig(d_model=16, headdim=8, chunk_size=2, noise_ref=0)
    model = ResidualSmoother(cfg)
    pixel, cnn, *_ = model._pixel_inputs(depth.log(), torch.ones_like(depth), rgb, None, flows)
    dlog = pixel[0, :, 0, :, : w - 1]  # (n, h, w − 1): the last column's content left the view
    expected = torch.zeros(n, h, w - 1)
    expected[2] = math.log(1.1)
    torch.testing.assert_close(dlog, expected, atol=1e-5, rtol=0)  # the flicker and nothing else
    torch.testing.assert_close(pixel[0, :, 1, 0, 0], expected[:, 0, 0], atol=1e-5, rtol=0)  # frame-wide jump
    assert pixel[0, 1:, 2].amax() < 1e-5  # local motion: none once the pan is followed
    assert cnn[0, 1:, 6, :, : w - 1].amax() < 1e-5  # nor any colour change
    speed = torch.ones(n, h, w)
    speed[0] = 0.0  # no frame before the first
    torch.testing.assert_close(pixel[0, :, 6], speed)  # how far each pixel moved (px per frame)
    torch.testing.assert_close(pixel[0, :, 7], speed)  # and the camera (frame median)
    plain, *_ = model._pixel_inputs(depth.log(), torch.ones_like(depth), rgb, None)
    assert plain[0, 1, 2, 0, 0] > 0.05  # pixel by pixel the pan is local motion
    # streaming: two calls with the flows split as the frames are equal one call
    _randomise_head(model)
    with torch.no_grad():
        whole = model(depth, None, rgb, flows=flows)
        a = model(depth[:, :2], None, rgb[:, :2], flows=flows[:, :2])
        b = model(depth[:, 2:], None, rgb[:, 2:], a.state, flows=flows[:, 2:])
        off = ResidualSmoother(cfg.model_copy(update={"flow_cues": False}))
        _randomise_head(off)
        ignored, without = off(depth, None, rgb, flows=flows), off(depth, None, rgb)
    torch.testing.assert_close(torch.cat([a.residual, b.residual], dim=1), whole.residual, atol=1e-5, rtol=1e-4)
    assert torch.equal(ignored.residual, without.residual)  # flow_cues off: the flows are not used
    assert off.inp.in_features == model.inp.in_features - 2  # nor the two flow cues
