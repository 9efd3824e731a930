"""Temporal-consistency metrics of a depth video: TAE, OPW, static flicker and frame change, and the static masks.

Each function's docstring gives the exact formula and the conventions chosen where the references (the Video
Depth Anything benchmark for TAE, NVDS for OPW) leave room. All accumulation is float64. Optical flow and the
backward warp come from steadydepth/video/optical_flow.py, the same flow the smoother uses.

Every metric is also an accumulator (`TAEAccumulator`, `OPWAccumulator`, `StaticFlickerAccumulator`,
`FrameChangeAccumulator`, `StaticMaskAccumulator`, and `FlowWarpStream` for OPW's flow) fed consecutive chunks of
one video, carrying what crosses a chunk boundary (the previous frame, its pose, its warp); the whole-array
functions feed them the whole video as one chunk. What needs the whole video first, the medians of OPW's sequence
normalisation and of the static mask, the whole-array functions take with np.median, and the streamed forms
(`RobustStatsStream`, `StaticMaskAccumulator`) exactly, in extra passes, with `GroupedMedian`. The evaluation
(evaluation/video_stream.py) streams stores through them, so its memory does not grow with the video's length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from evaluation.order_stats import GroupedMedian
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


class TAEAccumulator:
    """`tae` chunk by chunk: the last frame's depth, K and pose are carried to pair with the next chunk's first."""

    def __init__(self, *, min_depth: float, max_depth: float) -> None:
        self.min_depth, self.max_depth = min_depth, max_depth
        self.total, self.count = 0.0, 0
        self._prev: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def add(self, depth: np.ndarray, K: np.ndarray, poses: np.ndarray) -> None:
        """The next (n, H, W) depth frames with their (n, 3, 3) K (or one (3, 3)) and (n, 4, 4) poses."""
        depth = _as_video(depth)
        n = depth.shape[0]
        poses = np.asarray(poses, dtype=np.float64)
        k_all = np.asarray(K, dtype=np.float64)
        if k_all.shape == (3, 3):
            k_all = np.broadcast_to(k_all, (n, 3, 3))
        if k_all.shape != (n, 3, 3) or poses.shape != (n, 4, 4):
            raise InputError(f"K {np.shape(K)} must be (3,3) or ({n},3,3) and poses {poses.shape} ({n},4,4)")
        for t in range(n):
            cur = (depth[t], k_all[t], poses[t])
            if self._prev is not None:
                self._add_pair(self._prev, cur)
            self._prev = cur

    def _add_pair(self, a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> None:
        fwd = np.linalg.inv(b[2]) @ a[2]
        bwd = np.linalg.inv(fwd)
        for (d_src, k_src, _), (d_tgt, k_tgt, _), rel in ((a, b, fwd), (b, a, bwd)):
            e = _reprojection_error(d_src, d_tgt, k_src, k_tgt, rel, self.min_depth, self.max_depth)
            if math.isfinite(e):
                self.total += e
                self.count += 1

    def result(self) -> float:
        return 100.0 * self.total / self.count if self.count else math.nan


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
    acc = TAEAccumulator(min_depth=min_depth, max_depth=max_depth)
    acc.add(depth, K, poses)
    return acc.result()


# ---------------------------------------------------------------------------------------------- OPW


MIN_ROBUST_SCALE = 1e-6  # NVDS clamps the robust scale here


def robust_normalize(d: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """NVDS `normalize_prediction_robust`: (d − median) / max(mean |d − median|, 1e-6) over valid pixels.

    Invalid pixels become NaN. Median and mean absolute deviation are taken over `valid` (any shape).
    """
    if not valid.any():
        return np.full(d.shape, np.nan, dtype=np.float64)
    x = d[valid].astype(np.float64)
    med = np.median(x)
    return normalize_with(d, valid, med, float(np.mean(np.abs(x - med))))


def normalize_with(d: np.ndarray, valid: np.ndarray, median: float, mean_abs_dev: float) -> np.ndarray:
    """(d − median) / max(mean_abs_dev, 1e-6) on valid pixels, NaN elsewhere (float64): `robust_normalize` with
    the statistics given (e.g. one median and deviation for a whole video)."""
    out = np.full(d.shape, np.nan, dtype=np.float64)
    out[valid] = (d[valid].astype(np.float64) - median) / max(mean_abs_dev, MIN_ROBUST_SCALE)
    return out


def _positive(d: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(d) & (d > 0)


PairWarp = tuple[tuple[np.ndarray, np.ndarray], np.ndarray]  # (remap maps, photometric mask) of one pair


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

    def per_frame(self) -> list[PairWarp | None]:
        """One entry per frame, as `FlowWarpStream.add` gives them: None for frame 0, then pair (t−1 → t)."""
        return [None, *zip(self.maps, self.masks, strict=True)]


class FlowWarpStream:
    """`flow_warps` chunk by chunk: each chunk's frames get their warp from the frame before, the first one from
    the previous chunk's last frame (carried), so chunk boundaries change nothing."""

    def __init__(self, *, flow: FlowMethod = "dis", alpha: float = 50.0) -> None:
        self.flow, self.alpha = flow, alpha
        self._gray: np.ndarray | None = None
        self._rgb: np.ndarray | None = None

    def add(self, rgb: np.ndarray) -> list[PairWarp | None]:
        """Warps of the next (n, H, W, 3) uint8 frames, one per frame (None for the video's first frame)."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 4 or rgb.shape[-1] != 3:
            raise InputError(f"rgb has shape {rgb.shape}; pass a (T, H, W, 3) uint8 array")
        flows, self._gray = flows_to_previous(rgb, self._gray, self.flow)
        out: list[PairWarp | None] = []
        for t in range(len(rgb)):
            f, flows[t] = flows[t], None  # the maps replace the flow: hold one copy of it, not two
            out.append(None if f is None else self._pair(f, self._rgb, rgb[t]))
            self._rgb = rgb[t]
        if len(rgb):
            self._rgb = rgb[-1].copy()  # not a view: the caller's chunk may go
        return out

    def _pair(self, f: np.ndarray, before: np.ndarray, rgb: np.ndarray) -> PairWarp:
        pair = sampling_maps(f)
        warped_rgb = warp_backward_nan_outside(before.astype(np.float32) / 255.0, pair)
        diff2 = np.sum((warped_rgb - rgb.astype(np.float64) / 255.0) ** 2, axis=-1)
        return pair, np.exp(-self.alpha * diff2)


def flow_warps(rgb: np.ndarray, *, flow: FlowMethod = "dis", alpha: float = 50.0) -> FlowWarps:
    """Flow f from frame t to t−1 (OpenCV DIS 'medium' preset or Farnebäck, on grayscale) per pair, as warp maps
    and photometric masks for `opw`. rgb (T, H, W, 3) uint8."""
    pairs = FlowWarpStream(flow=flow, alpha=alpha).add(rgb)[1:]
    t_len, h, w = np.shape(rgb)[:3]
    return FlowWarps([p[0] for p in pairs], [p[1] for p in pairs], (t_len, h, w))


class OPWAccumulator:
    """`opw` chunk by chunk: fed depth frames and their warps (`FlowWarpStream.add`), it carries the previous
    frame's normalised depth. normalize="sequence" needs the video's median and mean absolute deviation of valid
    depth up front (`median=`, `mean_abs_dev=`: `RobustStatsStream` over earlier passes, or `robust_stats`)."""

    def __init__(
        self, normalize: OpwNormalization = "frame", *, median: float | None = None, mean_abs_dev: float | None = None
    ) -> None:
        if normalize not in ("frame", "sequence", "none"):
            raise InputError(f"unknown OPW normalization {normalize!r}; use 'frame', 'sequence' or 'none'")
        if normalize == "sequence" and (median is None or mean_abs_dev is None):
            raise InputError("OPW with sequence normalisation needs the video's median and mean_abs_dev")
        self.normalize = normalize
        self.median, self.mean_abs_dev = median, mean_abs_dev
        self.total, self.count = 0.0, 0
        self._prev: np.ndarray | None = None

    def _norm(self, d: np.ndarray) -> np.ndarray:
        valid = _positive(d)
        if self.normalize == "frame":
            return robust_normalize(d, valid)
        if self.normalize == "sequence":
            return normalize_with(d, valid, self.median, self.mean_abs_dev)
        return np.where(valid, d, np.nan).astype(np.float64)

    def add(self, depth: np.ndarray, warps: Sequence[PairWarp | None]) -> None:
        """The next (n, H, W) depth frames and their n warps (None only for the video's first frame)."""
        depth = _as_video(depth)
        if len(warps) != depth.shape[0]:
            raise InputError(f"{len(warps)} flow warps for {depth.shape[0]} depth frames; pass one per frame")
        for d, warp in zip(depth, warps, strict=True):
            cur = self._norm(d)
            if self._prev is not None and warp is not None:
                maps, m = warp
                warped_d = warp_backward_nan_outside(self._prev.astype(np.float32), maps)
                ok = np.isfinite(warped_d) & np.isfinite(cur) & np.isfinite(m)
                weight = m[ok].sum()
                if weight > 0:
                    self.total += float(np.sum(m[ok] * np.abs(cur[ok] - warped_d[ok])) / weight)
                    self.count += 1
            self._prev = cur

    def result(self) -> float:
        return self.total / self.count if self.count else math.nan


def robust_stats(depth: np.ndarray) -> tuple[float, float]:
    """(median, mean |d − median|) of a video's valid (finite, > 0) depth, as `robust_normalize` takes them
    (NaN, NaN without a valid pixel)."""
    valid = _positive(depth)
    if not valid.any():
        return math.nan, math.nan
    x = depth[valid].astype(np.float64)
    med = float(np.median(x))
    return med, float(np.mean(np.abs(x - med)))


class RobustStatsStream:
    """`robust_stats` of a video fed chunk by chunk over passes (exact: `GroupedMedian`); `add` each chunk,
    `end_pass()` until True, then `result()`."""

    def __init__(self) -> None:
        self._median = GroupedMedian(1, abs_deviation=True)

    @property
    def done(self) -> bool:
        return self._median.done

    def add(self, depth: np.ndarray) -> None:
        self._median.add(depth[_positive(depth)])

    def end_pass(self) -> bool:
        return self._median.end_pass()

    def result(self) -> tuple[float, float]:
        return float(self._median.median()[0]), float(self._median.mean_abs_deviation()[0])


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
    median, mad = robust_stats(depth) if normalize == "sequence" else (None, None)
    acc = OPWAccumulator(normalize, median=median, mean_abs_dev=mad)
    acc.add(depth, warps.per_frame())
    return acc.result()


# ------------------------------------------------------------------------------------ static flicker


class PixelMoments:
    """Per-pixel count, mean and sum of squared deviations (M2) of the frames a mask selects, chunk by chunk.

    Each chunk's moments are two-pass (no cancellation); chunks merge by Chan et al.'s pairwise update, so one
    chunk gives exactly the two-pass numbers and more chunks agree with them to float rounding.
    """

    def __init__(self) -> None:
        self.n: np.ndarray | None = None  # (H, W) int64
        self.mean: np.ndarray | None = None  # (H, W) float64 (0 where n is 0)
        self.m2: np.ndarray | None = None  # (H, W) float64

    def add(self, depth: np.ndarray, mask: np.ndarray) -> None:
        """The next (n, H, W) frames; mask (n, H, W) or broadcastable to it: which values count."""
        mask = np.broadcast_to(np.asarray(mask, dtype=bool), depth.shape)
        d = np.where(mask, depth, 0.0).astype(np.float64)
        n = mask.sum(axis=0)
        mu = d.sum(axis=0) / np.maximum(n, 1)
        m2 = np.where(mask, (d - mu) ** 2, 0.0).sum(axis=0)
        if self.n is None:
            self.n, self.mean, self.m2 = n, mu, m2
            return
        total = self.n + n
        delta = mu - self.mean
        share = np.where(total > 0, n / np.maximum(total, 1), 0.0)
        self.mean = self.mean + delta * share
        self.m2 = self.m2 + m2 + delta**2 * self.n * share
        self.n = total

    def variance(self) -> np.ndarray:
        """Population variance (ddof=0) per pixel; 0 where no value counted."""
        return self.m2 / np.maximum(self.n, 1)


class StaticFlickerAccumulator:
    """`static_flicker` chunk by chunk (per-pixel `PixelMoments` of the static, valid frames)."""

    def __init__(self) -> None:
        self.moments = PixelMoments()

    def add(self, depth: np.ndarray, static_mask: np.ndarray) -> None:
        """The next (n, H, W) frames; static_mask (H, W) or (n, H, W) for these frames."""
        depth = _as_video(depth)
        mask = np.broadcast_to(np.asarray(static_mask, dtype=bool), depth.shape)
        self.moments.add(depth, mask & _positive(depth))

    def result(self) -> float:
        m = self.moments
        if m.n is None:
            return math.nan
        keep = m.n >= 2
        if not keep.any():
            return math.nan
        return float(np.mean(np.sqrt(m.variance()[keep])) / np.mean(m.mean[keep]))


def static_flicker(depth: np.ndarray, static_mask: np.ndarray) -> float:
    """Flicker on static pixels: mean_p σ_p / mean_p μ_p (a ratio of means, not a mean of ratios).

    μ_p, σ_p: temporal mean and population std (ddof=0) of depth at pixel p over the frames where p is
    static and its depth is finite and > 0. static_mask is (H, W) (static in every frame) or (T, H, W).
    Pixels with fewer than 2 such frames are dropped. For D_t = s_t · c this is std(s) / mean(s).
    NaN if no pixel qualifies.
    """
    acc = StaticFlickerAccumulator()
    acc.add(depth, static_mask)
    return acc.result()


def _pose_offsets(first: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Translation (m) and rotation angle (degrees) of each camera-to-world pose relative to `first`."""
    rel = np.linalg.inv(first) @ np.asarray(poses, dtype=np.float64)
    trans = np.linalg.norm(rel[:, :3, 3], axis=1)
    cos = np.clip((np.trace(rel[:, :3, :3], axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return trans, np.degrees(np.arccos(cos))


def _steady(lo: np.ndarray, hi: np.ndarray, median: np.ndarray, rel_tol: float) -> np.ndarray:
    """max_t |G_t − median| / median ≤ rel_tol from the temporal min and max (the largest deviation is at one of
    them; float rounding is monotone, so this is bit for bit the maximum over frames)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.maximum(hi - median, median - lo) / median <= rel_tol


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
    `StaticMaskAccumulator` gives the same mask from chunks.
    """
    gt = _as_video(gt_depth, "gt_depth").astype(np.float64)
    if poses is not None:
        poses = np.asarray(poses, dtype=np.float64)
        trans, angle = _pose_offsets(poses[0], poses)
        if trans.max() > trans_tol or angle.max() > rot_tol_deg:
            return np.zeros(gt.shape[1:], dtype=bool)
    with np.errstate(invalid="ignore"):
        valid = (np.isfinite(gt) & (gt > 0)).all(axis=0)
        steady = _steady(gt.min(axis=0), gt.max(axis=0), np.median(gt, axis=0), rel_tol)
        return valid & steady


class StaticMaskAccumulator:
    """`static_mask_from_gt` from chunks of GT (and poses), in passes over the video.

    Pass 1 keeps per pixel: valid in every frame so far, temporal min and max, and the camera's largest offset
    from its first pose. Most pixels are then decided: static when (max − min) / min ≤ rel_tol (whatever the
    median), not static when (max − min) / (max + min) > rel_tol (no median could pass). Only the pixels in
    between need their exact temporal median: further passes find it (`GroupedMedian`) for those pixels alone.
    `add` each chunk of the pass, `end_pass()` until True, then `mask()`.
    """

    _MARGIN = 1e-9  # keeps float rounding of the bounds on the safe side: those pixels take the exact route

    def __init__(
        self,
        shape: tuple[int, int],
        rel_tol: float = 0.01,
        *,
        poses: bool = True,
        trans_tol: float = 1e-3,
        rot_tol_deg: float = 0.1,
    ) -> None:
        self.rel_tol, self.trans_tol, self.rot_tol_deg = rel_tol, trans_tol, rot_tol_deg
        self.uses_poses = poses
        self.valid = np.ones(shape, dtype=bool)
        self.lo = np.full(shape, np.inf)
        self.hi = np.full(shape, -np.inf)
        self._first_pose: np.ndarray | None = None
        self._moved = 0.0, 0.0  # largest translation (m), rotation (degrees) from the first pose
        self._mask: np.ndarray | None = None
        self._unsure: tuple[np.ndarray, np.ndarray] | None = None  # (ys, xs) of the pixels needing their median
        self._median: GroupedMedian | None = None

    def add(self, gt: np.ndarray, poses: np.ndarray | None = None) -> None:
        """The next (n, H, W) GT frames of this pass and, if the accumulator uses poses, their (n, 4, 4) poses."""
        gt = _as_video(gt, "gt_depth")
        if self._median is not None:
            ys, xs = self._unsure
            values = gt[:, ys, xs]
            self._median.add(values, np.broadcast_to(np.arange(len(ys)), values.shape))
            return
        if self.uses_poses:
            if poses is None:
                raise InputError("StaticMaskAccumulator(poses=True) needs the poses of every chunk")
            poses = np.asarray(poses, dtype=np.float64)
            if self._first_pose is None:
                self._first_pose = poses[0]
            trans, angle = _pose_offsets(self._first_pose, poses)
            self._moved = max(self._moved[0], float(trans.max())), max(self._moved[1], float(angle.max()))
        g = gt.astype(np.float64)
        with np.errstate(invalid="ignore"):
            self.valid &= (np.isfinite(g) & (g > 0)).all(axis=0)
        self.lo = np.fmin(self.lo, g.min(axis=0, initial=np.inf, where=np.isfinite(g)))
        self.hi = np.fmax(self.hi, g.max(axis=0, initial=-np.inf, where=np.isfinite(g)))

    def end_pass(self) -> bool:
        """True when the mask is known; False: pass over the GT again."""
        if self._median is not None:
            if not self._median.end_pass():
                return False
            ys, xs = self._unsure
            self._mask[ys, xs] = _steady(self.lo[ys, xs], self.hi[ys, xs], self._median.median(), self.rel_tol)
            self._median = None
            return True
        if self._moved[0] > self.trans_tol or self._moved[1] > self.rot_tol_deg:
            self._mask = np.zeros(self.valid.shape, dtype=bool)
            return True
        with np.errstate(invalid="ignore", divide="ignore"):
            spread = self.hi - self.lo
            surely = self.valid & (spread / self.lo <= self.rel_tol * (1 - self._MARGIN))
            maybe = self.valid & ~surely & (spread / (self.hi + self.lo) <= self.rel_tol * (1 + self._MARGIN))
        self._mask = surely
        if not maybe.any():
            return True
        self._unsure = np.nonzero(maybe)
        self._median = GroupedMedian(len(self._unsure[0]), bounds=(self.lo[self._unsure], self.hi[self._unsure]))
        return False

    def mask(self) -> np.ndarray:
        if self._mask is None or self._median is not None:
            raise InputError("StaticMaskAccumulator needs more passes: call end_pass() until it returns True")
        return self._mask


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


class FrameChangeAccumulator:
    """`frame_change` chunk by chunk: the previous frame (and its mask) is carried across chunk boundaries."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0
        self._prev: tuple[np.ndarray, np.ndarray | None] | None = None

    def add(self, depth: np.ndarray, mask: np.ndarray | None = None) -> None:
        """The next (n, H, W) frames; mask (H, W) or (n, H, W) for these frames, or None."""
        depth = _as_video(depth)
        full = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), depth.shape)
        for t in range(depth.shape[0]):
            cur = (depth[t], None if full is None else full[t])
            if self._prev is not None:
                self._add_pair(self._prev, cur)
            self._prev = cur

    def _add_pair(self, prev: tuple[np.ndarray, np.ndarray | None], cur: tuple[np.ndarray, np.ndarray | None]) -> None:
        a = prev[0].astype(np.float64)
        b = cur[0].astype(np.float64)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
        if prev[1] is not None and cur[1] is not None:
            ok &= prev[1] & cur[1]
        if ok.any():
            self.total += float(np.mean(np.abs(b[ok] - a[ok]) / a[ok]))
            self.count += 1

    def result(self) -> float:
        return self.total / self.count if self.count else math.nan


def frame_change(depth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Cheap flicker number: mean over adjacent pairs of mean_p |d_t(p) − d_{t−1}(p)| / d_{t−1}(p).

    Pixels: finite and > 0 in both frames, and inside mask ((H, W), or (T, H, W) where both frames'
    entries must be set). Pairs without a valid pixel are skipped; NaN if none is left or T < 2.
    """
    acc = FrameChangeAccumulator()
    acc.add(depth, mask)
    return acc.result()
