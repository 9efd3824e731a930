"""Write an EvaluationReport: metrics.json (everything), report.md (tables + gate) and matplotlib plots.

Plots use matplotlib's object API (`Figure`, rendered by Agg), so no global backend is switched:
    plots/<video>-pixel.png  one pixel's depth over time for every method and GT (`VideoPlots`, streamed)
    plots/<video>-maps.png   per-pixel temporal std / mean (flicker) and the AbsRel map of the middle frame
    plots/metrics-bars.png   every metric per video and dataset mean, one bar per method
    plots/tradeoff.png       dataset-mean AbsRel vs the flicker metric, one point per method (needs GT)
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from evaluation.baselines import baseline_params
from evaluation.config import EvaluateConfig
from evaluation.gate import GateResult
from evaluation.metric_names import AGREEMENT_METRICS, METRIC_LABELS, metrics_in_order
from evaluation.results import EvaluationReport
from evaluation.temporal import PixelMoments
from evaluation.video_stream import Chunk, VideoStatistics

METHOD_LABELS = {
    "teacher": "teacher",
    "refined": "refined (smoother)",
    "ema": "EMA",
    "motion_gated_ema": "motion-gated EMA",
    "temporal_median": "temporal median",
}
COLOURS = {
    "gt": "black",
    "teacher": "tab:red",
    "refined": "tab:blue",
    "ema": "tab:orange",
    "motion_gated_ema": "tab:green",
    "temporal_median": "tab:purple",
}


def fmt(value: float | None) -> str:
    """How report.md writes a metric: 4 decimals, '–' when undefined."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.4f}"


def json_safe(x: Any) -> Any:
    """NaN/inf -> null (strict JSON); numpy scalars -> Python."""
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _gate_dict(gate: GateResult | None) -> dict[str, Any] | None:
    if gate is None:
        return None
    return {"passed": gate.passed, "flicker_metric": gate.flicker_metric, "reasons": gate.reasons}


def write_metrics_json(report: EvaluationReport, cfg: EvaluateConfig) -> None:
    """metrics.json: config, baselines, per-video and mean metrics, gate; NaN (undefined) is written as null."""
    payload = {
        "config": cfg.model_dump(mode="json"),
        "baselines": baseline_params(cfg),
        "videos": report.videos,
        "methods": report.methods,
        "video_info": report.video_info,
        "per_video": report.per_video,
        "means": report.means,
        "gate": _gate_dict(report.gate),
        "baseline_gates": {m: _gate_dict(g) for m, g in report.baseline_gates.items()},
        "plots": report.plot_paths,
    }
    Path(report.metrics_path).write_text(json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n")


def _metrics_present(tables: list[Mapping[str, Mapping[str, float]]]) -> list[str]:
    """The metrics any row of the tables has, in report order."""
    return metrics_in_order({k for table in tables for row in table.values() for k in row})


def _table(cells: Mapping[str, Mapping[str, str]], metrics: list[str]) -> list[str]:
    """Markdown table lines from {method: {metric: cell}}: metrics as rows, methods as columns, so the table stays a
    few columns wide however many metrics there are (readable in the Prefect UI's artifact view)."""
    methods = list(cells)
    lines = ["| metric | " + " | ".join(METHOD_LABELS.get(m, m) for m in methods) + " |"]
    lines += ["| --- |" + " ---: |" * len(methods)]
    lines += [f"| {METRIC_LABELS[k]} | " + " | ".join(cells[m][k] for m in methods) + " |" for k in metrics]
    return lines


def metrics_table(rows: Mapping[str, Mapping[str, float]], metrics: list[str]) -> list[str]:
    """Markdown table lines of each method's metrics."""
    return _table({method: {k: fmt(values.get(k)) for k in metrics} for method, values in rows.items()}, metrics)


def relative_table(means: Mapping[str, Mapping[str, float]], metrics: list[str]) -> list[str]:
    """Markdown table of each method's change vs the teacher in percent (negative = lower)."""
    base = means["teacher"]

    def change(t: float, v: float) -> str:
        ok = math.isfinite(t) and math.isfinite(v) and t != 0
        return f"{100 * (v / t - 1):+.1f}%" if ok else "–"

    cells = {
        method: {k: change(base.get(k, math.nan), values.get(k, math.nan)) for k in metrics}
        for method, values in means.items()
        if method != "teacher"
    }
    return _table(cells, metrics)


def write_markdown(report: EvaluationReport, cfg: EvaluateConfig) -> None:
    """report.md: gate verdict, dataset means (absolute and vs teacher), per-video tables, conventions, plots."""
    metrics = _metrics_present([report.means, *report.per_video.values()])
    lines = ["# Depth evaluation", ""]
    if report.gate is not None:
        lines += [f"## Gate: {'PASS' if report.gate.passed else 'FAIL'}", ""]
        lines += [f"- {r}" for r in report.gate.reasons] + [""]
    else:
        lines += ["## Gate: not run (no refined stores)", ""]
    if report.baseline_gates:
        lines += ["What the same gate says about each baseline (context only):", ""]
        for m, g in report.baseline_gates.items():
            lines.append(f"- {METHOD_LABELS.get(m, m)}: {'PASS' if g.passed else 'FAIL'} ({'; '.join(g.reasons)})")
        lines.append("")
    lines += [f"## Dataset mean ({len(report.videos)} videos)", "", *metrics_table(report.means, metrics), ""]
    if len(report.means) > 1:
        relative = [m for m in metrics if m not in AGREEMENT_METRICS]  # already relative to the teacher
        lines += ["Change vs the teacher:", "", *relative_table(report.means, relative), ""]
    lines += ["## Per video", ""]
    for name in report.videos:
        info = report.video_info[name]
        frac = info["static_pixel_fraction"]
        static = "no poses: static flicker n/a" if frac is None else f"{100 * frac:.1f}% static pixels"
        if frac == 0:
            static = "moving camera: no static pixels"
        lines += [
            f"### {name}",
            "",
            f"{info['frames']} frames, {info['size'][0]}×{info['size'][1]}; ground truth: "
            f"{'yes' if info['ground_truth'] else 'no'}; poses: {'yes' if info['pose'] else 'no'}; {static}.",
            "",
            *metrics_table(report.per_video[name], metrics),
            "",
        ]
    params = "; ".join(
        f"{METHOD_LABELS[m]} " + ", ".join(f"{k}={v}" for k, v in p.items()) for m, p in baseline_params(cfg).items()
    )
    lines += [
        "## Conventions",
        "",
        f"- Valid GT: finite, {cfg.min_depth} < GT < {cfg.max_depth} m; alignment: {cfg.alignment} (per sequence).",
        "- Accuracy per frame, then mean over frames, then unweighted mean over videos (undefined values skipped).",
        "- TAE (%) with GT poses and the store's K. Static flicker = mean temporal std / mean depth on GT-static "
        f"pixels (GT within {100 * cfg.static_rel_tol:g}% of its median, static camera only; moving-camera videos "
        "have none, so the mean is over static-camera videos).",
        f"- OPW with OpenCV {cfg.flow} flow: 'frame norm.' as NVDS (blind to global scale flicker), 'seq. norm.' one "
        "normalisation per video. Frame change = mean |D_t − D_t−1| / D_t−1.",
        f"- Baselines (causal, on the teacher depth): {params}.",
        "- Teacher agreement (no GT needed, log units): r_t = median log(D / D_teacher) per frame; scale bias = "
        f"mean r_t, scale drift = max |mean r_t| over {cfg.agreement_window}-frame windows, teacher band = median "
        "|Δ median log D_teacher| between frames. The gate judges them per video (dataset means may cancel).",
        f"- Gate: AbsRel ≤ teacher + {cfg.absrel_tolerance}, δ1 ≥ teacher − {cfg.delta1_tolerance}; on every video "
        f"|scale bias| and scale drift ≤ max({cfg.agreement_k:g} × teacher band, {cfg.agreement_floor:g}); first of "
        f"{cfg.flicker_metrics} defined for both at least {100 * cfg.min_flicker_reduction:g}% lower.",
        "",
    ]
    if report.plot_paths:
        root = Path(report.report_path).parent
        lines += ["## Plots", ""]
        lines += [f"![{Path(p).stem}]({Path(p).relative_to(root).as_posix()})" for p in report.plot_paths] + [""]
    Path(report.report_path).write_text("\n".join(lines))


# ------------------------------------------------------------------------------------------------- plots


def _save(fig: Figure, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return str(path)


def _trace_pixel(stats: VideoStatistics, shape: tuple[int, int]) -> tuple[int, int]:
    """A static pixel nearest the centre, else a pixel with valid GT throughout nearest the centre, else the centre."""
    h, w = shape
    candidates = stats.static_mask
    if (candidates is None or not candidates.any()) and stats.gt_finite is not None:
        candidates = stats.gt_finite
    if candidates is None or not candidates.any():
        return h // 2, w // 2
    ys, xs = np.nonzero(candidates)
    i = int(np.argmin((ys - h / 2) ** 2 + (xs - w / 2) ** 2))
    return int(ys[i]), int(xs[i])


def _positive(d: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(d) & (d > 0)


class VideoPlots:
    """What one video's plots show, collected chunk by chunk from the evaluation's main pass (pass `add` as
    `evaluate_video`'s on_chunk): one pixel's depth over time for every method and GT, the per-pixel temporal
    std / mean (flicker map) of GT, teacher and refined, and their AbsRel maps of the middle frame. It keeps a
    few (H, W) maps and one value per frame and method, never a video."""

    MAPS = ("gt", "teacher", "refined")  # what the maps figure shows, when present

    def __init__(self, name: str, frames: int) -> None:
        self.name = name
        self.mid = frames // 2
        self.pixel: tuple[int, int] | None = None
        self.traces: dict[str, list[np.ndarray]] = {}  # "gt" or method -> the pixel's depth, chunk by chunk
        self.moments: dict[str, PixelMoments] = {}
        self.errors: dict[str, np.ndarray] = {}  # method -> |D − G| / G of the middle frame

    def add(self, chunk: Chunk, stats: VideoStatistics) -> None:
        n, h, w = chunk.depth["teacher"].shape
        if self.pixel is None:
            self.pixel = _trace_pixel(stats, (h, w))
        y, x = self.pixel
        series = {**({"gt": chunk.gt} if chunk.gt is not None else {}), **chunk.depth}
        for key, depth in series.items():
            self.traces.setdefault(key, []).append(np.array(depth[:, y, x]))
            if key in self.MAPS:
                self.moments.setdefault(key, PixelMoments()).add(depth, _positive(depth))
        if chunk.gt is not None and chunk.start <= self.mid < chunk.start + n:
            gt = chunk.gt[self.mid - chunk.start].astype(np.float64)
            for method in ("teacher", "refined"):
                if method in chunk.depth:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        self.errors[method] = np.abs(chunk.depth[method][self.mid - chunk.start] - gt) / gt

    def _flicker_map(self, key: str) -> np.ndarray:
        """Per-pixel temporal std / mean over finite, positive values; NaN where a pixel has none."""
        m = self.moments[key]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(m.n > 0, np.sqrt(m.variance()) / m.mean, np.nan)

    def plot(self, out_dir: Path) -> list[str]:
        """Pixel trace and flicker/error maps of the video; returns the PNG paths."""
        paths = []
        y, x = self.pixel
        fig = Figure(figsize=(8, 3.5))
        ax = fig.add_subplot()
        for key, parts in self.traces.items():
            label = "GT" if key == "gt" else METHOD_LABELS.get(key, key)
            ax.plot(np.concatenate(parts), color=COLOURS.get(key), lw=2 if key == "gt" else 1.2, label=label)
        ax.set(xlabel="frame", ylabel="depth (m)", title=f"{self.name}: pixel (y={y}, x={x})")
        ax.legend(fontsize=7, ncols=3)
        paths.append(_save(fig, out_dir / f"{self.name}-pixel.png"))

        shown = [k for k in self.MAPS if k in self.moments]
        labels = {k: "GT" if k == "gt" else METHOD_LABELS[k] for k in shown}
        rows = 2 if "gt" in shown else 1
        fig = Figure(figsize=(3.2 * len(shown), 2.6 * rows))
        cv = {k: self._flicker_map(k) for k in shown}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN map: the fallback scale below
            vmax = float(np.nanpercentile(cv["teacher"], 99)) or 1e-3
        for j, key in enumerate(shown):
            ax = fig.add_subplot(rows, len(shown), j + 1)
            im = ax.imshow(cv[key], cmap="magma", vmin=0, vmax=vmax)
            ax.set_title(f"{labels[key]}: temporal std/mean", fontsize=8)
            ax.axis("off")
            fig.colorbar(im, ax=ax, fraction=0.046)
            if rows == 2 and key != "gt":
                ax = fig.add_subplot(rows, len(shown), len(shown) + j + 1)
                im = ax.imshow(self.errors[key], cmap="viridis", vmin=0, vmax=0.3)
                ax.set_title(f"{labels[key]}: AbsRel, frame {self.mid}", fontsize=8)
                ax.axis("off")
                fig.colorbar(im, ax=ax, fraction=0.046)
        paths.append(_save(fig, out_dir / f"{self.name}-maps.png"))
        return paths


def plot_dataset(report: EvaluationReport, out_dir: Path, cfg: EvaluateConfig) -> list[str]:
    """Per-video metric bars and the accuracy-vs-flicker scatter; returns the PNG paths."""
    paths = []
    metrics = _metrics_present([report.means])
    groups = [*report.videos, "mean"]
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(5 * ncols, 3 * nrows))
    width = 0.8 / len(report.methods)
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        for j, method in enumerate(report.methods):
            vals = [report.per_video[v][method].get(metric, math.nan) for v in report.videos]
            vals.append(report.means[method].get(metric, math.nan))
            xs = np.arange(len(groups)) + (j - (len(report.methods) - 1) / 2) * width
            ax.bar(xs, vals, width, color=COLOURS.get(method), label=METHOD_LABELS.get(method, method))
        ax.set_xticks(np.arange(len(groups)), groups, rotation=30, ha="right", fontsize=7)
        ax.set_title(METRIC_LABELS[metric], fontsize=9)
    fig.axes[0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(_save(fig, out_dir / "metrics-bars.png"))

    teacher = report.means["teacher"]
    flicker = next((m for m in cfg.flicker_metrics if math.isfinite(teacher.get(m, math.nan))), None)
    if math.isfinite(teacher.get("absrel", math.nan)) and flicker is not None:
        fig = Figure(figsize=(5, 4))
        ax = fig.add_subplot()
        for method, values in report.means.items():
            ax.scatter(values.get(flicker), values.get("absrel"), color=COLOURS.get(method), s=40)
            ax.annotate(METHOD_LABELS.get(method, method), (values.get(flicker), values.get("absrel")), fontsize=7)
        ax.set(xlabel=f"{METRIC_LABELS[flicker]} (lower = steadier)", ylabel="AbsRel (lower = more accurate)")
        ax.set_title("accuracy vs flicker (dataset means)", fontsize=9)
        paths.append(_save(fig, out_dir / "tradeoff.png"))
    return paths
