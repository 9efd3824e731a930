"""Generate the synthetic benchmark: per video an H.264 mp4 and a `<name>.gt.zarr` ground-truth sidecar."""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from steadydepth.errors import StoreError
from steadydepth.synth.camera import camera_path, camera_region
from steadydepth.synth.render import pixel_rays, render_frame
from steadydepth.synth.scenarios import Scenario, scenario_for
from steadydepth.synth.scene import Scene, build_scene
from steadydepth.video.encode import write_video
from storage.ground_truth import open_ground_truth, sidecar_uri, write_ground_truth

GENERATOR_VERSION = "synth-1"  # bump when the same seed would render different depth


def benchmark_intrinsics(size: tuple[int, int]) -> np.ndarray:
    """K of the benchmark videos: fx = fy = 0.8·W (about 64° horizontal FOV), principal point at the centre."""
    h, w = size
    f = 0.8 * w
    return np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])


def video_name(index: int) -> str:
    """`<index>-<scenario>`, e.g. `00-vr-head`."""
    return f"{index:02d}-{scenario_for(index).name}"


@dataclass
class VideoPlan:
    """Everything that defines one benchmark video before rendering."""

    index: int
    name: str
    scenario: Scenario
    scene: Scene
    poses: np.ndarray  # (T, 4, 4) camera-to-world
    K: np.ndarray  # (3, 3)
    size: tuple[int, int]
    fps: float
    seed: int
    attrs: dict = field(default_factory=dict)


def plan_video(index: int, *, n_frames: int, size: tuple[int, int], seed: int, fps: float = 30.0) -> VideoPlan:
    """Scene and camera path of video `index`; deterministic in (seed, index)."""
    scenario = scenario_for(index)
    # One generator per video, so video i does not depend on how many videos are generated.
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, index]))
    scene = build_scene(
        rng,
        camera_region=camera_region(scenario.path),
        n_boxes=scenario.n_boxes,
        n_spheres=scenario.n_spheres,
        n_poles=scenario.n_poles,
        n_moving=scenario.n_moving,
    )
    poses = camera_path(scenario.path, np.arange(n_frames) / fps, rng)
    name = video_name(index)
    attrs = {
        "scenario": scenario.name,
        "description": scenario.description,
        "seed": int(seed),
        "video_index": index,
        "generator": GENERATOR_VERSION,
        "camera_path": scenario.path,
    }
    return VideoPlan(index, name, scenario, scene, poses, benchmark_intrinsics(size), tuple(size), fps, seed, attrs)


def render_frames(plan: VideoPlan) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (depth (H, W) float32 metres, rgb (H, W, 3) uint8) for every frame of the plan, in order."""
    rays = pixel_rays(plan.K, plan.size)
    for t, pose in enumerate(plan.poses):
        yield render_frame(plan.scene, pose, plan.K, rays, t / plan.fps)


@dataclass
class RenderedVideo:
    """A whole rendered video in memory (for tests and calibration; generation streams instead)."""

    plan: VideoPlan
    depth: np.ndarray  # (T, H, W) float32
    rgb: np.ndarray  # (T, H, W, 3) uint8


def render_video(index: int, *, n_frames: int, size: tuple[int, int], seed: int, fps: float = 30.0) -> RenderedVideo:
    """Render video `index` of the benchmark into memory, exactly as `generate_benchmark` would."""
    plan = plan_video(index, n_frames=n_frames, size=size, seed=seed, fps=fps)
    depth, rgb = zip(*render_frames(plan), strict=True)
    return RenderedVideo(plan, np.stack(depth), np.stack(rgb))


def generate_benchmark(
    out_dir: str | Path,
    *,
    n_videos: int,
    n_frames: int,
    size: tuple[int, int] = (192, 320),
    seed: int,
    fps: float = 30.0,
) -> list[Path]:
    """Write `n_videos` videos of `n_frames` frames of `size` (H, W) to out_dir; returns the mp4 paths.

    Each video `<name>.mp4` (H.264, yuv420p, crf 18) gets a sidecar `<name>.gt.zarr` with exact z-depth (T, H, W)
    float32 metres, camera-to-world poses (T, 4, 4), K (3, 3), fps, and attrs naming the scenario and seed.
    Same seed → identical depth, poses and RGB frames. A video already in out_dir from the same parameters is
    kept, not re-encoded: libx264 does not write bit-identical files from run to run (its output depends on
    memory layout), and a video's bytes are its identity in the depth stores and task caches, so a rerun must
    not replace it. Files are written under temporary names and renamed, so an interrupted run leaves no
    half-written video that looks finished.
    """
    h, w = size
    if h % 2 or w % 2 or h < 16 or w < 16:
        raise ValueError(f"benchmark size {size} must be even and at least 16×16 (H.264 yuv420p); e.g. (192, 320)")
    if n_videos < 1 or n_frames < 1:
        raise ValueError(f"need n_videos ≥ 1 and n_frames ≥ 1, got {n_videos} and {n_frames}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(n_videos):
        plan = plan_video(index, n_frames=n_frames, size=size, seed=seed, fps=fps)
        mp4 = out_dir / f"{plan.name}.mp4"
        paths.append(mp4)
        if _already_generated(mp4, plan, n_frames):
            continue
        depth = np.empty((n_frames, h, w), dtype=np.float32)

        def rgb_frames(plan: VideoPlan = plan, depth: np.ndarray = depth) -> Iterator[np.ndarray]:
            for t, (d, rgb) in enumerate(render_frames(plan)):
                depth[t] = d
                yield rgb

        # The sidecar is what marks a video finished, so it goes first out and last in.
        sidecar = Path(sidecar_uri(str(mp4)))
        shutil.rmtree(sidecar, ignore_errors=True)
        partial_mp4 = mp4.with_name(f".{plan.name}.partial.mp4")  # hidden: input discovery skips it
        write_video(partial_mp4, rgb_frames(), fps)
        partial_mp4.replace(mp4)
        partial_sidecar = sidecar.with_name(f".{plan.name}.partial.gt.zarr")
        shutil.rmtree(partial_sidecar, ignore_errors=True)
        write_ground_truth(str(partial_sidecar), depth, plan.poses, plan.K, fps, attrs=plan.attrs)
        partial_sidecar.rename(sidecar)
    return paths


def _already_generated(mp4: Path, plan: VideoPlan, n_frames: int) -> bool:
    """Whether mp4 and its sidecar were written, completely, from exactly this plan's parameters."""
    if not mp4.is_file():
        return False
    try:
        gt = open_ground_truth(sidecar_uri(str(mp4)))
    except StoreError:
        return False
    attrs = gt.group.attrs
    return (
        all(attrs.get(key) == value for key, value in plan.attrs.items())
        and gt.num_frames == n_frames
        and gt.size == tuple(plan.size)
        and gt.fps == float(plan.fps)
    )


def main() -> None:
    """`python -m steadydepth.synth.generate OUT_DIR [--videos 4 --frames 64 --height 192 --width 320 --seed 0]`."""
    parser = argparse.ArgumentParser(description="Write the synthetic benchmark (mp4 + .gt.zarr sidecars).")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    start = time.perf_counter()
    paths = generate_benchmark(
        args.out_dir,
        n_videos=args.videos,
        n_frames=args.frames,
        size=(args.height, args.width),
        seed=args.seed,
        fps=args.fps,
    )
    print(f"wrote {len(paths)} videos to {args.out_dir} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
