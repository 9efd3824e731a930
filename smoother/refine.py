"""Refine a teacher depth store with a trained smoother, chunk by chunk, into a new refined store.

    teacher store (H×W) ─ downsample ─▶ model grid (h×w) ─ ResidualSmoother (state carried) ─▶ ΔD, k (h×w)
                                     (its motion cues follow the optical flow of the grid RGB, as in training)
                                     guided upsample of ΔD (guide: teacher log-depth) ─▶ ΔD (H×W)
                                     temporal filter of log teacher + ΔD at H×W, gate k upsampled, its
                                     memory warped along the RGB's optical flow (smoother/temporal_filter.py)
                                     ─▶ refined log-depth
    refined depth = teacher depth · exp(refined log-depth − log teacher)  ─▶  <root>/<name>.refined.zarr

Pre-roll: before frame 0 the model and the filter run over frames `preroll`−1, …, 1 played backwards, nothing
written, so the first frames start from a warm state (SmootherConfig.preroll; 0 = cold start).

Streaming: a block of whole chunks at a time is read, refined and written (one chunk on a CPU, 64 frames on a GPU:
`default_frames_per_call`); the model's `SmootherState` and the temporal filter's last frame carry the past across
blocks, so the result equals one model call over the whole video (up to float rounding), and memory holds three
blocks (the next being read, this one, the last being written) plus the fixed-size state however long the video is.

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

from smoother.grid import downsample_confidence, downsample_depth, downsample_rgb, model_grid_size
from smoother.model import ResidualSmoother, SmootherState
from smoother.temporal_filter import gated_recursion, grid_flows, memory_flows
from smoother.upsample import DEFAULT_EPS, DEFAULT_RADIUS, guided_upsample, upsample_bilinear
from steadydepth.errors import StoreError
from storage import uri as uris
from storage.depth_store import _BOOKKEEPING, DepthStore

ProgressFn = Callable[[int, int], None]  # (frames done, frames total), as in steadydepth.ingest
REFINE_VERSION = 5  # bump when the refinement arithmetic changes: it is part of the store identity
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
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def refined_uri_for(teacher_uri: str) -> str:
    """`<root>/<name>.teacher.zarr` → `<root>/<name>.refined.zarr` (store_uri's layout, next to the teacher)."""
    base = str(teacher_uri).rstrip("/")
    if not base.endswith(".teacher.zarr"):
        raise ValueError(f"{teacher_uri} does not end in .teacher.zarr; pass refined_uri explicitly")
    return base[: -len(".teacher.zarr")] + ".refined.zarr"


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


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
    refined_uri: where to write; None → next to the teacher store (`refined_uri_for`). Must differ from it.
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
    refined_uri = refined_uri_for(teacher_uri) if refined_uri is None else str(refined_uri)
    if _same_location(refined_uri, teacher_uri):
        raise ValueError(f"refined_uri is the teacher store {teacher_uri}; the teacher store is never overwritten")
    teacher = DepthStore.open(teacher_uri, storage_options)
    teacher_attrs = teacher.attrs
    dev = _resolve_device(device)
    cfg = model.cfg
    num_frames, (height, width) = teacher.num_frames, teacher.size
    grid = model_grid_size(height, width, cfg.depth_long_edge)

    smoother_hash = model_hash(model)
    config_hash = refined_config_hash(
        smoother_hash, str(teacher_attrs.get("config_hash", "")), radius=upsample_radius, eps=upsample_eps
    )
    model_id = model_id or f"smoother-{smoother_hash}"
    extra = dict(attrs_extra or {})
    clash = sorted(set(extra) & {"kind", "config_hash", "source_hash"})
    if clash:
        raise ValueError(f"attrs_extra may not set the refined store's identity keys {clash}")
    caller_attrs = {k: v for k, v in teacher_attrs.items() if k not in _BOOKKEEPING}
    attrs = {
        **caller_attrs,  # source, source_hash, fps, teacher, ... describe the same video
        **extra,
        "kind": "refined",
        "config_hash": config_hash,
        "teacher_store": teacher.uri,
        "teacher_config_hash": teacher_attrs.get("config_hash"),
        "model_id": model_id,
        "model_hash": smoother_hash,
        "smoother": cfg.model_dump(mode="json"),
        "model_grid": list(grid),
        "upsample": {"method": "guided", "radius": upsample_radius, "eps": upsample_eps},
    }
    copied = [v for v in COPIED if v in teacher.variables]
    refined = DepthStore.create(
        refined_uri,
        num_frames=num_frames,
        height=height,
        width=width,
        chunk_frames=chunk_frames or teacher.chunk_frames,
        attrs=attrs,
        variables=copied,
        storage_options=storage_options,
        overwrite=overwrite,
    )
    missing = [] if refined.is_complete else refined.missing_chunks()
    stats = _StatsAccumulator() if residual_stats else None
    if missing:
        per_call = frames_per_call or default_frames_per_call(dev, refined.chunk_frames)
        chunks_per_call = max(1, -(-per_call // refined.chunk_frames))
        _run(
            teacher,
            refined,
            model,
            dev,
            grid,
            set(missing),
            chunks_per_call,
            stats,
            on_progress,
            upsample_radius,
            upsample_eps,
        )
        refined.finalize()
    return RefineResult(
        uri=refined.uri,
        teacher_uri=teacher.uri,
        num_frames=num_frames,
        grid=grid,
        chunks_written=len(missing),
        chunks_skipped=refined.num_chunks - len(missing),
        config_hash=config_hash,
        model_id=model_id,
        seconds=time.perf_counter() - t0,
        residual_stats=None if stats is None else stats.result(),
    )


@dataclass
class StreamState:
    """What refinement carries from one chunk to the next: the model's state and the temporal filter's last frame."""

    model: SmootherState | None = None
    filtered: torch.Tensor | None = None  # (1, H, W) the filter's output (log-depth or detail) of the last frame
    gray: np.ndarray | None = None  # (H, W) uint8 the last frame's grey image (flow into the next chunk)
    grid_gray: np.ndarray | None = None  # (h, w) uint8 the same on the model grid (the model's motion cues)


def refine_chunk(
    model: ResidualSmoother,
    depth: torch.Tensor,
    confidence: np.ndarray | None,
    rgb: np.ndarray | None,
    stream: StreamState,
    grid: tuple[int, int],
    *,
    radius: int = DEFAULT_RADIUS,
    eps: float = DEFAULT_EPS,
    device: torch.device | str = "cpu",
    replay: bool = False,
) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, StreamState]:
    """One chunk's (refined depth, ΔD), both (n, H, W) on `device`, and the state for the next chunk.

    depth (n, H, W) teacher metres (CPU); confidence (n, H, W) and rgb (n, H, W, 3) uint8 as stored, or None
    (rgb feeds the model's features and, with SmootherConfig.flow_warp, the optical flow that moves the filter's
    memory; `stream.gray` carries the previous frame for it); grid the model grid. ΔD = guided upsample of the
    model's residual, then the temporal filter's change (smoother/temporal_filter.py), in log-depth; refined =
    teacher · exp(ΔD) in float32. replay=True only advances
    the state (chunks already written) and returns None instead of the pair. Call under torch.inference_mode()
    with the model in eval mode.
    """
    cfg = model.cfg
    dtype = next(model.parameters()).dtype
    # Copy the stored frames to the device once and downsample there (on a GPU the CPU resampling cost more
    # than the model); rgb travels as uint8.
    depth_dev = depth.to(device)
    small = downsample_depth(depth_dev, grid)  # (n, h, w)
    conf = rgb_lr = None
    if confidence is not None:
        conf = downsample_confidence(torch.from_numpy(confidence).to(device), grid)[None, :, None].to(dtype)
    grid_flow, grid_gray = None, None
    if rgb is not None and (cfg.use_features or cfg.flow_cues):
        rgb_lr = downsample_rgb(torch.from_numpy(rgb).to(device), grid)[None].to(dtype)  # (1, n, 3, h, w)
        if cfg.flow_cues:  # the model's cues follow the flow of the RGB it sees, computed as in training
            grid_flow, grays = grid_flows(rgb_lr, None if stream.grid_gray is None else [stream.grid_gray])
            grid_flow, grid_gray = grid_flow.to(dtype), grays[0]
        if not cfg.use_features:
            rgb_lr = None
    out = model(small[None, :, None].to(dtype), conf, rgb_lr, stream.model, grid_flow)  # (1, n, 1, h, w)
    if replay and cfg.temporal_filter == "off":
        return None, StreamState(out.state, None, grid_gray=grid_gray)
    guide_hr = depth_dev.clamp_min(1e-6).log()
    guide_lr = small.log()  # the log-depth the model saw
    size = tuple(guide_hr.shape[-2:])
    residual = guided_upsample(out.residual[0, :, 0], guide_lr, guide_hr, radius=radius, eps=eps)
    prev = gray = None
    if cfg.temporal_filter != "off":
        keep = upsample_bilinear(out.keep[0, :, 0].to(residual.dtype), size)[None]
        flows = None
        if cfg.flow_warp and rgb is not None:
            flows, gray = memory_flows(rgb, stream.gray)
            flows = flows[None].to(device)
        if cfg.temporal_filter == "full":
            x = (guide_hr + residual)[None]
            filtered, prev = gated_recursion(x, keep, stream.filtered, cfg.filter_reset, flows)
            residual = filtered[0] - guide_hr
        else:
            detail = guide_hr - upsample_bilinear(guide_lr, size)  # finer than the grid (n, H, W)
            filtered, prev = gated_recursion(detail[None], keep, stream.filtered, cfg.filter_reset, flows)
            residual = residual + (filtered[0] - detail)
    state = StreamState(out.state, prev, gray, grid_gray)
    if replay:
        return None, state
    # teacher · exp(ΔD), not exp(log teacher + ΔD): ΔD = 0 gives the teacher bit for bit
    refined = (depth_dev.to(residual.dtype) * torch.exp(residual)).float()
    return (refined, residual), state


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
    """Frames preroll−1, …, 1 of the video in blocks of `step`, last block first (each is read backwards).

    A stored video is refined offline, so frame 0 need not start cold: played backwards, the first frames are a
    continuous video ending next to frame 0; run through the model and the filter (nothing written), they leave a
    warm state for frame 0 (without it the first frames pass almost unfiltered and a start-up error lingers).
    Deterministic, so a resumed run replays it identically.
    """
    stop = min(preroll, num_frames)
    while stop > 1:
        start = max(1, stop - step)
        yield _Block(start, stop, backward=True)
        stop = start


def _blocks(refined: DepthStore, missing: set[int], chunks_per_call: int) -> list[_Block]:
    """Runs of `chunks_per_call` chunks up to the last missing one (later chunks need no state)."""
    last = max(missing)
    blocks = []
    for first in range(0, last + 1, chunks_per_call):
        chunks = range(first, min(first + chunks_per_call, last + 1))
        start, stop = refined.chunk_bounds(chunks[0])[0], refined.chunk_bounds(chunks[-1])[1]
        blocks.append(_Block(start, stop, write=tuple(i for i in chunks if i in missing)))
    return blocks


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


def _run(
    teacher: DepthStore,
    refined: DepthStore,
    model: ResidualSmoother,
    device: torch.device,
    grid: tuple[int, int],
    missing: set[int],
    chunks_per_call: int,
    stats: _StatsAccumulator | None,
    on_progress: ProgressFn | None,
    radius: int,
    eps: float,
) -> None:
    """Stream chunks 0..max(missing): run the model on all of them (state), upsample and write the missing.

    Three things overlap: reading the next blocks (background threads), the model on this one, and writing the
    last one (a background thread; one block at a time, and its error stops the run before anything later).
    """
    model.to(device)
    inputs = ["depth"]
    if "confidence" in teacher.variables:
        inputs.append("confidence")
    if "rgb" in teacher.variables and (model.cfg.use_features or model.cfg.flow_warp or model.cfg.flow_cues):
        inputs.append("rgb")
    copied = [v for v in refined.variables if v != "depth"]  # K, timestamp, frame_index + optional copies
    was_training = model.training
    model.eval()

    def read(block: _Block) -> dict[str, np.ndarray]:
        data = teacher.read(block.start, block.stop, [*inputs, *copied] if block.write else inputs)
        if block.backward:
            data = {name: np.ascontiguousarray(value[::-1]) for name, value in data.items()}
        return data

    def write(block: _Block, arrays: dict[str, np.ndarray]) -> None:
        for i in block.write:
            start, stop = refined.chunk_bounds(i)
            refined.write_chunk(
                i, **{name: values[start - block.start : stop - block.start] for name, values in arrays.items()}
            )

    def finish(block: _Block, writing: Future) -> None:
        writing.result()  # raises the write's error, if any
        if on_progress is not None:  # here, not in the writer thread: callbacks may need the caller's context
            for i in block.write:
                on_progress(refined.chunk_bounds(i)[1], refined.num_frames)

    step = chunks_per_call * refined.chunk_frames
    blocks = _blocks(refined, missing, chunks_per_call)
    blocks[:0] = _preroll_blocks(teacher.num_frames, model.cfg.preroll, step)
    stream = StreamState()
    pending: tuple[_Block, Future] | None = None  # the last block's write, overlapping the next block's compute
    try:
        with torch.inference_mode(), ThreadPoolExecutor(1, thread_name_prefix="refine-write") as writer:
            for block, data in _prefetch(read, blocks):
                result, stream = refine_chunk(
                    model,
                    torch.from_numpy(data["depth"]),
                    data.get("confidence"),
                    data.get("rgb"),
                    stream,
                    grid,
                    radius=radius,
                    eps=eps,
                    device=device,
                    replay=not block.write,
                )
                if result is None:
                    continue  # pre-roll or finished chunks: the state is all we need
                refined_depth, residual = result
                if not bool((torch.isfinite(refined_depth) & (refined_depth > 0)).all()):
                    raise StoreError(
                        f"refining {teacher.uri} frames {block.start}..{block.stop - 1} gave depth that is not "
                        f"finite and > 0 (|ΔD| up to {float(residual.abs().max()):.3g}); the model is broken or "
                        "diverged"
                    )
                if stats is not None:
                    stats.add(_written_frames(residual, block, refined))
                arrays = {"depth": refined_depth.cpu().numpy()} | {v: data[v] for v in copied}
                if pending is not None:
                    finish(*pending)
                pending = block, writer.submit(write, block, arrays)
            if pending is not None:
                finish(*pending)
    finally:
        model.train(was_training)


def _written_frames(residual: torch.Tensor, block: _Block, refined: DepthStore) -> torch.Tensor:
    """The frames of a block's (n, H, W) residual that go into missing chunks (resume skips the others)."""
    keep = [torch.arange(a - block.start, b - block.start) for a, b in (refined.chunk_bounds(i) for i in block.write)]
    index = torch.cat(keep).to(residual.device)
    return residual if len(index) == residual.shape[0] else residual.index_select(0, index)
