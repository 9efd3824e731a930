"""Evaluate teacher, refined and baseline depth videos with one metric suite, and apply the promotion gate.

    per video: teacher store (+ refined store) ─ streamed chunk by chunk (evaluation.video_stream) ─▶ baselines on
               the teacher depth; every method ─ evaluation.metrics.SequenceMetrics (+ OPW with sequence
               normalisation) and teacher agreement; plot data
    dataset:   mean_over_sequences per method ─▶ evaluate_gate(teacher, refined) ─▶ report.md, metrics.json, plots

Memory does not grow with a video's length: a video is read one teacher chunk at a time, in a few passes when it
needs whole-video statistics first (its exact medians, its static mask; see evaluation/video_stream.py), and the
numbers are those of the whole-array functions (`load_video` + `evaluate_method`, which hold a video in memory
and remain for scripts) to float rounding.

What is measured depends on what the teacher store holds:
- gt_depth → accuracy (AbsRel, SqRel, RMSE, RMSE log, δ1..3; caps and alignment from EvaluateConfig);
  gt_depth + pose → TAE (with the store's K) and static flicker on static pixels from GT;
- rgb → OPW twice: `opw` (per-frame normalisation, as NVDS; blind to global scale flicker) and `opw_sequence`
  (one normalisation per video, so scale flicker counts);
- always frame_change, and teacher agreement (evaluation.agreement: scale_bias, scale_drift, teacher_band of each
  method against the teacher; the teacher's own trivially 0).
Without GT no accuracy, TAE or static flicker appears; only the flow-based OPW, frame_change and teacher agreement,
which is then the gate's only guard against a model that drifts off the teacher's scale.

Static pixels (`evaluation.metrics.static_mask_from_gt` with the GT poses): pixels valid in every frame whose GT
stays within `static_rel_tol` of its temporal median, and only when the camera is static (every pose within
1 mm / 0.1° of the first). A moving camera has no static pixels: static_flicker is NaN there and left out of the
dataset mean, which is then the mean over static-camera videos (TAE measures flicker under camera motion).

All methods get the same references (GT, poses, K and RGB from the teacher store), so numbers are comparable.
Baselines (evaluation.baselines, causal, on the teacher's depth; parameters in EvaluateConfig): log-depth EMA,
motion-gated EMA (depth-innovation cue) and a causal temporal median.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.agreement import store_agreement, teacher_agreement
from evaluation.baselines import BASELINES, run_baselines
from evaluation.config import EvaluateConfig
from evaluation.gate import GateResult, evaluate_gate
from evaluation.metric_names import metrics_in_order
from evaluation.metrics import evaluate_sequence, flow_warps, mean_over_sequences, opw, static_mask_from_gt
from evaluation.results import EvaluationReport, VideoData
from evaluation.video_stream import VideoStream, evaluate_video
from steadydepth.errors import InputError
from storage.depth_store import DepthStore
from storage.naming import video_name

EVALUATE_VERSION = 2  # bump when the metrics, baselines or gate change: part of the evaluation's cache key
REPORT_FILES = ("report.md", "metrics.json")  # what a finished evaluation leaves in its folder


def evaluation_complete(out_dir: str | Path) -> bool:
    """True when out_dir holds a finished evaluation (every report file; each is written whole)."""
    return all(Path(out_dir, name).is_file() for name in REPORT_FILES)


def load_video(
    teacher_uri: str,
    refined_uri: str | None,
    cfg: EvaluateConfig,
    *,
    baselines: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> VideoData:
    """Read one video's teacher (and refined) depth and references into memory; run the baselines on the teacher
    depth. For scripts that evaluate other depth against a video's references (`evaluate_method`);
    `evaluate_dataset` streams instead."""
    teacher = DepthStore.open(teacher_uri, storage_options)
    n = teacher.num_frames
    wanted = ["depth", "K", "frame_index", *(v for v in ("gt_depth", "pose", "rgb") if v in teacher.variables)]
    data = teacher.read(0, n, wanted)
    depth = {"teacher": data["depth"]}
    if refined_uri is not None:
        refined = DepthStore.open(refined_uri, storage_options)
        if refined.num_frames != n or refined.size != teacher.size:
            raise InputError(
                f"refined store {refined_uri} has {refined.num_frames} frames of {refined.size}, teacher store "
                f"{teacher_uri} {n} of {teacher.size}; pass the refined store written from that teacher store"
            )
        r = refined.read(0, n, ["depth", "frame_index"])
        if not np.array_equal(r["frame_index"], data["frame_index"]):
            raise InputError(f"refined store {refined_uri} holds other frames than {teacher_uri}; re-run refine")
        depth["refined"] = r["depth"]
    if baselines:
        depth.update(run_baselines(data["depth"], cfg))
    gt, pose = data.get("gt_depth"), data.get("pose")
    mask = None
    if gt is not None and pose is not None:
        mask = static_mask_from_gt(gt, pose, rel_tol=cfg.static_rel_tol)
    rgb = data.get("rgb")
    warps = flow_warps(rgb, flow=cfg.flow) if rgb is not None else None
    return VideoData(video_name(teacher_uri), depth, data["K"], gt, pose, rgb, mask, warps)


def evaluate_method(pred: np.ndarray, video: VideoData, cfg: EvaluateConfig) -> dict[str, float]:
    """All metrics of one method on one video (see the module docstring for which appear when)."""
    has_gt = video.gt is not None
    out = evaluate_sequence(
        pred,
        gt=video.gt,
        K=video.K if has_gt and video.pose is not None else None,
        poses=video.pose if has_gt else None,
        rgb=video.rgb,
        static_mask=video.static_mask,
        cfg=cfg,
        alignment=cfg.alignment,
        flow=cfg.flow,
        opw_normalize="frame",
        opw_warps=video.warps,
    )
    if video.rgb is not None:
        out["opw_sequence"] = float(opw(pred, video.rgb, flow=cfg.flow, normalize="sequence", warps=video.warps))
    return {k: out[k] for k in metrics_in_order(out)}


def method_agreement(
    video: VideoData,
    teacher_uri: str,
    refined_uri: str | None,
    cfg: EvaluateConfig,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, float]]:
    """Teacher agreement of every method of one video: the refined store's streamed, the in-memory methods' direct."""
    teacher = video.depth["teacher"]
    out = {}
    for method, depth in video.depth.items():
        if method == "refined" and refined_uri is not None:
            out[method] = store_agreement(
                teacher_uri, refined_uri, window=cfg.agreement_window, storage_options=storage_options
            )
        else:
            out[method] = teacher_agreement(teacher, depth, window=cfg.agreement_window)
    return out


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """Drop undefined (NaN) metrics, so the gate falls through to the next flicker metric both sides have."""
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def evaluate_dataset(
    teacher_uris: list[str],
    refined_uris: list[str] | None,
    cfg: EvaluateConfig,
    out_dir: str,
    *,
    baselines: bool = True,
    plots: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> EvaluationReport:
    """Evaluate every video (streamed, one chunk at a time), average, gate, and write report.md, metrics.json, plots.

    teacher_uris: complete teacher stores. refined_uris: the refined store of each, same order, or None to
    evaluate the teacher (and baselines) alone; then `gate` is None. Returns an EvaluationReport.
    """
    from evaluation import report as rep  # matplotlib only when reporting

    teacher_uris = [str(u) for u in teacher_uris]
    if not teacher_uris:
        raise InputError("no teacher stores to evaluate; pass at least one <name>.teacher.zarr")
    if refined_uris is not None and len(refined_uris) != len(teacher_uris):
        raise InputError(f"{len(refined_uris)} refined stores for {len(teacher_uris)} teacher stores; pass one each")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    names = _unique([video_name(u) for u in teacher_uris])
    per_video: dict[str, dict[str, dict[str, float]]] = {}
    info: dict[str, dict[str, Any]] = {}
    plot_paths: list[str] = []
    methods: list[str] = []
    for i, (name, t_uri) in enumerate(zip(names, teacher_uris, strict=True)):
        r_uri = None if refined_uris is None else str(refined_uris[i])
        stream = VideoStream(t_uri, r_uri, cfg, baselines=baselines, storage_options=storage_options)
        video_plots = rep.VideoPlots(name, stream.num_frames) if plots else None
        result = evaluate_video(stream, None if video_plots is None else video_plots.add)
        methods = list(result.metrics)
        per_video[name] = result.metrics
        info[name] = result.info
        if video_plots is not None:
            plot_paths += video_plots.plot(out / "plots")

    means = {m: mean_over_sequences(per_video[v][m] for v in names) for m in methods}
    teacher_means = _finite(means["teacher"])

    def gate_of(method: str) -> GateResult:
        agreement = {v: per_video[v][method] for v in names}  # judged per video, not on the means
        return evaluate_gate(teacher_means, _finite(means[method]), cfg, agreement)

    gate = gate_of("refined") if "refined" in means else None
    baseline_gates = {m: gate_of(m) for m in methods if m in BASELINES}
    report = EvaluationReport(
        videos=names,
        methods=methods,
        per_video=per_video,
        means=means,
        gate=gate,
        baseline_gates=baseline_gates,
        video_info=info,
        report_path=str(out / REPORT_FILES[0]),
        metrics_path=str(out / REPORT_FILES[1]),
        plot_paths=plot_paths,
    )
    if plots:
        report.plot_paths += rep.plot_dataset(report, out / "plots", cfg)
    rep.write_metrics_json(report, cfg)
    rep.write_markdown(report, cfg)
    return report


def _unique(names: list[str]) -> list[str]:
    """Video names made unique (`a`, `a-2`, ...) so two stores with one name do not overwrite each other."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out
