"""Output geometry of a frame source: resize to a long edge, pad to a multiple, and the matching K.

This is the one place where resizing, padding and the intrinsics update live; video decoding and
frame folders both use it.

Conventions:
- Sizes are (height, width).
- Pixel-centre convention: pixel (u, v) covers [u - 0.5, u + 0.5], so the image spans
  [-0.5, W - 0.5]. A resize by sx = W'/W maps u to (u + 0.5) * sx - 0.5; hence
  fx' = fx * sx, cx' = (cx + 0.5) * sx - 0.5 (likewise y). cv2 and swscale resample with the same
  half-pixel alignment.
- Padding is added at the bottom and right only, so pixel (0, 0) and the principal point stay put
  and un-padding is a plain crop `[:h, :w]`. RGB padding is black (0); depth padding is NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from steadydepth.config import IntrinsicsConfig


@dataclass(frozen=True)
class Geometry:
    """How source frames of `original_size` become output frames of `size`."""

    original_size: tuple[int, int]  # displayed source size (after rotation)
    resized_size: tuple[int, int]  # after resize, before padding
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right

    @property
    def size(self) -> tuple[int, int]:
        """Size of the output frames (resized and padded)."""
        top, bottom, left, right = self.padding
        return self.resized_size[0] + top + bottom, self.resized_size[1] + left + right

    @property
    def scale(self) -> tuple[float, float]:
        """(sy, sx): resized size over original size."""
        return (self.resized_size[0] / self.original_size[0], self.resized_size[1] / self.original_size[1])

    @property
    def resizes(self) -> bool:
        return self.resized_size != self.original_size

    def update_K(self, K: np.ndarray | None) -> np.ndarray | None:
        """K of the original frames -> K of the output frames (resize, then shift by the top/left pad)."""
        if K is None:
            return None
        sy, sx = self.scale
        top, _, left, _ = self.padding
        out = np.array(K, dtype=np.float64, copy=True)
        out[0, 0] *= sx
        out[1, 1] *= sy
        out[0, 1] *= sx  # skew, 0 for every camera we know, scaled for completeness
        out[0, 2] = (out[0, 2] + 0.5) * sx - 0.5 + left
        out[1, 2] = (out[1, 2] + 0.5) * sy - 0.5 + top
        return out

    def pad(self, image: np.ndarray, fill: float) -> np.ndarray:
        """Pad a resized (h, w[, c]) image to the output size with `fill`."""
        top, bottom, left, right = self.padding
        if not any(self.padding):
            return image
        widths = [(top, bottom), (left, right)] + [(0, 0)] * (image.ndim - 2)
        return np.pad(image, widths, mode="constant", constant_values=fill)

    def fit_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """Resize (area when shrinking, bilinear when enlarging) and pad an original-size RGB image."""
        if self.resizes:
            shrink = self.resized_size[0] * self.resized_size[1] < self.original_size[0] * self.original_size[1]
            interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (self.resized_size[1], self.resized_size[0]), interpolation=interp)
        return self.pad(rgb, 0)

    def fit_depth(self, depth: np.ndarray) -> np.ndarray:
        """Resize depth of any size to the resized size with nearest neighbour (never mixes depths), pad NaN."""
        depth = np.asarray(depth, dtype=np.float32)
        if depth.shape != self.resized_size:
            # INTER_NEAREST_EXACT samples pixel centres (same convention as K); INTER_NEAREST is off by half a pixel.
            h, w = self.resized_size
            depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        return self.pad(depth, np.nan)


def plan_geometry(original_size: tuple[int, int], long_edge: int | None, pad_multiple: int | None) -> Geometry:
    """Resize so the long edge equals `long_edge` (aspect kept, short edge rounded), then pad bottom/right
    up to a multiple of `pad_multiple`. Either step is skipped when its setting is None."""
    h, w = original_size
    if long_edge is not None and max(h, w) != long_edge:
        s = long_edge / max(h, w)
        h, w = (long_edge, max(1, round(w * s))) if h >= w else (max(1, round(h * s)), long_edge)
    padding = (0, 0, 0, 0)
    if pad_multiple is not None and pad_multiple > 1:
        padding = (0, -h % pad_multiple, 0, -w % pad_multiple)
    return Geometry(original_size=tuple(original_size), resized_size=(h, w), padding=padding)


def intrinsics_from_config(cfg: IntrinsicsConfig, size: tuple[int, int]) -> np.ndarray:
    """3×3 K for frames of `size` (H, W) from the config.

    With hfov_deg: fx = fy = W / 2 / tan(hfov / 2). cx, cy default to the image centre (W - 1) / 2,
    (H - 1) / 2 in the pixel-centre convention.
    """
    h, w = size
    if cfg.hfov_deg is not None:
        fx = fy = w / 2 / math.tan(math.radians(cfg.hfov_deg) / 2)
    else:
        fx, fy = float(cfg.fx), float(cfg.fy)
    cx = cfg.cx if cfg.cx is not None else (w - 1) / 2
    cy = cfg.cy if cfg.cy is not None else (h - 1) / 2
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)
