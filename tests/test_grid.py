"""The smoother's working grid: sizes, log-space averaging, layout of RGB."""

from __future__ import annotations

import numpy as np
import torch

from smoother.grid import downsample_confidence, downsample_depth, downsample_rgb, model_grid_size


def test_grid_size_keeps_aspect_and_never_upsamples():
    assert model_grid_size(192, 320, 64) == (38, 64)
    assert model_grid_size(320, 192, 64) == (64, 38)
    assert model_grid_size(30, 40, 64) == (30, 40)


def test_depth_is_averaged_in_log_space():
    depth = np.array([[1.0, 4.0], [1.0, 4.0]], np.float32)[None]  # (1, 2, 2)
    out = downsample_depth(depth, (1, 1))
    assert torch.allclose(out, torch.tensor([[[2.0]]]))  # geometric mean of 1 and 4
    const = np.full((3, 8, 12), 2.5, np.float32)
    assert torch.allclose(downsample_depth(const, (4, 6)), torch.full((3, 4, 6), 2.5))


def test_rgb_and_confidence_layout():
    rgb = np.zeros((2, 4, 6, 3), np.uint8)
    rgb[..., 0] = 255
    out = downsample_rgb(rgb, (2, 3))
    assert out.shape == (2, 3, 2, 3)
    assert torch.allclose(out[:, 0], torch.ones(2, 2, 3)) and torch.allclose(out[:, 1:], torch.zeros(2, 2, 2, 3))
    conf = np.tile(np.array([0.0, 1.0], np.float32), (5, 4, 3))  # (5, 4, 6) alternating columns
    assert torch.allclose(downsample_confidence(conf, (2, 3)), torch.full((5, 2, 3), 0.5))
