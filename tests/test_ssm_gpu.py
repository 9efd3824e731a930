"""Mamba2Block on CUDA: mamba-ssm's fused Triton path against the PyTorch chunked scan.

Skipped unless CUDA is available and mamba-ssm's Triton SSD ops import. Tolerances are fp32 with TF32
dot products inside the Triton kernels (mamba-ssm's own fp32 tests use rtol 1e-2, atol 3e-3).
"""

from __future__ import annotations

import sys
import types

import pytest
import torch

from smoother import ssm
from smoother.ssm import Mamba2Block


def _triton_available() -> bool:
    if not torch.cuda.is_available():
        return False  # never touch mamba_ssm without CUDA
    if ssm.triton_ops() is None and "selective_scan_cuda" not in sys.modules:
        # Some mamba-ssm releases import their compiled Mamba-1 scan in the package __init__; a pure-Python
        # install (enough for the Triton SSD ops) lacks it. An empty stand-in lets the Triton ops import.
        sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
        ssm.triton_ops.cache_clear()
    return ssm.triton_ops() is not None


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _triton_available(), reason="needs CUDA and mamba-ssm's Triton ops"),
]

REF = dict(d_model=32, d_state=16, headdim=8, expand=2)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def make_block(ngroups: int = 1, chunk_size: int = 16) -> Mamba2Block:
    torch.manual_seed(0)
    block = Mamba2Block(**REF, ngroups=ngroups, chunk_size=chunk_size).cuda()
    with torch.no_grad():  # off the init so D and the norm weight matter
        block.D.add_(torch.randn_like(block.D))
        block.norm.weight.add_(0.1 * torch.randn_like(block.norm.weight))
        block.dt_bias.add_(1.0)
    return block


def run(block: Mamba2Block, backend: str, u: torch.Tensor, state=None):
    """Output, final state and gradients (input, then parameters by name) for one backend."""
    block.backend = backend
    block.zero_grad(set_to_none=True)
    u = u.detach().clone().requires_grad_()
    out, new_state = block(u, state)
    (out.square().mean() + new_state.ssm.square().mean()).backward()
    grads = {"u": u.grad} | {name: p.grad.clone() for name, p in block.named_parameters()}
    return out.detach(), new_state.ssm.detach(), grads


@pytest.mark.parametrize("ngroups", [1, 2])
@pytest.mark.parametrize("length", [16, 50])
def test_fused_matches_torch(ngroups, length):
    block = make_block(ngroups)
    u = torch.randn(64, length, 32, device="cuda")
    state = block.allocate_state(64)
    state = state._replace(ssm=0.5 * torch.randn_like(state.ssm), conv=torch.randn_like(state.conv))
    for initial in (None, state):
        out_t, ssm_t, grads_t = run(block, "triton", u, initial)
        out_r, ssm_r, grads_r = run(block, "torch", u, initial)
        assert rel_err(out_t, out_r) < 5e-3
        assert rel_err(ssm_t, ssm_r) < 5e-3
        for name in grads_r:
            assert torch.isfinite(grads_t[name]).all(), name
            assert rel_err(grads_t[name], grads_r[name]) < 1e-2, name


def test_fused_streaming_equals_one_go():
    block = make_block(chunk_size=8)
    block.backend = "triton"
    u = torch.randn(16, 45, 32, device="cuda")
    with torch.no_grad():
        full, _ = block(u)
        state, outs = None, []
        for start in range(0, 45, 7):
            out, state = block(u[:, start : start + 7], state)
            outs.append(out)
    assert rel_err(torch.cat(outs, dim=1), full) < 5e-3


def test_one_state_dict_serves_both_backends():
    cpu_block = Mamba2Block(**REF, backend="torch")
    gpu_block = Mamba2Block(**REF, backend="triton").cuda()
    gpu_block.load_state_dict(cpu_block.state_dict(), strict=True)
    u = torch.randn(8, 33, 32)
    with torch.no_grad():
        ref, _ = cpu_block(u)
        out, _ = gpu_block(u.cuda())
    assert rel_err(out.cpu(), ref) < 5e-3


def test_mamba_ssm_mamba2_state_dict_loads_and_agrees():
    try:
        from mamba_ssm.modules.mamba2 import Mamba2
    except ImportError as err:
        pytest.skip(f"mamba_ssm.modules.mamba2 does not import: {err}")
    torch.manual_seed(0)
    theirs = Mamba2(**REF, ngroups=1, chunk_size=16, use_mem_eff_path=False).cuda()
    ours = Mamba2Block(**REF, chunk_size=16, backend="torch").cuda()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    u = torch.randn(8, 40, 32, device="cuda")
    with torch.no_grad():
        expected = theirs(u)
        assert rel_err(ours(u)[0], expected) < 5e-3
        ours.backend = "triton"
        assert rel_err(ours(u)[0], expected) < 5e-3


def test_fused_scan_of_more_sequences_than_one_launch_takes():
    # one sequence per pixel of a 73×128 grid over 128 frames: 9344 × 8 chunks > CUDA's 65535 grid rows
    block = make_block(chunk_size=16)
    u = torch.randn(9344, 128, 32, device="cuda")
    with torch.no_grad():
        out_t, state_t = run_backend(block, "triton", u)
        out_r, state_r = run_backend(block, "torch", u)
    assert rel_err(out_t, out_r) < 5e-3
    assert rel_err(state_t.ssm, state_r.ssm) < 5e-3


def run_backend(block: Mamba2Block, backend: str, u: torch.Tensor):
    block.backend = backend
    return block(u)
