"""Cheap per-pixel temporal filters: the baselines the learned smoother has to beat.

Each filter is streaming: `update(depth_t[, rgb_t])` takes one (H, W) frame and returns the filtered
frame, keeping state whose size does not grow with T (one or `window` frames). The functions `ema`,
`motion_gated_ema` and `median_filter_temporal` run a filter over a whole (T, H, W) array; `run_baselines` runs
the evaluation's three (BASELINES) with their EvaluateConfig parameters. Streamed, `baseline_filters` makes the
three filters once and `run_filter` feeds each chunk to the same filter, so its state (the EMA, the median's
window of frames) carries over chunk boundaries and the output equals the whole-array run. The outputs go through
the same `evaluation.metrics.evaluate_sequence` as the teacher and the smoother.

Invalid input pixels (NaN, inf, <= 0) do not update the state: the EMAs output their previous estimate
there and the median uses the valid frames of its window (NaN where a pixel has no valid value yet).
State is float64; outputs keep a floating input's dtype.
"""

from __future__ import annotations

import warnings

import numpy as np

from evaluation.config import EvaluateConfig
from steadydepth.errors import InputError

BASELINES = ("ema", "motion_gated_ema", "temporal_median")


def _log_valid(depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(depth, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(d) & (d > 0)
        return np.where(ok, np.log(np.where(ok, d, 1.0)), np.nan), ok


def _out_dtype(depth: np.ndarray) -> np.dtype:
    dt = np.asarray(depth).dtype
    return dt if np.issubdtype(dt, np.floating) else np.dtype(np.float64)


class EMAFilter:
    """Per-pixel exponential moving average in log depth.

    s_0 = ln d_0;  s_t = α ln d_t + (1 − α) s_{t−1};  output exp(s_t).
    alpha ∈ (0, 1]: weight of the new frame (1 = no smoothing). On i.i.d. log-noise the stationary std
    shrinks by sqrt(α / (2 − α)); a step change is followed with time constant ≈ 1/α frames.
    """

    def __init__(self, alpha: float) -> None:
        if not 0 < alpha <= 1:
            raise InputError(f"EMA alpha {alpha} must be in (0, 1]")
        self.alpha = float(alpha)
        self.state: np.ndarray | None = None  # log depth, (H, W) float64

    def reset(self) -> None:
        """Forget the past (e.g. at a scene cut)."""
        self.state = None

    def _blend(self, x: np.ndarray, ok: np.ndarray, gain: np.ndarray | float) -> None:
        if self.state is None:
            self.state = x.copy()
            return
        fresh = ok & ~np.isfinite(self.state)  # first valid observation of a pixel: take it as is
        upd = ok & ~fresh
        g = np.broadcast_to(gain, x.shape)
        self.state[upd] += g[upd] * (x[upd] - self.state[upd])
        self.state[fresh] = x[fresh]

    def update(self, depth: np.ndarray, rgb: np.ndarray | None = None) -> np.ndarray:
        """Filter one (H, W) depth frame; `rgb` is ignored (same signature as the other filters)."""
        x, ok = _log_valid(depth)
        self._blend(x, ok, self.alpha)
        return np.exp(self.state).astype(_out_dtype(depth))


class MotionGatedEMAFilter(EMAFilter):
    """EMA in log depth whose gain rises to 1 (take the current frame) where the frame changed.

    s_t = s_{t−1} + g_t (ln d_t − s_{t−1}), with per-pixel gain g_t = g(m_t) from a motion cue m_t:
    - cue="depth": m = |ln d_t − s_{t−1}| (innovation against the filtered estimate; threshold in log units,
      e.g. 0.1 ≈ 10 %);
    - cue="rgb": m = mean over channels of |I_t − I_{t−1}| with RGB in [0, 1] (threshold in those units);
    - or an explicit (H, W) `motion` array passed to update (threshold in its units).
    Hard gate (softness=0): g = 1 if m > threshold else α. Soft gate: g rises linearly from α at
    m = threshold·(1 − softness) to 1 at m = threshold·(1 + softness).
    """

    def __init__(self, alpha: float, threshold: float, *, cue: str = "depth", softness: float = 0.0) -> None:
        super().__init__(alpha)
        if threshold <= 0 or not 0 <= softness < 1:
            raise InputError(f"threshold {threshold} must be > 0 and softness {softness} in [0, 1)")
        if cue not in ("depth", "rgb"):
            raise InputError(f"unknown motion cue {cue!r}; use 'depth' or 'rgb'")
        self.threshold = float(threshold)
        self.softness = float(softness)
        self.cue = cue
        self.prev_rgb: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the past (e.g. at a scene cut)."""
        super().reset()
        self.prev_rgb = None

    def gain(self, motion: np.ndarray) -> np.ndarray:
        """Per-pixel gain g(m) ∈ [α, 1] (see the class docstring)."""
        if self.softness == 0:
            return np.where(motion > self.threshold, 1.0, self.alpha)
        lo = self.threshold * (1 - self.softness)
        ramp = np.clip((motion - lo) / (2 * self.threshold * self.softness), 0.0, 1.0)
        return self.alpha + (1 - self.alpha) * ramp

    def update(
        self, depth: np.ndarray, rgb: np.ndarray | None = None, motion: np.ndarray | None = None
    ) -> np.ndarray:
        """Filter one (H, W) depth frame; rgb (H, W, 3) uint8 is needed for cue="rgb"."""
        x, ok = _log_valid(depth)
        if motion is not None:
            m = np.asarray(motion, dtype=np.float64)
        elif self.cue == "rgb":
            if rgb is None:
                raise InputError("motion_gated_ema with cue='rgb' needs the RGB frame in every update")
            cur = np.asarray(rgb, dtype=np.float64) / 255.0
            m = np.zeros(x.shape) if self.prev_rgb is None else np.abs(cur - self.prev_rgb).mean(axis=-1)
            self.prev_rgb = cur
        else:
            m = np.zeros(x.shape) if self.state is None else np.abs(x - self.state)
        self._blend(x, ok, self.gain(np.nan_to_num(m, nan=0.0)))
        return np.exp(self.state).astype(_out_dtype(depth))


class TemporalMedianFilter:
    """Causal per-pixel median over the last `window` frames (fewer at the start).

    out_t(p) = median{d_k(p) : t − window < k ≤ t, d_k(p) valid}; for an even count the mean of the two
    middle values; NaN where none of those frames is valid. State: a ring buffer of `window` frames.
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise InputError(f"median window {window} must be >= 1")
        self.window = int(window)
        self.buffer: np.ndarray | None = None
        self.count = 0

    def reset(self) -> None:
        """Forget the past (e.g. at a scene cut)."""
        self.buffer = None
        self.count = 0

    def update(self, depth: np.ndarray, rgb: np.ndarray | None = None) -> np.ndarray:
        """Filter one (H, W) depth frame; `rgb` is ignored."""
        d = np.asarray(depth, dtype=np.float64)
        if self.buffer is None:
            self.buffer = np.full((self.window, *d.shape), np.nan)
        with np.errstate(invalid="ignore"):
            self.buffer[self.count % self.window] = np.where(np.isfinite(d) & (d > 0), d, np.nan)
        self.count += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels -> NaN is what we want
            return np.nanmedian(self.buffer, axis=0).astype(_out_dtype(depth))


def run_filter(
    filt: EMAFilter | TemporalMedianFilter,
    depth_seq: np.ndarray,
    rgb_seq: np.ndarray | None = None,
    motion: np.ndarray | None = None,
) -> np.ndarray:
    """Filter (T, H, W) frames with `filt`, continuing from its state: the next chunk of a video, or all of it."""
    depth_seq = np.asarray(depth_seq)
    if depth_seq.ndim != 3:
        raise InputError(f"depth_seq has shape {depth_seq.shape}; pass a (T, H, W) array")
    out = np.empty(depth_seq.shape, dtype=_out_dtype(depth_seq))
    for t in range(depth_seq.shape[0]):
        kwargs = {} if motion is None else {"motion": motion[t]}
        out[t] = filt.update(depth_seq[t], None if rgb_seq is None else rgb_seq[t], **kwargs)
    return out


def ema(depth_seq: np.ndarray, alpha: float) -> np.ndarray:
    """Log-depth EMA over a (T, H, W) array (see EMAFilter)."""
    return run_filter(EMAFilter(alpha), depth_seq)


def motion_gated_ema(
    depth_seq: np.ndarray,
    rgb_seq: np.ndarray | None = None,
    *,
    alpha: float,
    threshold: float,
    motion: np.ndarray | None = None,
    softness: float = 0.0,
) -> np.ndarray:
    """Motion-gated log-depth EMA over a (T, H, W) array (see MotionGatedEMAFilter).

    Cue: `motion` (T, H, W) if given, else the RGB difference if rgb_seq (T, H, W, 3) uint8 is given, else
    the log-depth innovation |ln d_t − s_{t−1}|. `threshold` is in the chosen cue's units.
    """
    cue = "rgb" if rgb_seq is not None and motion is None else "depth"
    filt = MotionGatedEMAFilter(alpha, threshold, cue=cue, softness=softness)
    return run_filter(filt, depth_seq, rgb_seq, None if motion is None else np.asarray(motion))


def median_filter_temporal(depth_seq: np.ndarray, window: int) -> np.ndarray:
    """Causal temporal median over a (T, H, W) array (see TemporalMedianFilter)."""
    return run_filter(TemporalMedianFilter(window), depth_seq)


def baseline_params(cfg: EvaluateConfig) -> dict[str, dict[str, float]]:
    """The baselines' parameters as recorded in the report."""
    return {
        "ema": {"alpha": cfg.ema_alpha},
        "motion_gated_ema": {
            "alpha": cfg.gated_ema_alpha,
            "threshold": cfg.gated_ema_threshold,
            "softness": cfg.gated_ema_softness,
            "cue": "depth",
        },
        "temporal_median": {"window": cfg.median_window},
    }


def baseline_filters(cfg: EvaluateConfig) -> dict[str, EMAFilter | TemporalMedianFilter]:
    """Fresh filters of the evaluation's baselines (BASELINES), with their EvaluateConfig parameters."""
    return {
        "ema": EMAFilter(cfg.ema_alpha),
        # depth cue: works without RGB and ignores texture; innovation > threshold (log units) resets the pixel
        "motion_gated_ema": MotionGatedEMAFilter(
            cfg.gated_ema_alpha, cfg.gated_ema_threshold, cue="depth", softness=cfg.gated_ema_softness
        ),
        "temporal_median": TemporalMedianFilter(cfg.median_window),
    }


def run_baselines(depth: np.ndarray, cfg: EvaluateConfig) -> dict[str, np.ndarray]:
    """The causal per-pixel baselines over a (T, H, W) teacher depth video."""
    return {name: run_filter(filt, depth) for name, filt in baseline_filters(cfg).items()}
