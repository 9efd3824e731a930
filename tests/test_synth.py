"""Synthetic benchmark generator: files, sidecars, determinism, geometry and scenarios."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from steadydepth.synth.generate import benchmark_intrinsics, generate_benchmark, render_video
from steadydepth.synth.scenarios import SCENARIOS
from storage.ground_truth import open_ground_truth, sidecar_uri

SIZE = (64, 96)
FRAMES = 10
SEED = 3


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("bench")
    return generate_benchmark(out, n_videos=5, n_frames=FRAMES, size=SIZE, seed=SEED, fps=24.0)


def _decode(path: Path) -> tuple[np.ndarray, Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, stream.average_rate


def test_names_cycle_scenarios(bench: list[Path]) -> None:
    assert [p.stem for p in bench] == [f"{i:02d}-{s.name}" for i, s in enumerate(SCENARIOS)]
    assert [p.stem for p in bench][:4] == ["00-vr-head", "01-static-camera", "02-fast-motion", "03-moving-objects"]
    for p in bench:
        assert p.suffix == ".mp4" and p.is_file()
        assert Path(sidecar_uri(str(p))).is_dir()


def test_sidecar_consistent_with_mp4(bench: list[Path]) -> None:
    for index, path in enumerate(bench):
        gt = open_ground_truth(sidecar_uri(str(path)))
        frames, rate = _decode(path)
        assert gt.num_frames == len(frames) == FRAMES
        assert gt.size == frames.shape[1:3] == SIZE
        assert gt.fps == pytest.approx(float(rate)) == pytest.approx(24.0)
        np.testing.assert_allclose(gt.K, benchmark_intrinsics(SIZE))
        assert gt.group.attrs["scenario"] == SCENARIOS[index].name
        assert gt.group.attrs["seed"] == SEED
        # The mp4 shows the rendered frames (lossy, so compare by PSNR).
        rendered = render_video(index, n_frames=FRAMES, size=SIZE, seed=SEED, fps=24.0)
        np.testing.assert_array_equal(gt.depth(FRAMES - 1), rendered.depth[-1])
        mse = np.mean((frames.astype(np.float64) - rendered.rgb) ** 2)
        assert 10 * np.log10(255**2 / mse) > 25


def test_depth_range_and_validity(bench: list[Path]) -> None:
    for path in bench:
        depth = open_ground_truth(sidecar_uri(str(path))).group["depth"][:]
        assert depth.dtype == np.float32
        assert np.isfinite(depth).all()
        assert depth.min() > 0.25 and depth.max() < 11.0


def test_depth_has_sharp_edges_and_thin_structures() -> None:
    video = render_video(4, n_frames=2, size=(96, 160), seed=SEED)
    d = video.depth[0]
    jump = np.abs(np.log(d[:, 1:] / d[:, :-1]))
    assert (jump > np.log(1.5)).mean() > 0.002  # many sharp depth discontinuities
    # Thin poles: narrow runs (≤ 4 px) of much nearer depth than both neighbours on the same row.
    near = (d[:, 2:-2] < 0.8 * d[:, :-4]) & (d[:, 2:-2] < 0.8 * d[:, 4:])
    assert near.any(axis=1).mean() > 0.3


def test_poses_are_rigid(bench: list[Path]) -> None:
    for path in bench:
        poses = open_ground_truth(sidecar_uri(str(path))).group["pose"][:]
        assert poses.shape == (FRAMES, 4, 4)
        rot = poses[:, :3, :3]
        np.testing.assert_allclose(rot.transpose(0, 2, 1) @ rot, np.broadcast_to(np.eye(3), rot.shape), atol=1e-9)
        np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-9)
        np.testing.assert_array_equal(poses[:, 3], np.broadcast_to([0.0, 0.0, 0.0, 1.0], (FRAMES, 4)))


def test_static_camera_with_moving_object() -> None:
    video = render_video(1, n_frames=30, size=SIZE, seed=SEED)
    assert video.plan.scenario.name == "static-camera"
    assert (video.plan.poses == video.plan.poses[0]).all()
    changed = np.any(video.depth != video.depth[:1], axis=0)
    assert 0.005 < changed.mean() < 0.5  # the object moves; the rest of the scene is still


def test_moving_cameras_move() -> None:
    for index in (0, 2, 3, 4):
        poses = render_video(index, n_frames=8, size=(32, 48), seed=SEED).plan.poses
        assert np.linalg.norm(poses[-1, :3, 3] - poses[0, :3, 3]) > 1e-3
    fast = render_video(2, n_frames=30, size=(32, 48), seed=SEED).plan.poses
    vr = render_video(0, n_frames=30, size=(32, 48), seed=SEED).plan.poses

    def peak_rotation(poses: np.ndarray) -> float:
        rel = poses[:-1, :3, :3].transpose(0, 2, 1) @ poses[1:, :3, :3]
        return float(np.max(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1))))

    assert peak_rotation(fast) > peak_rotation(vr)


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = render_video(3, n_frames=6, size=SIZE, seed=11)
    b = render_video(3, n_frames=6, size=SIZE, seed=11)
    c = render_video(3, n_frames=6, size=SIZE, seed=12)
    assert a.depth.tobytes() == b.depth.tobytes()
    assert a.plan.poses.tobytes() == b.plan.poses.tobytes()
    assert a.rgb.tobytes() == b.rgb.tobytes()
    assert not np.array_equal(a.depth, c.depth)
    # Through the files too: the sidecars hold byte-identical depth and poses. (The mp4 bytes are not compared:
    # libx264 through PyAV is not bit-reproducible here even for identical frames; its output changes with the
    # process's memory layout, hence generate_benchmark keeps finished videos on a rerun.)
    first = generate_benchmark(tmp_path / "a", n_videos=2, n_frames=4, size=SIZE, seed=11)
    second = generate_benchmark(tmp_path / "b", n_videos=2, n_frames=4, size=SIZE, seed=11)
    for p, q in zip(first, second, strict=True):
        ga, gb = open_ground_truth(sidecar_uri(str(p))), open_ground_truth(sidecar_uri(str(q)))
        assert ga.group["depth"][:].tobytes() == gb.group["depth"][:].tobytes()
        assert ga.group["pose"][:].tobytes() == gb.group["pose"][:].tobytes()


def test_rerun_keeps_finished_videos_and_redoes_changed_or_unfinished_ones(tmp_path: Path) -> None:
    # libx264 does not write the same bytes twice, and a video's bytes are its identity downstream: a rerun
    # must keep what it finished before rather than re-encode it.
    first = generate_benchmark(tmp_path, n_videos=2, n_frames=3, size=SIZE, seed=4)
    before = [(p.read_bytes(), p.stat().st_mtime_ns) for p in first]
    again = generate_benchmark(tmp_path, n_videos=2, n_frames=3, size=SIZE, seed=4)
    assert again == first and [(p.read_bytes(), p.stat().st_mtime_ns) for p in again] == before
    # An interrupted video (no sidecar) and a changed parameter are regenerated.
    shutil.rmtree(sidecar_uri(str(first[1])))
    first[1].write_bytes(b"half a video")
    generate_benchmark(tmp_path, n_videos=2, n_frames=3, size=SIZE, seed=4)
    assert first[1].read_bytes() != b"half a video"
    assert open_ground_truth(sidecar_uri(str(first[1]))).num_frames == 3
    longer = generate_benchmark(tmp_path, n_videos=2, n_frames=5, size=SIZE, seed=4)
    assert [open_ground_truth(sidecar_uri(str(p))).num_frames for p in longer] == [5, 5]
    assert _decode(longer[0])[0].shape[0] == 5
    # No temporary files are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [p.name for p in longer] + [Path(sidecar_uri(str(p))).name for p in longer]
    )


def test_video_does_not_depend_on_count(tmp_path: Path) -> None:
    short = render_video(1, n_frames=4, size=SIZE, seed=5)
    long = render_video(1, n_frames=8, size=SIZE, seed=5)
    np.testing.assert_array_equal(short.depth, long.depth[:4])


def test_rejects_odd_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        generate_benchmark(tmp_path, n_videos=1, n_frames=2, size=(63, 96), seed=0)
