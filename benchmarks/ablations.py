"""Smoother ablations on the synthetic benchmark: what each design choice buys in accuracy and stability.

    .venv/bin/python benchmarks/ablations.py [--out .steadydepth/bench/ablations] [--steps 50] [--quick]

Rows (each trained from scratch with the same seed on the synthetic teacher stores, refined, and evaluated
with `evaluate_dataset` against GT, valid 1 mm–10 m, no alignment):
- ΔD = 0: the zero-initialised (untrained) model through `refine_store` must reproduce the teacher bit for bit,
  and so give identical metrics (checked, not assumed);
- default: LossConfig, SmootherConfig and TrainConfig defaults (anchor 1, temporal_static 2, ..., burn-in 48);
- anchor 0.3: the anchor weight against the (unchanged) temporal terms;
- temporal ×3: temporal_static, temporal_accel, temporal_motion and temporal_flow weights ×3;
- no RGB features: SmootherConfig.use_features=False (no CNN; per-pixel cues only);
- filter on detail only / no temporal filter: SmootherConfig.temporal_filter="detail" (the gated filter only on
  the band finer than the grid) / "off" (only the grid residual; smoother/temporal_filter.py);
- no filter reset: SmootherConfig.filter_reset=0 (the gate alone decides where to hold);
- no flow warp: SmootherConfig.flow_warp=False (the filter's memory stays at the pixel, in training and refinement);
- no flow cues: SmootherConfig.flow_cues=False (the model's temporal-change cues pixel by pixel, not along the flow);
- pixel-wise losses: LossConfig.flow_compensated=False (frame-to-frame loss terms pixel by pixel, not along the flow);
- frame anchor: LossConfig.anchor_mean=False (still pixels anchored to each frame, not the teacher's mean);
- no pre-roll: SmootherConfig.preroll=0 (refinement starts cold at frame 0; the same training);
- no burn-in: TrainConfig.burn_in=0 (every window starts from a fresh state);
- no long-span loss: LossConfig.temporal_long=0;
- window 32: TrainConfig.window (frames per training window with gradients);
- fused vs reference SSM: the mamba-ssm Triton scan against the PyTorch scan, same weights (CUDA only; skipped
  with a message without CUDA or mamba-ssm). `--fused-only CHECKPOINT STORE...` runs just these rows, for a
  GPU machine given a checkpoint and teacher stores made elsewhere.
The default run (5 videos × 32 frames at 96×160, 50 steps per training) takes about 20–25 min on 2 CPU cores;
--quick is a smoke run (2 tiny videos, 3 steps, three rows). Short trainings rank choices; they do not give
the converged numbers (benchmarks/quality.py does).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.config import EvaluateConfig
from evaluation.evaluate import evaluate_dataset
from smoother.checkpoint import load_smoother
from smoother.config import LossConfig
from smoother.model import ResidualSmoother
from smoother.refine import refine_store
from steadydepth.config import Config
from storage.depth_store import DepthStore
from storage.naming import store_uri, video_name

sys.path.insert(0, str(Path(__file__).parent))
from quality import COLUMNS as QUALITY_COLUMNS  # noqa: E402
from quality import machine, synthetic_stores  # noqa: E402

COLUMNS = {k: label for k, label in QUALITY_COLUMNS.items() if k != "opw"}  # the quality table's, OPW seq. norm. only
TEMPORAL = ("temporal_static", "temporal_accel", "temporal_motion", "temporal_flow")


def variants(quick: bool) -> dict[str, dict[str, Any]]:
    """Row name -> Config overrides (nested dicts) on top of the base config."""
    rows: dict[str, dict[str, Any]] = {
        "default": {},
        "anchor 0.3": {"loss": {"anchor": 0.3}},
        "temporal ×3": {"loss": {k: 3 * getattr(LossConfig(), k) for k in TEMPORAL}},
        "no RGB features": {"smoother": {"use_features": False}},
        "filter on detail only": {"smoother": {"temporal_filter": "detail"}},
        "no temporal filter": {"smoother": {"temporal_filter": "off"}},
        "no filter reset": {"smoother": {"filter_reset": 0.0}},
        "no flow warp": {"smoother": {"flow_warp": False}},
        "no flow cues": {"smoother": {"flow_cues": False}},
        "pixel-wise losses": {"loss": {"flow_compensated": False}},
        "frame anchor": {"loss": {"anchor_mean": False}},
        "no pre-roll": {"smoother": {"preroll": 0}},
        "no burn-in": {"train": {"burn_in": 0}},
        "no long-span loss": {"loss": {"temporal_long": 0.0}},
        "window 32": {"train": {"window": 32}},
    }
    return {k: rows[k] for k in ("default", "no RGB features")} if quick else rows


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def refine_all(model: ResidualSmoother, uris: list[str], out: Path) -> list[str]:
    """Refine every teacher store into out/<name>.refined.zarr (replacing an older one)."""
    return [
        refine_store(u, store_uri(str(out), video_name(u), "refined"), model, overwrite=True).uri
        for u in uris
    ]


def identity_check(uris: list[str], out: Path, ecfg: EvaluateConfig) -> tuple[dict[str, float], str]:
    """ΔD = 0: untrained model through refine_store; depth must equal the teacher's bit for bit."""
    refined = refine_all(ResidualSmoother(Config().smoother), uris, out / "refined-identity")
    for t_uri, r_uri in zip(uris, refined, strict=True):
        t, r = DepthStore.open(t_uri), DepthStore.open(r_uri)
        if not np.array_equal(t.read(0, t.num_frames)["depth"], r.read(0, r.num_frames)["depth"]):
            raise AssertionError(f"ΔD = 0 did not reproduce the teacher for {t_uri}")
    report = evaluate_dataset(uris, refined, ecfg, str(out / "eval-identity"), baselines=False, plots=False)
    same = report.means["refined"] == report.means["teacher"]
    note = "depth bit-identical, metrics identical" if same else "**metrics differ**"
    return report.means["refined"], note


def fused_vs_reference(checkpoint: str, uris: list[str], out: Path, ecfg: EvaluateConfig) -> list[str]:
    """Same weights, Triton scan vs PyTorch scan on CUDA: metric rows and the largest depth difference."""
    from smoother.ssm import Mamba2Block, triton_ops

    if not torch.cuda.is_available() or triton_ops() is None:
        why = "no CUDA device" if not torch.cuda.is_available() else "mamba-ssm Triton ops not importable"
        return [f"Fused (Triton) vs reference (PyTorch) SSM: skipped ({why}); needs a CUDA GPU with mamba-ssm."]
    results, depths = {}, {}
    for backend in ("torch", "triton"):
        model = load_smoother(checkpoint)
        for m in model.modules():
            if isinstance(m, Mamba2Block):
                m.backend = backend
        # refine_store's identity hashes the weights only, so each backend writes to its own folder
        refined = [
            refine_store(
                u,
                str(out / f"refined-{backend}" / Path(u).name.replace(".teacher", ".refined")),
                model,
                device="cuda",
                overwrite=True,
            ).uri
            for u in uris
        ]
        rep = evaluate_dataset(uris, refined, ecfg, str(out / f"eval-{backend}"), baselines=False, plots=False)
        results[backend] = rep.means["refined"]
        depths[backend] = [DepthStore.open(r).read(0, DepthStore.open(r).num_frames)["depth"] for r in refined]
    diff = max(float(np.max(np.abs(a - b) / b)) for a, b in zip(depths["triton"], depths["torch"], strict=True))
    return [
        *table({f"SSM {k}": v for k, v in results.items()}, {}),
        "",
        f"Largest relative depth difference Triton vs PyTorch: {diff:.2e}.",
    ]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.4f}"


def table(rows: dict[str, dict[str, float]], notes: dict[str, str]) -> list[str]:
    """Markdown: one row per variant, the benchmark metrics, and a note column."""
    lines = [
        "| variant | " + " | ".join(COLUMNS.values()) + " | note |",
        "| --- |" + " ---: |" * len(COLUMNS) + " --- |",
    ]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(k)) for k in COLUMNS) + f" | {notes.get(name, '')} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=".steadydepth/bench/ablations")
    p.add_argument("--steps", type=int, default=50, help="training steps per variant")
    p.add_argument("--threads", type=int, default=1, help="torch threads while training")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 videos × 12 frames at 48×64, 3 steps")
    p.add_argument(
        "--fused-only",
        nargs="+",
        metavar=("CHECKPOINT", "STORE"),
        help="only the fused-vs-reference rows: a checkpoint and teacher store(s) (on a GPU machine)",
    )
    args = p.parse_args(argv)
    if args.fused_only:
        if len(args.fused_only) < 2:
            p.error("--fused-only takes a checkpoint and at least one teacher store")
        ckpt, *stores = args.fused_only
        out = Path(args.out) / "fused"
        print("\n".join(fused_vs_reference(ckpt, stores, out, EvaluateConfig(max_depth=10.0))))
        return 0

    t0 = time.perf_counter()
    out = Path(args.out) / ("quick" if args.quick else "default")
    if args.quick:
        uris = synthetic_stores(out, videos=2, frames=12, size=(48, 64), seed=0)
        steps = 3
    else:
        uris = synthetic_stores(out, videos=5, frames=32, size=(96, 160), seed=0)
        steps = args.steps
    ecfg = EvaluateConfig(max_depth=10.0)
    teacher = evaluate_dataset(uris, None, ecfg, str(out / "eval-teacher"), baselines=False, plots=False)

    rows = {"teacher": teacher.means["teacher"]}
    notes = {"teacher": "per-frame teacher"}
    rows["ΔD = 0 (untrained)"], notes["ΔD = 0 (untrained)"] = identity_check(uris, out, ecfg)
    base = {"train": {"steps": steps, "warmup_steps": max(1, steps // 10), "num_threads": args.threads}}
    base["train"] |= {"progress": False, "seed": 0}
    checkpoints = {}
    from smoother.train import train

    for name, extra in variants(args.quick).items():
        cfg = Config.model_validate(_merge(base, extra))
        slug = name.replace(" ", "-").replace("×", "x").replace(".", "")
        t1 = time.perf_counter()
        result = train(cfg, uris, str(out / f"train-{slug}"), resume=False)
        model = load_smoother(result.checkpoint)
        refined = refine_all(model, uris, out / f"refined-{slug}")
        report = evaluate_dataset(uris, refined, ecfg, str(out / f"eval-{slug}"), baselines=False, plots=False)
        rows[name] = report.means["refined"]
        notes[name] = f"gate {'PASS' if report.gate.passed else 'FAIL'}; {time.perf_counter() - t1:.0f} s"
        checkpoints[name] = result.checkpoint
        print(f"{name}: {notes[name]}", file=sys.stderr, flush=True)

    m = machine()
    lines = [
        f"Synthetic benchmark: {len(uris)} videos, {steps} training steps per variant (seed 0).",
        "",
        *table(rows, notes),
        "",
        *fused_vs_reference(checkpoints["default"], uris[:1], out, ecfg),
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), torch {m['torch']}, CUDA {m['cuda']}; "
        f"{args.threads} training thread(s); total {time.perf_counter() - t0:.0f} s.",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
