"""One video's evaluation, streamed over its stores one chunk at a time: memory does not grow with its length.

    statistics passes (only what the video needs; depth, GT and poses, never the optical flow):
        the static mask (per-pixel GT min / max, then exact medians of the undecided pixels),
        each method's median and mean absolute deviation of depth (OPW's sequence normalisation),
        each method's alignment (EvaluateConfig.alignment other than "none")
    main pass: per chunk the optical flow once (`FlowWarpStream`), then every method's `SequenceMetrics`,
        teacher agreement and plot data

Chunks are the teacher store's; the refined store is read over the same frames whatever its own chunking. The
baselines run alongside (`baseline_filters`: fresh filters each pass, so every pass sees the same depth, and their
state carries over chunk boundaries). What a pass keeps is per pixel or per frame pair, never per video: the
numbers equal the whole-array computation (`evaluation.metrics.evaluate_sequence` on the video in memory) to float
rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluation.accuracy import AlignmentFitStream
from evaluation.agreement import AgreementAccumulator
from evaluation.baselines import BASELINES, baseline_filters, run_filter
from evaluation.config import EvaluateConfig
from evaluation.metric_names import metrics_in_order
from evaluation.metrics import SequenceMetrics
from evaluation.temporal import FlowWarpStream, OPWAccumulator, RobustStatsStream, StaticMaskAccumulator
from steadydepth.errors import InputError
from storage.depth_store import DepthStore

REFERENCES = ("gt_depth", "pose", "rgb")  # what a teacher store may hold besides depth and K


@dataclass
class Chunk:
    """Frames [start, start + n) of one video: every method's depth (when asked for) and the references."""

    start: int
    depth: dict[str, np.ndarray]  # method -> (n, H, W) metres
    K: np.ndarray  # (n, 3, 3)
    gt: np.ndarray | None = None  # (n, H, W)
    pose: np.ndarray | None = None  # (n, 4, 4)
    rgb: np.ndarray | None = None  # (n, H, W, 3) uint8


class VideoStream:
    """A video's teacher store (and refined store), read chunk by chunk, with the baselines run on the teacher."""

    def __init__(
        self,
        teacher_uri: str,
        refined_uri: str | None,
        cfg: EvaluateConfig,
        *,
        baselines: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.teacher_uri, self.refined_uri, self.cfg = teacher_uri, refined_uri, cfg
        self.teacher = DepthStore.open(teacher_uri, storage_options)
        self.refined = None
        if refined_uri is not None:
            self.refined = DepthStore.open(refined_uri, storage_options)
            if self.refined.num_frames != self.teacher.num_frames or self.refined.size != self.teacher.size:
                raise InputError(
                    f"refined store {refined_uri} has {self.refined.num_frames} frames of {self.refined.size}, "
                    f"teacher store {teacher_uri} {self.teacher.num_frames} of {self.teacher.size}; pass the "
                    "refined store written from that teacher store"
                )
        self.baselines = baselines
        self.references = tuple(v for v in REFERENCES if v in self.teacher.variables)
        self.methods = ["teacher", *(["refined"] if self.refined else []), *(BASELINES if baselines else ())]

    @property
    def num_frames(self) -> int:
        return self.teacher.num_frames

    @property
    def size(self) -> tuple[int, int]:
        return self.teacher.size

    def has(self, reference: str) -> bool:
        return reference in self.references

    def chunks(self, *, methods: bool = True, references: Sequence[str] = ()) -> Iterator[Chunk]:
        """Every chunk of the video in order; `methods` False: the teacher's depth only (no refined, no baselines)."""
        filters = baseline_filters(self.cfg) if methods and self.baselines else {}
        for i in range(self.teacher.num_chunks):
            start, stop = self.teacher.chunk_bounds(i)
            data = self.teacher.read(start, stop, ["depth", "K", "frame_index", *references])
            depth = {"teacher": data["depth"]}
            if methods and self.refined is not None:
                refined = self.refined.read(start, stop, ["depth", "frame_index"])
                if not np.array_equal(refined["frame_index"], data["frame_index"]):
                    raise InputError(
                        f"refined store {self.refined_uri} holds other frames than {self.teacher_uri}; re-run refine"
                    )
                depth["refined"] = refined["depth"]
            depth.update({name: run_filter(filt, data["depth"]) for name, filt in filters.items()})
            yield Chunk(start, depth, data["K"], data.get("gt_depth"), data.get("pose"), data.get("rgb"))


@dataclass
class _Statistic:
    """One whole-video statistic being gathered: what it reads and how it is fed."""

    add: Callable[[Chunk], None]
    end_pass: Callable[[], bool]  # True: complete
    methods: bool  # needs the refined and baseline depth, not only the teacher's
    references: tuple[str, ...]
    done: bool = False


@dataclass
class VideoStatistics:
    """What the metrics need from the whole video before the main pass."""

    static_mask: np.ndarray | None = None  # (H, W); None without GT + poses
    gt_finite: np.ndarray | None = None  # (H, W) GT finite in every frame; None without GT (the plots' pixel)
    robust: dict[str, tuple[float, float]] = field(default_factory=dict)  # method -> (median, mean |d − median|)
    alignment: dict[str, tuple[float, float]] = field(default_factory=dict)  # method -> (scale, shift)


def video_statistics(stream: VideoStream) -> VideoStatistics:
    """The static mask, every method's robust depth statistics (with RGB) and alignment (with GT), in as few
    passes as the slowest of them needs (none when the video has no GT, no RGB and alignment is "none")."""
    cfg, out = stream.cfg, VideoStatistics()
    stats: list[_Statistic] = []
    mask: StaticMaskAccumulator | None = None
    if stream.has("gt_depth"):
        out.gt_finite = np.ones(stream.size, dtype=bool)

        def gt_finite(chunk: Chunk) -> None:
            out.gt_finite &= np.isfinite(chunk.gt).all(axis=0)

        stats.append(_Statistic(gt_finite, lambda: True, False, ("gt_depth",)))
        if stream.has("pose"):
            mask = StaticMaskAccumulator(stream.size, cfg.static_rel_tol)
            stats.append(_Statistic(lambda c: mask.add(c.gt, c.pose), mask.end_pass, False, ("gt_depth", "pose")))
    robust = {m: RobustStatsStream() for m in stream.methods} if stream.has("rgb") else {}
    for method, acc in robust.items():
        stats.append(_Statistic(lambda c, m=method, a=acc: a.add(c.depth[m]), acc.end_pass, method != "teacher", ()))
    caps = {"min_depth": cfg.min_depth, "max_depth": cfg.max_depth}
    align = {}
    if stream.has("gt_depth") and cfg.alignment != "none":
        align = {m: AlignmentFitStream(**caps, alignment=cfg.alignment) for m in stream.methods}
    for method, acc in align.items():
        feed = lambda c, m=method, a=acc: a.add(c.depth[m], c.gt)  # noqa: E731 - bound per method
        stats.append(_Statistic(feed, acc.end_pass, method != "teacher", ("gt_depth",)))

    while pending := [s for s in stats if not s.done]:
        references = sorted({r for s in pending for r in s.references})
        for chunk in stream.chunks(methods=any(s.methods for s in pending), references=references):
            for s in pending:
                s.add(chunk)
        for s in pending:
            s.done = s.end_pass()
    if mask is not None:
        out.static_mask = mask.mask()
    out.robust = {m: acc.result() for m, acc in robust.items()}
    out.alignment = {m: acc.result() for m, acc in align.items()}
    return out


@dataclass
class VideoResult:
    """One video's metrics per method (report order, agreement last), what the report says about it, and its
    statistics (the static mask)."""

    metrics: dict[str, dict[str, float]]
    info: dict[str, Any]
    statistics: VideoStatistics


def _method_metrics(stream: VideoStream, stats: VideoStatistics, method: str) -> SequenceMetrics:
    """The accumulator of one method's metrics: the keys `evaluation.evaluate.evaluate_method` gives."""
    cfg, has_gt = stream.cfg, stream.has("gt_depth")
    opw = {}
    if stream.has("rgb"):
        median, mad = stats.robust[method]
        sequence = OPWAccumulator("sequence", median=median, mean_abs_dev=mad)
        opw = {"opw": OPWAccumulator("frame"), "opw_sequence": sequence}
    scale, shift = stats.alignment.get(method, (1.0, 0.0))
    return SequenceMetrics(
        min_depth=cfg.min_depth,
        max_depth=cfg.max_depth,
        accuracy=has_gt,
        alignment=cfg.alignment,
        scale=scale,
        shift=shift,
        tae=has_gt and stream.has("pose"),
        opw=opw,
        static_flicker=stats.static_mask is not None,
    )


def evaluate_video(
    stream: VideoStream, on_chunk: Callable[[Chunk, VideoStatistics], None] | None = None
) -> VideoResult:
    """Every method's metrics and teacher agreement of one video, streamed (see the module docstring).

    on_chunk(chunk, statistics), if given, sees every chunk of the main pass (the plots collect their data so).
    """
    cfg = stream.cfg
    stats = video_statistics(stream)
    metrics = {m: _method_metrics(stream, stats, m) for m in stream.methods}
    agreement = {m: AgreementAccumulator() for m in stream.methods}
    warps = FlowWarpStream(flow=cfg.flow) if stream.has("rgb") else None
    for chunk in stream.chunks(references=stream.references):
        pairs = None if warps is None else warps.add(chunk.rgb)
        for method, depth in chunk.depth.items():
            refs = {"gt": chunk.gt, "K": chunk.K, "poses": chunk.pose, "static_mask": stats.static_mask}
            metrics[method].add(depth, warps=pairs, **refs)
            agreement[method].add_frames(chunk.depth["teacher"], depth)
        if on_chunk is not None:
            on_chunk(chunk, stats)
    out = {}
    for method, acc in metrics.items():
        values = acc.result()
        out[method] = {k: values[k] for k in metrics_in_order(values)}
        out[method].update(agreement[method].result(cfg.agreement_window))  # agreement metrics come last
    mask = stats.static_mask
    info = {
        "teacher_store": stream.teacher_uri,
        "refined_store": stream.refined_uri,
        "frames": stream.num_frames,
        "size": list(stream.size),
        "ground_truth": stream.has("gt_depth"),
        "pose": stream.has("pose"),
        "rgb": stream.has("rgb"),
        "static_pixel_fraction": None if mask is None else float(mask.mean()),
    }
    return VideoResult(out, info, stats)
