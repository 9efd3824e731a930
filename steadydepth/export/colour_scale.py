"""One fixed depth colour scale per video, so preview colours change only when depth does.

Per-frame normalisation (what most depth viewers do) hides exactly the flicker SteadyDepth removes: a frame
whose whole depth jumps by 20 % looks the same as its neighbours. Here the range is chosen once, from
robust percentiles of inverse depth over sampled teacher frames, and every frame of every panel (teacher,
refined, GT) is coloured with it. Inverse depth spreads the near range, where errors matter most.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib
import numpy as np

from steadydepth.export.source import ExportSource


@dataclass(frozen=True)
class DepthColourScale:
    """Maps metres to RGB through a matplotlib colormap over inverse depth in [1/far_m, 1/near_m]."""

    near_m: float
    far_m: float
    cmap: str = "turbo"
    lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.near_m < self.far_m:
            raise ValueError(f"colour scale needs 0 < near < far, got {self.near_m}, {self.far_m}")
        table = matplotlib.colormaps[self.cmap](np.linspace(0.0, 1.0, 256))[:, :3]
        object.__setattr__(self, "lut", np.round(table * 255).astype(np.uint8))

    def normalise(self, depth: np.ndarray) -> np.ndarray:
        """Inverse depth mapped to [0, 1] (0 = far_m or farther, 1 = near_m or nearer); NaN where invalid."""
        d = np.asarray(depth, dtype=np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(np.isfinite(d) & (d > 0), 1.0 / d, np.nan)
        lo, hi = 1.0 / self.far_m, 1.0 / self.near_m
        return np.clip((inv - lo) / (hi - lo), 0.0, 1.0)

    def __call__(self, depth: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 colours; invalid depth is black."""
        t = self.normalise(depth)
        index = np.rint(np.nan_to_num(t, nan=0.0) * 255).astype(np.intp)
        rgb = self.lut[index]
        rgb[np.isnan(t)] = 0
        return rgb


def fixed_scale(
    source: ExportSource, *, cmap: str = "turbo", samples: int = 16, percentiles: tuple[float, float] = (2.0, 98.0)
) -> DepthColourScale:
    """The video's colour scale from robust percentiles of depth over `samples` evenly spaced frames."""
    positions = np.unique(np.linspace(0, source.num_frames - 1, min(samples, source.num_frames)).round().astype(int))
    rows, cols = source.crop
    values = []
    for t in positions:
        d = source.depth.read(int(t), int(t) + 1, ["depth"])["depth"][0, rows, cols]
        d = d[np.isfinite(d) & (d > 0)]
        values.append(d[:: max(1, d.size // 20000)])  # a subsample per frame is plenty for percentiles
    pooled = np.concatenate(values) if values else np.empty(0)
    if pooled.size == 0:
        return DepthColourScale(0.5, 10.0, cmap)
    near, far = (float(v) for v in np.percentile(pooled, percentiles))
    if far <= near * 1.05:  # (nearly) constant depth: widen so a change of scale still shows as colour
        mid = np.sqrt(near * far)
        near, far = mid / 1.5, mid * 1.5
    return DepthColourScale(near, far, cmap)
