"""Refine a teacher depth store with a trained smoother, chunk by chunk, into a new refined store.

    <root>/<name>.teacher.zarr ─ read a block ─▶ refine_chunk (smoother/streaming.py: the maths, state carried)
                               ─ write ─▶ <root>/<name>.refined-<model hash>.zarr

This module is the store pipeline around the per-chunk maths: it opens the teacher store, creates or resumes the
refined one, schedules blocks of chunks (pre-roll first) and overlaps reading, computing and writing in threads.

Streaming: a block of whole chunks at a time is read, refined and written (one chunk on a CPU, 64 frames on a GPU:
`default_frames_per_call`); the `StreamState` carries the past across blocks, so the result equals one model call
over the whole video (up to float rounding), and memory holds three blocks (the next being read, this one, the last
being written) plus the fixed-size state however long the video is. The pre-roll (SmootherConfig.preroll) runs
first, read backwards and never written.

The teacher store is only read. The refined store has the teacher's chunking, K, timestamps, frame
indices and confidence, plus gt_depth and pose when the teacher store has them (so evaluation finds
everything frame-aligned in one place); it has no rgb (the teacher store keeps it).

Identity and resume: the refined store's `config_hash` is a hash of the model (config + every weight),
the upsampling settings and the teacher store's config_hash. A rerun with the same model resumes: it
replays the model (and the temporal filter) over the finished chunks, nothing written, to rebuild the
state, then writes only the missing chunks. Another model → StoreError unless overwrite=True.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from smoother.grid import model_grid_size
from smoother.model import ResidualSmoother
from smoother.streaming import StreamState, preroll_span, refine_chunk
from smoother.upsample import DEFAULT_EPS, DEFAULT_RADIUS
from steadydepth.device import resolve_device
from steadydepth.errors import StoreError
from steadydepth.hashing import stable_hash
from storage import naming
from storage import uri as uris
from storage.depth_store import DepthStore

ProgressFn = Callable[[int, int], None]  # (frames done, frames total), as in steadydepth.ingest
REFINE_VERSION = 6  # bump when the refinement arithmetic changes: it is part of the store identity
COPIED = ("confidence", "gt_depth", "pose")  # optional teacher variables the refined store carries over


@dataclass
class ResidualStats:
    """Statistics of the store-resolution residual ΔD (log-depth) over the frames written by one run."""

    frames: int
    pixels: int
    mean: float
    mean_abs: float
    rms: float
    min: float
    max: float


@dataclass
class RefineResult:
    """What one `refine_store` call did; plain data so orchestration can log and tabulate it."""

    uri: str
    teacher_uri: str
    num_frames: int
    grid: tuple[int, int]  # (h, w) the model ran at
    chunks_written: int
    chunks_skipped: int  # already done by an earlier run (replayed at low res for the state, not written)
    config_hash: str
    model_id: str
    seconds: float
    residual_stats: ResidualStats | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def model_hash(model: ResidualSmoother) -> str:
    """Stable 16-hex hash of a smoother: its config and every parameter/buffer (name, dtype, shape, bytes)."""
    h = hashlib.sha256(json.dumps(model.cfg.model_dump(mode="json"), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # raw bytes, any dtype (bf16 too)
    return h.hexdigest()[:16]


def refined_config_hash(smoother_hash: str, teacher_config_hash: str, *, radius: int, eps: float) -> str:
    """The refined store's identity: the model (`model_hash`), upsampling settings and the teacher's identity."""
    payload = {
        "version": REFINE_VERSION,
        "model": smoother_hash,
        "upsample": {"method": "guided", "radius": radius, "eps": eps},
        "teacher_config_hash": teacher_config_hash,
    }
    return stable_hash(payload, 16)


def refined_store_matches(
    refined_uri: str,
    teacher_uri: str,
    model: ResidualSmoother,
    storage_options: Mapping[str, Any] | None = None,
    *,
    upsample_radius: int = DEFAULT_RADIUS,
    upsample_eps: float = DEFAULT_EPS,
    complete: bool = True,
) -> bool:
    """True when refined_uri is a complete refined store of this teacher store, made by this model with this
    refinement code: what a cached refinement must still be to be trusted. complete=False: finished or not (a
    store a killed refinement left, which the same refinement resumes from its finished chunks)."""
    if not uris.exists(refined_uri, storage_options):
        return False
    try:
        refined = DepthStore.open(refined_uri, storage_options, require_complete=False)
        teacher = DepthStore.open(teacher_uri, storage_options)
    except StoreError:
        return False
    identity = _Identity.of(model, teacher, None, radius=upsample_radius, eps=upsample_eps)
    return (refined.is_complete or not complete) and refined.attrs.get("config_hash") == identity.config_hash


class _StatsAccumulator:
    """Running sums for ResidualStats: O(1) memory however many frames pass through."""

    def __init__(self) -> None:
        self.frames = self.pixels = 0
        self.total = self.total_abs = self.total_sq = 0.0
        self.lo, self.hi = math.inf, -math.inf

    def add(self, residual: torch.Tensor) -> None:
        """residual (n, H, W)."""
        r = residual.double()
        self.frames += r.shape[0]
        self.pixels += r.numel()
        self.total += float(r.sum())
        self.total_abs += float(r.abs().sum())
        self.total_sq += float(r.square().sum())
        self.lo, self.hi = min(self.lo, float(r.min())), max(self.hi, float(r.max()))

    def result(self) -> ResidualStats | None:
        if not self.pixels:
            return None
        n = self.pixels
        return ResidualStats(
            self.frames, n, self.total / n, self.total_abs / n, math.sqrt(self.total_sq / n), self.lo, self.hi
        )


def _same_location(a: str, b: str) -> bool:
    """Whether two store URIs name the same place (local paths resolved; URLs compared without a trailing '/')."""
    if not uris.is_url(a) and not uris.is_url(b):
        return os.path.realpath(a) == os.path.realpath(b)
    return a.rstrip("/") == b.rstrip("/")


@dataclass(frozen=True)
class RefinePlan:
    """What one refinement streams: from which store into which, with which model, and which chunks it writes."""

    teacher: DepthStore
    refined: DepthStore
    model: ResidualSmoother
    device: torch.device
    grid: tuple[int, int]  # (h, w) the model runs at
    missing: frozenset[int]  # refined chunks to write; the chunks before the last of them are replayed for the state
    chunks_per_call: int  # whole chunks per model call
    radius: int  # the guided upsampling's settings (smoother.upsample)
    eps: float

    @property
    def inputs(self) -> list[str]:
        """The teacher variables the model and the filter read (those the store has and the model uses)."""
        cfg, have = self.model.cfg, self.teacher.variables
        names = ["depth"]
        if "confidence" in have:
            names.append("confidence")
        if "rgb" in have and (cfg.use_features or cfg.flow_warp or cfg.flow_cues):
            names.append("rgb")
        if "frame_valid" in have:  # frames ingest found unusable are bridged, not refined
            names.append("frame_valid")
        return names

    @property
    def copied(self) -> list[str]:
        """The refined store's variables besides depth (K, timestamp, frame_index + optional copies), read as is."""
        return [v for v in self.refined.variables if v != "depth"]


def refine_store(
    teacher_uri: str,
    refined_uri: str | None,
    model: ResidualSmoother,
    *,
    device: str | torch.device = "cpu",
    chunk_frames: int | None = None,
    frames_per_call: int | None = None,
    attrs_extra: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    on_progress: ProgressFn | None = None,
    overwrite: bool = False,
    model_id: str | None = None,
    residual_stats: bool = True,
    upsample_radius: int = DEFAULT_RADIUS,
    upsample_eps: float = DEFAULT_EPS,
) -> RefineResult:
    """Write `refined_uri` = the teacher store's depth refined by `model`, streaming chunk by chunk.

    teacher_uri: a complete teacher store (only read, never modified).
    refined_uri: where to write; None → next to the teacher store (`storage.naming.refined_uri`). Must differ from it.
    model: moved to `device` ("auto" = CUDA when available) and run in eval mode in its own dtype.
    chunk_frames: frames per refined chunk (the unit of writing and resume); None → the teacher store's chunking.
    frames_per_call: frames per model call, rounded up to whole chunks; None → `default_frames_per_call`.
    attrs_extra: extra JSON-serialisable attrs for the refined store (e.g. the training run id).
    overwrite: replace an existing refined store of another model instead of raising StoreError.
    model_id: a human-readable name for the model recorded in the attrs; default "smoother-<model hash>".
    residual_stats: also return statistics of ΔD over the frames written by this call.
    upsample_radius, upsample_eps: the guided filter's settings (see smoother.upsample); part of the identity.

    Returns a RefineResult. A finished refined store of the same model is left as it is (nothing written).
    """
    t0 = time.perf_counter()
    refined_uri = naming.refined_uri(teacher_uri, model_hash(model)) if refined_uri is None else str(refined_uri)
    if _same_location(refined_uri, teacher_uri):
        raise ValueError(f"refined_uri is the teacher store {teacher_uri}; the teacher store is never overwritten")
    teacher = DepthStore.open(teacher_uri, storage_options)
    dev = resolve_device(device)
    height, width = teacher.size
    grid = model_grid_size(height, width, model.cfg.depth_long_edge)
    identity = _Identity.of(model, teacher, model_id, radius=upsample_radius, eps=upsample_eps)
    refined = DepthStore.create(  # resumes a store of the same identity, refuses another (unless overwrite)
        refined_uri,
        num_frames=teacher.num_frames,
        height=height,
        width=width,
        chunk_frames=chunk_frames or teacher.chunk_frames,
        attrs=_refined_attrs(teacher, model, identity, grid, attrs_extra),
        variables=[v for v in COPIED if v in teacher.variables],
        storage_options=storage_options,
        overwrite=overwrite,
    )
    missing = [] if refined.is_complete else refined.missing_chunks()  # resume: only these are written
    stats = _StatsAccumulator() if residual_stats else None
    if missing:
        per_call = frames_per_call or default_frames_per_call(dev, refined.chunk_frames)
        plan = RefinePlan(
            teacher=teacher,
            refined=refined,
            model=model,
            device=dev,
            grid=grid,
            missing=frozenset(missing),
            chunks_per_call=max(1, -(-per_call // refined.chunk_frames)),
            radius=upsample_radius,
            eps=upsample_eps,
        )
        _run(plan, stats=stats, on_progress=on_progress)
        refined.finalize()
    return RefineResult(
        uri=refined.uri,
        teacher_uri=teacher.uri,
        num_frames=teacher.num_frames,
        grid=grid,
        chunks_written=len(missing),
        chunks_skipped=refined.num_chunks - len(missing),
        config_hash=identity.config_hash,
        model_id=identity.model_id,
        seconds=time.perf_counter() - t0,
        residual_stats=None if stats is None else stats.result(),
    )


@dataclass(frozen=True)
class _Identity:
    """What makes a refined store this refinement: the model, the upsampling settings and the teacher store."""

    config_hash: str  # `refined_config_hash` of the three
    model_hash: str
    model_id: str
    upsample: dict[str, Any]

    @classmethod
    def of(
        cls, model: ResidualSmoother, teacher: DepthStore, model_id: str | None, *, radius: int, eps: float
    ) -> _Identity:
        smoother_hash = model_hash(model)
        teacher_hash = str(teacher.attrs.get("config_hash", ""))
        return cls(
            config_hash=refined_config_hash(smoother_hash, teacher_hash, radius=radius, eps=eps),
            model_hash=smoother_hash,
            model_id=model_id or f"smoother-{smoother_hash}",
            upsample={"method": "guided", "radius": radius, "eps": eps},
        )


def _refined_attrs(
    teacher: DepthStore,
    model: ResidualSmoother,
    identity: _Identity,
    grid: tuple[int, int],
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The refined store's attrs: the teacher's description of the video, the caller's extras, then what makes it
    this refinement, which the extras may not override."""
    extra = dict(extra or {})
    clash = sorted(set(extra) & {"kind", "config_hash", "source_hash"})
    if clash:
        raise ValueError(f"attrs_extra may not set the refined store's identity keys {clash}")
    return {
        **teacher.caller_attrs,  # source, source_hash, fps, teacher, ... describe the same video
        **extra,
        "kind": "refined",
        "config_hash": identity.config_hash,
        "teacher_store": teacher.uri,
        "teacher_config_hash": teacher.attrs.get("config_hash"),
        "model_id": identity.model_id,
        "model_hash": identity.model_hash,
        "smoother": model.cfg.model_dump(mode="json"),
        "model_grid": list(grid),
        "upsample": identity.upsample,
    }


def default_frames_per_call(device: torch.device, chunk_frames: int) -> int:
    """Frames the model sees per call: one chunk on a CPU; on a GPU at least 64 (whole chunks).

    On a GPU a call over a 16-frame chunk costs the same kernel launches as one over 64 frames, so longer calls
    cut the per-frame time about threefold (docs/benchmarks-speed.md); the price is GPU memory for that many
    store-resolution frames. On a CPU the cost is per frame, and one chunk keeps the memory smallest.
    """
    if device.type == "cuda":
        return chunk_frames * max(1, -(-64 // chunk_frames))
    return chunk_frames


@dataclass(frozen=True)
class _Block:
    """Frames [start, stop) read and run in one model call, and the refined chunks written from them."""

    start: int
    stop: int
    write: tuple[int, ...] = ()  # chunks of the refined store to write (none: only advance the state)
    backward: bool = False  # pre-roll: read in reverse order, never written


def _preroll_blocks(num_frames: int, preroll: int, step: int) -> Iterator[_Block]:
    """The pre-roll (`preroll_span`) in blocks of `step` frames, last block first (each is read backwards).

    Deterministic, so a resumed run replays it identically.
    """
    first, stop = preroll_span(num_frames, preroll)
    while stop > first:
        start = max(first, stop - step)
        yield _Block(start, stop, backward=True)
        stop = start


def _blocks(refined: DepthStore, missing: frozenset[int], chunks_per_call: int) -> list[_Block]:
    """Runs of `chunks_per_call` chunks up to the last missing one (later chunks need no state)."""
    last = max(missing)
    blocks = []
    for first in range(0, last + 1, chunks_per_call):
        chunks = range(first, min(first + chunks_per_call, last + 1))
        start, stop = refined.chunk_bounds(chunks[0])[0], refined.chunk_bounds(chunks[-1])[1]
        blocks.append(_Block(start, stop, write=tuple(i for i in chunks if i in missing)))
    return blocks


def _schedule(plan: RefinePlan) -> list[_Block]:
    """Every block the run reads, in order: the pre-roll, then the chunks up to the last missing one."""
    step = plan.chunks_per_call * plan.refined.chunk_frames
    preroll = _preroll_blocks(plan.teacher.num_frames, plan.model.cfg.preroll, step)
    return [*preroll, *_blocks(plan.refined, plan.missing, plan.chunks_per_call)]


def _prefetch(
    read: Callable[[_Block], dict[str, np.ndarray]], blocks: list[_Block], ahead: int = 1
) -> Iterator[tuple[_Block, dict[str, np.ndarray]]]:
    """(block, data) in order, the next `ahead` blocks read in background threads while the caller computes.

    Zarr decompresses outside the GIL, so reading overlaps the model (on a CPU the model sets the pace, on a GPU
    the writing, which is slower than the reading: one block ahead keeps up); `ahead` more blocks in memory.
    """
    with ThreadPoolExecutor(ahead, thread_name_prefix="refine-read") as pool:
        queued = deque(pool.submit(read, block) for block in blocks[:ahead])
        for i, block in enumerate(blocks):
            data = queued.popleft().result()
            if i + ahead < len(blocks):
                queued.append(pool.submit(read, blocks[i + ahead]))
            yield block, data


def _read(plan: RefinePlan, block: _Block) -> dict[str, np.ndarray]:
    """A block's teacher frames: the model's inputs, plus the copied variables when the block is written."""
    names = [*plan.inputs, *plan.copied] if block.write else plan.inputs
    data = plan.teacher.read(block.start, block.stop, names)
    if block.backward:  # the pre-roll plays the frames in reverse order
        data = {name: value[::-1].copy() for name, value in data.items()}
    return data


def _write(plan: RefinePlan, block: _Block, arrays: dict[str, np.ndarray]) -> None:
    """Each of a block's missing chunks from its (block-long) arrays."""
    for i in block.write:
        start, stop = plan.refined.chunk_bounds(i)
        plan.refined.write_chunk(
            i, **{name: values[start - block.start : stop - block.start] for name, values in arrays.items()}
        )


def _check_depth(plan: RefinePlan, block: _Block, refined_depth: torch.Tensor, residual: torch.Tensor) -> None:
    """StoreError unless every refined depth is finite and > 0 (what a depth store holds)."""
    if not bool((torch.isfinite(refined_depth) & (refined_depth > 0)).all()):
        raise StoreError(
            f"refining {plan.teacher.uri} frames {block.start}..{block.stop - 1} gave depth that is not "
            f"finite and > 0 (|ΔD| up to {float(residual.abs().max()):.3g}); the model is broken or diverged"
        )


def _run(plan: RefinePlan, *, stats: _StatsAccumulator | None, on_progress: ProgressFn | None) -> None:
    """Stream chunks 0..max(missing): run the model on all of them (state), upsample and write the missing.

    Three things overlap: reading the next blocks (background threads), the model on this one, and writing the
    last one (a background thread; one block at a time, and its error stops the run before anything later).
    """
    model, refined = plan.model, plan.refined
    model.to(plan.device)
    was_training = model.training
    model.eval()

    def finish(block: _Block, writing: Future) -> None:
        writing.result()  # raises the write's error, if any
        if on_progress is not None:  # here, not in the writer thread: callbacks may need the caller's context
            for i in block.write:
                on_progress(refined.chunk_bounds(i)[1], refined.num_frames)

    stream = StreamState()
    pending: tuple[_Block, Future] | None = None  # the last block's write, overlapping the next block's compute
    try:
        with torch.inference_mode(), ThreadPoolExecutor(1, thread_name_prefix="refine-write") as writer:
            for block, data in _prefetch(lambda b: _read(plan, b), _schedule(plan)):
                result, stream = refine_chunk(
                    model,
                    torch.from_numpy(data["depth"]),
                    data.get("confidence"),
                    data.get("rgb"),
                    stream,
                    plan.grid,
                    radius=plan.radius,
                    eps=plan.eps,
                    device=plan.device,
                    replay=not block.write,
                    frame_valid=data.get("frame_valid"),
                )
                if result is None:
                    continue  # pre-roll or finished chunks: the state is all we need
                refined_depth, residual = result
                _check_depth(plan, block, refined_depth, residual)
                if stats is not None:
                    stats.add(_written_frames(residual, block, refined))
                arrays = {"depth": refined_depth.cpu().numpy()} | {v: data[v] for v in plan.copied}
                if pending is not None:
                    finish(*pending)
                pending = block, writer.submit(_write, plan, block, arrays)
            if pending is not None:
                finish(*pending)
    finally:
        model.train(was_training)


def _written_frames(residual: torch.Tensor, block: _Block, refined: DepthStore) -> torch.Tensor:
    """The frames of a block's (n, H, W) residual that go into missing chunks (resume skips the others)."""
    keep = [torch.arange(a - block.start, b - block.start) for a, b in (refined.chunk_bounds(i) for i in block.write)]
    index = torch.cat(keep).to(residual.device)
    return residual if len(index) == residual.shape[0] else residual.index_select(0, index)
