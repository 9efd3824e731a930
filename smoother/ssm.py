"""Mamba2 (SSD) block with mamba-ssm's parameter layout, a pure-PyTorch path and an optional fused Triton path.

The block follows mamba-ssm's `Mamba2` (rmsnorm=True, norm_before_gate=False, no d_ssm, D per head):

    u (b, l, d_model) -> in_proj -> [z | xBC | dt]
    xBC -> causal depthwise conv1d -> silu -> [x | B | C]
    y = SSD scan(x, softplus(dt + dt_bias), A = -exp(A_log), B, C) + D * x
    out = out_proj(rmsnorm(y * silu(z)))

Parameter names and shapes are the same as mamba-ssm's `Mamba2`, so its state dict loads here
(strict) and one state dict serves both backends:

    in_proj.weight  (2*d_inner + 2*ngroups*d_state + nheads, d_model)   rows ordered [z, x, B, C, dt]
    conv1d.weight   (conv_dim, 1, d_conv), conv1d.bias (conv_dim,)     conv_dim = d_inner + 2*ngroups*d_state
    dt_bias, A_log, D  (nheads,)
    norm.weight     (d_inner,)
    out_proj.weight (d_model, d_inner)

Backends: "torch" is the chunked scan of smoother.ssd_scan (any device); "triton" uses mamba-ssm's
fused kernels (CUDA only); "auto" picks triton when the input is on CUDA and mamba-ssm's Triton ops
import, else torch. mamba-ssm is imported lazily, only for CUDA inputs, so CPU code never needs it.

Streaming: `forward(u, state)` returns `(out, new_state)`; feeding a long sequence in pieces with the
state carried gives the same output as one call on the whole sequence. The state has a fixed size
(the last d_conv - 1 conv inputs and the SSM state), so streaming memory does not grow with length.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from smoother.ssd_scan import ssd_chunk_scan, ssd_step

Backend = Literal["auto", "torch", "triton"]


class Mamba2State(NamedTuple):
    """Recurrent state of one Mamba2Block.

    conv: (b, conv_dim, d_conv - 1) the last d_conv - 1 inputs of the causal conv (xBC channels, pre-conv),
          oldest first.
    ssm:  (b, nheads, headdim, d_state) the SSM state after the last step.
    """

    conv: torch.Tensor
    ssm: torch.Tensor

    def detach(self) -> Mamba2State:
        """The same state cut from the autograd graph (for truncated backprop through time)."""
        return Mamba2State(self.conv.detach(), self.ssm.detach())


@functools.cache
def triton_ops() -> tuple[Callable, Callable] | None:
    """mamba-ssm's (mamba_chunk_scan_combined, rmsnorm_fn), or None when they cannot be imported.

    Cached: the import is attempted once per process. mamba-ssm's package __init__ imports its compiled
    CUDA extensions (unguarded in some releases), so without CUDA this fails with ImportError (or OSError
    for a broken shared library) and the torch backend is used.
    """
    try:
        from mamba_ssm.ops.triton.layernorm_gated import rmsnorm_fn
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except (ImportError, OSError):
        return None
    return mamba_chunk_scan_combined, rmsnorm_fn


CUDA_MAX_GRID_Y = 65535  # CUDA's limit on a launch grid's y and z sizes


def fused_batch_slices(batch: int, length: int, chunk_size: int) -> list[slice]:
    """Pieces of the batch for mamba-ssm's fused scan, each small enough to launch.

    Its chunk kernels launch batch × ceil(length / chunk_size) blocks along the grid's y axis, which CUDA caps
    at 65535; one sequence per pixel of a 73×128 grid over 128 frames is already over (Triton: "invalid
    argument"). Sequences are independent, so scanning the batch in pieces changes nothing but the launches.
    """
    per = max(1, CUDA_MAX_GRID_Y // -(-length // chunk_size))
    return [slice(start, min(start + per, batch)) for start in range(0, batch, per)]


class GatedRMSNorm(nn.Module):
    """rmsnorm(x * silu(z)) * weight, normalised over groups of `group_size` channels (Mamba2's norm).

    Parameter `weight` (hidden_size,), as mamba-ssm's layernorm_gated.RMSNorm with norm_before_gate=False.
    """

    def __init__(self, hidden_size: int, group_size: int | None = None, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.group_size = group_size or hidden_size
        if hidden_size % self.group_size:
            raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of group_size ({self.group_size})")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x, z (..., hidden_size) -> (..., hidden_size), computed in at least float32."""
        dtype = x.dtype
        compute = torch.promote_types(dtype, torch.float32)
        y = x.to(compute) * F.silu(z.to(compute))
        y = rearrange(y, "... (g d) -> ... g d", d=self.group_size)
        y = y * torch.rsqrt(y.square().mean(dim=-1, keepdim=True) + self.eps)
        y = rearrange(y, "... g d -> ... (g d)")
        return (y * self.weight.to(compute)).to(dtype)


class Mamba2Block(nn.Module):
    """Mamba2 (SSD) mixer: (b, l, d_model) -> (b, l, d_model), with an optional recurrent state.

    d_inner = expand * d_model must be a multiple of headdim; nheads = d_inner // headdim must be a
    multiple of ngroups. chunk_size is the SSD chunk length (a speed knob: results do not depend on it).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 8,
        ngroups: int = 1,
        chunk_size: int = 16,
        backend: Backend = "auto",
        A_init_range: tuple[float, float] = (1.0, 16.0),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        norm_eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if backend not in ("auto", "torch", "triton"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {backend!r}")
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ValueError(f"expand * d_model ({d_inner}) must be a multiple of headdim ({headdim})")
        nheads = d_inner // headdim
        if nheads % ngroups:
            raise ValueError(f"nheads ({nheads}) must be a multiple of ngroups ({ngroups})")
        if d_conv < 1 or chunk_size < 1:
            raise ValueError("d_conv and chunk_size must be >= 1")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.headdim, self.ngroups, self.chunk_size, self.backend = headdim, ngroups, chunk_size, backend
        self.d_inner, self.nheads = d_inner, nheads
        self.conv_dim = d_inner + 2 * ngroups * d_state  # channels of xBC
        factory = {"device": device, "dtype": dtype}

        # order of the projection's outputs: [z, x, B, C, dt]
        self.in_proj = nn.Linear(d_model, 2 * d_inner + 2 * ngroups * d_state + nheads, bias=False, **factory)
        # depthwise and causal: we pad on the left ourselves (zeros, or the streamed window)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, bias=True, **factory)

        # dt ~ log-uniform in [dt_min, dt_max]; store softplus^-1(dt) so that softplus(0 + dt_bias) = dt at init
        dt = torch.exp(torch.rand(nheads, **factory) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        # A = -exp(A_log) < 0 with |A| ~ uniform[A_init_range]: a spread of decay rates across heads
        A = torch.empty(nheads, device=device, dtype=torch.float32).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A).to(dtype=dtype))
        self.D = nn.Parameter(torch.ones(nheads, **factory))  # skip connection x -> y
        for param in (self.dt_bias, self.A_log, self.D):
            param._no_weight_decay = True  # mamba-ssm's convention, read by optimiser param grouping

        self.norm = GatedRMSNorm(d_inner, group_size=d_inner // ngroups, eps=norm_eps, **factory)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False, **factory)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"headdim={self.headdim}, nheads={self.nheads}, ngroups={self.ngroups}, "
            f"chunk_size={self.chunk_size}, backend={self.backend!r}"
        )

    def allocate_state(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Mamba2State:
        """A zero state (what `state=None` means) on the parameters' device and dtype unless given."""
        device = self.A_log.device if device is None else device
        dtype = self.in_proj.weight.dtype if dtype is None else dtype
        return Mamba2State(
            conv=torch.zeros(batch, self.conv_dim, self.d_conv - 1, device=device, dtype=dtype),
            ssm=torch.zeros(batch, self.nheads, self.headdim, self.d_state, device=device, dtype=dtype),
        )

    def _use_triton(self, u: torch.Tensor) -> bool:
        if self.backend == "torch":
            return False
        if self.backend == "triton":
            if not u.is_cuda:
                raise RuntimeError("backend='triton' needs CUDA inputs; use backend='auto' or 'torch' on CPU")
            if triton_ops() is None:
                raise ImportError(
                    "backend='triton' needs mamba-ssm's Triton ops (pip install 'steadydepth[gpu]' on a CUDA "
                    "machine); use backend='auto' to fall back to the PyTorch scan"
                )
            return True
        return u.is_cuda and triton_ops() is not None

    def _A(self) -> torch.Tensor:
        """Decay rates A = -exp(A_log) (h,), in at least float32 (mamba-ssm keeps A in fp32)."""
        return -torch.exp(self.A_log.to(torch.promote_types(self.A_log.dtype, torch.float32)))

    def _conv(self, xBC: torch.Tensor, conv_state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal depthwise conv + silu: xBC (b, l, conv_dim) -> (b, l, conv_dim), window (b, conv_dim, d_conv-1)."""
        b, l, _ = xBC.shape
        if conv_state is None:  # zero history: the same as mamba-ssm's padding=d_conv-1 then crop
            conv_state = xBC.new_zeros(b, self.conv_dim, self.d_conv - 1)
        window = torch.cat([conv_state.to(xBC.dtype), xBC.transpose(1, 2)], dim=-1)  # (b, conv_dim, d_conv-1+l)
        out = F.silu(self.conv1d(window)).transpose(1, 2)  # (b, l, conv_dim)
        return out, window[:, :, l:].contiguous()  # the last d_conv-1 inputs, not a view pinning the window

    def forward(self, u: torch.Tensor, state: Mamba2State | None = None) -> tuple[torch.Tensor, Mamba2State]:
        """u (b, l, d_model) -> (out (b, l, d_model), state after the last step).

        state=None starts from zeros. Calling on consecutive pieces of a sequence, each time with the
        state returned by the previous call, equals one call on the whole sequence. For truncated
        backprop through time, pass `state.detach()` between windows.
        """
        b, l, _ = u.shape
        zxbcdt = self.in_proj(u)  # (b, l, d_in_proj)
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        xBC, conv_state = self._conv(xBC, None if state is None else state.conv)
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        x = rearrange(x, "b l (h p) -> b l h p", p=self.headdim)
        B = rearrange(B, "b l (g n) -> b l g n", g=self.ngroups)
        C = rearrange(C, "b l (g n) -> b l g n", g=self.ngroups)
        A = self._A()
        ssm_state = None if state is None else state.ssm

        if self._use_triton(u):
            chunk_scan, rmsnorm_fn = triton_ops()
            # dt_bias + softplus are fused in the kernel; z=None because the gate is applied in the norm
            pieces = [
                chunk_scan(
                    x[part],
                    dt[part],
                    A,
                    B[part],
                    C[part],
                    self.chunk_size,
                    D=self.D,
                    z=None,
                    dt_bias=self.dt_bias,
                    initial_states=None if ssm_state is None else ssm_state[part],
                    dt_softplus=True,
                    return_final_states=True,
                )
                for part in fused_batch_slices(b, l, self.chunk_size)
            ]
            y = torch.cat([piece[0] for piece in pieces]) if len(pieces) > 1 else pieces[0][0]
            ssm_state = torch.cat([piece[1] for piece in pieces]) if len(pieces) > 1 else pieces[0][1]
            y = rearrange(y, "b l h p -> b l (h p)")
            norm = self.norm
            y = rmsnorm_fn(y, norm.weight, None, z=z, eps=norm.eps, group_size=norm.group_size, norm_before_gate=False)
        else:
            dt = F.softplus(dt + self.dt_bias)  # (b, l, h)
            y, ssm_state = ssd_chunk_scan(
                x, dt, A.to(x.dtype), B, C, self.chunk_size, D=self.D, initial_state=ssm_state, return_final_state=True
            )
            y = self.norm(rearrange(y, "b l h p -> b l (h p)"), z)
        return self.out_proj(y), Mamba2State(conv_state, ssm_state)

    def step(self, u: torch.Tensor, state: Mamba2State | None = None) -> tuple[torch.Tensor, Mamba2State]:
        """One time step without the chunk machinery: u (b, d_model) -> (out (b, d_model), new state).

        Same result as forward(u[:, None], state); pure PyTorch on every device. The input state is not modified.
        """
        if state is None:
            state = self.allocate_state(u.shape[0], device=u.device, dtype=u.dtype)
        z, xBC, dt = torch.split(self.in_proj(u), [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        window = torch.cat([state.conv.to(xBC.dtype), xBC[:, :, None]], dim=-1)  # (b, conv_dim, d_conv)
        xBC = F.silu((window * self.conv1d.weight[:, 0]).sum(dim=-1) + self.conv1d.bias)  # (b, conv_dim)
        x, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        x = rearrange(x, "b (h p) -> b h p", p=self.headdim)
        B = rearrange(B, "b (g n) -> b g n", g=self.ngroups)
        C = rearrange(C, "b (g n) -> b g n", g=self.ngroups)
        dt = F.softplus(dt + self.dt_bias)  # (b, h)
        A = self._A().to(x.dtype)
        y, ssm_state = ssd_step(x, dt, A, B, C, state.ssm.to(x.dtype), D=self.D)
        y = self.norm(rearrange(y, "b h p -> b (h p)"), z)
        return self.out_proj(y), Mamba2State(window[:, :, 1:].contiguous(), ssm_state)
