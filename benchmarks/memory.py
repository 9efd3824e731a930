"""Peak memory of every stage at two video lengths: a stage's memory must not grow with the number of frames.

    .venv/bin/python benchmarks/memory.py [--frames 200 2000] [--size 96x128] [--steps 3] [--work DIR]

Per length: one synthetic benchmark video (`steadydepth synth`'s generator: mp4 + GT sidecar; preparation, not
measured), then each stage in a child process of its own, through the domain functions the CLI's flows call
(so neither Prefect nor MLflow, whose constant cost would only dilute the ratio, is measured):

- ingest: decode → synthetic teacher → teacher store (`steadydepth.ingest.ingest_video`);
- train: `--steps` optimizer steps of the smoother on that store (`smoother.train.train`, CPU);
- refine: that checkpoint over the store (`smoother.refine.refine_store`, CPU);
- evaluate: teacher vs refined vs the three baselines, with report and plots (`evaluation.evaluate_dataset`);
- export: npz, EXR, 16-bit PNG, PLY (every 10th frame), previews and the stereo video (`export_video`).

Peak RSS is the child's ru_maxrss, from `os.wait4` (stdlib; KiB on Linux), so each stage is measured alone,
interpreter and imports included. Prints a markdown table with the ratio long / short (target ≤ 1.1). Not a
test: the absolute numbers depend on the machine, library versions and thread count; the ratio should not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("ingest", "train", "refine", "evaluate", "export")
EXPORT_FORMATS = ["npz", "exr", "png16", "ply", "preview", "stereo"]
TARGET = 1.1


def _config(work: Path, steps: int):
    from steadydepth.config import load_config

    return load_config(
        overrides={
            "store.root": str(work / "stores"),
            "teacher.backend": "synthetic",
            "train.steps": str(steps),
            "train.warmup_steps": "0",
            "train.device": "cpu",
        }
    )


def _state(work: Path) -> dict[str, str]:
    path = work / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _remember(work: Path, **values: str) -> None:
    (work / "state.json").write_text(json.dumps({**_state(work), **values}, indent=2))


def run_stage(stage: str, work: Path, frames: int, size: tuple[int, int], steps: int) -> None:
    """One stage, in this process (the child), its inputs and outputs named in work/state.json."""
    cfg, state = _config(work, steps), _state(work)
    if stage == "synth":
        from steadydepth.synth.generate import generate_benchmark

        (video,) = generate_benchmark(work / "videos", n_videos=1, n_frames=frames, size=size, seed=0)
        _remember(work, video=str(video))
    elif stage == "ingest":
        from steadydepth.ingest import ingest_video
        from steadydepth.teachers.registry import build_teacher

        result = ingest_video(state["video"], cfg, teacher=build_teacher(cfg.teacher))
        _remember(work, teacher=result.store_uri)
    elif stage == "train":
        from smoother.train import train

        _remember(work, checkpoint=train(cfg, [state["teacher"]], str(work / "train"), resume=False).checkpoint)
    elif stage == "refine":
        from smoother.checkpoint import load_smoother
        from smoother.refine import refine_store

        model = load_smoother(state["checkpoint"])
        _remember(work, refined=refine_store(state["teacher"], None, model, device="cpu", overwrite=True).uri)
    elif stage == "evaluate":
        from evaluation.evaluate import evaluate_dataset

        evaluate_dataset([state["teacher"]], [state["refined"]], cfg.evaluate, str(work / "evaluation"))
    elif stage == "export":
        from steadydepth.export.config import ExportConfig
        from steadydepth.export.exporter import export_video

        export = ExportConfig(formats=EXPORT_FORMATS, out_dir=str(work / "exports"), ply_every=10, overwrite=True)
        export_video(state["refined"], export, rgb_store_uri=state["teacher"], progress=False)
    else:
        raise SystemExit(f"unknown stage {stage!r}; use synth or one of {', '.join(STAGES)}")


def measure(stage: str, work: Path, frames: int, size: tuple[int, int], steps: int) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one stage run in a child process; its output goes to work/<stage>.log."""
    cmd = [sys.executable, __file__, "--stage", stage, "--work", str(work), "--frames", str(frames), str(frames)]
    cmd += ["--size", f"{size[0]}x{size[1]}", "--steps", str(steps)]
    log = work / f"{stage}.log"
    t0 = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    if child.returncode:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"{tail}\nstage {stage} at {frames} frames failed (exit {child.returncode}); output above")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs=2, default=[200, 2000], metavar=("SHORT", "LONG"))
    parser.add_argument("--size", default="96x128", help="H×W of the synthetic video")
    parser.add_argument("--steps", type=int, default=3, help="training steps")
    parser.add_argument("--work", help="working folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # a child: run this one stage
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.stage:
        return run_stage(args.stage, Path(args.work), args.frames[0], size, args.steps)

    with tempfile.TemporaryDirectory(prefix="memory-", dir=args.work) as tmp:
        peaks: dict[int, dict[str, tuple[float, float]]] = {}
        for frames in args.frames:
            work = Path(tmp, f"{frames}-frames")
            work.mkdir()
            measure("synth", work, frames, size, args.steps)
            peaks[frames] = {}
            for stage in STAGES:
                peaks[frames][stage] = measure(stage, work, frames, size, args.steps)
                print(f"{stage} at {frames} frames: {peaks[frames][stage][0]:.0f} MiB", file=sys.stderr, flush=True)
    short, long = args.frames
    print(f"\n{cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"synthetic video {size[0]}×{size[1]}, synthetic teacher, {args.steps} training steps\n")
    print(f"| stage | peak RSS, {short} frames (MiB) | peak RSS, {long} frames (MiB) | ratio | "
          f"seconds ({short} / {long}) | ≤ {TARGET}× |")
    print("|---|---|---|---|---|---|")
    for stage in STAGES:
        (a, ta), (b, tb) = peaks[short][stage], peaks[long][stage]
        ok = "yes" if b <= TARGET * a else "**no**"
        print(f"| {stage} | {a:.0f} | {b:.0f} | {b / a:.2f} | {ta:.0f} / {tb:.0f} | {ok} |")


if __name__ == "__main__":
    main()
