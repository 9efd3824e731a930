"""Ingest one video: decode → teacher → a chunked teacher depth store. Plain Python, no Prefect.

Resumable by construction: the store knows which time chunks are finished, so a rerun decodes the
video again (cheap) but runs the teacher (expensive) only on chunks that are missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from steadydepth import __version__
from steadydepth.config import Config
from steadydepth.teachers.base import FrameBatch, Teacher, TeacherOutput
from steadydepth.teachers.batching import BatchSizer, predict_with_backoff
from steadydepth.video.open import open_source
from steadydepth.video.types import Frame, VideoInfo
from storage import uri as uris
from storage.depth_store import DepthStore, store_uri, video_attrs

ProgressFn = Callable[[int, int], None]  # (frames done, frames total)


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

    def to_dict(self) -> dict:
        return asdict(self)


def ingest_config_hash(cfg: Config) -> str:
    """Hash of everything that determines a teacher store's content (not where it is written)."""
    store_part = cfg.store.model_dump(include={"chunk_frames", "save_rgb", "compression_level"})
    return cfg.section_hash("decode", "teacher") + "-" + _short_hash(store_part)


def _short_hash(obj: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]


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
    info = src.info
    uri = store_uri(cfg.store.root, info.name, kind="teacher")
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
        variables=optional,
        compression_level=cfg.store.compression_level,
        storage_options=cfg.store.storage_options,
    )
    missing = set(store.missing_chunks())
    written = 0
    sizer = BatchSizer(cfg.teacher.batch_size)
    if missing:
        for chunk_id, frames in _chunks(src.frames(), cfg.store.chunk_frames):
            if chunk_id not in missing:
                continue
            out = predict_with_backoff(teacher, _batch(info, frames, K), sizer=sizer)
            store.write_chunk(chunk_id, **_chunk_arrays(store.variables, frames, out))
            written += 1
            if on_progress is not None:
                on_progress(min(frames[-1].index + 1, info.num_frames), info.num_frames)
    store.finalize()
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
    )


def _existing_store(uri: str, cfg: Config) -> DepthStore | None:
    if not uris.exists(uri, cfg.store.storage_options):
        return None
    return DepthStore.open(uri, cfg.store.storage_options, require_complete=False)


def _chunk_arrays(variables: Iterable[str], frames: list[Frame], out: TeacherOutput) -> dict[str, np.ndarray]:
    """The arrays of one store chunk, for exactly the variables the store holds."""
    arrays = {
        "depth": out.depth[:, 0].float().cpu().numpy(),
        "K": out.K.float().cpu().numpy(),
        "timestamp": np.array([f.timestamp for f in frames], np.float64),
        "frame_index": np.array([f.source_index for f in frames], np.int64),
    }
    optional = {
        "confidence": lambda: out.confidence[:, 0].float().cpu().numpy(),
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
