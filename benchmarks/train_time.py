"""Time of the default training on one long video: a 700-frame 480×640 clip, the defaults of `TrainConfig`.

    .venv/bin/python benchmarks/train_time.py [--frames 700] [--size 480 640] [--steps N] [--out DIR]

Generates one synthetic video (`generate_benchmark`, the VR-head scenario), ingests it with the simulated teacher,
then trains the smoother with the defaults (`train.steps` unless --steps), one store, as `steadydepth train` would,
and prints a markdown table: the time to the first step (opening the store, first windows into the low-res cache)
and the time per step after it, with the total for the default steps. Training reads random windows of a fixed
size from a low-res cache, so its cost per step does not depend on the video's length; --steps measures fewer steps
and extrapolates the default's total from the measured per-step time (the table says which). Not a test.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from smoother.config import TrainConfig
from smoother.train import train
from steadydepth.config import load_config
from steadydepth.ingest import ingest_video
from steadydepth.synth.generate import generate_benchmark
from steadydepth.teachers.registry import build_teacher


def long_store(out: Path, frames: int, size: tuple[int, int]) -> tuple[str, float]:
    """One synthetic video ingested with the simulated teacher (reused when already there); (store URI, seconds)."""
    video = out / "video"
    paths = sorted(video.glob("*.mp4")) or generate_benchmark(video, n_videos=1, n_frames=frames, size=size, seed=0)
    cfg = load_config(overrides={"store.root": str(out / "stores"), "teacher.backend": "synthetic"})
    t0 = time.perf_counter()
    uri = ingest_video(str(paths[0]), cfg, teacher=build_teacher(cfg.teacher)).store_uri
    return uri, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=700)
    parser.add_argument("--size", type=int, nargs=2, default=(480, 640), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=None, help="steps to run (default: train.steps)")
    parser.add_argument("--out", default=".steadydepth/bench/train-time")
    args = parser.parse_args()
    out = Path(args.out)
    uri, ingest_s = long_store(out, args.frames, tuple(args.size))
    default_steps = TrainConfig().steps
    steps = args.steps or default_steps
    cfg = load_config(overrides={"train.steps": steps, "train.progress": False})
    stamps: list[float] = []
    t0 = time.perf_counter()
    train(cfg, [uri], str(out / f"model-{time.time_ns()}"), on_step=lambda *_: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    first = stamps[0] - t0
    per_step = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
    default_total = first + per_step * (default_steps - 1)
    measured = "measured" if steps == default_steps else f"extrapolated from {steps} steps"
    print(f"| video | steps run | to first step (s) | s / step | total run (s) | default {default_steps} steps |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {args.frames} × {args.size[0]}×{args.size[1]} | {steps} | {first:.1f} | {per_step:.2f} | {total:.0f} | "
        f"{default_total / 60:.1f} min ({measured}) |"
    )
    print(
        f"\nIngest (simulated teacher): {ingest_s:.0f} s. Machine: {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, CUDA {torch.cuda.is_available()}."
    )


if __name__ == "__main__":
    main()
