"""Temporal-consistency metrics of a depth video: TAE, OPW, static flicker and frame change, and the static masks.

Each function's docstring gives the exact formula and the conventions chosen where the references (the Video
Depth Anything benchmark for TAE, NVDS for OPW) leave room. All accumulation is float64. Optical flow and the
backward warp come from steadydepth/video/optical_flow.py, the same flow the smoother uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from steadydepth.errors import InputError
from steadydepth.video.optical_flow import FlowMethod, flows_to_previous, sampling_maps, warp_backward_nan_outside

OpwNormalization = Literal["frame", "sequence", "none"]


def _as_video(depth: np.ndarray, name: str = "depth") -> np.ndarray:
    depth = np.asarray(depth)
    if depth.ndim != 3:
        raise InputError(f"{name} has shape {depth.shape}; pass a (T, H, W) array")
    return depth


def _in_caps(d: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(d) & (d > 0) & (d > min_depth) & (d < max_depth)


# ---------------------------------------------------------------------------------------------- TAE


def _reprojection_error(
    d_src: np.ndarray,
    d_tgt: np.ndarray,
    k_src: np.ndarray,
    k_tgt: np.ndarray,
    tgt_from_src: np.ndarray,
    min_depth: float,
    max_depth: float,
) -> float:
    """Mean |D_tgt(p') − z'| / D_tgt(p') of one direction; NaN when no pixel is valid in both frames."""
    h, w = d_src.shape
    v, u = np.nonzero(_in_caps(d_src, min_depth, max_depth))
    z = d_src[v, u].astype(np.float64)
    pix = np.stack([u, v, np.ones_like(u)]).astype(np.float64)
    pts = (np.linalg.inv(k_src) @ pix) * z  # back-projection: P = D · K⁻¹ [u, v, 1]ᵀ
    pts = tgt_from_src[:3, :3] @ pts + tgt_from_src[:3, 3:4]
    proj = k_tgt @ pts
    zp = proj[2]
    front = zp > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        # nearest pixel; np.rint rounds half to even, like torch.round in the VDA benchmark
        up = np.rint(proj[0] / zp)
        vp = np.rint(proj[1] / zp)
    ok = front & (up >= 0) & (up < w) & (vp >= 0) & (vp < h)
    if not ok.any():
        return math.nan
    flat = vp[ok].astype(np.int64) * w + up[ok].astype(np.int64)
    z_new = pts[2][ok]
    # no z-buffer: several source pixels landing on one target pixel -> the last in raster order wins
    # (the VDA benchmark's `depth_proj[y, x] = z` splat), made deterministic by taking the last occurrence
    uniq, first_in_reversed = np.unique(flat[::-1], return_index=True)
    z_splat = z_new[::-1][first_in_reversed]
    d2 = d_tgt.reshape(-1)[uniq].astype(np.float64)
    both = _in_caps(d2, min_depth, max_depth)
    if not both.any():
        return math.nan
    return float(np.mean(np.abs(d2[both] - z_splat[both]) / d2[both]))


def tae(
    depth: np.ndarray,
    K: np.ndarray,
    poses: np.ndarray,
    *,
    min_depth: float,
    max_depth: float,
) -> float:
    """Temporal Alignment Error (Video Depth Anything benchmark), in percent.

    For each adjacent pair (i, i+1) with camera-to-world poses: T_{i+1←i} = T_{i+1}⁻¹ T_i. Back-project
    every valid pixel of D_i with K_i (P = D_i(p) K_i⁻¹ [p, 1]), move it by T_{i+1←i}, project with K_{i+1}
    to the nearest pixel p' (round, no z-buffer: last source pixel in raster order wins a collision) and
    depth z'; e_fwd = mean over p' valid in both of |D_{i+1}(p') − z'| / D_{i+1}(p'). e_bwd likewise with
    (i+1 → i) and T_{i←i+1} = T_{i+1←i}⁻¹. TAE = 100 · Σ_i (e_fwd + e_bwd) / (2 (N − 1)).

    Valid: source and target depth finite with min_depth < D < max_depth (and > 0), z' > 0, p' in bounds.
    K is one (3, 3) for the whole video or (T, 3, 3) per frame. A direction with no valid pixel is left
    out of both sum and count (the VDA code would count it as 0); NaN if T < 2 or nothing is valid.
    """
    depth = _as_video(depth)
    n = depth.shape[0]
    poses = np.asarray(poses, dtype=np.float64)
    k_all = np.asarray(K, dtype=np.float64)
    if k_all.shape == (3, 3):
        k_all = np.broadcast_to(k_all, (n, 3, 3))
    if k_all.shape != (n, 3, 3) or poses.shape != (n, 4, 4):
        raise InputError(f"K {np.shape(K)} must be (3,3) or ({n},3,3) and poses {poses.shape} ({n},4,4)")
    total, count = 0.0, 0
    for i in range(n - 1):
        fwd = np.linalg.inv(poses[i + 1]) @ poses[i]
        bwd = np.linalg.inv(fwd)
        for src, tgt, rel in ((i, i + 1, fwd), (i + 1, i, bwd)):
            e = _reprojection_error(depth[src], depth[tgt], k_all[src], k_all[tgt], rel, min_depth, max_depth)
            if math.isfinite(e):
                total += e
                count += 1
    return 100.0 * total / count if count else math.nan


# ---------------------------------------------------------------------------------------------- OPW


def robust_normalize(d: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """NVDS `normalize_prediction_robust`: (d − median) / max(mean |d − median|, 1e-6) over valid pixels.

    Invalid pixels become NaN. Median and mean absolute deviation are taken over `valid` (any shape).
    """
    out = np.full(d.shape, np.nan, dtype=np.float64)
    if not valid.any():
        return out
    x = d[valid].astype(np.float64)
    med = np.median(x)
    scale = max(float(np.mean(np.abs(x - med))), 1e-6)  # NVDS clamps the scale at 1e-6
    out[valid] = (x - med) / scale
    return out


@dataclass(frozen=True)
class FlowWarps:
    """The part of OPW that depends only on a video's RGB, for every pair (t−1 → t), t = 1..T−1.

    maps[t−1]: the backward-warp coordinates p + f(p) (two float32 (H, W)); masks[t−1]: the photometric weight
    M = exp(−alpha · Σ_c (Î_c − I_{t,c})²) (float64 (H, W), NaN where the warp leaves the image). Optical flow is
    most of OPW's cost and is the same for every depth method evaluated on one video: compute it once
    (`flow_warps`) and pass it to each `opw` call.
    """

    maps: list[tuple[np.ndarray, np.ndarray]]
    masks: list[np.ndarray]
    shape: tuple[int, int, int]  # (T, H, W) of the video


def flow_warps(rgb: np.ndarray, *, flow: FlowMethod = "dis", alpha: float = 50.0) -> FlowWarps:
    """Flow f from frame t to t−1 (OpenCV DIS 'medium' preset or Farnebäck, on grayscale) per pair, as warp maps
    and photometric masks for `opw`. rgb (T, H, W, 3) uint8."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise InputError(f"rgb has shape {rgb.shape}; pass a (T, H, W, 3) uint8 array")
    t_len, h, w = rgb.shape[:3]
    flows, _ = flows_to_previous(rgb, None, flow)
    maps, masks = [], []
    for t in range(1, t_len):
        f, flows[t] = flows[t], None  # the maps replace the flow: hold one copy of it, not two
        pair = sampling_maps(f)
        warped_rgb = warp_backward_nan_outside(rgb[t - 1].astype(np.float32) / 255.0, pair)
        diff2 = np.sum((warped_rgb - rgb[t].astype(np.float64) / 255.0) ** 2, axis=-1)
        maps.append(pair)
        masks.append(np.exp(-alpha * diff2))
    return FlowWarps(maps, masks, (t_len, h, w))


def opw(
    depth: np.ndarray,
    rgb: np.ndarray | None = None,
    *,
    flow: FlowMethod = "dis",
    normalize: OpwNormalization = "frame",
    alpha: float = 50.0,
    warps: FlowWarps | None = None,
) -> float:
    """Optical-flow-based warping error (NVDS).

    For t = 1..T−1: optical flow f from frame t to t−1 (OpenCV DIS 'medium' preset or Farnebäck, on
    grayscale), backward-warp with cv2.remap (bilinear; samples touching the border are dropped):
    ŵ(p) = n_{t−1}(p + f(p)), Î(p) = I_{t−1}(p + f(p)). Mask M = exp(−alpha · Σ_c (Î_c − I_{t,c})²) with RGB in
    [0, 1]. OPW_t = Σ M |n_t − ŵ| / Σ M over pixels valid in both; OPW = mean over t of OPW_t.

    n is robust-normalised depth, n = (d − median) / mean|d − median| (NVDS `normalize_prediction_robust`):
    normalize="frame" (NVDS: per frame, which makes OPW blind to per-frame scale/shift flicker),
    "sequence" (one median and scale for the whole video, so global-scale flicker still counts) or "none"
    (metres). Valid depth: finite and > 0. NaN if T < 2 or no pair has a valid pixel.

    Pass either rgb (T, H, W, 3) uint8, or `warps` = flow_warps(rgb, flow=..., alpha=...) computed once for
    the video (the same result without computing the flow again; the flow and alpha it was made with apply).
    """
    depth = _as_video(depth)
    if warps is None:
        if rgb is None:
            raise InputError("opw needs the video's rgb or its flow_warps(rgb)")
        if np.shape(rgb) != (*depth.shape, 3):
            raise InputError(f"rgb {np.shape(rgb)} must be (T, H, W, 3) matching depth {depth.shape}")
        warps = flow_warps(rgb, flow=flow, alpha=alpha)
    elif warps.shape != depth.shape:
        raise InputError(f"flow warps of a {warps.shape} video do not match depth {depth.shape}")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0)
    if normalize == "sequence":
        norm_all = robust_normalize(depth, valid)
    elif normalize not in ("frame", "none"):
        raise InputError(f"unknown OPW normalization {normalize!r}; use 'frame', 'sequence' or 'none'")

    def norm(t: int) -> np.ndarray:
        if normalize == "sequence":
            return norm_all[t]
        if normalize == "frame":
            return robust_normalize(depth[t], valid[t])
        return np.where(valid[t], depth[t], np.nan).astype(np.float64)

    values = []
    prev_norm = norm(0)
    for t in range(1, depth.shape[0]):
        cur_norm = norm(t)
        warped_d = warp_backward_nan_outside(prev_norm.astype(np.float32), warps.maps[t - 1])
        m = warps.masks[t - 1]
        ok = np.isfinite(warped_d) & np.isfinite(cur_norm) & np.isfinite(m)
        weight = m[ok].sum()
        if weight > 0:
            values.append(float(np.sum(m[ok] * np.abs(cur_norm[ok] - warped_d[ok])) / weight))
        prev_norm = cur_norm
    return float(np.mean(values)) if values else math.nan


# ------------------------------------------------------------------------------------ static flicker


def static_flicker(depth: np.ndarray, static_mask: np.ndarray) -> float:
    """Flicker on static pixels: mean_p σ_p / mean_p μ_p (a ratio of means, not a mean of ratios).

    μ_p, σ_p: temporal mean and population std (ddof=0) of depth at pixel p over the frames where p is
    static and its depth is finite and > 0. static_mask is (H, W) (static in every frame) or (T, H, W).
    Pixels with fewer than 2 such frames are dropped. For D_t = s_t · c this is std(s) / mean(s).
    NaN if no pixel qualifies.
    """
    depth = _as_video(depth)
    mask = np.broadcast_to(np.asarray(static_mask, dtype=bool), depth.shape)
    with np.errstate(invalid="ignore"):
        m = mask & np.isfinite(depth) & (depth > 0)
    d = np.where(m, depth, 0.0).astype(np.float64)
    n = m.sum(axis=0)
    keep = n >= 2
    if not keep.any():
        return math.nan
    mu = d.sum(axis=0) / np.maximum(n, 1)
    var = np.where(m, (d - mu) ** 2, 0.0).sum(axis=0) / np.maximum(n, 1)  # two-pass: no cancellation
    return float(np.mean(np.sqrt(var[keep])) / np.mean(mu[keep]))


def static_mask_from_gt(
    gt_depth: np.ndarray,
    poses: np.ndarray | None = None,
    rel_tol: float = 0.01,
    *,
    trans_tol: float = 1e-3,
    rot_tol_deg: float = 0.1,
) -> np.ndarray:
    """(H, W) mask of pixels whose GT depth does not change: valid (finite, > 0) in every frame and
    max_t |G_t − median_t G| / median_t G ≤ rel_tol.

    With camera-to-world poses, the camera must also be static: every pose within trans_tol (metres) and
    rot_tol_deg (degrees) of the first one, else the mask is all False (no static-camera pixels).
    """
    gt = _as_video(gt_depth, "gt_depth").astype(np.float64)
    if poses is not None:
        poses = np.asarray(poses, dtype=np.float64)
        rel = np.linalg.inv(poses[0]) @ poses
        trans = np.linalg.norm(rel[:, :3, 3], axis=1)
        cos = np.clip((np.trace(rel[:, :3, :3], axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
        if trans.max() > trans_tol or np.degrees(np.arccos(cos)).max() > rot_tol_deg:
            return np.zeros(gt.shape[1:], dtype=bool)
    with np.errstate(invalid="ignore"):
        valid = (np.isfinite(gt) & (gt > 0)).all(axis=0)
        ref = np.median(gt, axis=0)
        dev = np.max(np.abs(gt - ref), axis=0) / ref
        return valid & (dev <= rel_tol)


def static_mask_from_rgb(rgb: np.ndarray, threshold: float = 0.03) -> np.ndarray:
    """(H, W) mask of pixels whose colour does not change: max over channels of the temporal range
    (max_t − min_t) of RGB in [0, 1] ≤ threshold. Needs a static camera to mean "static scene".
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise InputError(f"rgb has shape {rgb.shape}; pass a (T, H, W, 3) uint8 array")
    lo = rgb.min(axis=0).astype(np.float64)
    hi = rgb.max(axis=0).astype(np.float64)
    return ((hi - lo).max(axis=-1) / 255.0) <= threshold


def frame_change(depth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Cheap flicker number: mean over adjacent pairs of mean_p |d_t(p) − d_{t−1}(p)| / d_{t−1}(p).

    Pixels: finite and > 0 in both frames, and inside mask ((H, W), or (T, H, W) where both frames'
    entries must be set). Pairs without a valid pixel are skipped; NaN if none is left or T < 2.
    """
    depth = _as_video(depth)
    full = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), depth.shape)
    values = []
    for t in range(1, depth.shape[0]):
        a = depth[t - 1].astype(np.float64)
        b = depth[t].astype(np.float64)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
        if full is not None:
            ok &= full[t - 1] & full[t]
        if ok.any():
            values.append(float(np.mean(np.abs(b[ok] - a[ok]) / a[ok])))
    return float(np.mean(values)) if values else math.nan
