"""Each loss term on hand-made cases: zero where it must be, positive where it must bite."""

from __future__ import annotations

import pytest
import torch

from smoother.config import LossConfig, SmootherConfig
from smoother.losses import TERMS, charbonnier, motion_weights, previous_frames, running_median, smoother_losses
from smoother.model import ResidualSmoother

CFG = LossConfig(anchor_mean=False)  # the per-frame anchor; the mean anchor has its own tests below
# Tests of the depth half of the motion cue set its taus tight and read the raw teacher (no running median): the
# defaults leave motion mostly to the RGB cue and count only depth changes that outlast the teacher's flicker.
DEPTH_CUE = CFG.model_copy(update={"motion_depth_tau": 0.05, "still_depth_tau": 0.15, "motion_median": 1})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scene(b=1, n=6, h=8, w=10) -> torch.Tensor:
    """A static slanted wall with a near box: (B, N, 1, H, W) metres."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    d = 3.0 + 0.05 * xx + 0.02 * yy
    d = torch.where((xx > 3) & (xx < 7) & (yy > 2) & (yy < 6), torch.tensor(1.0), d)
    return d.expand(b, n, 1, h, w).clone()


def _jitter(depth: torch.Tensor, std: float = 0.05, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return depth * torch.exp(std * torch.randn(*depth.shape[:2], 1, 1, 1, generator=g))


def test_identity_has_zero_anchor_and_returns_all_terms():
    depth = _jitter(_scene())
    losses = smoother_losses(torch.zeros_like(depth), depth, CFG)
    assert set(losses) == {*TERMS, "total"}
    for name in ("anchor", "magnitude", "smoothness", "temporal_motion"):
        assert losses[name].item() == 0.0, name
    assert losses["temporal_static"] > 0 and losses["temporal_accel"] > 0  # the teacher flickers


def test_anchor_is_confidence_weighted_l1():
    depth = _scene()
    residual = torch.full_like(depth, 0.1)
    full = smoother_losses(residual, depth, CFG)["anchor"]
    assert full.item() == pytest.approx(charbonnier(torch.tensor(0.1), CFG.eps).item(), rel=1e-6)
    half = smoother_losses(residual, depth, CFG, confidence=torch.full_like(depth, 0.5))["anchor"]
    assert half.item() == pytest.approx(full.item() / 2, rel=1e-6)
    assert smoother_losses(-residual, depth, CFG)["anchor"].item() == pytest.approx(full.item(), rel=1e-6)


def test_anchor_scale_refuses_a_slide_from_the_teacher_not_the_flicker_removed():
    depth = _jitter(_scene(n=8))
    n = depth.shape[1]
    flicker_removed = 0.04 * (-1.0) ** torch.arange(n, dtype=depth.dtype)  # ± per frame: the window mean is 0
    deflickered = flicker_removed[None, :, None, None, None].expand_as(depth)
    slide = torch.linspace(0.0, 0.14, n)[None, :, None, None, None].expand_as(depth)  # window mean 0.07
    exact = CFG.model_copy(update={"anchor_scale_band": 0.0})  # no tolerance
    terms = {name: smoother_losses(r, depth, exact)["anchor_scale"].item() for name, r in
             (("teacher", torch.zeros_like(depth)), ("deflickered", deflickered), ("slide", slide))}  # fmt: skip
    assert terms["teacher"] == 0.0 and terms["deflickered"] < 1e-6
    assert terms["slide"] == pytest.approx(charbonnier(torch.tensor(0.07), CFG.eps).item(), rel=1e-4)
    first = smoother_losses(slide, depth, exact, first=4)["anchor_scale"].item()  # only frames 4..7 count
    assert first == pytest.approx(charbonnier(torch.tensor(0.11), CFG.eps).item(), rel=1e-4)


def test_anchor_scale_tolerates_a_slide_within_the_teachers_own_band():
    """The teacher's frame-median log-depth moves by 0.05 a frame (its band): a window 0.07 off is 1.4 bands off."""
    n = 8
    steps = 0.05 * (-1.0) ** torch.arange(n)  # ± 0.05 each frame: band = 0.05
    depth = _scene(n=n) * torch.exp(torch.cumsum(steps, 0))[None, :, None, None, None]
    slide = torch.full_like(depth, 0.07)
    cost = {band: smoother_losses(slide, depth, CFG.model_copy(update={"anchor_scale_band": band}))["anchor_scale"]
            for band in (1.0, 2.0)}  # fmt: skip
    assert cost[1.0].item() == pytest.approx(charbonnier(torch.tensor(0.02), CFG.eps).item(), rel=1e-3)
    assert cost[2.0].item() == 0.0


def test_temporal_static_zero_for_constant_positive_for_jitter():
    const = _scene()
    assert smoother_losses(torch.zeros_like(const), const, CFG)["temporal_static"].item() == 0.0
    jit = _jitter(const)
    loss = smoother_losses(torch.zeros_like(jit), jit, CFG)["temporal_static"]
    assert loss.item() > 0.02  # ≈ mean |Δ scale| of a 5 % jitter
    # removing the jitter with the residual (what the smoother should learn) brings it back to 0
    fixed = smoother_losses((const / jit).log(), jit, CFG)["temporal_static"]
    assert fixed.item() == pytest.approx(0.0, abs=1e-6)


def test_accel_ignores_constant_velocity_but_not_jitter():
    depth = _scene(n=8)
    ramp = depth * torch.exp(0.02 * torch.arange(8.0))[None, :, None, None, None]  # smooth dolly: log-linear
    assert smoother_losses(torch.zeros_like(ramp), ramp, CFG)["temporal_accel"].item() == pytest.approx(0, abs=1e-6)
    assert smoother_losses(torch.zeros_like(ramp), _jitter(ramp), CFG)["temporal_accel"] > 0.02


def test_motion_cue_marks_moving_pixels_not_global_jumps():
    depth = _jitter(_scene(n=4), std=0.1)
    # colours in [0, 0.4] so that `1 - rgb` below is a large change at every pixel (seeded: no flakiness)
    rgb = 0.4 * torch.rand(1, 1, 3, 8, 10, generator=torch.Generator().manual_seed(0))
    rgb = rgb.expand(1, 4, 3, 8, 10).clone()
    depth[:, 2:, :, 0:3, 0:3] *= 2.0  # an object appears in the corner at frame 2
    rgb[:, 3:, :, 6:, 6:] += 0.05  # slow colour change (slow camera motion) in another corner at frame 3
    rgb[:, 3:, :, :2, 6:] = 1 - rgb[:, 3:, :, :2, 6:]  # fast colour change (large flow) in a third corner
    static, surface, accel = motion_weights(depth.log(), rgb, CFG)
    assert static.shape == surface.shape == (1, 3, 1, 8, 10) and accel.shape == (1, 2, 1, 8, 10)
    assert static[0, 0].min() > 0.99 and surface.min() < 0.01  # a global 10 % jump is flicker, not motion
    assert static[0, 1, 0, :3, :3].max() < 0.01 and static[0, 1, 0, 4:, :6].min() > 0.99
    assert static[0, 2, 0, 6:, 6:].max() < 0.1 and static[0, 2, 0, :2, 6:].max() < 0.01
    assert accel[0, :, 0, :3, :3].max() < 0.01  # depth edge crossing: no accel penalty
    assert accel[0, 1, 0, 6:, 6:].min() > 0.7  # slow motion: per-pixel de-jitter stays on
    assert accel[0, 1, 0, :2, 6:].max() < 0.01  # fast motion: left to the global term


def test_running_median_keeps_steps_and_ramps_and_drops_flicker():
    t = torch.arange(9.0)
    step = (t >= 4).float()  # an edge passes at frame 4 and stays
    ramp = 0.1 * t  # a surface approached at a steady speed
    spikes = torch.zeros(9).index_fill(0, torch.tensor([2, 6, 7]), 0.5)  # flicker: a single and a double outlier
    x = torch.stack([step, ramp, spikes]).T.reshape(1, 9, 3, 1, 1)
    out = running_median(x, 5)[0, :, :, 0, 0]
    assert out.shape == (9, 3) and torch.equal(running_median(x, 1), x)
    assert torch.equal(out[:, 0], step) and torch.allclose(out[2:-2, 1], ramp[2:-2])
    assert out[:, 2].abs().max() == 0


def test_motion_cue_tells_a_network_s_flicker_from_motion_by_what_lasts():
    """A real network's flicker is as large as a simulated object's motion, but it reverts within frames: through the
    running median a flickering wall stays static while an object that appears and stays is motion; on the raw
    teacher (motion_median 1) the same τ_d calls both motion."""
    n = 10
    depth = _scene(n=n)
    flicker = torch.zeros(1, n, 1, 8, 10)
    flicker[:, 3, :, :, 5:] = 0.3  # large local flicker on the right half: one frame up,
    flicker[:, 6:8, :, :, 5:] = -0.3  # two frames down
    depth = depth * flicker.exp()
    depth[:, 5:, :, :3, :3] *= 1.5  # an object appears in the corner at frame 5 and stays
    cfg = CFG.model_copy(update={"motion_depth_tau": 0.1})
    static, _, _ = motion_weights(depth.log(), None, cfg)
    raw, _, _ = motion_weights(depth.log(), None, cfg.model_copy(update={"motion_median": 1}))
    flickering = (slice(None), slice(None), slice(None), slice(3, None), slice(5, None))  # pairs × rows × cols
    assert static[flickering].min() > 0.9 and raw[flickering].min() < 0.01
    assert static[0, :, 0, :3, :3].min() < 0.01 and raw[0, 4, 0, :3, :3].max() < 0.01  # the object: motion in both


def test_temporal_global_penalises_frame_wide_jitter_only():
    depth = _scene(n=8)
    ramp = depth * torch.exp(0.03 * torch.arange(8.0))[None, :, None, None, None]  # smooth dolly
    ramp[:, 4:, :, :3, :3] *= 3.0  # an object appears (a depth jump far above motion_depth_tau): local, not frame-wide
    assert smoother_losses(torch.zeros_like(ramp), ramp, CFG)["temporal_global"].item() == pytest.approx(0, abs=1e-5)
    jit = _jitter(ramp)
    assert smoother_losses(torch.zeros_like(jit), jit, CFG)["temporal_global"] > 0.02
    fixed = smoother_losses((ramp / jit).log(), jit, CFG)["temporal_global"]  # the ideal de-jitter
    assert fixed.item() == pytest.approx(0, abs=1e-5)


def test_smoothness_zero_for_constant_residual_and_edge_aware():
    depth = _scene()
    assert smoother_losses(torch.full_like(depth, 0.3), depth, CFG)["smoothness"].item() == 0.0
    # a residual step exactly along the box edge costs less than the same step inside the wall
    yy, xx = torch.meshgrid(torch.arange(8), torch.arange(10), indexing="ij")
    on_edge = ((xx > 3) & (xx < 7) & (yy > 2) & (yy < 6)).float().expand_as(depth) * 0.1
    off_edge = (xx > 7).float().expand_as(depth) * 0.1
    edge = smoother_losses(on_edge, depth, CFG)["smoothness"]
    flat = smoother_losses(off_edge, depth, CFG)["smoothness"]
    assert 0 < edge < 0.2 * flat


def test_temporal_motion_only_penalises_local_residual_changes():
    depth = _scene(n=4)
    depth[:, 2:, :, :3, :3] *= 2.0  # motion in one corner
    g = torch.Generator().manual_seed(0)
    global_fix = 0.05 * torch.randn(1, 4, 1, 1, 1, generator=g).expand_as(depth).clone()
    assert smoother_losses(global_fix, depth, CFG)["temporal_motion"].item() == pytest.approx(0, abs=1e-6)
    local = global_fix.clone()
    local[:, 2, :, :3, :3] += 0.2  # smears the moving object
    assert smoother_losses(local, depth, CFG)["temporal_motion"] > 1e-3


def test_frame_mask_drops_padding_and_total_is_weighted_sum():
    depth = _jitter(_scene(n=6))
    padded = torch.cat([depth[:, :4], depth[:, 3:4].expand(1, 2, 1, 8, 10) * 3.0], dim=1)  # junk padding
    mask = torch.tensor([[True] * 4 + [False] * 2])
    res = 0.01 * torch.ones_like(padded)
    a = smoother_losses(res, padded, CFG, frame_mask=mask)
    b = smoother_losses(res[:, :4], depth[:, :4], CFG)
    for name in TERMS:
        assert a[name].item() == pytest.approx(b[name].item(), rel=1e-5, abs=1e-7), name
    total = sum(getattr(CFG, name) * a[name] for name in TERMS)
    assert a["total"].item() == pytest.approx(total.item(), rel=1e-6)
    assert smoother_losses(res[:, :1], depth[:, :1], CFG)["temporal_accel"].item() == 0.0  # too few frames


def test_zero_init_model_gives_zero_anchor_and_gradients_flow():
    torch.manual_seed(0)
    model = ResidualSmoother(SmootherConfig(d_model=16, headdim=8, chunk_size=4))
    depth = _jitter(_scene(b=2, n=6))
    out = model(depth)
    losses = smoother_losses(out.residual, depth, CFG)
    assert losses["anchor"].item() == 0.0
    losses["total"].backward()
    assert model.head.weight.grad.abs().sum() > 0  # the temporal terms pull the head off zero


def test_temporal_long_penalises_slow_drift_that_frame_to_frame_terms_barely_see():
    cfg = LossConfig(long_span=8)
    depth = _scene(n=12)
    drift = depth * torch.exp(0.002 * torch.arange(12.0))[None, :, None, None, None]  # 0.2 %/frame, like ε
    zero = torch.zeros_like(drift)
    assert smoother_losses(zero, depth, cfg)["temporal_long"].item() == 0.0
    losses = smoother_losses(zero, drift, cfg)
    # over 8 frames the drift is 0.016 log-units on every (static) pixel: ρ(0.016) ≈ 0.015
    expected = charbonnier(torch.tensor(8 * 0.002), cfg.eps).item()
    assert losses["temporal_long"].item() == pytest.approx(expected, rel=1e-3)
    assert losses["temporal_long"] > 10 * losses["temporal_static"]  # per pair the drift is ~ε: nearly free
    assert smoother_losses(zero[:, :8], drift[:, :8], cfg)["temporal_long"].item() == 0.0  # too few frames
    # teacher noise keeps every pair's static weight a little below 1; static pixels must still count
    g = torch.Generator().manual_seed(0)
    noisy = drift * torch.exp(0.01 * torch.randn(drift.shape, generator=g))
    assert smoother_losses(zero, noisy, cfg)["temporal_long"] > 0.75 * losses["temporal_long"]  # a product: ~0.6
    # a pixel that moves during the span does not count: its span-static weight is ~0
    moved = drift.clone()
    moved[:, 6:, :, :, :3] *= 2.0
    per_pixel = smoother_losses(zero, moved, cfg)["temporal_long"]
    assert per_pixel < losses["temporal_long"] * 0.8


def test_context_frames_get_no_loss_of_their_own_but_anchor_the_window():
    depth = _jitter(_scene(n=8))
    residual = torch.zeros_like(depth)
    residual[:, :4] = 0.3  # junk in the context (burn-in) frames
    with_ctx = smoother_losses(residual, depth, CFG, first=4)
    alone = smoother_losses(residual[:, 4:], depth[:, 4:], CFG)
    for name in ("anchor", "magnitude", "smoothness"):  # per-frame terms: the window only
        assert with_ctx[name].item() == pytest.approx(alone[name].item(), abs=1e-7), name
    # the pair (3, 4) joins context and window: a jump there is counted
    assert with_ctx["temporal_static"] > alone["temporal_static"]
    full = smoother_losses(residual, depth, CFG)
    assert full["anchor"] > with_ctx["anchor"]  # without `first` the context's residual would count


def test_still_weight_is_one_on_a_still_scene_and_zero_where_something_arrives():
    from smoother.losses import still_weight

    depth = _jitter(_scene(n=8), std=0.05)  # frame-wide jitter only: the same surfaces throughout
    valid = torch.ones(1, 8, dtype=torch.bool)
    w = still_weight(depth.log(), None, valid, DEPTH_CUE)
    assert w.shape == (1, 1, 1, 8, 10) and bool((w > 0.999).all())
    moved = depth.clone()
    moved[:, 5:, :, :2, :2] *= 0.5  # an object enters the top-left corner at frame 5
    w = still_weight(moved.log(), None, valid, DEPTH_CUE)
    assert w[..., :2, :2].max() < 1e-3 and w[..., 4:, 4:].min() > 0.999
    valid[:, 5:] = False  # ...in frames that are padding: ignored
    assert still_weight(moved.log(), None, valid, DEPTH_CUE).min() > 0.999
    rgb = torch.zeros(1, 8, 3, 8, 10)
    rgb[:, 7:, :, -1, -1] = 0.3  # the last frame changes colour at one pixel
    w = still_weight(depth.log(), rgb, torch.ones(1, 8, dtype=torch.bool), DEPTH_CUE)
    assert w[..., -1, -1].item() < 1e-3 and w[..., 0, 0].item() > 0.999
    pan = torch.linspace(0, 0.03, 8)[None, :, None, None, None].expand(1, 8, 3, 8, 10)  # the whole frame drifts
    w = still_weight(depth.log(), pan, torch.ones(1, 8, dtype=torch.bool), DEPTH_CUE)
    assert w.max() < 1e-3  # a slowly moving camera: nothing is still, though each pixel changes by only 0.03


def test_anchor_mean_anchors_still_pixels_to_the_teacher_mean():
    cfg = DEPTH_CUE.model_copy(update={"anchor_mean": True})
    const = _scene(n=8)
    jit = _jitter(const, std=0.05, seed=3)
    log_mean = jit.log().mean(dim=1, keepdim=True)
    to_mean = log_mean - jit.log()  # the residual that outputs the teacher's temporal mean
    assert smoother_losses(to_mean, jit, cfg)["anchor"].item() == pytest.approx(0.0, abs=1e-6)
    assert smoother_losses(to_mean, jit, DEPTH_CUE)["anchor"].item() > 0.02  # the frame anchor charges for it
    # identity costs the teacher's spread around its mean under the mean anchor
    assert smoother_losses(torch.zeros_like(jit), jit, cfg)["anchor"].item() > 0.02
    # where something moves, the mean anchor is the frame anchor
    moved = jit.clone()
    moved[:, 5:] *= torch.where(torch.arange(10) < 3, 0.5, 1.0)  # the left 3 columns change depth at frame 5
    a = smoother_losses(torch.zeros_like(moved), moved, cfg)["anchor"]
    b = smoother_losses(torch.zeros_like(moved), moved, DEPTH_CUE)["anchor"]
    still_only = smoother_losses(torch.zeros_like(jit), jit, cfg)["anchor"].item()
    assert b.item() == 0.0 and a.item() == pytest.approx(0.7 * still_only, rel=1e-3)  # 7 of 10 columns still


def _pan(
    n: int = 8, h: int = 8, w: int = 16, jitter: float = 0.05, local: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A textured wall panning one pixel left per frame, its teacher depth with per-frame scale flicker (std
    `jitter`) and, with `local`, a fresh left-right tilt each frame (flicker that is not frame-wide), its RGB and the
    flows (frame t → t−1: +1 px in x). Returns depth (1, n, 1, h, w), rgb (1, n, 3, h, w), flows (1, n, h, w, 2)."""
    g = torch.Generator().manual_seed(3)
    wall = 2.0 + torch.rand(h, w + n, generator=g)
    depth = torch.stack([wall[:, t : t + w] for t in range(n)])[None, :, None]
    rgb = (depth / wall.amax()).expand(1, n, 3, h, w).contiguous()
    flows = torch.zeros(1, n, h, w, 2)
    flows[:, 1:, ..., 0] = 1.0
    tilt = local * torch.randn(1, n, 1, 1, 1, generator=g) * torch.linspace(-1, 1, w)
    return _jitter(depth, jitter, seed=4) * torch.exp(tilt), rgb, flows


def test_previous_frames_move_each_frame_into_the_next_along_the_flow():
    depth, _, flows = _pan(jitter=0.0)
    before = previous_frames(depth, flows)  # (1, n−1, 1, h, w)
    torch.testing.assert_close(before[..., :-1], depth[:, 1:, ..., :-1])  # the wall stayed where the flow says
    assert torch.equal(previous_frames(depth, None), depth[:, :-1])  # without flow: the same pixel


def test_flow_terms_see_flicker_under_a_pan_but_not_a_steady_approach():
    """Under a pan every pixel changes colour, so pixel by pixel nothing is static and the flicker goes unpunished;
    along the flow the wall is still: the second difference sees the frame-wide flicker, temporal_flow the local
    one. A wall the camera approaches at a steady speed (depth shrinking 2 % a frame) costs neither."""
    depth, rgb, flows = _pan(local=0.05)
    log_flicker = depth.log() - _pan(jitter=0.0)[0].log()  # (1, n, 1, h, w)
    keep = torch.zeros_like(depth)  # the teacher as is: it flickers
    steady = -log_flicker  # the correction that removes the flicker exactly
    warped = [smoother_losses(r, depth, DEPTH_CUE, rgb=rgb, flows=flows) for r in (keep, steady)]
    plain = [smoother_losses(r, depth, DEPTH_CUE, rgb=rgb) for r in (keep, steady)]
    for name in ("temporal_flow", "temporal_accel"):
        assert warped[0][name] > 0.01 and warped[1][name] < 0.05 * warped[0][name], name
        assert plain[0][name] < 0.2 * warped[0][name], name  # pixel by pixel the pan hides the flicker
    assert plain[0]["temporal_flow"] == 0  # no flow, no term
    for name in ("temporal_static", "temporal_motion", "temporal_long", "anchor"):  # these stay pixel by pixel
        assert warped[0][name] == plain[0][name], name
    # frame-wide flicker alone: temporal_flow leaves it to the second difference
    scale_only, _, _ = _pan(local=0.0)
    scale_flow = smoother_losses(keep, scale_only, DEPTH_CUE, rgb=rgb, flows=flows)["temporal_flow"]
    assert scale_flow < 0.1 * warped[0]["temporal_flow"]
    approach = _pan(jitter=0.0)[0] * torch.exp(-0.02 * torch.arange(8.0)).reshape(1, 8, 1, 1, 1)
    moving = smoother_losses(torch.zeros_like(approach), approach, DEPTH_CUE, rgb=rgb, flows=flows)
    for name in ("temporal_flow", "temporal_accel"):  # (what is left: the edge column)
        assert moving[name] < 0.05 * warped[0][name], name
    # flow_compensated off: the flows are ignored
    off = DEPTH_CUE.model_copy(update={"flow_compensated": False})
    ignored = smoother_losses(keep, depth, off, rgb=rgb, flows=flows)
    assert ignored["temporal_accel"] == plain[0]["temporal_accel"] and ignored["temporal_flow"] == 0
