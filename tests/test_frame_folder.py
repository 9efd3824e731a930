"""RGB-D frame folders (real 7-Scenes clip and synthetic folders), `open_source` and `discover_sources`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from media import make_frame_folder, make_video, read_index

from steadydepth.config import DecodeConfig, IntrinsicsConfig
from steadydepth.errors import FrameFolderError, InputError, VideoDecodeError
from steadydepth.video.decode import VideoFile
from steadydepth.video.frame_folder import FrameFolder, open_frame_folder
from steadydepth.video.open import discover_sources, open_source

SEVEN_SCENES = Path(__file__).resolve().parents[2] / "shared/data/7scenes-redkitchen-150-199"


@pytest.fixture(scope="module")
def seven_scenes() -> Path:
    if not (SEVEN_SCENES / "camera-intrinsics.txt").is_file():
        pytest.skip(f"7-Scenes clip not found at {SEVEN_SCENES}")
    return SEVEN_SCENES


def test_seven_scenes_clip(seven_scenes: Path) -> None:
    src = open_frame_folder(seven_scenes, DecodeConfig())
    info = src.info
    assert info.num_frames == 50 and info.original_size == info.size == (480, 640)
    assert info.has_ground_truth and info.source_fps == 30.0 and info.name == "7scenes-redkitchen-150-199"
    assert info.extra["first_frame_number"] == "150" and info.extra["last_frame_number"] == "199"
    np.testing.assert_allclose(info.K, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    assert len(info.content_hash) == 64
    frames = list(src.frames())
    assert [f.source_index for f in frames] == list(range(50))
    assert frames[-1].timestamp == pytest.approx(49 / 30)
    for f in frames[::7]:
        assert f.rgb.shape == (480, 640, 3) and f.rgb.dtype == np.uint8
        d = f.gt_depth
        assert d.shape == (480, 640) and d.dtype == np.float32
        valid = np.isfinite(d)
        assert 0.5 < valid.mean() < 1.0
        assert d[valid].min() >= 0.5 and d[valid].max() <= 5.0
        raw = cv2.imread(str(seven_scenes / f"frame-{150 + f.source_index:06d}.depth.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(~valid, (raw == 0) | (raw == 65535))
        np.testing.assert_allclose(d[valid], raw[valid] / 1000.0, rtol=1e-6)
        R, T = f.pose[:3, :3], f.pose
        assert T.shape == (4, 4) and T.dtype == np.float64
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-3)  # 7-Scenes poses are rigid to ~2e-4
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-3)
        np.testing.assert_allclose(T[3], [0, 0, 0, 1])
    # the colour really is RGB (cv2 reads BGR)
    bgr = cv2.imread(str(seven_scenes / "frame-000150.color.png"))
    np.testing.assert_array_equal(frames[0].rgb, bgr[:, :, ::-1])


def test_seven_scenes_resized_padded(seven_scenes: Path) -> None:
    src = open_frame_folder(seven_scenes, DecodeConfig(stride=2, max_frames=5, long_edge=320, pad_multiple=14))
    info = src.info
    assert info.num_frames == 5 and info.fps == 15.0
    assert info.size == (252, 322) and info.padding == (0, 12, 0, 2)
    np.testing.assert_allclose(info.K, [[292.5, 0, 159.75], [0, 292.5, 119.75], [0, 0, 1]])
    frames = list(src.frames())
    assert [f.source_index for f in frames] == [0, 2, 4, 6, 8]
    for f in frames:
        assert f.rgb.shape == (252, 322, 3) and f.gt_depth.shape == (252, 322)
        assert np.isnan(f.gt_depth[240:]).all() and np.isnan(f.gt_depth[:, 320:]).all()
        assert not f.rgb[240:].any()
        valid = np.isfinite(f.gt_depth[:240, :320])
        assert valid.mean() > 0.5 and np.nanmin(f.gt_depth) >= 0.5 and np.nanmax(f.gt_depth) <= 5.0


def test_synthetic_folder(tmp_path: Path) -> None:
    folder = make_frame_folder(tmp_path / "scan", num_frames=5, first_number=10)
    src = open_frame_folder(folder, DecodeConfig(stride=2))
    info = src.info
    assert info.num_frames == 3 and info.original_size == (48, 64) and info.has_ground_truth
    frames = list(src.frames())
    assert [f.source_index for f in frames] == [0, 2, 4]
    assert [read_index(f.rgb) for f in frames] == [0, 2, 4]
    for f in frames:
        i = f.source_index
        assert np.isnan(f.gt_depth[:2]).all()  # 0 and 65535 are invalid
        np.testing.assert_allclose(f.gt_depth[2:], (1000 + 100 * i) / 1000.0)
        assert f.pose[0, 3] == pytest.approx(0.1 * i)


def test_number_gaps_show_in_timestamps(tmp_path: Path) -> None:
    folder = make_frame_folder(tmp_path / "gaps", num_frames=3, first_number=5, depth=False, pose=False)
    (folder / "frame-000006.color.png").rename(folder / "frame-000009.color.png")
    src = open_frame_folder(folder, DecodeConfig(folder_fps=10))
    assert [f.timestamp for f in src.frames()] == pytest.approx([0.0, 0.2, 0.4])
    assert src.info.extra["first_frame_number"] == "5"


def test_frames_carry_their_number_beside_their_position(tmp_path: Path) -> None:
    folder = make_frame_folder(tmp_path / "gaps", num_frames=4, first_number=5, depth=False, pose=False)
    (folder / "frame-000006.color.png").rename(folder / "frame-000009.color.png")  # numbers 5, 7, 8, 9
    frames = list(open_frame_folder(folder, DecodeConfig(stride=2)).frames())
    assert [(f.index, f.source_index, f.source_number) for f in frames] == [(0, 0, 5), (1, 2, 8)]


def test_colour_only_folder(tmp_path: Path) -> None:
    folder = make_frame_folder(tmp_path / "rgb", num_frames=2, depth=False, pose=False, intrinsics=False, ext="jpg")
    src = open_frame_folder(folder, DecodeConfig())
    assert not src.info.has_ground_truth and src.info.K is None
    frames = list(src.frames())
    assert all(f.gt_depth is None and f.pose is None for f in frames) and len(frames) == 2


def test_config_intrinsics_override_file(tmp_path: Path) -> None:
    folder = make_frame_folder(tmp_path / "k", num_frames=1)
    K = open_frame_folder(folder, DecodeConfig(intrinsics=IntrinsicsConfig(fx=70, fy=71))).info.K
    np.testing.assert_allclose(K, [[70, 0, 31.5], [0, 71, 23.5], [0, 0, 1]])


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FrameFolderError, match="not found") as err:
        open_frame_folder(tmp_path / "absent", DecodeConfig())
    assert "absent" in str(err.value)


def test_no_colour_frames(tmp_path: Path) -> None:
    (tmp_path / "frame-000000.depth.png").write_bytes(b"")
    with pytest.raises(FrameFolderError, match="no colour frames"):
        open_frame_folder(tmp_path, DecodeConfig())


def test_corrupt_png(tmp_path: Path) -> None:
    folder = make_frame_folder(tmp_path / "bad", num_frames=3)
    (folder / "frame-000001.color.png").write_bytes(b"\x89PNG not really")
    src = open_frame_folder(folder, DecodeConfig())  # the first frame is fine
    with pytest.raises(FrameFolderError, match="frame-000001.color.png") as err:
        list(src.frames())
    assert "\n" not in str(err.value)
    (folder / "frame-000000.color.png").write_bytes(b"garbage")
    with pytest.raises(FrameFolderError, match="frame-000000.color.png"):
        open_frame_folder(folder, DecodeConfig())


def test_corrupt_depth_and_pose(tmp_path: Path) -> None:
    folder = make_frame_folder(tmp_path / "bad", num_frames=2)
    cv2.imwrite(str(folder / "frame-000001.depth.png"), np.zeros((48, 64), np.uint8))  # 8-bit
    with pytest.raises(FrameFolderError, match="frame-000001.depth.png"):
        list(open_frame_folder(folder, DecodeConfig()).frames())
    (folder / "frame-000001.depth.png").unlink()
    with pytest.raises(FrameFolderError, match="frame-000001.depth.png"):
        open_frame_folder(folder, DecodeConfig())
    folder = make_frame_folder(tmp_path / "badpose", num_frames=1)
    (folder / "frame-000000.pose.txt").write_text("1 2 3\n")
    with pytest.raises(FrameFolderError, match="frame-000000.pose.txt"):
        list(open_frame_folder(folder, DecodeConfig()).frames())


def test_depth_without_intrinsics(tmp_path: Path) -> None:
    folder = make_frame_folder(tmp_path / "nok", num_frames=1, intrinsics=False)
    with pytest.raises(FrameFolderError, match="camera-intrinsics.txt"):
        open_frame_folder(folder, DecodeConfig())
    assert open_frame_folder(folder, DecodeConfig(intrinsics=IntrinsicsConfig(hfov_deg=60))).info.K is not None


def test_open_source_dispatch(tmp_path: Path) -> None:
    folder = make_frame_folder(tmp_path / "scan", num_frames=1)
    video = make_video(tmp_path / "clip.mp4", num_frames=2)
    assert isinstance(open_source(folder, DecodeConfig()), FrameFolder)
    assert isinstance(open_source(str(video), DecodeConfig()), VideoFile)
    (tmp_path / "plain").mkdir()
    with pytest.raises(FrameFolderError, match="no frame-NNNNNN"):
        open_source(tmp_path / "plain", DecodeConfig())
    with pytest.raises(VideoDecodeError, match="not found"):
        open_source(tmp_path / "missing.mp4", DecodeConfig())


@pytest.fixture
def batch(tmp_path: Path) -> Path:
    root = tmp_path / "batch"
    root.mkdir()
    # Hidden names (a macOS `._` metadata file, a half-written `.partial` video) are not inputs.
    hidden = ["._b.mp4", ".g.partial.mp4"]
    for name in ["b.mp4", "A.MOV", "c.mkv", "d.webm", "e.avi", "f.m4v", "notes.txt", "readme.md", *hidden]:
        (root / name).write_bytes(b"x")
    make_frame_folder(root / "scan", num_frames=1)
    (root / "b.gt.zarr").mkdir()  # a ground-truth sidecar
    (root / "store.zarr").mkdir()  # a depth store
    (root / "fake.mp4.zarr").mkdir()
    (root / "empty_dir").mkdir()
    return root


def test_discover_folder(batch: Path) -> None:
    names = [Path(p).name for p in discover_sources(batch)]
    assert names == ["A.MOV", "b.mp4", "c.mkv", "d.webm", "e.avi", "f.m4v", "scan"]


def test_discover_glob_list_and_single(batch: Path) -> None:
    assert [Path(p).name for p in discover_sources(str(batch / "*.m*"))] == ["b.mp4", "c.mkv", "f.m4v"]
    assert discover_sources(batch / "scan") == [str(batch / "scan")]
    assert discover_sources(batch / "b.mp4") == [str(batch / "b.mp4")]
    listing = batch / "inputs.txt"
    listing.write_text(f"# my videos\nc.mkv\n\n{batch / 'b.mp4'}  # absolute\nscan\nb.gt.zarr\n")
    assert discover_sources(listing) == [str(batch / "c.mkv"), str(batch / "b.mp4"), str(batch / "scan")]


def test_discover_errors(tmp_path: Path, batch: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        discover_sources(tmp_path / "nowhere")
    # An existing folder without videos is an empty inbox: nothing to do, not an error (the flow says so).
    assert discover_sources(batch / "empty_dir") == []
    with pytest.raises(InputError, match="no videos"):
        discover_sources(str(batch / "*.xyz"))
    with pytest.raises(InputError, match="neither a video"):
        discover_sources(batch / "readme.md")
