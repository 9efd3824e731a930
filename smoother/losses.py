"""Self-supervised losses of the residual smoother: stay on the teacher, stop flickering.

Everything is in log-depth. With ℓ = log D_teacher, r = ΔD the predicted residual and ℓ̂ = ℓ + r the refined
log-depth, all (B, N, 1, H, W), and ρ(x) = sqrt(x² + ε²) − ε (Charbonnier: ≈ |x| above ε, smooth at 0):

    anchor          = mean_{t,p} c · ρ(ℓ̂ − ℓ*),  ℓ* = ℓ + w (ℓ̄ − ℓ)               stay on the metric teacher
    anchor_scale    = mean_b ρ(max(0, |mean_t median_p (ℓ̂_t − ℓ_t)| − β·band))  and on its scale, window by window
    temporal_static = mean_{t,p} s_t · ρ(ℓ̂_t − ℓ̂_{t−1})                       static pixels do not change
    temporal_flow   = mean_{t,p} s^f_t · ρ(D_t − median_p D_t),  D_t = ℓ̂_t − W_t ℓ̂_{t−1}   nor surfaces followed
                                                                             along the flow (the local part)
    temporal_accel  = mean_{t,p} a_t · ρ(ℓ̂_t − 2 ℓ̂_{t−1} + ℓ̂_{t−2})           no jitter, smooth motion is free
    temporal_global = mean_t ρ(G_t − G_{t−1}),  G_t = Σ_p u_t Δℓ̂_t / Σ_p u_t      no frame-wide jitter (one number
                                                                             per frame; off by default, below)
    temporal_motion = mean_{t,p} (1 − s_t) · ρ(Δr_t − Σ_p s_t Δr_t / Σ_p s_t)   moving pixels get the same
                                                                             frame-wide correction as static ones
    temporal_long   = mean_{t,p} S_t · ρ(ℓ̂_t − ℓ̂_{t−k}),  S_t = min_{j=t−k+1..t} s_j   no slow drift on pixels
                                                                             static over k = long_span frames
    smoothness      = mean_p e^{−k|∂x ℓ|} ρ(∂x r) + mean_p e^{−k|∂y ℓ|} ρ(∂y r)  residual smooth inside surfaces
    magnitude       = mean_{t,p} r²
    total           = Σ_i w_i · term_i                                       (weights from LossConfig)

c is the teacher confidence (1 without one). The anchor's target ℓ* is the teacher ℓ, except with `anchor_mean`
on pixels still over the whole sequence (context + window): there it is the teacher's temporal mean ℓ̄, weighted
by w = `still_weight` (every frame against the first, m and g as below but cumulative, plus the frame median of
g, so that a slowly moving camera never counts as still). The truth of a still pixel does not change, so the mean
is as much "the teacher" as any one frame, and it lets the model average the teacher's flicker and slow drift
instead of paying anchor for it.

The motion cue decides what is static between frames t−1, t:

    m_t = Δℓ̃_t − median_p Δℓ̃_t        local depth change, the frame-wide (scale) jump removed: that jump is
                                      exactly the teacher flicker we want to remove, so it must not count as motion
    ℓ̃_t = median_{j=t−k..t+k} ℓ°_j     the teacher at each pixel through a centred running median of
                                      `motion_median` = 2k + 1 frames, each frame's scale out first
                                      (ℓ° = ℓ − median_p ℓ, as the frame-wide jump is removed anyway): flicker
                                      reverts within a few frames and is gone from it, while motion (a step when an
                                      edge passes, a ramp as a surface approaches: the median of a monotone run is
                                      its middle frame) stays
    g_t = mean_rgb |RGB_t − RGB_{t−1}|  (0 without RGB)
    s_t = exp(−(m_t/τ_d)² − (g_t/τ_rgb)²)   static weight in [0, 1]
    u_t = exp(−(m_t/τ_d)²)                 surface weight: no local depth change (depth edges, objects out)
    a_t = u_t · u_{t−1} · exp(−(g_t/τ_a)² − (g_{t−1}/τ_a)²)   accel weight: the RGB cue with a looser τ_a, so a
                                             slowly moving camera is still de-jittered per pixel, while fast
                                             motion (large flow: per-pixel filtering would lag and smear) is
                                             left to temporal_motion and the anchor

Defaults (LossConfig, tuned on the synthetic benchmark, held-out videos): anchor 1, temporal_static 2,
temporal_flow 2, temporal_accel 1, temporal_motion 1, temporal_long 1 (span 16), smoothness 0.1, magnitude 0.01,
temporal_global 0.
(anchor 0.5 lowered TAE a little but cost AbsRel on moving objects, 0.062 → 0.108.) The teacher's flicker
is zero-mean, so smoothing that does not lag also lowers AbsRel; anchor 2 gave less of both. temporal_global
is off because under fast camera motion the frame-wide change is not smooth and the term made the model lag
(fast-motion video: AbsRel 0.062 → 0.086; with the real-teacher parts, the simulated hand-held 7-Scenes clip 0.060 →
0.066, above the teacher's, along the flow or not); temporal_motion 1 (vs 0.1) keeps moving content from smearing.

anchor_scale is the gate's teacher-agreement check (evaluation/agreement.py) as a loss: the refined depth's
frame-median log-ratio to the teacher, averaged over the window (16 frames after the burn-in), must stay within β =
`anchor_scale_band` teacher bands (band = median_t |median_p ℓ_t − median_p ℓ_{t−1}| over the sequence, the gate's
definition; the gate allows 3). Per frame the ratio may move (that is the flicker removed); over a window only as
far as the teacher's own scale is uncertain, so the filter cannot buy steadiness by holding a scale the teacher has
left, and still may average a wandering teacher scale within its band. The per-pixel anchor alone cannot ensure
it on a noisy teacher: it is divided by the teacher's noise scale, and every temporal term prefers a slide to
following the teacher.

temporal_long exists because frame-to-frame terms barely see slow drift (≈ 0.002 log-units per frame is about
ε): over k frames it adds up to a change the penalty counts. It needs long sequences, which burn-in gives.

Flow compensation (`flow_compensated`, with flows given): W_t x_{t−1}(p) = x_{t−1}(p + f_t(p)) is frame t−1 moved
into frame t along the optical flow (`previous_frames`). Pixel by pixel a pan or a dolly changes every pixel's
colour, so s ≈ a ≈ 0 and the teacher's flicker goes unpunished wherever the camera moves; along the flow the
surfaces are still again. temporal_flow is temporal_static along the flow (s^f: m and g of W_t-moved frames) on
the local part of the change, and temporal_accel becomes the second difference along it, D_t − W_t D_{t−1} (a_t
likewise). The first difference along the flow also holds the real change of depth of a surface the camera moves
towards (the 2-D flow does not move depth), which taught the filter to lag behind a slow dolly (7-Scenes AbsRel
0.0627 over three seeds, one seed above the teacher's). That change is mostly frame-wide, so temporal_flow leaves
the frame median out (local flicker: spatial jitter, noise, local drift), and the frame-wide flicker under motion
is left to temporal_accel, whose second difference of a steady change is 0. temporal_static and temporal_long stay
pixel by pixel. Without flows (or RGB) temporal_flow is 0.

Why the running median (`motion_median`): on the raw teacher the depth cue cannot tell flicker from motion. A real
network's frame-to-frame flicker reaches 0.5 in log-depth (its 99th percentile, 7-Scenes) where a simulated
object's motion is 0.15–0.5: a τ_d large enough not to take the one for motion lets half the true motion of the
simulated videos count as static (moving objects, thin structures), one small enough does the opposite. Training
may look ahead (the losses are not causal, the model is), and a few frames ahead flicker has reverted while
motion has not: on the median-filtered teacher the same static pixels keep their weight (real teacher 0.57–0.77
at τ_d 0.1 vs 0.60–0.78 raw at 0.3) while the simulated pixels that truly move (|Δ log GT| > 0.1) fall from
0.15–0.44 to 0.04–0.25 (RGB cue included; `motion_median` 1 = the raw teacher).

Teacher noise (`noise_scale`, the model's s_t ≥ 1 from smoother/noise.py): τ_d (motion_depth_tau, still_depth_tau)
is multiplied by s_t, so a noisy teacher's flicker is not taken for motion, and the anchor is divided by it (a
Laplace likelihood whose scale is the teacher's noise: a noisier teacher is trusted less per frame).

The motion weights are computed from the inputs only (no gradient). Means run over all pixels of the valid
frames/pairs/triples, so a term's scale does not depend on how many pixels are static. `frame_mask` (B, N)
drops padded frames (short videos): a pair or triple counts only if all its frames are valid. `first` marks
the first `first` frames as context (burn-in, detached residual): they get no per-frame terms, and a pair,
triple or span counts only if it ends at frame `first` or later, so the window's first frames are still held
to the context they continue.
"""

from __future__ import annotations

import torch

from smoother.config import LossConfig
from smoother.model import frame_median
from smoother.temporal_filter import warp_previous

TERMS = (
    "anchor",
    "anchor_scale",
    "temporal_static",
    "temporal_flow",
    "temporal_accel",
    "temporal_global",
    "temporal_motion",
    "temporal_long",
    "smoothness",
    "magnitude",
)


def charbonnier(x: torch.Tensor, eps: float) -> torch.Tensor:
    """ρ(x) = sqrt(x² + ε²) − ε: 0 at 0, ≈ |x| − ε for |x| ≫ ε, smooth gradient at 0."""
    return torch.sqrt(x * x + eps * eps) - eps


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (B, M, C, H, W) over entries whose mask (B, M) is set; 0 if none is."""
    m = mask.to(x.dtype)[:, :, None, None, None].expand_as(x)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def previous_frames(x: torch.Tensor, flows: torch.Tensor | None) -> torch.Tensor:
    """x_{t−1} for t = 1..N−1, (B, N−1, C, H, W) from x (B, N, C, H, W): moved into frame t along flows (B, N, H, W, 2)
    (frame t → t−1, as `temporal_filter.grid_flows`) when given, else at the same pixel."""
    return warp_previous(x[:, 1:], x[:, 0], None if flows is None else flows[:, 1:])


def _frames(scale: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | float:
    """Per-frame scale (B, M) as (B, M, 1, 1, 1) to divide like (B, M, C, H, W) by; 1.0 when None."""
    return 1.0 if scale is None else scale.to(like.dtype)[:, :, None, None, None]


def running_median(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Centred running median over `frames` (odd) frames of x (B, N, C, H, W), per pixel; the first and last frames
    are repeated at the ends, so the shape is kept. frames 1 returns x."""
    if frames <= 1:
        return x
    k = frames // 2
    padded = torch.cat([x[:, :1].expand(-1, k, -1, -1, -1), x, x[:, -1:].expand(-1, k, -1, -1, -1)], dim=1)
    return padded.unfold(1, frames, 1).median(dim=-1).values  # (B, N, C, H, W)


def steady_teacher(log_teacher: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """The teacher as the depth motion cue sees it (ℓ̃ of the module docstring), (B, N, 1, H, W): each frame's
    median out, then the centred running median of cfg.motion_median frames."""
    # Each frame's median comes out first: the teacher's frame-wide jumps would otherwise make the per-pixel
    # median pick other frames at other pixels, a local change made of global flicker.
    with torch.no_grad():
        return running_median(log_teacher - frame_median(log_teacher), cfg.motion_median)


def motion_weights(
    log_teacher: torch.Tensor,
    rgb: torch.Tensor | None,
    cfg: LossConfig,
    flows: torch.Tensor | None = None,
    noise_scale: torch.Tensor | None = None,
    steady: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Static s and surface u weights (B, N−1, 1, H, W) of each pair (t−1, t), accel weights a (B, N−2, 1, H, W).

    log_teacher (B, N, 1, H, W); rgb (B, N, 3, H, W) in [0, 1] or None; flows as `previous_frames` (then "static"
    means "the same surface, moved along the flow, kept its depth and colour"); noise_scale (B, N) the model's
    teacher-noise scale (smoother/noise.py) or None: τ_d is in its units, so a noisy teacher's flicker is not
    taken for motion. steady: `steady_teacher(log_teacher, cfg)` when the caller has it already (the running median
    is the cue's costliest part). See the module docstring.
    """
    with torch.no_grad():
        steady = steady_teacher(log_teacher, cfg) if steady is None else steady  # flicker reverts, motion stays
        dlog = steady[:, 1:] - previous_frames(steady, flows)  # (B, N−1, 1, H, W)
        med = frame_median(dlog)  # frame-wide jump (B, N−1, 1, 1, 1)
        tau_d = cfg.motion_depth_tau * _frames(None if noise_scale is None else noise_scale[:, 1:], dlog)
        depth_term = ((dlog - med) / tau_d) ** 2
        if rgb is None:
            drgb = torch.zeros_like(depth_term)
        else:
            drgb = (rgb[:, 1:] - previous_frames(rgb, flows)).abs().mean(dim=2, keepdim=True)  # (B, N−1, 1, H, W)
        static = torch.exp(-depth_term - (drgb / cfg.motion_rgb_tau) ** 2)
        surface = torch.exp(-depth_term)
        moving = depth_term + (drgb / cfg.accel_rgb_tau) ** 2
        accel = torch.exp(-moving[:, 1:] - previous_frames(moving, None if flows is None else flows[:, 1:]))
    return static, surface, accel


def still_weight(
    log_teacher: torch.Tensor,
    rgb: torch.Tensor | None,
    valid: torch.Tensor,
    cfg: LossConfig,
    noise_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """How surely each pixel shows the same surface in every valid frame of the sequence: (B, 1, 1, H, W) in [0, 1].

    Every frame is compared with the first, not with its neighbour, so slow motion adds up: exp(−max_t
    [(m_t/τ_d)² + (g_t/τ_rgb)² + (median_p g_t/τ_cam)²]), m_t = (ℓ_t − ℓ_0) − median_p(ℓ_t − ℓ_0),
    g_t = mean_rgb |RGB_t − RGB_0|. noise_scale (B, N) or None: τ_d in units of the teacher's noise, as in
    `motion_weights`.
    """
    with torch.no_grad():
        d = log_teacher - log_teacher[:, :1]
        m = d - frame_median(d)
        cost = (m / (cfg.still_depth_tau * _frames(noise_scale, m))) ** 2
        if rgb is not None:
            g = (rgb - rgb[:, :1]).abs().mean(dim=2, keepdim=True)  # (B, N, 1, H, W)
            # A moving camera changes most of the frame, even where one pixel's depth and colour barely change
            # (a flat wall under a slow dolly): the frame median catches that; a still camera keeps it ≈ 0.
            camera = frame_median(g)
            cost = cost + (g / cfg.still_rgb_tau) ** 2 + (camera / cfg.still_camera_tau) ** 2
        cost = torch.where(valid[:, :, None, None, None], cost, torch.zeros_like(cost))
        return torch.exp(-cost.amax(dim=1, keepdim=True))


def smoother_losses(
    residual: torch.Tensor,
    teacher_depth: torch.Tensor,
    cfg: LossConfig,
    *,
    confidence: torch.Tensor | None = None,
    rgb: torch.Tensor | None = None,
    frame_mask: torch.Tensor | None = None,
    first: int = 0,
    flows: torch.Tensor | None = None,
    noise_scale: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Named loss terms (scalars, unweighted) plus "total" (weighted sum); formulas in the module docstring.

    residual (B, N, 1, H, W) log-depth correction; teacher_depth (B, N, 1, H, W) metres > 0; confidence
    (B, N, 1, H, W) in [0, 1]; rgb (B, N, 3, H, W) in [0, 1]; frame_mask (B, N) bool, False = padding.
    first: frames [0, first) are context (see the module docstring). flows (B, N, H, W, 2): optical flow of the RGB,
    frame t → t−1 (`temporal_filter.grid_flows`); with cfg.flow_compensated the frame-to-frame terms follow it.
    noise_scale (B, N): the model's teacher-noise scale (smoother/noise.py, ≥ 1) the depth taus are multiplied by
    and the anchor divided by; None = 1 (the taus and the anchor as set).
    Terms needing more frames than given (e.g. accel with N < 3) are 0.
    """
    b, n = residual.shape[:2]
    residual = residual.float()  # losses in fp32 even under autocast
    log_t = teacher_depth.float().clamp_min(1e-6).log()
    log_r = log_t + residual
    conf = torch.ones_like(residual) if confidence is None else confidence.float()
    valid = torch.ones(b, n, dtype=torch.bool, device=residual.device) if frame_mask is None else frame_mask
    ends = torch.arange(n, device=residual.device) >= first  # (N,) frames a term may end at
    frame_ok = valid & ends
    rho = lambda x: charbonnier(x, cfg.eps)  # noqa: E731
    zero = residual.sum() * 0.0  # keeps the graph and device for terms that do not apply
    terms: dict[str, torch.Tensor] = {}

    if cfg.anchor_mean:
        # A pixel still over the whole sequence: the teacher's mean there is as much "the teacher" as any one
        # frame (the truth did not change), so the anchor lets the model average its flicker and drift.
        still = still_weight(log_t, None if rgb is None else rgb.float(), valid, cfg, noise_scale)
        w = valid.to(log_t.dtype)[:, :, None, None, None]
        mean = (log_t * w).sum(dim=1, keepdim=True) / w.sum(dim=1, keepdim=True).clamp_min(1.0)
        anchored = log_r - (log_t + still * (mean - log_t))  # ℓ̂ − ℓ*
    else:
        anchored = residual
    # The anchor is the teacher's likelihood: a Laplace one whose scale is the teacher's noise, so a teacher twice
    # as noisy is trusted half as much per frame (the temporal terms, a prior on how the truth moves, keep theirs).
    # With L1 terms on both sides the balance is otherwise scale-free: the same flicker pattern, twice as large,
    # would be smoothed exactly as much.
    trust = 1.0 / _frames(noise_scale, anchored) if noise_scale is not None else 1.0
    terms["anchor"] = _masked_mean(trust * conf * rho(anchored), frame_ok)
    terms["magnitude"] = _masked_mean(residual * residual, frame_ok)
    # The teacher's scale, averaged over the window, is kept: per-frame flicker may be removed, a slide is not.
    ratio = frame_median(log_r - log_t)[:, :, 0, 0, 0]  # (B, N)
    w = frame_ok.to(ratio.dtype)
    window_ratio = (ratio * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)  # (B,)
    frame_scale = frame_median(log_t)[:, :, 0, 0, 0]  # (B, N) the teacher's frame-median log-depth
    steps = (frame_scale[:, 1:] - frame_scale[:, :-1]).abs()
    steps = torch.where(valid[:, 1:] & valid[:, :-1], steps, torch.full_like(steps, float("nan")))
    band = steps.nanmedian(dim=1).values.nan_to_num(0.0) if n > 1 else torch.zeros_like(window_ratio)  # (B,)
    excess = (window_ratio.abs() - cfg.anchor_scale_band * band).clamp_min(0.0)
    terms["anchor_scale"] = rho(excess).mean()

    dx_r, dy_r = residual[..., :, 1:] - residual[..., :, :-1], residual[..., 1:, :] - residual[..., :-1, :]
    wx = torch.exp(-cfg.edge_k * (log_t[..., :, 1:] - log_t[..., :, :-1]).abs())  # ≈0 across depth edges
    wy = torch.exp(-cfg.edge_k * (log_t[..., 1:, :] - log_t[..., :-1, :]).abs())
    smooth = zero
    if dx_r.shape[-1]:
        smooth = smooth + _masked_mean(wx * rho(dx_r), frame_ok)
    if dy_r.shape[-2]:
        smooth = smooth + _masked_mean(wy * rho(dy_r), frame_ok)
    terms["smoothness"] = smooth

    if n >= 2:
        rgb = None if rgb is None else rgb.float()
        steady = steady_teacher(log_t, cfg)  # once for both motion cues (pixel-wise and along the flow)
        static, surface, accel_w = motion_weights(log_t, rgb, cfg, noise_scale=noise_scale, steady=steady)
        pair_ok = valid[:, 1:] & valid[:, :-1] & ends[1:]  # (B, N−1)
        d_ref = log_r[:, 1:] - log_r[:, :-1]  # (B, N−1, 1, H, W)
        terms["temporal_static"] = _masked_mean(static * rho(d_ref), pair_ok)
        # Moving pixels: their residual changes like the static pixels' (frame-wide de-jitter), nothing local.
        d_res = residual[:, 1:] - residual[:, :-1]
        w = static + 1e-3  # with no static pixel this falls back to the plain frame mean
        frame_corr = (w * d_res).sum(dim=(2, 3, 4), keepdim=True) / w.sum(dim=(2, 3, 4), keepdim=True)
        terms["temporal_motion"] = _masked_mean((1 - static) * rho(d_res - frame_corr), pair_ok)
        k = cfg.long_span
        if n > k:
            # S = the least static pair of each span of k pairs (B, N−k, 1, H, W): a min, not a product, since
            # noise keeps s a little below 1 on truly static pixels and a product over k pairs would vanish.
            per_pixel = static.permute(0, 2, 3, 4, 1).reshape(-1, 1, n - 1)  # (B·H·W, 1, N−1)
            span_min = -torch.nn.functional.max_pool1d(-per_pixel, k, stride=1)  # (B·H·W, 1, N−k)
            span_static = span_min.reshape(b, *static.shape[2:], n - k).permute(0, 4, 1, 2, 3)
            span_ok = valid[:, k:] & valid[:, :-k] & ends[k:]
            terms["temporal_long"] = _masked_mean(span_static * rho(log_r[:, k:] - log_r[:, :-k]), span_ok)
        else:
            terms["temporal_long"] = zero
        flows = flows.float() if cfg.flow_compensated and flows is not None else None
        terms["temporal_flow"] = zero
        if flows is not None:
            # The same surface in both frames, moved along the flow: still under camera motion too.
            static_flow, _, accel_w = motion_weights(log_t, rgb, cfg, flows, noise_scale, steady)
            d_flow = log_r[:, 1:] - previous_frames(log_r, flows)  # (B, N−1, 1, H, W)
            local = d_flow - frame_median(d_flow)  # a frame-wide change (a dolly's, or flicker) is temporal_accel's
            terms["temporal_flow"] = _masked_mean(static_flow * rho(local), pair_ok)
        if n >= 3:
            triple_ok = valid[:, 2:] & valid[:, 1:-1] & valid[:, :-2] & ends[2:]  # (B, N−2)
            if flows is not None:  # along the flow: a surface approached at a steady speed costs nothing
                acc = d_flow[:, 1:] - previous_frames(d_flow, flows[:, 1:])
            else:
                acc = d_ref[:, 1:] - d_ref[:, :-1]
            terms["temporal_accel"] = _masked_mean(accel_w * rho(acc), triple_ok)
            u = surface + 1e-3
            g = (u * d_ref).sum(dim=(2, 3, 4), keepdim=True) / u.sum(dim=(2, 3, 4), keepdim=True)  # (B, N−1, 1, 1, 1)
            terms["temporal_global"] = _masked_mean(rho(g[:, 1:] - g[:, :-1]), triple_ok)
        else:
            terms["temporal_accel"] = terms["temporal_global"] = zero
    else:
        terms["temporal_static"] = terms["temporal_motion"] = terms["temporal_accel"] = zero
        terms["temporal_global"] = terms["temporal_long"] = terms["temporal_flow"] = zero

    terms = {name: terms[name] for name in TERMS}
    terms["total"] = sum(getattr(cfg, name) * value for name, value in terms.items())
    return terms
