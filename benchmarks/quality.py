"""Quality benchmark: teacher vs baselines vs the trained smoother, on synthetic videos and a real 7-Scenes clip.

    .venv/bin/python benchmarks/quality.py [--out .steadydepth/bench/quality] [--steps 300] [--threads 1]
        [--train-seeds 0 1 2] [--set SECTION.FIELD=VALUE ...]

1. Synthetic benchmark (fixed seed): `generate_benchmark` videos 00-vr-head, 01-static-camera, 02-fast-motion,
   03-moving-objects, 04-thin-structures (64 frames, 192×320), ingested with the simulated teacher
   (teacher.backend=synthetic).
2. Real clip: the 7-Scenes redkitchen frame folder (50 frames, 640×480, Kinect GT with holes, GT poses), ingested
   with the same simulated teacher error model applied to its GT.
3. Train the smoother self-supervised on the synthetic teacher stores only (GT is never read), on the CPU, once per
   training seed (`--train-seeds`; the data stay those of `--seed`), with `--set` overrides of the defaults.
4. Refine both datasets and evaluate them with `evaluation.evaluate.evaluate_dataset` (valid GT 1 mm–10 m, no
   alignment): teacher, EMA, motion-gated EMA, temporal median and the smoother of every seed.
5. Print markdown tables (AbsRel, δ1, TAE, static flicker, OPW; one row per seed and their mean) and the evaluation
   targets, for the mean over seeds and for each seed: TAE and static flicker ≤ 50 % of the teacher's, AbsRel ≤
   the teacher's, and a lower TAE than the best baseline at equal or better AbsRel ("best" = lowest TAE among
   baselines whose AbsRel ≤ the teacher's).

Everything lands under --out (stores, checkpoints under models/<config hash>-seed<n>, reports with plots,
results.json); reruns reuse finished stores and finished trainings of the same config. Not a test: each seed
takes about 10 minutes on 2 shared CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.baselines import BASELINES
from evaluation.config import EvaluateConfig
from evaluation.evaluate import evaluate_dataset
from evaluation.metric_names import ACCURACY_METRICS, METRIC_LABELS
from evaluation.report import METHOD_LABELS, json_safe
from evaluation.results import EvaluationReport
from smoother.checkpoint import load_smoother
from smoother.refine import refine_store
from steadydepth.config import Config, load_config
from storage.naming import store_uri, video_name

SEVEN_SCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "7scenes-redkitchen-150-199"
# the table's pick of evaluation.metric_names, labelled as in the report (frame_change left out: it counts motion too)
COLUMNS = {k: METRIC_LABELS[k] for k in ("absrel", "delta1", "tae", "static_flicker", "opw", "opw_sequence")}
ROWS = ("teacher", *BASELINES, "refined")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
    }


def ingest_config(root: Path) -> Config:
    """Simulated teacher (default SyntheticTeacherConfig, seed 0) writing stores under root."""
    return load_config(overrides={"store.root": str(root), "teacher.backend": "synthetic"})


def synthetic_stores(out: Path, *, videos: int, frames: int, size: tuple[int, int], seed: int) -> list[str]:
    """Generate the synthetic benchmark (once) and ingest it with the simulated teacher; teacher store URIs."""
    from steadydepth.ingest import ingest_video
    from steadydepth.synth.generate import generate_benchmark
    from steadydepth.teachers.registry import build_teacher

    video_dir = out / "videos"
    paths = sorted(video_dir.glob("*.mp4"))
    if len(paths) != videos:
        paths = generate_benchmark(video_dir, n_videos=videos, n_frames=frames, size=size, seed=seed)
    cfg = ingest_config(out / "stores")
    teacher = build_teacher(cfg.teacher)
    return [ingest_video(str(p), cfg, teacher=teacher).store_uri for p in paths]


def seven_scenes_store(out: Path, folder: Path, max_frames: int | None = None) -> str | None:
    """The 7-Scenes frame folder ingested with the simulated teacher applied to its GT; None if absent."""
    from steadydepth.ingest import ingest_video
    from steadydepth.teachers.registry import build_teacher

    if not folder.is_dir():
        return None
    cfg = ingest_config(out / "stores")
    if max_frames is not None:
        cfg = cfg.model_copy(update={"decode": cfg.decode.model_copy(update={"max_frames": max_frames})})
    return ingest_video(str(folder), cfg, teacher=build_teacher(cfg.teacher)).store_uri


def model_dir(out: Path, cfg: Config) -> Path:
    """Where one training of cfg lives: named by everything training depends on, so another config never resumes
    (or silently reuses) a finished run of this one."""
    from smoother.train import TRAIN_VERSION

    return out / "models" / f"v{TRAIN_VERSION}-{cfg.section_hash('smoother', 'loss', 'train')}-seed{cfg.train.seed}"


def train_and_refine(cfg: Config, train_uris: list[str], refine_uris: list[str], out: Path) -> tuple[list[str], dict]:
    """Train on train_uris (resumes/no-op if a finished run of this config exists), refine refine_uris."""
    from smoother.train import train

    run = model_dir(out, cfg)
    t0 = time.perf_counter()
    result = train(cfg, train_uris, str(run / "train"))
    train_s = time.perf_counter() - t0
    model = load_smoother(result.checkpoint)
    refined, refine_s = [], 0.0
    for uri in refine_uris:
        name = video_name(uri)
        r = refine_store(uri, store_uri(str(run / "refined"), name, "refined"), model, overwrite=True)
        refined.append(r.uri)
        refine_s += r.seconds
    info = {
        "seed": cfg.train.seed,
        "checkpoint": result.checkpoint,
        "steps": result.step,
        "train_seconds_this_call": round(train_s, 1),
        "final_losses": result.losses,
        "refine_seconds": round(refine_s, 1),
    }
    return refined, info


def _cell(value: float | None, teacher: float | None = None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.4f}"
    if teacher is not None and math.isfinite(teacher) and teacher > 0:
        text += f" ({100 * value / teacher:.0f}%)"
    return text


def quality_table(means: dict[str, dict[str, float]], seeds: dict[int, dict[str, float]] | None = None) -> list[str]:
    """Methods as rows, the benchmark's metrics as columns; TAE/flicker/OPW with % of the teacher's value.

    seeds: the smoother's metrics per training seed, shown as one row each above the "refined" row (their mean)."""
    lines = ["| method | " + " | ".join(COLUMNS.values()) + " |", "| --- |" + " ---: |" * len(COLUMNS)]
    teacher = means["teacher"]

    def row(label: str, metrics: dict[str, float], is_teacher: bool = False) -> str:
        cells = []
        for key in COLUMNS:
            base = teacher.get(key) if key not in ACCURACY_METRICS and not is_teacher else None
            cells.append(_cell(metrics.get(key), base))
        return f"| {label} | " + " | ".join(cells) + " |"

    for method in ROWS:
        if method not in means:
            continue
        if method == "refined" and seeds and len(seeds) > 1:
            lines += [row(f"smoother, seed {s}", m) for s, m in seeds.items()]
            lines.append(row(f"**smoother, mean of {len(seeds)} seeds**", means[method]))
        else:
            lines.append(row(METHOD_LABELS[method], means[method], method == "teacher"))
    return lines


def targets(means: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The evaluation targets for the smoother ("refined") against the teacher and the baselines."""
    t, r = means["teacher"], means["refined"]
    nan = math.nan

    def ratio(key: str) -> float:
        a, b = r.get(key, nan), t.get(key, nan)
        return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else nan

    viable = [m for m in BASELINES if m in means and means[m].get("absrel", nan) <= t.get("absrel", nan)]
    best = min(viable, key=lambda m: means[m].get("tae", math.inf), default=None)
    out: dict[str, Any] = {
        "tae_ratio": ratio("tae"),
        "static_flicker_ratio": ratio("static_flicker"),
        "absrel_ratio": ratio("absrel"),
        "best_baseline": best,
    }
    out["tae_target"] = out["tae_ratio"] <= 0.5
    sf = out["static_flicker_ratio"]
    out["static_flicker_target"] = None if not math.isfinite(sf) else sf <= 0.5
    out["absrel_target"] = r.get("absrel", nan) <= t.get("absrel", nan)
    if best is not None:
        b = means[best]
        out["beats_best_baseline"] = r["tae"] < b["tae"] and r["absrel"] <= b["absrel"]
    else:
        out["beats_best_baseline"] = None
    return out


def targets_lines(means: dict[str, dict[str, float]], tg: dict[str, Any]) -> list[str]:
    """Markdown bullets: each target with its numbers and met / MISSED."""

    def mark(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**MISSED**")

    t, r = means["teacher"], means["refined"]
    lines = [
        f"- TAE ≤ 50 % of the teacher's: {r['tae']:.3f} vs {t['tae']:.3f} = {100 * tg['tae_ratio']:.0f}% "
        f"→ {mark(tg['tae_target'])}",
    ]
    if tg["static_flicker_target"] is None:
        lines.append("- static flicker ≤ 50 % of the teacher's: n/a (no static-camera video)")
    else:
        lines.append(
            f"- static flicker ≤ 50 % of the teacher's: {r['static_flicker']:.4f} vs {t['static_flicker']:.4f} = "
            f"{100 * tg['static_flicker_ratio']:.0f}% → {mark(tg['static_flicker_target'])}"
        )
    lines.append(f"- AbsRel ≤ the teacher's: {r['absrel']:.4f} vs {t['absrel']:.4f} → {mark(tg['absrel_target'])}")
    best = tg["best_baseline"]
    if best is None:
        lines.append("- better TAE than the best baseline at equal or better AbsRel: n/a (no baseline keeps AbsRel)")
    else:
        b = means[best]
        lines.append(
            f"- better TAE than the best baseline ({METHOD_LABELS[best]}: TAE {b['tae']:.3f}, AbsRel "
            f"{b['absrel']:.4f}) at equal or better AbsRel: smoother TAE {r['tae']:.3f}, AbsRel {r['absrel']:.4f} "
            f"→ {mark(tg['beats_best_baseline'])}"
        )
    return lines


def mean_metrics(runs: list[dict[str, float]]) -> dict[str, float]:
    """Metric-wise mean over training seeds (NaN where any seed has none)."""
    keys = [k for k in runs[0] if all(k in r for r in runs)]
    return {k: float(np.mean([r[k] for r in runs])) for k in keys}


def section(title: str, reports: dict[int, EvaluationReport]) -> tuple[list[str], dict[str, Any]]:
    """Markdown of one dataset over every training seed: the table, the gate per seed, the targets for the mean of
    the seeds and, with several seeds, a line per seed."""
    first = next(iter(reports.values()))
    seeds = {s: r.means["refined"] for s, r in reports.items()}
    means = {**first.means, "refined": mean_metrics(list(seeds.values()))}
    tg = targets(means)
    lines = [f"### {title} ({len(first.videos)} videos: {', '.join(first.videos)})", ""]
    lines += quality_table(means, seeds) + [""]
    for s, r in reports.items():
        lines += [f"Gate (seed {s}): {r.gate.summary()}", ""] if r.gate is not None else []
    label = f"the mean of {len(reports)} seeds" if len(reports) > 1 else "the smoother"
    lines += [f"Targets for {label}:", ""] + targets_lines(means, tg) + [""]
    per_seed = {s: targets({**r.means}) for s, r in reports.items()}
    if len(reports) > 1:
        names = {"tae_target": "TAE", "static_flicker_target": "static flicker", "absrel_target": "AbsRel",
                 "beats_best_baseline": "beats best baseline"}  # fmt: skip
        for s, t in per_seed.items():
            missed = [n for key, n in names.items() if t[key] is False]
            lines.append(f"- seed {s}: " + ("every target met" if not missed else "MISSED " + ", ".join(missed)))
        lines.append("")
    return lines, {"mean": tg, "per_seed": per_seed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=".steadydepth/bench/quality", help="working folder (stores, model, reports)")
    p.add_argument("--videos", type=int, default=5, help="synthetic videos (scenarios cycle; ≥ 4)")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--size", type=int, nargs=2, default=(192, 320), metavar=("H", "W"))
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic videos")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0], help="one training per seed; mean reported")
    p.add_argument("--steps", type=int, default=300, help="training steps (TrainConfig.steps)")
    p.add_argument("--threads", type=int, default=1, help="torch threads while training (1 wins on a busy CPU)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
        help="override a smoother/loss/train default, as the CLI's --set (repeatable)",
    )  # fmt: skip
    p.add_argument("--seven-scenes", default=str(SEVEN_SCENES), help="7-Scenes frame folder ('' to skip)")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    out = Path(args.out)
    base = load_config(
        overrides=[f"train.steps={args.steps}", f"train.num_threads={args.threads}", "train.progress=false",
                   *args.overrides]
    )  # fmt: skip
    synth = synthetic_stores(out, videos=args.videos, frames=args.frames, size=tuple(args.size), seed=args.seed)
    real = seven_scenes_store(out, Path(args.seven_scenes)) if args.seven_scenes else None
    ecfg = EvaluateConfig(max_depth=10.0)  # indoor scenes: valid GT 1 mm–10 m, as 7-Scenes / NYU
    plots = not args.no_plots

    datasets = [("Synthetic benchmark", "synthetic", synth)]
    if real:
        datasets.append(("7-Scenes redkitchen 150–199, simulated teacher on its GT", "7scenes", [real]))
    reports: dict[str, dict[int, EvaluationReport]] = {key: {} for _, key, _ in datasets}
    runs = []
    for seed in args.train_seeds:
        cfg = base.model_copy(update={"train": base.train.model_copy(update={"seed": seed})})
        refined, info = train_and_refine(cfg, synth, [*synth, *([real] if real else [])], out)
        runs.append(info)
        start = 0
        for _, key, teacher_uris in datasets:
            mine = refined[start : start + len(teacher_uris)]
            start += len(teacher_uris)
            report_dir = model_dir(out, cfg) / f"eval-{key}"
            reports[key][seed] = evaluate_dataset(teacher_uris, mine, ecfg, str(report_dir), plots=plots)

    lines = [f"Command: `{shlex.join([os.path.relpath(sys.executable), *sys.argv])}`", ""]
    results: dict[str, Any] = {"machine": machine(), "train": runs, "args": vars(args), "datasets": {}}
    for title, key, _ in datasets:
        md, tg = section(title, reports[key])
        lines += md
        results["datasets"][key] = {
            "means": {s: r.means for s, r in reports[key].items()},
            "targets": tg,
            "gate": {s: r.gate.summary() for s, r in reports[key].items()},
            "report": {s: r.report_path for s, r in reports[key].items()},
        }
    m = results["machine"]
    train_s = sum(r["train_seconds_this_call"] for r in runs)
    lines += [
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), torch {m['torch']}, CUDA {m['cuda']}; training "
        f"{len(runs)} × {runs[0]['steps']} steps ({train_s:.0f} s in this call, {args.threads} thread(s)), refine "
        f"{sum(r['refine_seconds'] for r in runs):.0f} s; total {time.perf_counter() - t0:.0f} s.",
    ]
    (out / "results.json").write_text(json.dumps(json_safe(results), indent=2, default=str) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
