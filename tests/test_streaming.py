"""The per-chunk maths on its own: chunks with the state carried == one call over the whole video; the pre-roll."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smoother.config import SmootherConfig
from smoother.grid import model_grid_size
from smoother.model import ResidualSmoother
from smoother.streaming import StreamState, preroll_span, refine_chunk

N, H, W = 10, 16, 24
CFG = SmootherConfig(d_model=16, n_layers=1, headdim=8, chunk_size=4, depth_long_edge=12)


def _video() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Depth (N, H, W) with a moving bar and flicker, confidence and a panning RGB texture."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    depth = np.stack([np.where((xx >= 3 + t) & (xx < 9 + t), 1.5, 4.0 + 0.02 * xx + 0.01 * yy) for t in range(N)])
    depth = depth * np.exp(rng.normal(0, 0.03, (N, 1, 1)) + rng.normal(0, 0.01, (N, H, W)))
    texture = rng.integers(0, 256, (H, W + N, 3), dtype=np.uint8)
    rgb = np.stack([texture[:, t : t + W] for t in range(N)])
    confidence = rng.uniform(0.2, 1.0, (N, H, W)).astype(np.float32)
    return torch.from_numpy(depth.astype(np.float32)), confidence, rgb


def _model(cfg: SmootherConfig) -> ResidualSmoother:
    """float64 (chunked == whole up to rounding), head randomised so ΔD ≠ 0 and the filter's gate is partly open."""
    torch.manual_seed(0)
    model = ResidualSmoother(cfg).double().eval()
    torch.nn.init.normal_(model.head.weight, std=0.3)
    with torch.no_grad():
        model.head.bias[1] = 0.5
    return model


@pytest.mark.parametrize("band", ["full", "detail", "off"])
def test_chunks_with_the_state_carried_equal_one_call(band):
    model = _model(CFG.model_copy(update={"temporal_filter": band}))
    depth, confidence, rgb = _video()
    grid = model_grid_size(H, W, CFG.depth_long_edge)
    with torch.inference_mode():
        (whole, whole_residual), _ = refine_chunk(model, depth, confidence, rgb, StreamState(), grid)
        stream, parts = StreamState(), []
        for start in range(0, N, 3):  # chunks of 3, 3, 3, 1
            frames = slice(start, start + 3)
            (refined, _), stream = refine_chunk(model, depth[frames], confidence[frames], rgb[frames], stream, grid)
            parts.append(refined)
    assert whole.shape == (N, H, W) and whole.dtype == torch.float32
    assert whole_residual.abs().max() > 0.05  # a non-trivial comparison
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-6, atol=0)


def test_replay_only_advances_the_state():
    model = _model(CFG)
    depth, confidence, rgb = _video()
    grid = model_grid_size(H, W, CFG.depth_long_edge)
    with torch.inference_mode():
        result, replayed = refine_chunk(model, depth[:4], confidence[:4], rgb[:4], StreamState(), grid, replay=True)
        _, written = refine_chunk(model, depth[:4], confidence[:4], rgb[:4], StreamState(), grid)
        assert result is None
        assert torch.equal(replayed.filtered, written.filtered) and np.array_equal(replayed.gray, written.gray)
        (after_replay, _), _ = refine_chunk(model, depth[4:], confidence[4:], rgb[4:], replayed, grid)
        (after_write, _), _ = refine_chunk(model, depth[4:], confidence[4:], rgb[4:], written, grid)
    assert torch.equal(after_replay, after_write)


def test_preroll_span():
    assert preroll_span(100, 16) == (1, 16)  # frames 15, …, 1, played backwards
    assert preroll_span(5, 16) == (1, 5)  # a short video: all its frames but frame 0
    assert preroll_span(100, 0) == preroll_span(100, 1) == preroll_span(1, 16) == (1, 1)  # none
