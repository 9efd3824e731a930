"""Speed of one Mamba2Block, forward + backward, in the smoother's training shape.

    .venv/bin/python benchmarks/ssm_speed.py [--batch 4096] [--length 32] [--d-model 32] [--repeats 3] [--threads N]

Prints a table: the PyTorch chunked scan on CPU, and on CUDA (when available) the PyTorch scan vs
mamba-ssm's fused Triton kernels. Not a test: numbers depend on the machine and thread count.
"""

from __future__ import annotations

import argparse
import time

import torch

from smoother.ssm import Mamba2Block, triton_ops


def time_step(block: Mamba2Block, u: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median ms of forward and of forward+backward over `repeats` runs (after one warm-up)."""

    def sync() -> None:
        if u.is_cuda:
            torch.cuda.synchronize()

    fwd, fwd_bwd = [], []
    for i in range(repeats + 1):
        block.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        out, _ = block(u)
        sync()
        t1 = time.perf_counter()
        out.square().mean().backward()
        sync()
        t2 = time.perf_counter()
        if i:  # the first run is a warm-up (allocations, Triton autotuning)
            fwd.append(1e3 * (t1 - t0))
            fwd_bwd.append(1e3 * (t2 - t0))
    return sorted(fwd)[len(fwd) // 2], sorted(fwd_bwd)[len(fwd_bwd) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--headdim", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    runs = [("cpu", "torch")]
    if torch.cuda.is_available():
        runs.append(("cuda", "torch"))
        if triton_ops() is not None:
            runs.append(("cuda", "triton"))
        else:
            print("mamba-ssm Triton ops not importable: no fused row")
    print(
        f"Mamba2Block fp32, batch {args.batch} x length {args.length} x d_model {args.d_model} "
        f"(d_state {args.d_state}, headdim {args.headdim}, chunk {args.chunk_size}), "
        f"{torch.get_num_threads()} CPU threads"
    )
    print(f"{'device':<8}{'backend':<9}{'forward ms':>12}{'fwd+bwd ms':>12}{'peak GPU MB':>13}")
    for device, backend in runs:
        torch.manual_seed(0)
        block = Mamba2Block(
            args.d_model, d_state=args.d_state, headdim=args.headdim, chunk_size=args.chunk_size, backend=backend
        ).to(device)
        u = torch.randn(args.batch, args.length, args.d_model, device=device, requires_grad=True)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        fwd, fwd_bwd = time_step(block, u, args.repeats)
        peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f}" if device == "cuda" else "-"
        print(f"{device:<8}{backend:<9}{fwd:>12.1f}{fwd_bwd:>12.1f}{peak:>13}")


if __name__ == "__main__":
    main()
