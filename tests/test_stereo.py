"""Stereo rendering: uniform shift of a fronto-parallel plane, z-buffer, hole filling, side-by-side export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_export import PAD, H, T, make_store, read_video

from steadydepth.errors import InputError
from steadydepth.export import export_stereo_video, export_video, render_stereo
from steadydepth.export.config import ExportConfig
from steadydepth.export.stereo import forward_warp

K = np.array([[100.0, 0.0, 31.5], [0.0, 100.0, 23.5], [0.0, 0.0, 1.0]])
RNG = np.random.default_rng(0)
TEXTURE = RNG.integers(20, 236, size=(48, 64, 3), dtype=np.uint8)  # no black: holes would show as 0


def test_plane_shifts_uniformly_by_fx_half_ipd_over_z() -> None:
    depth = np.full((48, 64), 2.0, np.float32)
    left, right = render_stereo(TEXTURE, depth, K, ipd_m=0.4)  # fx · 0.2 / 2 = 10 px each way
    np.testing.assert_array_equal(left[:, 10:], TEXTURE[:, :-10])
    np.testing.assert_array_equal(right[:, :-10], TEXTURE[:, 10:])


def test_default_ipd_and_convergence() -> None:
    z = 100.0 * 0.063 / 2 / 3  # depth that gives a 3 px shift at the default ipd
    depth = np.full((48, 64), z, np.float32)
    left, _ = render_stereo(TEXTURE, depth, K)
    np.testing.assert_array_equal(left[:, 3:], TEXTURE[:, :-3])
    left, right = render_stereo(TEXTURE, depth, K, convergence_m=z)  # at the convergence depth: no disparity
    np.testing.assert_array_equal(left, TEXTURE)
    np.testing.assert_array_equal(right, TEXTURE)


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Textured wall at 2 m (shift 10 px) with a red square at 1 m (shift 20 px) in front."""
    rgb = TEXTURE.copy()
    depth = np.full((48, 64), 2.0, np.float32)
    rgb[16:32, 24:40] = (255, 0, 0)
    depth[16:32, 24:40] = 1.0
    return rgb, depth


def test_near_occluder_wins_and_holes_fill_from_the_background() -> None:
    rgb, depth = _scene()
    left, right = render_stereo(rgb, depth, K, ipd_m=0.4)
    red = np.array([255, 0, 0])
    assert (left[16:32, 44:60] == red).all()  # the square moved 20 px and covers the wall that moved 10 px
    assert (right[16:32, 4:20] == red).all()
    assert (left[16:32, 34:44] != red).any(axis=-1).all()  # disoccluded: filled from the wall, not the square
    assert (right[16:32, 20:30] != red).any(axis=-1).all()
    assert (left[16:32, :44] == red).all(axis=-1).sum() == 0


def test_warp_leaves_holes_and_filling_removes_them() -> None:
    rgb, depth = _scene()
    _, _, holes = forward_warp(rgb, depth, 0.2 * 100 / depth)
    assert holes.any()
    depth = RNG.uniform(0.3, 5.0, size=depth.shape).astype(np.float32)  # rough depth: many cracks
    depth[5] = np.nan  # and a row with no valid depth at all
    left, right = render_stereo(rgb, depth, K, ipd_m=0.4)
    assert (left.max(axis=-1) > 0).all() and (right.max(axis=-1) > 0).all()


def test_export_stereo_video_side_by_side(tmp_path: Path) -> None:
    teacher = make_store(tmp_path / "stores")
    refined = make_store(tmp_path / "stores", kind="refined", rgb=False)
    out = export_stereo_video(refined, tmp_path / "vr" / "clip_sbs.mp4", teacher, progress=False)
    frames = read_video(out)
    w = 28 - PAD[3]
    assert len(frames) == T and frames[0].shape == (H - PAD[1], 2 * w, 3)
    with pytest.raises(InputError, match="--overwrite"):
        export_stereo_video(refined, out, teacher, progress=False)
    with pytest.raises(InputError, match="no RGB"):
        export_stereo_video(refined, tmp_path / "other.mp4", progress=False)
    config = ExportConfig(formats=["stereo"], out_dir=str(tmp_path / "out"))
    got = export_video(refined, config, rgb_store_uri=teacher, progress=False)
    assert got["stereo"] == [str(tmp_path / "out" / "clip" / "stereo" / "stereo_sbs.mp4")]
