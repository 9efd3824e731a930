"""Optical flow between video frames and backward warping along it: one definition for the model, its temporal
filter and the metrics.

Flow convention everywhere: f (H, W, 2), (x, y) in pixels, from frame t to frame t−1, so that
frame_t(p) ≈ frame_{t−1}(p + f(p)) — the form backward warping needs. Flow is OpenCV's DIS ('medium' preset) or
Farnebäck on grey images; no learned weights.

Two backward warps, out(p) = img(p + f(p)) bilinear, that differ only where a sample leaves the image:
- `warp_backward_clamped` (torch): repeats the border values, so every output pixel is defined (the filter's
  memory and the model's cues need a value everywhere);
- `warp_backward_nan_outside` (numpy / OpenCV): any sample that touches outside the image is NaN, so a metric can
  drop it rather than compare against made-up border values.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from steadydepth.errors import InputError

FlowMethod = Literal["dis", "farneback"]
DIS_MIN_SIZE = 12  # OpenCV's DIS needs width or height ≥ 12 px


def optical_flow(gray_to: np.ndarray, gray_from: np.ndarray, method: FlowMethod = "dis") -> np.ndarray:
    """Flow f (H, W, 2) float32 with gray_to(p) ≈ gray_from(p + f(p)): from frame t to frame t−1, the form backward
    warping needs. gray_* (H, W) uint8; DIS 'medium' preset or Farnebäck (OpenCV, no learned weights)."""
    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        h, w = gray_to.shape
        up = -(-DIS_MIN_SIZE // max(h, w))  # DIS refuses images under 12 px on both sides (tiny training crops)
        if up == 1:
            return dis.calc(gray_to, gray_from, None)
        big = [cv2.resize(g, (w * up, h * up), interpolation=cv2.INTER_LINEAR) for g in (gray_to, gray_from)]
        flow = dis.calc(big[0], big[1], None)
        return cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA) / up
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(gray_to, gray_from, None, 0.5, 4, 15, 3, 5, 1.2, 0)
    raise InputError(f"unknown flow method {method!r}; use 'dis' or 'farneback'")


def flows_to_previous(
    rgb: np.ndarray, gray_before: np.ndarray | None = None, method: FlowMethod = "dis"
) -> tuple[list[np.ndarray | None], np.ndarray | None]:
    """For each frame of rgb (n, H, W, 3) uint8 its `optical_flow` to the frame before: frame t−1, or for the first
    frame `gray_before` (the grey image of the frame played before it; None: no flow, entry None). Also the last
    frame's grey image, to continue in the next call."""
    gray = [cv2.cvtColor(np.ascontiguousarray(frame, dtype=np.uint8), cv2.COLOR_RGB2GRAY) for frame in rgb]
    before = [gray_before, *gray[:-1]]
    flows = [None if b is None else optical_flow(g, b, method) for g, b in zip(gray, before, strict=True)]
    return flows, gray[-1] if gray else gray_before


def sampling_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The coordinates p + f(p) a backward warp samples, as cv2.remap's two float32 (H, W) maps (x, then y)."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return grid_x + flow[..., 0], grid_y + flow[..., 1]


def warp_backward_nan_outside(img: np.ndarray, maps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """img(p + f(p)) as float64, by bilinear cv2.remap at `maps` (`sampling_maps`); img (H, W) or (H, W, C) float32.

    Border rule: a sample whose bilinear neighbourhood touches outside the image is NaN (constant NaN border)."""
    out = cv2.remap(img, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan)
    return out.astype(np.float64)


def warp_backward_clamped(y: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """y(p + f(p)), bilinear: y (B, H, W) or (B, C, H, W), flow (B, H, W, 2) in pixels (x, y); the result has
    y's shape.

    Border rule: samples outside the image take the nearest border value (grid_sample's "border" padding)."""
    h, w = flow.shape[1:3]
    yy, xx = torch.meshgrid(
        torch.arange(h, device=y.device, dtype=flow.dtype),
        torch.arange(w, device=y.device, dtype=flow.dtype),
        indexing="ij",
    )
    # grid_sample wants (x, y) in [−1, 1] with −1 / 1 at the centres of the corner pixels (align_corners=True)
    gx = 2 * (xx + flow[..., 0]) / max(w - 1, 1) - 1
    gy = 2 * (yy + flow[..., 1]) / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], dim=-1).to(y.dtype)
    channels = y.ndim == 4
    out = F.grid_sample(y if channels else y[:, None], grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out if channels else out[:, 0]
