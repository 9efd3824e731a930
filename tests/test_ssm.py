"""Mamba2 SSD core on CPU: chunked scan vs recurrence, streaming vs one go, layout frozen to mamba-ssm's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smoother import ssm
from smoother.ssd_scan import ssd_chunk_scan, ssd_recurrent_reference, ssd_step
from smoother.ssm import Mamba2Block, Mamba2State

# the reference config whose layout is frozen below (d_inner 64, nheads 8, conv_dim 96)
REF = dict(d_model=32, d_state=16, headdim=8, expand=2)

# mamba-ssm Mamba2(d_model=32, d_state=16, headdim=8, expand=2, ngroups=1) state dict: names and shapes
MAMBA2_LAYOUT = {
    "dt_bias": (8,),
    "A_log": (8,),
    "D": (8,),
    "in_proj.weight": (168, 32),  # 2*64 (z, x) + 2*16 (B, C) + 8 (dt)
    "conv1d.weight": (96, 1, 4),
    "conv1d.bias": (96,),
    "norm.weight": (64,),
    "out_proj.weight": (32, 64),
}


def random_scan_inputs(b, l, h, p, g, n, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    x = randn(b, l, h, p)
    dt = F.softplus(randn(b, l, h) - 1.0)  # ~0.05..3, like softplus(dt + dt_bias)
    A = -(1 + 15 * torch.rand(h, generator=gen, dtype=dtype))  # -exp(log uniform[1, 16])
    B = randn(b, l, g, n) / n**0.5
    C = randn(b, l, g, n) / n**0.5
    D = randn(h)
    s0 = randn(b, h, p, n)
    return x, dt, A, B, C, D, s0


@pytest.mark.parametrize("ngroups", [1, 2])
@pytest.mark.parametrize("chunk_size", [4, 8, 16, 32])
@pytest.mark.parametrize("length", [1, 7, 16, 33, 64])
def test_chunk_scan_matches_recurrence(length, chunk_size, ngroups):
    x, dt, A, B, C, D, s0 = random_scan_inputs(2, length, 4, 8, ngroups, 16, seed=length + chunk_size)
    for init in (None, s0):
        y, final = ssd_chunk_scan(x, dt, A, B, C, chunk_size, D=D, initial_state=init, return_final_state=True)
        y_ref, final_ref = ssd_recurrent_reference(x, dt, A, B, C, D=D, initial_state=init, return_final_state=True)
        assert y.shape == x.shape and final.shape == s0.shape
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(final, final_ref, atol=1e-5, rtol=1e-5)
        assert torch.equal(ssd_chunk_scan(x, dt, A, B, C, chunk_size, D=D, initial_state=init), y)


def test_chunk_scan_float64_exact_and_options():
    x, dt, A, B, C, D, s0 = random_scan_inputs(3, 45, 6, 4, 3, 8, dtype=torch.float64)
    y, final = ssd_chunk_scan(x, dt, A, B, C, 8, D=D, initial_state=s0, return_final_state=True)
    y_ref, final_ref = ssd_recurrent_reference(x, dt, A, B, C, D=D, initial_state=s0, return_final_state=True)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(final, final_ref, atol=1e-12, rtol=1e-12)
    # D per (head, channel) and no D
    D2 = torch.randn(6, 4, dtype=torch.float64)
    torch.testing.assert_close(ssd_chunk_scan(x, dt, A, B, C, 8, D=D2), ssd_recurrent_reference(x, dt, A, B, C, D=D2))
    torch.testing.assert_close(ssd_chunk_scan(x, dt, A, B, C, 8), ssd_recurrent_reference(x, dt, A, B, C))
    # splitting the sequence and carrying the state equals one scan
    y1, s1 = ssd_chunk_scan(x[:, :20], dt[:, :20], A, B[:, :20], C[:, :20], 16, D=D, return_final_state=True)
    y2 = ssd_chunk_scan(x[:, 20:], dt[:, 20:], A, B[:, 20:], C[:, 20:], 16, D=D, initial_state=s1)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), ssd_recurrent_reference(x, dt, A, B, C, D=D))


def test_chunk_scan_gradients_match_recurrence():
    inputs = [t.requires_grad_() for t in random_scan_inputs(2, 21, 4, 4, 2, 8, dtype=torch.float64)]
    x, dt, A, B, C, D, s0 = inputs
    y, final = ssd_chunk_scan(x, dt, A, B, C, 8, D=D, initial_state=s0, return_final_state=True)
    grads = torch.autograd.grad(y.square().sum() + final.sum(), inputs)
    y_ref, final_ref = ssd_recurrent_reference(x, dt, A, B, C, D=D, initial_state=s0, return_final_state=True)
    grads_ref = torch.autograd.grad(y_ref.square().sum() + final_ref.sum(), inputs)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, g_ref, atol=1e-10, rtol=1e-10)


def test_ssd_step_does_not_modify_state():
    x, dt, A, B, C, D, s0 = random_scan_inputs(2, 1, 4, 8, 1, 16)
    before = s0.clone()
    y, s1 = ssd_step(x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], s0, D)
    assert torch.equal(s0, before) and y.shape == (2, 4, 8) and s1.shape == s0.shape


def make_block(seed=0, dtype=torch.float64, **kwargs) -> Mamba2Block:
    torch.manual_seed(seed)
    block = Mamba2Block(**{**REF, "chunk_size": 8, **kwargs}).to(dtype)
    with torch.no_grad():  # move off the init so D, norm and the conv bias matter
        block.D.add_(torch.randn_like(block.D))
        block.norm.weight.add_(0.1 * torch.randn_like(block.norm.weight))
        block.dt_bias.add_(1.0)  # larger steps: more state dynamics within a short test
    return block


def test_layout_is_frozen_to_mamba_ssm():
    block = Mamba2Block(**REF)
    assert {k: tuple(v.shape) for k, v in block.state_dict().items()} == MAMBA2_LAYOUT
    assert [name for name, _ in block.named_parameters()] == list(MAMBA2_LAYOUT)
    assert block.in_proj.bias is None and block.out_proj.bias is None


def test_init_like_mamba2():
    block = Mamba2Block(d_model=64, headdim=4, dt_min=0.001, dt_max=0.1)  # 32 heads
    dt = F.softplus(block.dt_bias.detach())
    assert (dt >= 0.001 - 1e-6).all() and (dt <= 0.1 + 1e-6).all()
    A = torch.exp(block.A_log.detach())
    assert (A >= 1).all() and (A <= 16).all()
    assert torch.equal(block.D.detach(), torch.ones(32)) and torch.equal(block.norm.weight.detach(), torch.ones(128))
    assert all(getattr(p, "_no_weight_decay", False) for p in (block.dt_bias, block.A_log, block.D))


def test_load_mamba_ssm_state_dict_strict():
    gen = torch.Generator().manual_seed(1)
    foreign = {name: torch.randn(*shape, generator=gen) for name, shape in MAMBA2_LAYOUT.items()}
    block = Mamba2Block(**REF)
    result = block.load_state_dict(foreign, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for name, value in block.state_dict().items():
        assert torch.equal(value, foreign[name])
    out, _ = block(torch.randn(2, 5, 32))
    assert torch.isfinite(out).all()


def mamba2_reference_forward(block: Mamba2Block, u: torch.Tensor) -> torch.Tensor:
    """mamba-ssm Mamba2's unfused forward, written out from its definition (padding conv, naive recurrence)."""
    sd = block.state_dict()
    d_inner, g, n, h, p = block.d_inner, block.ngroups, block.d_state, block.nheads, block.headdim
    zxbcdt = u @ sd["in_proj.weight"].T
    z, xBC, dt = zxbcdt.split([d_inner, d_inner + 2 * g * n, h], dim=-1)
    w, bias = sd["conv1d.weight"], sd["conv1d.bias"]
    xBC = F.conv1d(xBC.transpose(1, 2), w, bias, padding=block.d_conv - 1, groups=xBC.shape[-1])
    xBC = F.silu(xBC[..., : u.shape[1]]).transpose(1, 2)
    x, B, C = xBC.split([d_inner, g * n, g * n], dim=-1)
    b, l = u.shape[:2]
    y = ssd_recurrent_reference(
        x.reshape(b, l, h, p),
        F.softplus(dt + sd["dt_bias"]),
        -torch.exp(sd["A_log"]),
        B.reshape(b, l, g, n),
        C.reshape(b, l, g, n),
        D=sd["D"],
    ).reshape(b, l, d_inner)
    y = (y * F.silu(z)).reshape(b, l, g, d_inner // g)  # norm_before_gate=False, group_size = d_inner // ngroups
    y = (y * torch.rsqrt(y.square().mean(-1, keepdim=True) + 1e-5)).reshape(b, l, d_inner) * sd["norm.weight"]
    return y @ sd["out_proj.weight"].T


@pytest.mark.parametrize("ngroups", [1, 2])
def test_block_matches_mamba2_definition(ngroups):
    block = make_block(ngroups=ngroups)
    u = torch.randn(3, 29, 32, dtype=torch.float64)
    out, state = block(u)
    torch.testing.assert_close(out, mamba2_reference_forward(block, u), atol=1e-10, rtol=1e-10)
    assert out.shape == u.shape and isinstance(state, Mamba2State)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("piece", [1, 5, 17])
def test_streaming_in_pieces_equals_one_go(piece, dtype, tol):
    block = make_block(dtype=dtype, ngroups=2)
    u = torch.randn(3, 50, 32, dtype=dtype)
    with torch.no_grad():
        full, full_state = block(u)
        state = block.allocate_state(3)
        outs = []
        for start in range(0, u.shape[1], piece):
            out, state = block(u[:, start : start + piece], state)
            for t, shape in ((state.conv, (3, block.conv_dim, 3)), (state.ssm, (3, 8, 8, 16))):
                # fixed size, and no view pinning a buffer that grows with the piece or the sequence
                assert t.shape == shape and t.untyped_storage().nbytes() == t.numel() * t.element_size()
            outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=tol, rtol=tol)
    torch.testing.assert_close(state.ssm, full_state.ssm, atol=tol, rtol=tol)
    torch.testing.assert_close(state.conv, full_state.conv, atol=tol, rtol=tol)  # in_proj rounding only


def test_step_equals_forward():
    block = make_block(dtype=torch.float64)
    u = torch.randn(2, 12, 32, dtype=torch.float64)
    with torch.no_grad():
        full, full_state = block(u)
        state = None
        outs = []
        for t in range(u.shape[1]):
            out, state = block.step(u[:, t], state)
            outs.append(out)
    torch.testing.assert_close(torch.stack(outs, dim=1), full, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(state.ssm, full_state.ssm, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(state.conv, full_state.conv)


def test_result_does_not_depend_on_chunk_size():
    block = make_block(dtype=torch.float64)
    u = torch.randn(2, 37, 32, dtype=torch.float64)
    with torch.no_grad():
        ref, _ = block(u)
        for chunk_size in (1, 3, 16, 64):
            block.chunk_size = chunk_size
            torch.testing.assert_close(block(u)[0], ref, atol=1e-10, rtol=1e-10)


def test_backward_through_block_and_carried_state():
    block = make_block(dtype=torch.float32)
    u = torch.randn(4, 20, 32, requires_grad=True)
    out1, state = block(u[:, :9])
    out2, state = block(u[:, 9:], state)  # gradient also flows through the carried state
    loss = torch.cat([out1, out2], dim=1).square().mean() + state.ssm.square().mean()
    loss.backward()
    assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
    for name, param in block.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    detached = state.detach()
    assert not detached.ssm.requires_grad and not detached.conv.requires_grad


def test_backend_selection_on_cpu():
    u = torch.randn(1, 3, 32)
    assert torch.isfinite(Mamba2Block(**REF, backend="auto")(u)[0]).all()
    assert torch.isfinite(Mamba2Block(**REF, backend="torch")(u)[0]).all()
    with pytest.raises(RuntimeError, match="CUDA"):
        Mamba2Block(**REF, backend="triton")(u)
    with pytest.raises(ValueError, match="backend"):
        Mamba2Block(**REF, backend="cuda")
    with pytest.raises(ValueError, match="headdim"):
        Mamba2Block(d_model=32, headdim=12)
    with pytest.raises(ValueError, match="ngroups"):
        Mamba2Block(**REF, ngroups=3)


def test_cpu_use_never_imports_mamba_ssm(monkeypatch):
    def fail():
        raise AssertionError("the CPU path must not try to import mamba-ssm")

    monkeypatch.setattr(ssm, "triton_ops", fail)
    u = torch.randn(1, 4, 32, requires_grad=True)
    for backend in ("auto", "torch"):
        block = Mamba2Block(**REF, backend=backend)
        block(u)[0].sum().backward()
        block.step(u[:, 0])


def test_fused_call_site_with_stand_in_kernels(monkeypatch):
    """The Triton branch's calls, run against stand-ins with mamba-ssm's exact signatures and semantics.

    No GPU here: this checks the argument wiring (dt_bias + dt_softplus in the kernel, initial/final
    states, gated norm with group_size and norm_before_gate=False) against the torch branch.
    """

    def chunk_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None, seq_idx=None,
                   cu_seqlens=None, dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False,
                   return_varlen_states=False, state_dtype=None):  # fmt: skip
        assert z is None and seq_idx is None and dt_limit == (0.0, float("inf"))
        dt = dt + dt_bias if dt_bias is not None else dt
        dt = F.softplus(dt) if dt_softplus else dt
        y, final = ssd_recurrent_reference(x, dt, A.to(x.dtype), B, C, D=D, initial_state=initial_states,
                                           return_final_state=True)  # fmt: skip
        return (y, final) if return_final_states else y

    def rmsnorm_fn(x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
        assert bias is None and not norm_before_gate
        y = x * F.silu(z)
        y = y.unflatten(-1, (-1, group_size or x.shape[-1]))
        return (y * torch.rsqrt(y.square().mean(-1, keepdim=True) + eps)).flatten(-2) * weight

    block = make_block(ngroups=2)
    u = torch.randn(2, 13, 32, dtype=torch.float64)
    with torch.no_grad():
        ref_a, state = block(u[:, :6])
        ref_b, ref_state = block(u[:, 6:], state)
        monkeypatch.setattr(ssm, "triton_ops", lambda: (chunk_scan, rmsnorm_fn))
        monkeypatch.setattr(Mamba2Block, "_use_triton", lambda self, u: True)
        out_a, state = block(u[:, :6])
        out_b, out_state = block(u[:, 6:], state)
    for got, want in ((out_a, ref_a), (out_b, ref_b), (out_state.ssm, ref_state.ssm)):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize(
    ("batch", "length", "chunk", "pieces"),
    [(9344, 128, 16, 2), (10, 50, 16, 1), (70000, 1, 16, 2), (3, 10**6, 8, 3)],  # 9344 = a 73×128 grid
)
def test_fused_batch_slices_cover_the_batch_within_cudas_grid_limit(batch, length, chunk, pieces):
    parts = ssm.fused_batch_slices(batch, length, chunk)
    assert len(parts) == pieces
    assert parts[0].start == 0 and parts[-1].stop == batch  # contiguous, in order, no overlap:
    assert all(a.stop == b.start for a, b in zip(parts[:-1], parts[1:], strict=True))
    nchunks = -(-length // chunk)
    # each piece launches within the limit (a single sequence longer than that is the kernel's own limit)
    assert all(p.stop - p.start == 1 or (p.stop - p.start) * nchunks <= ssm.CUDA_MAX_GRID_Y for p in parts)
