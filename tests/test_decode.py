"""Video decoding on real encoded files: counts, timestamps, selection, rotation, geometry, ground truth, errors."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import fsspec
import numpy as np
import pytest
from media import MARKER, make_audio_only, make_dot_video, make_faststart_video, make_video, read_index

from steadydepth.config import DecodeConfig, IntrinsicsConfig
from steadydepth.errors import VideoDecodeError
from steadydepth.video.decode import VideoFile, open_video
from storage.ground_truth import open_ground_truth, sidecar_uri, write_ground_truth


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def video(media: Path) -> Path:
    return make_video(media / "clip 1.mp4", num_frames=30, fps=30.0)


def _indices(source: VideoFile) -> list[int]:
    return [f.source_index for f in source.frames()]


@pytest.mark.parametrize("suffix", ["mp4", "mkv"])
def test_count_timestamps_and_content(media: Path, suffix: str) -> None:
    path = make_video(media / f"count.{suffix}", num_frames=24, fps=24.0)
    src = open_video(path, DecodeConfig())
    info = src.info
    assert info.num_frames == 24 and info.source_fps == pytest.approx(24.0) and info.fps == pytest.approx(24.0)
    assert info.original_size == info.size == (64, 96) and info.rotation == 0 and info.K is None
    assert info.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.name == "count" and not info.has_ground_truth
    frames = list(src.frames())
    assert [f.index for f in frames] == list(range(24))
    assert [read_index(f.rgb) for f in frames] == list(range(24))
    assert [f.timestamp for f in frames] == pytest.approx([i / 24 for i in range(24)], abs=1e-3)
    assert all(f.rgb.shape == (64, 96, 3) and f.rgb.dtype == np.uint8 for f in frames)
    assert all(f.gt_depth is None and f.pose is None for f in frames)


def test_fsspec_url(video: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/steadydepth-test/remote.mp4", video.read_bytes())
    try:
        src = open_video("memory://steadydepth-test/remote.mp4", DecodeConfig(stride=7))
        assert src.info.name == "remote" and src.info.content_hash == hashlib.sha256(video.read_bytes()).hexdigest()
        assert [read_index(f.rgb) for f in src.frames()] == [0, 7, 14, 21, 28]
    finally:
        fs.rm("/steadydepth-test", recursive=True)


def test_name_is_filesystem_safe(video: Path) -> None:
    assert open_video(video, DecodeConfig()).info.name == "clip_1"


@pytest.mark.parametrize(
    ("cfg", "expected", "fps"),
    [
        (DecodeConfig(stride=4), [0, 4, 8, 12, 16, 20, 24, 28], 7.5),
        (DecodeConfig(target_fps=10), list(range(0, 30, 3)), 10.0),
        (DecodeConfig(target_fps=12), list(range(0, 30, 3)), 10.0),  # ceil(30/12) = 3: rate stays <= target
        (DecodeConfig(target_fps=60), list(range(30)), 30.0),
        (DecodeConfig(stride=5, target_fps=10), list(range(0, 30, 5)), 6.0),  # the stricter of the two wins
        (DecodeConfig(max_frames=4), [0, 1, 2, 3], 30.0),
        (DecodeConfig(stride=2, max_frames=4), [0, 2, 4, 6], 15.0),
    ],
)
def test_frame_selection(video: Path, cfg: DecodeConfig, expected: list[int], fps: float) -> None:
    src = open_video(video, cfg)
    assert src.info.num_frames == len(expected) and src.info.fps == pytest.approx(fps)
    frames = list(src.frames())
    assert [f.source_index for f in frames] == expected
    assert [read_index(f.rgb) for f in frames] == expected  # the content really is that frame
    assert [f.index for f in frames] == list(range(len(expected)))
    assert [f.timestamp for f in frames] == pytest.approx([i / 30 for i in expected], abs=1e-3)


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_yields_upright_frames(media: Path, rotation: int) -> None:
    path = make_video(media / f"rot{rotation}.mp4", num_frames=3, size=(96, 64), rotation=rotation)
    src = open_video(path, DecodeConfig())
    assert src.info.rotation == rotation and src.info.original_size == src.info.size == (96, 64)
    for f in src.frames():
        assert f.rgb.shape == (96, 64, 3)
        m = MARKER // 2
        assert f.rgb[:m, :m].mean() > 200  # the marker sits top-left once upright ...
        assert f.rgb[:m, -m:].mean() < 100 and f.rgb[-m - 12 : -12, :m].mean() < 100  # ... and nowhere else
        assert read_index(f.rgb) == f.source_index


def test_rotation_with_resize_and_intrinsics(media: Path) -> None:
    path = make_video(media / "rot90_small.mp4", num_frames=2, size=(96, 64), rotation=90)
    src = open_video(path, DecodeConfig(long_edge=48, intrinsics=IntrinsicsConfig(hfov_deg=60)))
    assert src.info.original_size == (96, 64) and src.info.size == (48, 32)
    fx = 64 / 2 / math.tan(math.radians(30))  # hfov is defined on the displayed (upright) width
    assert src.info.K[0, 0] == pytest.approx(fx * 0.5)
    assert next(iter(src.frames())).rgb.shape == (48, 32, 3)


def test_resize_updates_intrinsics(media: Path) -> None:
    # A white 4×4 block centred on the projection of X with the original K must land on X's projection
    # with the updated K after an anisotropic-rounding resize (96×64 -> 40×27).
    K = np.array([[80.0, 0, 47.5], [0, 80.0, 31.5], [0, 0, 1]])
    X = np.array([13 / 80, -1 / 80, 1.0])
    u, v = (K @ X)[:2]
    assert (u, v) == pytest.approx((60.5, 30.5))
    path = make_dot_video(media / "dot.mp4", centre=(u, v))
    intr = IntrinsicsConfig(fx=80, fy=80, cx=47.5, cy=31.5)
    src = open_video(path, DecodeConfig(long_edge=40, intrinsics=intr))
    assert src.info.size == (27, 40)
    K2 = src.info.K
    sx, sy = 40 / 96, 27 / 64
    assert K2[0, 0] == pytest.approx(80 * sx) and K2[1, 1] == pytest.approx(80 * sy)
    assert K2[0, 2] == pytest.approx((47.5 + 0.5) * sx - 0.5) and K2[1, 2] == pytest.approx((31.5 + 0.5) * sy - 0.5)
    u2, v2 = (K2 @ X)[:2]
    assert ((u2 + 0.5) / 40, (v2 + 0.5) / 27) == pytest.approx(((u + 0.5) / 96, (v + 0.5) / 64))  # same relative spot
    gray = next(iter(src.frames())).rgb.mean(axis=2).astype(np.float64)
    ys, xs = np.mgrid[: gray.shape[0], : gray.shape[1]]
    assert (gray * xs).sum() / gray.sum() == pytest.approx(u2, abs=0.25)
    assert (gray * ys).sum() / gray.sum() == pytest.approx(v2, abs=0.25)


def test_hfov_intrinsics_default_to_centre(video: Path) -> None:
    K = open_video(video, DecodeConfig(intrinsics=IntrinsicsConfig(hfov_deg=90))).info.K
    assert pytest.approx(np.array([[48.0, 0, 47.5], [0, 48.0, 31.5], [0, 0, 1]])) == K


def test_padding_bottom_right(video: Path) -> None:
    intr = IntrinsicsConfig(fx=80, fy=80, cx=47.5, cy=31.5)
    plain = open_video(video, DecodeConfig(long_edge=48, intrinsics=intr)).info
    src = open_video(video, DecodeConfig(long_edge=48, pad_multiple=14, intrinsics=intr, max_frames=2))
    info = src.info
    assert plain.size == (32, 48)
    assert info.size == (42, 56) and info.padding == (0, 10, 0, 8)
    np.testing.assert_allclose(info.K, plain.K)  # bottom/right padding leaves K unchanged
    for f in src.frames():
        assert f.rgb.shape == (42, 56, 3)
        assert not f.rgb[32:].any() and not f.rgb[:, 48:].any()  # padding is black
        assert f.rgb[:4, :4].mean() > 200  # marker still at the top-left
        assert read_index(f.rgb[:32, :48], band=3) == f.source_index


def test_ground_truth_sidecar_attached_and_resized(media: Path) -> None:
    path = make_video(media / "with_gt.mp4", num_frames=6)
    depth = np.empty((6, 64, 96), np.float32)
    for i in range(6):
        depth[i, :, :48], depth[i, :, 48:] = 1.0 + i, 2.0 + i
    depth[:, :4, :4] = np.nan
    poses = np.repeat(np.eye(4)[None], 6, axis=0)
    poses[:, 2, 3] = np.arange(6) * 0.05
    write_ground_truth(sidecar_uri(str(path)), depth, poses, np.eye(3), fps=30.0)

    src = open_video(path, DecodeConfig(stride=2, long_edge=48, pad_multiple=10))
    info = src.info
    assert info.has_ground_truth and info.size == (40, 50) and info.padding == (0, 8, 0, 2)
    frames = list(src.frames())
    assert [f.source_index for f in frames] == [0, 2, 4]
    for f in frames:
        i = f.source_index
        assert f.gt_depth.shape == (40, 50) and f.gt_depth.dtype == np.float32
        assert np.isnan(f.gt_depth[32:]).all() and np.isnan(f.gt_depth[:, 48:]).all()  # padding
        assert np.isnan(f.gt_depth[:2, :2]).all()  # invalid GT stays invalid
        np.testing.assert_array_equal(f.gt_depth[2:32, :24], 1.0 + i)  # nearest neighbour: no mixed depths
        np.testing.assert_array_equal(f.gt_depth[:32, 24:48], 2.0 + i)
        np.testing.assert_array_equal(f.pose, poses[i])


def test_ground_truth_frame_count_mismatch(media: Path) -> None:
    path = make_video(media / "gt_short.mp4", num_frames=4)
    write_ground_truth(sidecar_uri(str(path)), np.ones((3, 64, 96)), np.repeat(np.eye(4)[None], 3, 0), np.eye(3), 30)
    with pytest.raises(VideoDecodeError, match="3 frames but video"):
        open_video(path, DecodeConfig())


def _assert_one_line(err: pytest.ExceptionInfo[VideoDecodeError], name: str) -> None:
    message = str(err.value)
    assert name in message and "\n" not in message, message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError, match="not found") as err:
        open_video(tmp_path / "nope.mp4", DecodeConfig())
    _assert_one_line(err, "nope.mp4")


def test_directory_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError, match="not a file"):
        open_video(tmp_path, DecodeConfig())


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "random.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError) as err:
        open_video(path, DecodeConfig())
    _assert_one_line(err, "random.mp4")


def test_truncated_mp4(tmp_path: Path, video: Path) -> None:
    path = tmp_path / "truncated.mp4"
    data = video.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the index (moov) is written last: it is gone
    with pytest.raises(VideoDecodeError) as err:
        open_video(path, DecodeConfig())
    _assert_one_line(err, "truncated.mp4")


def test_truncated_mp4_with_index_first(tmp_path: Path) -> None:
    full = make_faststart_video(tmp_path / "full.mp4", num_frames=30)
    path = tmp_path / "cut.mp4"
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.8)])  # index intact, last frames missing
    with pytest.raises(VideoDecodeError, match="truncated") as err:
        open_video(path, DecodeConfig())
    _assert_one_line(err, "cut.mp4")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoDecodeError) as err:
        open_video(path, DecodeConfig())
    _assert_one_line(err, "empty.mp4")


def test_audio_only(tmp_path: Path) -> None:
    path = make_audio_only(tmp_path / "audio.mp4")
    with pytest.raises(VideoDecodeError, match="no video stream") as err:
        open_video(path, DecodeConfig())
    _assert_one_line(err, "audio.mp4")


def test_video_track_without_frames(tmp_path: Path) -> None:
    path = make_audio_only(tmp_path / "silent.mkv", empty_video_track=True)
    with pytest.raises(VideoDecodeError, match="no frames") as err:
        open_video(path, DecodeConfig())
    _assert_one_line(err, "silent.mkv")


def test_damage_after_open_is_reported_while_streaming(tmp_path: Path) -> None:
    path = make_video(tmp_path / "changing.mp4", num_frames=10)
    src = open_video(path, DecodeConfig())
    path.write_bytes(b"\x00" * 4096)  # the file is replaced by garbage between open and decode
    with pytest.raises(VideoDecodeError) as err:
        list(src.frames())
    _assert_one_line(err, "changing.mp4")


def test_frames_are_streamed_lazily(video: Path) -> None:
    frames = open_video(video, DecodeConfig()).frames()
    first = next(frames)
    assert first.source_index == 0
    frames.close()  # stopping early closes the container without decoding the rest


def test_sidecar_intrinsics_are_used_when_none_are_configured(tmp_path):
    from steadydepth.synth.generate import generate_benchmark

    video = generate_benchmark(tmp_path, n_videos=1, n_frames=4, size=(48, 64), seed=0)[0]
    true_K = open_ground_truth(sidecar_uri(str(video))).K
    np.testing.assert_allclose(open_video(video).info.K, true_K)
    halved = open_video(video, DecodeConfig(long_edge=32)).info.K
    assert halved[0, 0] == pytest.approx(true_K[0, 0] / 2)
    configured = open_video(video, DecodeConfig(intrinsics={"hfov_deg": 90})).info.K
    assert configured[0, 0] == pytest.approx(32.0)  # the user's value wins over the sidecar's


def test_source_name_matches_the_opened_name(tmp_path):
    from media import make_frame_folder

    from steadydepth.video.open import open_source, source_name

    video = make_video(tmp_path / "my clip.v2.mp4", num_frames=3)
    folder = make_frame_folder(tmp_path / "scene.v2", num_frames=2)
    for path in (video, folder):
        assert source_name(path) == open_source(path).info.name


def test_source_bytes_are_hashed_once_until_the_file_changes(tmp_path: Path, monkeypatch) -> None:
    import steadydepth.video.common as common

    path = tmp_path / "v.mp4"
    path.write_bytes(b"frame bytes" * 1000)
    reads = []
    real = common.sha256_update
    monkeypatch.setattr(common, "sha256_update", lambda d, f: (reads.append(1), real(d, f))[1])
    first = common.sha256_files([str(path)])
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()
    assert common.sha256_files([str(path)]) == first and len(reads) == 1  # the cache key and the ingest: one read
    path.write_bytes(b"other bytes" * 1001)  # rewritten: new size and mtime, so hashed again
    assert common.sha256_files([str(path)]) == hashlib.sha256(path.read_bytes()).hexdigest() != first
    assert len(reads) == 2
