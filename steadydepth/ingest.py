"""Ingest one video: decode → teacher → a chunked teacher depth store. Plain Python, no Prefect.

Resumable by construction: the store knows which time chunks are finished, so a rerun decodes the
video again (cheap) but runs the teacher (expensive) only on chunks that are missing.

Every teacher's NaN/inf, zero or negative depth is repaired here and recorded per frame in the store
(`steadydepth.teachers.invalid`); a video fails only when too many of its frames are unusable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from steadydepth import __version__
from steadydepth.config import Config
from steadydepth.hashing import stable_hash
from steadydepth.teachers.base import FrameBatch, Teacher, TeacherOutput
from steadydepth.teachers.batching import BatchSizer, predict_with_backoff
from steadydepth.teachers.invalid import DepthRepair, RepairedChunk, VideoInvalidity
from steadydepth.video.open import open_source
from steadydepth.video.types import Frame, FrameSource, VideoInfo
from storage import uri as uris
from storage.depth_store import TEACHER_QUALITY, DepthStore
from storage.naming import store_uri
from storage.writing import exclusive_write

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]  # (frames done, frames total)
INGEST_VERSION = 2  # bump when decoding or the teacher store's content changes: part of ingest's cache key


@dataclass
class IngestResult:
    """What ingesting one video did; plain data so orchestration can log and tabulate it."""

    video: str
    name: str
    store_uri: str
    num_frames: int
    chunks_written: int
    chunks_skipped: int
    seconds: float
    teacher: str
    intrinsics: str  # "given", "shared-median" or "per-frame"
    invalid_pixels_total: int = 0  # teacher pixels that were NaN/inf, zero or negative (repaired)
    invalid_pixel_frames: int = 0  # frames with at least one such pixel
    invalid_frames: int = 0  # frames over teacher.max_invalid_fraction_per_frame (copied from a valid frame)

    def to_dict(self) -> dict:
        return asdict(self)


def video_attrs(info: VideoInfo, *, kind: str, teacher: str, teacher_version: str, config_hash: str) -> dict[str, Any]:
    """The caller metadata a store records for a video (pass it as `attrs` to `DepthStore.create`)."""
    return {
        "source": info.source,
        "source_hash": info.content_hash,
        "source_fps": float(info.source_fps),
        "fps": float(info.fps),
        "original_size": list(info.original_size),
        "padding": list(info.padding),
        "rotation": int(info.rotation),
        "teacher": teacher,
        "teacher_version": teacher_version,
        "config_hash": config_hash,
        "kind": kind,
    }


def ingest_config_hash(cfg: Config) -> str:
    """Hash of everything that determines a teacher store's content (not where it is written)."""
    store_part = cfg.store.model_dump(include={"chunk_frames", "save_rgb", "compression_level"})
    # A pass/fail limit, not content: raising it after a failure resumes the store instead of refusing it.
    teacher_part = cfg.teacher.model_dump(mode="json", exclude={"max_invalid_frames_fraction"})
    return cfg.section_hash("decode") + "-" + _short_hash({"teacher": teacher_part, "store": store_part})


def _short_hash(obj: dict) -> str:
    return stable_hash(obj, 8)


def _batch(info: VideoInfo, frames: list[Frame], K: np.ndarray | None) -> FrameBatch:
    rgb = torch.from_numpy(np.stack([f.rgb for f in frames])).permute(0, 3, 1, 2).contiguous()
    gt = None
    if frames[0].gt_depth is not None:
        gt = torch.from_numpy(np.stack([f.gt_depth for f in frames]).astype(np.float32))[:, None]
    k = None if K is None else torch.from_numpy(np.asarray(K, np.float32)).expand(len(frames), 3, 3).clone()
    return FrameBatch(
        video=info,
        indices=[f.index for f in frames],
        source_indices=[f.source_index for f in frames],
        rgb=rgb,
        K=k,
        gt_depth=gt,
        source_numbers=[f.source_index if f.source_number is None else f.source_number for f in frames],
    )


def _chunks(frames: Iterable[Frame], chunk_frames: int) -> Iterator[tuple[int, list[Frame]]]:
    """Group a frame stream into consecutive store chunks (chunk i holds frames i*c .. (i+1)*c-1)."""
    buf: list[Frame] = []
    for frame in frames:
        buf.append(frame)
        if len(buf) == chunk_frames:
            yield frame.index // chunk_frames, buf
            buf = []
    if buf:
        yield buf[0].index // chunk_frames, buf


def estimate_shared_intrinsics(source, teacher: Teacher, samples: int, batch_size: int) -> np.ndarray | None:
    """Median of the teacher's own K over `samples` evenly spaced frames (UniDepth maintainers' advice).

    One K for the whole video removes a source of flicker: per-frame K estimates jitter.
    """
    info = source.info
    wanted = set(np.linspace(0, info.num_frames - 1, min(samples, info.num_frames)).round().astype(int).tolist())
    picked = [f for f in source.frames() if f.index in wanted]
    estimates = []
    for start in range(0, len(picked), batch_size):
        k = teacher.estimate_intrinsics(_batch(info, picked[start : start + batch_size], None))
        if k is None:
            return None
        estimates.append(k.detach().cpu().double().numpy())
    return np.median(np.concatenate(estimates), axis=0)


def ingest_video(
    source: str,
    cfg: Config,
    *,
    teacher: Teacher,
    on_progress: ProgressFn | None = None,
) -> IngestResult:
    """Write (or finish) the teacher depth store of one video; returns what was done.

    Raises InputError subclasses for bad input (never retried) and leaves finished chunks valid.
    """
    t0 = time.perf_counter()
    src = open_source(source, cfg.decode)
    uri = store_uri(cfg.store.root, src.info.name, kind="teacher")
    # One writer per store: a second run (or a second video of the same name) is refused, never interleaved.
    with exclusive_write(uri, f"{src.info.name} is being ingested", cfg.store.storage_options):
        return _ingest_claimed(src, uri, cfg, teacher, on_progress, t0)


def _ingest_claimed(
    src: FrameSource, uri: str, cfg: Config, teacher: Teacher, on_progress: ProgressFn | None, t0: float
) -> IngestResult:
    """`ingest_video` once the store's write claim is held."""
    info = src.info
    h, w = info.size

    existing = _existing_store(uri, cfg)
    shared_k = existing.attrs.get("shared_K") if existing is not None else None
    if info.K is not None:
        K, k_mode = info.K, "given"
    elif shared_k is not None:
        K, k_mode = np.asarray(shared_k), "shared-median"
    elif cfg.teacher.shared_intrinsics == "median" and (existing is None or existing.missing_chunks()):
        K = estimate_shared_intrinsics(src, teacher, cfg.teacher.median_samples, cfg.teacher.batch_size)
        k_mode = "per-frame" if K is None else "shared-median"
    else:
        K, k_mode = None, "per-frame"

    attrs = video_attrs(
        info, kind="teacher", teacher=teacher.id, teacher_version=teacher.version, config_hash=ingest_config_hash(cfg)
    )
    attrs.update(
        source_name=info.name,
        size=list(info.size),
        intrinsics=k_mode,
        shared_K=None if K is None else np.asarray(K, float).tolist(),
        steadydepth_version=__version__,
    )
    optional = [
        name
        for name, wanted in (
            ("confidence", teacher.has_confidence),
            ("gt_depth", info.has_ground_truth),
            ("pose", info.has_ground_truth),
            ("rgb", cfg.store.save_rgb),
        )
        if wanted
    ]
    store = DepthStore.create(
        uri,
        num_frames=info.num_frames,
        height=h,
        width=w,
        chunk_frames=cfg.store.chunk_frames,
        attrs=attrs,
        variables=[*optional, *TEACHER_QUALITY],
        compression_level=cfg.store.compression_level,
        storage_options=cfg.store.storage_options,
    )
    tally = VideoInvalidity.from_arrays(store.read(0, store.num_frames, VideoInvalidity.READS))  # resume: what's done
    written = _write_missing(store, src, teacher, K, cfg, tally, on_progress)
    summary = _finish(store, tally, cfg, teacher.id, info.name)
    return IngestResult(
        video=info.source,
        name=info.name,
        store_uri=uri,
        num_frames=info.num_frames,
        chunks_written=written,
        chunks_skipped=store.num_chunks - written,
        seconds=round(time.perf_counter() - t0, 3),
        teacher=teacher.id,
        intrinsics=k_mode,
        **summary,
    )


def _write_missing(
    store: DepthStore,
    src: FrameSource,
    teacher: Teacher,
    K: np.ndarray | None,
    cfg: Config,
    tally: VideoInvalidity,
    on_progress: ProgressFn | None,
) -> int:
    """Run the teacher on the store's missing chunks, repair their depth and write them; returns how many."""
    missing = set(store.missing_chunks())
    if not missing:
        return 0
    info = src.info
    sizer = BatchSizer(cfg.teacher.batch_size)
    repair: DepthRepair | None = None
    written = 0
    for chunk_id, frames in _chunks(src.frames(), cfg.store.chunk_frames):
        if chunk_id not in missing:
            repair = None  # the next missing chunk carries on from its predecessor in the store
            continue
        start = frames[0].index
        if repair is None:
            repair = DepthRepair(cfg.teacher.max_invalid_fraction_per_frame, _previous_depth(store, tally, start))
        out = predict_with_backoff(teacher, _batch(info, frames, K), sizer=sizer)
        conf = None if out.confidence is None else out.confidence[:, 0].float().cpu().numpy()
        fixed = repair(out.depth[:, 0].float().cpu().numpy(), conf)
        store.write_chunk(chunk_id, **_chunk_arrays(store.variables, frames, out, fixed))
        tally.record(start, fixed, [f.source_index for f in frames])
        written += 1
        _check_invalid(tally, cfg, teacher.id, info.name, final=False)  # fail early: the count only grows
        if on_progress is not None:
            on_progress(min(frames[-1].index + 1, info.num_frames), info.num_frames)
    return written


def _previous_depth(store: DepthStore, tally: VideoInvalidity, start: int) -> np.ndarray | None:
    """The repaired depth of the frame before `start` (a valid frame or a copy of one), None if none is valid."""
    if start == 0 or not tally.valid_before(start):
        return None
    return store.read(start - 1, start)["depth"][0]


def _check_invalid(tally: VideoInvalidity, cfg: Config, teacher: str, video: str, *, final: bool) -> None:
    tally.check(
        video=video,
        teacher=teacher,
        max_frames_fraction=cfg.teacher.max_invalid_frames_fraction,
        per_frame=cfg.teacher.max_invalid_fraction_per_frame,
        final=final,
    )


def _finish(store: DepthStore, tally: VideoInvalidity, cfg: Config, teacher: str, video: str) -> dict[str, int]:
    """Check the video is usable, fill leading invalid frames, record the totals and finalize; returns them."""
    _check_invalid(tally, cfg, teacher, video, final=True)
    summary = tally.summary()
    if not store.is_complete:
        _backfill_leading(store, tally)
        store.group.attrs.update(summary)
    store.finalize()
    _log_invalid(video, summary, store.num_frames, cfg.teacher.max_invalid_fraction_per_frame)
    return summary


def _backfill_leading(store: DepthStore, tally: VideoInvalidity) -> None:
    """Invalid frames before the first valid one had nothing to copy: give them the first valid frame's depth.

    Runs before finalize on every unfinished store, so it also completes a run killed half-way through it.
    """
    first = tally.first_valid()
    if not first:  # None cannot pass _check_invalid; 0: nothing leads
        return
    depth = store.read(first, first + 1)["depth"][0]
    for chunk in range(store.num_chunks):
        start, stop = store.chunk_bounds(chunk)
        if start >= first:
            break
        arrays = store.read(start, stop, store.variables)
        n = min(stop, first) - start
        if np.array_equal(arrays["depth"][:n], np.broadcast_to(depth, (n, *depth.shape))):
            continue  # already filled by an earlier run
        arrays["depth"][:n] = depth
        store.write_chunk(chunk, **arrays)


def _log_invalid(video: str, summary: dict[str, int], num_frames: int, per_frame: float) -> None:
    if not summary["invalid_pixels_total"]:
        return
    # A warning, so it shows without logging set up (Python's last-resort handler prints warnings only).
    log.warning(
        "video %s: %d teacher depth pixels were NaN/inf, zero or negative, in %d of %d frames (filled; the store's "
        "invalid_pixels); %d frames had over %g%% such pixels and copy the previous valid frame (frame_valid 0)",
        video,
        summary["invalid_pixels_total"],
        summary["invalid_pixel_frames"],
        num_frames,
        summary["invalid_frames"],
        per_frame * 100,
    )


def _existing_store(uri: str, cfg: Config) -> DepthStore | None:
    if not uris.exists(uri, cfg.store.storage_options):
        return None
    return DepthStore.open(uri, cfg.store.storage_options, require_complete=False)


def _chunk_arrays(
    variables: Iterable[str], frames: list[Frame], out: TeacherOutput, fixed: RepairedChunk
) -> dict[str, np.ndarray]:
    """The arrays of one store chunk (repaired depth and confidence), for exactly the variables the store holds."""
    arrays = {
        "depth": fixed.depth,
        "K": out.K.float().cpu().numpy(),
        "timestamp": np.array([f.timestamp for f in frames], np.float64),
        "frame_index": np.array([f.source_index for f in frames], np.int64),
    }
    optional = {
        "confidence": lambda: fixed.confidence,
        "invalid_pixels": lambda: fixed.invalid_pixels,
        "frame_valid": lambda: fixed.frame_valid,
        "gt_depth": lambda: np.stack([f.gt_depth for f in frames]).astype(np.float32),
        "pose": lambda: _poses(frames),
        "rgb": lambda: np.stack([f.rgb for f in frames]),
    }
    arrays.update({name: make() for name, make in optional.items() if name in variables})
    return arrays


def _poses(frames: list[Frame]) -> np.ndarray:
    """(T, 4, 4) poses; NaN for frames without one (a frame folder may lack some pose files)."""
    nan = np.full((4, 4), np.nan)
    return np.stack([nan if f.pose is None else f.pose for f in frames])
