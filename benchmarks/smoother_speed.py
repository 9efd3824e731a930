"""Speed of the residual smoother: streaming inference, end-to-end refine and training, vs the teacher.

    .venv/bin/python benchmarks/smoother_speed.py [--device auto] [--long-edges 64 128] [--repeats 3]
    STEADYDEPTH_UNIDEPTH_CONFIG=/path/to/UniDepth/configs/config_v2_vits14.json .venv/bin/python ...

Prints a markdown table. Per store resolution (H×W) and model grid (SmootherConfig.depth_long_edge):

- model fps: streaming inference of ResidualSmoother alone on the grid, chunks of 16 frames, state carried;
- refine ms/frame: what `refine_store` computes per frame, in memory: downsample depth, confidence and RGB
  to the grid, the model, guided upsampling of ΔD, the temporal filter, teacher · exp(ΔD); in calls of
  `default_frames_per_call` frames (16 on a CPU, 64 on a GPU, where a call's cost is mostly kernel launches);
- refine_store ms/frame: the real `refine_store` over a 256-frame store in a temp dir (zarr reads, zstd,
  writes, markers);
- train ms/step: forward + backward of a window of N=16 frames, batch 2, on the grid;
- % of teacher: refine (the model's inference: the smoother's own cost) and refine_store (with the store I/O)
  time per frame over the teacher's time per frame (target ≤ 5 %).

Teacher: UniDepthV2 ViT-S with random weights timed with `model.infer` per frame, at the pipeline's batch size
(TeacherConfig.batch_size) and at batch 1, when `unidepth` imports and STEADYDEPTH_UNIDEPTH_CONFIG names a v2
config; otherwise a noted CPU figure for UniDepthV2 ViT-S (6–9 s/frame, 480×640, 2 cores; we use 6 s,
the conservative end) stands in, labelled as such. UniDepth resizes every input to 0.2–0.6 MP, so its cost
hardly depends on H×W.

Device "auto" is CUDA when available. On CUDA the Mamba2 blocks use mamba-ssm's fused Triton scan when it
imports ("triton"), and the table has a row for the PyTorch scan too; the backend is recorded per row.
Times are the best of --repeats runs after a warm-up. Not a test: numbers depend on the machine, its load
and the thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from smoother.config import SmootherConfig
from smoother.grid import model_grid_size
from smoother.model import ResidualSmoother, SmootherState
from smoother.refine import default_frames_per_call, refine_store
from smoother.ssm import Mamba2Block, triton_ops
from smoother.streaming import StreamState, refine_chunk
from steadydepth.config import TeacherConfig
from steadydepth.device import resolve_device
from storage.depth_store import DepthStore
from storage.naming import store_uri

STREAM_CHUNK = 16  # frames per streaming call (the store's default chunk_frames)
TRAIN_WINDOW, TRAIN_BATCH = 16, 2
STORE_FRAMES = 256  # several model calls on a GPU too, so reading, compute and writing overlap
NOTED_TEACHER_S = 6.0  # UniDepthV2 ViT-S, random weights: 6–9 s/frame on 2 CPU cores (480×640)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Fastest wall seconds of fn() over `repeats` runs after `warmup` runs (allocations, Triton autotuning).

    The minimum, not the median: on a shared machine the noise is other jobs, which only ever add time.
    """
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return min(times)


def _set_backend(model: ResidualSmoother, backend: str) -> None:
    for m in model.modules():
        if isinstance(m, Mamba2Block):
            m.backend = backend


def _model(cfg: SmootherConfig, device: torch.device, backend: str) -> ResidualSmoother:
    torch.manual_seed(0)
    model = ResidualSmoother(cfg)
    torch.nn.init.normal_(model.head.weight, std=0.1)  # a "trained" head: ΔD ≠ 0, nothing short-circuits
    _set_backend(model, backend)
    return model.to(device)


def _frames(n: int, height: int, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Store-resolution teacher output: depth with a moving foreground, confidence, RGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (3.0 + 2.0 * yy / height).astype(np.float32)
    depth = np.empty((n, height, width), np.float32)
    for t in range(n):
        fg = np.abs(xx - (width // 4 + t * width // (2 * n))) < width // 8
        depth[t] = np.where(fg, 1.2, base) * np.float32(np.exp(rng.normal(0, 0.03)))
    return {
        "depth": depth,
        "confidence": rng.uniform(0.3, 1.0, (n, height, width)).astype(np.float32),
        "rgb": rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8),
    }


def bench_model_stream(model: ResidualSmoother, grid: tuple[int, int], device: torch.device, repeats: int) -> float:
    """Frames/s of streaming inference on the grid (STREAM_CHUNK frames per call, state carried)."""
    h, w = grid
    n = 2 * STREAM_CHUNK
    g = torch.Generator().manual_seed(0)
    depth = (1.0 + 4.0 * torch.rand(1, n, 1, h, w, generator=g)).to(device)
    conf = torch.rand(1, n, 1, h, w, generator=g).to(device)
    rgb = torch.rand(1, n, 3, h, w, generator=g).to(device)

    def run() -> None:
        state: SmootherState | None = None
        for s in range(0, n, STREAM_CHUNK):
            sl = slice(s, s + STREAM_CHUNK)
            state = model(depth[:, sl], conf[:, sl], rgb[:, sl], state).state

    with torch.inference_mode():
        return n / _best_seconds(run, device, repeats)


def bench_refine_compute(
    model: ResidualSmoother, frames: dict[str, np.ndarray], grid: tuple[int, int], device: torch.device, repeats: int
) -> float:
    """ms/frame of refine_store's per-call arithmetic in memory (no zarr): grid, model, upsampling, temporal
    filter, exp; as many frames per call as refine_store takes on this device."""
    per_call = default_frames_per_call(device, STREAM_CHUNK)
    chunk = {k: v[:per_call] for k, v in frames.items()}

    def run() -> None:
        depth_hr = torch.from_numpy(chunk["depth"])
        (refined, _), _ = refine_chunk(
            model, depth_hr, chunk["confidence"], chunk["rgb"], StreamState(), grid, device=device
        )
        refined.cpu().numpy()

    with torch.inference_mode():
        return 1e3 * _best_seconds(run, device, repeats) / per_call


def bench_refine_store(
    model: ResidualSmoother, frames: dict[str, np.ndarray], device: torch.device, repeats: int
) -> float:
    """ms/frame of the real refine_store over a STORE_FRAMES-frame teacher store (I/O included)."""
    n, height, width = frames["depth"].shape
    with tempfile.TemporaryDirectory() as tmp:
        uri = store_uri(tmp, "bench", kind="teacher")
        attrs = {"source_hash": "bench", "config_hash": "bench", "kind": "teacher"}
        store = DepthStore.create(
            uri,
            num_frames=n,
            height=height,
            width=width,
            chunk_frames=STREAM_CHUNK,
            attrs=attrs,
            variables=["confidence", "rgb"],
        )
        K = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], np.float32)
        for i in store.missing_chunks():
            a, b = store.chunk_bounds(i)
            chunk = {k: v[a:b] for k, v in frames.items()}
            store.write_chunk(i, K=K, timestamp=np.arange(a, b) / 30.0, frame_index=np.arange(a, b), **chunk)
        store.finalize()
        out = str(Path(tmp) / "bench.refined.zarr")
        seconds = _best_seconds(
            lambda: refine_store(uri, out, model, device=device, overwrite=True, residual_stats=False),
            device,
            repeats,
        )
    return 1e3 * seconds / n


def bench_train_step(model: ResidualSmoother, grid: tuple[int, int], device: torch.device, repeats: int) -> float:
    """ms of forward + backward on a (TRAIN_BATCH, TRAIN_WINDOW) window on the grid."""
    h, w = grid
    g = torch.Generator().manual_seed(1)
    depth = (1.0 + 4.0 * torch.rand(TRAIN_BATCH, TRAIN_WINDOW, 1, h, w, generator=g)).to(device)
    conf = torch.rand(TRAIN_BATCH, TRAIN_WINDOW, 1, h, w, generator=g).to(device)
    rgb = torch.rand(TRAIN_BATCH, TRAIN_WINDOW, 3, h, w, generator=g).to(device)
    target = depth.log().mean(dim=1, keepdim=True)  # any smooth target will do for timing
    model.train()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(depth, conf, rgb)
        ((out.depth.log() - target) ** 2).mean().backward()

    ms = 1e3 * _best_seconds(step, device, repeats)
    model.eval()
    return ms


def teacher_seconds_per_frame(sizes: list[tuple[int, int]], device: torch.device) -> tuple[dict, str]:
    """UniDepthV2 ViT-S (random weights) s/frame per store size via model.infer, or the noted CPU figure."""
    cfg_path = os.environ.get("STEADYDEPTH_UNIDEPTH_CONFIG")
    try:
        from unidepth.models import UniDepthV2  # optional, heavy
    except ImportError:
        note = f"unidepth not installed: noted CPU figure {NOTED_TEACHER_S:g} s/frame (ViT-S, 480×640, 2 cores)"
        return {s: NOTED_TEACHER_S for s in sizes}, note
    if not cfg_path:
        note = "unidepth installed but STEADYDEPTH_UNIDEPTH_CONFIG unset: noted CPU figure"
        return {s: NOTED_TEACHER_S for s in sizes}, f"{note} {NOTED_TEACHER_S:g} s/frame"
    model = UniDepthV2(json.loads(Path(cfg_path).read_text())).to(device).eval()
    batch = TeacherConfig().batch_size  # the pipeline's default: per-frame time at the batch it runs
    result, single = {}, {}
    for height, width in sizes:
        for b, into in ((batch, result), (1, single)):
            rgb = torch.randint(0, 256, (b, 3, height, width), dtype=torch.uint8, device=device)
            into[(height, width)] = _best_seconds(lambda rgb=rgb: model.infer(rgb), device, repeats=3) / b
    at_one = ", ".join(f"{h}×{w} {1e3 * t:.1f} ms" for (h, w), t in single.items())
    return result, (
        f"UniDepthV2 ViT-S timed here ({Path(cfg_path).name}, random weights, infer, batch {batch} as the "
        f"pipeline runs it, per frame; at batch 1: {at_one})"
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1")
    parser.add_argument("--sizes", nargs="+", default=["128x224", "256x448"], help="store resolutions HxW")
    parser.add_argument("--long-edges", nargs="+", type=int, default=[64, 128], help="depth_long_edge values")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (best of), halved for slow ones")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device, "--device")
    backends = ["torch"]
    if device.type == "cuda":
        backends = ["triton", "torch"] if triton_ops() is not None else ["torch"]
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    teacher_s, teacher_note = teacher_seconds_per_frame(sizes, device)

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    print(
        f"machine: {os.cpu_count()} CPUs ({cpu_model()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at start, device {device} {gpu}; "
        f"mamba-ssm Triton ops: {'yes' if triton_ops() is not None else 'no'}"
    )
    print(f"teacher reference: {teacher_note}\n")
    print(
        "| store H×W | long edge | grid h×w | device | SSM backend | model fps (stream) | refine ms/frame "
        "| refine_store ms/frame | train ms/step (N=16, B=2) | teacher ms/frame | refine % of teacher "
        "| refine_store % of teacher |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for height, width in sizes:
        frames = _frames(STORE_FRAMES, height, width)
        for long_edge in args.long_edges:
            cfg = SmootherConfig(depth_long_edge=long_edge)
            grid = model_grid_size(height, width, long_edge)
            for backend in backends:
                model = _model(cfg, device, backend).eval()
                fps = bench_model_stream(model, grid, device, args.repeats)
                compute_ms = bench_refine_compute(model, frames, grid, device, args.repeats)
                heavy = max(1, args.repeats // 2)  # the slow measurements get fewer runs
                store_ms = bench_refine_store(model, frames, device, heavy)
                train_ms = bench_train_step(model, grid, device, heavy)
                t_s = teacher_s[(height, width)]
                print(
                    f"| {height}×{width} | {long_edge} | {grid[0]}×{grid[1]} | {device.type} | {backend} | {fps:.1f} "
                    f"| {compute_ms:.1f} | {store_ms:.1f} | {train_ms:.0f} | {1e3 * t_s:.1f} "
                    f"| {100 * compute_ms / 1e3 / t_s:.2f} % | {100 * store_ms / 1e3 / t_s:.2f} % |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
