"""The simulated teacher: ground-truth depth plus a realistic, flickering error model (version `MODEL_VERSION`).

All errors are multiplicative (added in log-depth), so they are scale-free like a metric network's. For one frame:

    log D = blur_σ(log G_filled) + b_video + s_frame + burst + E_lowfreq + outliers + E_jitter + n

Terms, with their SyntheticTeacherConfig parameters:
- G_filled: invalid GT pixels (NaN, ≤ 0) take the nearest valid depth, so the output is always finite and positive.
- blur_σ (`edge_bleed`, σ = edge_bleed · W pixels): edge bleeding, depth smeared across discontinuities.
- b_video (`scale_bias`, uniform ±): a constant metric-scale error per video.
- s_frame (`scale_jitter`, std): per-frame global scale jitter, the main flicker.
- burst (`burst_rate`, `burst_max_frames`, `burst_strength`): sporadic bursts of 2..max frames with extra scale
  error and an extra spatial pattern, both under a sin-shaped envelope.
- E_lowfreq (`lowfreq_amplitude`, `lowfreq_drift`): smooth spatial error, a random Fourier field g (standardised
  per frame) whose phases drift slowly with the frame number.
- outliers (`outlier_area`, `outlier_strength`): where |g| is in its top `outlier_area` fraction, up to
  ±strength more: regions the network gets badly wrong (most δ1 failures).
- E_jitter (`spatial_jitter`, std): a fresh smooth field every frame, i.e. flicker that is not a global scale.
- n (`pixel_noise`, std): per-pixel noise.

Randomness comes only from hashes of (seed, video_key, frame), and the time-varying terms are explicit functions
of the frame number, so a frame's output never depends on which other frames are in the batch or on call order.

Confidence in [0, 1] = 0.95 · exp(−c_edge · edge) · exp(−c_err · |E_lowfreq + outliers|) · (1 − 0.5 · burst): low at the
teacher's own depth edges (where bleeding errs), where the smooth error is large, and during bursts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from steadydepth.config import SyntheticTeacherConfig

MODEL_VERSION = "sim-1"  # bump whenever the same parameters would produce different depth

_FILL_DEPTH = 2.0  # metres, used only when a frame has no valid GT pixel at all
_N_WAVES = 12  # sinusoids per Fourier field
_COARSE = 8  # Fourier fields are evaluated on a grid this much coarser, then bilinearly upsampled
_C_EDGE = 6.0  # confidence fall-off with the edge score
_C_ERR = 4.0  # confidence fall-off with the smooth error
_BURST_SPATIAL = 0.7  # a burst's spatial pattern, relative to its scale error
_OUTLIER_RAMP = 0.3  # width (in std of g) of the transition into an outlier region
# Streams of the hash-seeded generators: each component draws from its own.
_S_VIDEO, _S_FRAME, _S_JITTER_FIELD, _S_BURST, _S_BURST_FIELD, _S_NOISE = range(6)


def _generator(params: SyntheticTeacherConfig, video_key: str, stream: int, frame: int = 0) -> np.random.Generator:
    """A generator seeded by (seed, video_key, stream, frame) only."""
    key = int.from_bytes(hashlib.sha256(video_key.encode()).digest()[:8], "little")
    seed = params.seed % 2**64
    entropy = [seed & 0xFFFFFFFF, seed >> 32, key & 0xFFFFFFFF, key >> 32, stream, frame]
    return np.random.default_rng(np.random.SeedSequence(entropy))


@dataclass(frozen=True)
class FourierField:
    """A smooth random field: sum of sinusoids with wave numbers in cycles per image long side.

    value(x, frame) = sqrt(2/n) · Σ cos(2π k·x + phase + speed · frame); its spatial std is about 1.
    """

    kx: np.ndarray
    ky: np.ndarray
    phase: np.ndarray
    speed: np.ndarray  # radians per frame

    @classmethod
    def sample(cls, rng: np.random.Generator, drift: float = 0.0, f_lo: float = 0.4, f_hi: float = 2.5) -> FourierField:
        """Random waves with frequencies log-uniform in [f_lo, f_hi] cycles per image; phases drift by ~drift/frame."""
        angle = rng.uniform(0, 2 * np.pi, _N_WAVES)
        freq = np.exp(rng.uniform(np.log(f_lo), np.log(f_hi), _N_WAVES))
        speed = drift * rng.uniform(0.5, 1.5, _N_WAVES) * rng.choice([-1.0, 1.0], _N_WAVES)
        return cls(freq * np.cos(angle), freq * np.sin(angle), rng.uniform(0, 2 * np.pi, _N_WAVES), speed)

    def evaluate(self, size: tuple[int, int], frame: int = 0) -> np.ndarray:
        """(H, W) float32 at `frame`; the field is smooth, so it is summed on an 8× coarser grid and upsampled."""
        h, w = size
        hc, wc = max(2, -(-h // _COARSE)), max(2, -(-w // _COARSE))
        scale = 2 * np.pi / max(h, w)
        # Coarse samples at the full-resolution pixel positions cv2.resize maps them to (centre-aligned).
        x = ((np.arange(wc) + 0.5) * w / wc - 0.5 - (w - 1) / 2) * scale
        y = ((np.arange(hc) + 0.5) * h / hc - 0.5 - (h - 1) / 2) * scale
        phase = self.phase + self.speed * frame
        arg = self.kx[:, None, None] * x + self.ky[:, None, None] * y[:, None] + phase[:, None, None]
        coarse = np.sqrt(2.0 / len(self.kx)) * np.cos(arg).sum(axis=0)
        return cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def fill_invalid(gt_depth: np.ndarray) -> np.ndarray:
    """GT with invalid pixels (NaN, inf, ≤ 0) replaced by the nearest valid depth; all-invalid → 2 m."""
    gt = np.asarray(gt_depth, dtype=np.float32)
    valid = np.isfinite(gt) & (gt > 0)
    if valid.all():
        return gt.copy()
    if not valid.any():
        return np.full(gt.shape, _FILL_DEPTH, dtype=np.float32)
    # Nearest valid pixel: OpenCV labels each zero (= valid) pixel in raster order and gives every pixel the
    # label of its nearest one; much faster than scipy's exact feature transform.
    _, labels = cv2.distanceTransformWithLabels(
        (~valid).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5, labelType=cv2.DIST_LABEL_PIXEL
    )
    return gt[valid][labels - 1]


def burst_intensity(
    params: SyntheticTeacherConfig, video_key: str, frame: int
) -> tuple[float, list[tuple[int, float]]]:
    """(log-scale offset, [(start frame, envelope)]) of the bursts covering `frame`.

    Each frame s starts a burst with probability burst_rate, lasting 2..burst_max_frames frames with a
    sin-shaped envelope; only the last burst_max_frames starts can cover `frame`, so this is O(1) and
    independent of any other call.
    """
    offset, active = 0.0, []
    if params.burst_rate <= 0 or params.burst_strength <= 0:
        return offset, active
    for start in range(max(0, frame - params.burst_max_frames + 1), frame + 1):
        rng = _generator(params, video_key, _S_BURST, start)
        begins, length = rng.random() < params.burst_rate, int(rng.integers(2, params.burst_max_frames + 1))
        sign, size = rng.choice([-1.0, 1.0]), rng.uniform(0.6, 1.4)
        if begins and frame < start + length:
            env = float(np.sin(np.pi * (frame - start + 0.5) / length))
            offset += params.burst_strength * sign * size * env
            active.append((start, env))
    return offset, active


def simulate_teacher(
    gt_depth: np.ndarray, *, video_key: str, frame: int, params: SyntheticTeacherConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Simulated teacher depth (H, W) float32 > 0 and confidence (H, W) float32 in [0, 1] for one GT frame.

    gt_depth: (H, W) metres, NaN (or ≤ 0) where invalid. Deterministic in (params, video_key, frame).
    """
    if frame < 0:
        raise ValueError(f"frame number must be ≥ 0, got {frame}")
    h, w = gt_depth.shape
    log_gt = np.log(fill_invalid(gt_depth))

    sigma = params.edge_bleed * w
    log_pred = cv2.GaussianBlur(log_gt, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) if sigma > 0.2 else log_gt

    video_rng = _generator(params, video_key, _S_VIDEO)
    bias = video_rng.uniform(-params.scale_bias, params.scale_bias)
    lowfreq = FourierField.sample(video_rng, drift=params.lowfreq_drift)
    frame_rng = _generator(params, video_key, _S_FRAME, frame)
    jitter = params.scale_jitter * frame_rng.standard_normal()
    burst, bursts = burst_intensity(params, video_key, frame)

    g = lowfreq.evaluate((h, w), frame)
    g = (g - g.mean()) / max(float(g.std()), 1e-6)  # same strength in every frame and video
    smooth_err = params.lowfreq_amplitude * g
    if params.outlier_area > 0 and params.outlier_strength > 0:
        mag = np.abs(g)
        threshold = float(np.quantile(mag.ravel()[:: max(1, mag.size // 20000)], 1.0 - params.outlier_area))
        ramp = np.clip((mag - threshold) / _OUTLIER_RAMP + 0.5, 0.0, 1.0)  # soft region borders
        smooth_err += params.outlier_strength * np.sign(g) * ramp
    err = smooth_err + np.float32(bias + jitter + burst)
    if params.spatial_jitter > 0:
        jitter_field = FourierField.sample(_generator(params, video_key, _S_JITTER_FIELD, frame))
        err += params.spatial_jitter * jitter_field.evaluate((h, w))
    for start, env in bursts:  # each burst also has its own spatial pattern
        burst_field = FourierField.sample(_generator(params, video_key, _S_BURST_FIELD, start))
        err += _BURST_SPATIAL * params.burst_strength * env * burst_field.evaluate((h, w))
    if params.pixel_noise > 0:
        noise_rng = _generator(params, video_key, _S_NOISE, frame)
        err += params.pixel_noise * noise_rng.standard_normal((h, w), dtype=np.float32)
    depth = np.exp(log_pred + err).astype(np.float32)

    # Edge score: the teacher's own log-depth gradient times the blur width ≈ how much bleeding can err here.
    gx = cv2.Sobel(log_pred, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(log_pred, cv2.CV_32F, 0, 1, ksize=3) / 8
    edge = np.sqrt(gx * gx + gy * gy) * max(sigma, 1.0)
    burst_env = min(sum(env for _, env in bursts), 1.0)
    conf = 0.95 * np.exp(-_C_EDGE * edge - _C_ERR * np.abs(smooth_err)) * (1.0 - 0.5 * burst_env)
    return depth, np.clip(conf, 0.0, 1.0).astype(np.float32)
