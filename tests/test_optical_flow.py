"""Optical flow and the two backward warps (steadydepth/video/optical_flow.py) on hand-made cases."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from steadydepth.video.optical_flow import (
    DIS_MIN_SIZE,
    flows_to_previous,
    optical_flow,
    sampling_maps,
    warp_backward_clamped,
    warp_backward_nan_outside,
)


@pytest.mark.parametrize("size", [8, 32])
def test_dis_flow_of_a_one_pixel_shift_also_on_images_under_dis_minimum(size: int) -> None:
    """DIS refuses images under 12 px on both sides (training crops can be 8 px): those are upsampled first."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.random((size, size + 12)).astype(np.float32), (0, 0), 1.2)
    texture = ((texture - texture.min()) / (texture.max() - texture.min()) * 255).astype(np.uint8)
    before, now = np.ascontiguousarray(texture[:, 5 : 5 + size]), np.ascontiguousarray(texture[:, 4 : 4 + size])
    flow = optical_flow(now, before)  # now(p) = before(p − 1 in x): the flow to the frame before is −1 in x
    assert flow.shape == (size, size, 2) and (size < DIS_MIN_SIZE) == (size == 8)
    inner = flow[2:-2, 2:-2]
    assert np.median(inner[..., 0]) == pytest.approx(-1.0, abs=0.1)
    assert np.median(np.abs(inner[..., 1])) < 0.1


def test_flows_to_previous_starts_without_flow_and_carries_the_last_grey_image():
    rgb = np.random.default_rng(1).integers(0, 256, size=(3, 16, 20, 3), dtype=np.uint8)
    flows, last = flows_to_previous(rgb)
    assert flows[0] is None and all(f.shape == (16, 20, 2) for f in flows[1:])
    np.testing.assert_array_equal(last, cv2.cvtColor(rgb[-1], cv2.COLOR_RGB2GRAY))
    carried, _ = flows_to_previous(rgb[2:], gray_before=cv2.cvtColor(rgb[1], cv2.COLOR_RGB2GRAY))
    np.testing.assert_array_equal(carried[0], flows[2])  # the next call continues where the last one stopped


def test_warp_backward_clamped_samples_along_the_flow_and_repeats_the_border():
    y = torch.arange(20.0).reshape(1, 4, 5)  # value = 5 · row + col
    flow = torch.zeros(1, 4, 5, 2)
    flow[..., 0], flow[..., 1] = 1.0, 0.5  # sample one pixel right, half a pixel down
    out = warp_backward_clamped(y, flow)[0]
    rows, cols = torch.meshgrid(torch.arange(4.0), torch.arange(5.0), indexing="ij")
    inside = (rows <= 2) & (cols <= 3)
    assert torch.allclose(out[inside], (5 * (rows + 0.5) + cols + 1)[inside])
    assert torch.allclose(out[:3, 4], 5 * (rows[:3, 4] + 0.5) + 4)  # past the right edge: the edge column


def test_warp_backward_nan_outside_samples_along_the_flow_and_drops_samples_past_the_border():
    img = np.arange(20.0, dtype=np.float32).reshape(4, 5)  # value = 5 · row + col
    flow = np.zeros((4, 5, 2), np.float32)
    flow[..., 0], flow[..., 1] = 1.0, 0.5  # sample one pixel right, half a pixel down
    out = warp_backward_nan_outside(img, sampling_maps(flow))
    rows, cols = np.mgrid[0:4, 0:5]
    inside = (rows <= 2) & (cols <= 2)  # the bilinear neighbourhood stays inside the image
    assert out.dtype == np.float64
    np.testing.assert_allclose(out[inside], (5 * (rows + 0.5) + cols + 1)[inside], atol=1e-5)
    assert np.isnan(out[:, 4]).all() and np.isnan(out[3]).all()  # past the right and the bottom edge: NaN
    assert np.isnan(out[:, 3]).all()  # exactly on the last column: its bilinear neighbour is outside, so NaN too
