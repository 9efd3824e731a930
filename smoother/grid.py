"""The smoother's working grid: store-resolution frames → a small (h, w) grid and back.

Depth is averaged in log space (a geometric mean), so a downsampled pixel is a relative-error-fair
summary of the pixels it covers and metric scale is kept.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def model_grid_size(height: int, width: int, long_edge: int) -> tuple[int, int]:
    """(h, w) with the long edge at most `long_edge`, the aspect ratio kept, never upsampled."""
    scale = min(1.0, long_edge / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x


def downsample_depth(depth: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., H, W) metres > 0 → (..., h, w) float32: area average of log-depth, then exp."""
    d = _as_tensor(depth).float()
    lead = d.shape[:-2]
    x = d.reshape(-1, 1, *d.shape[-2:]).clamp_min(1e-6).log()
    x = F.interpolate(x, size=size, mode="area")
    return x.exp().reshape(*lead, *size)


def downsample_confidence(confidence: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., H, W) in [0, 1] → (..., h, w) float32 area average."""
    c = _as_tensor(confidence).float()
    lead = c.shape[:-2]
    x = F.interpolate(c.reshape(-1, 1, *c.shape[-2:]), size=size, mode="area")
    return x.reshape(*lead, *size)


def downsample_rgb(rgb: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., H, W, 3) uint8 → (..., 3, h, w) float32 in [0, 1], area average."""
    r = _as_tensor(rgb)
    lead = r.shape[:-3]
    x = r.reshape(-1, *r.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=size, mode="area")
    return x.reshape(*lead, 3, *size)
