"""Pure-PyTorch SSD (Mamba2) scans: a chunked scan for training and a step-by-step reference.

The selective state space model with a scalar decay per head (Mamba2 / SSD), for every head h:

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T      state h_t: (headdim, d_state)
    y_t = h_t C_t + D * x_t

Shapes used throughout (mamba-ssm's conventions):
    x  (b, l, h, p)   inputs, p = headdim
    dt (b, l, h)      step sizes, already softplus'ed and biased (>= 0)
    A  (h,)           decay rates (negative)
    B  (b, l, g, n)   input projections, g = ngroups, n = d_state; head h uses group h // (h_total // g)
    C  (b, l, g, n)   output projections
    state (b, h, p, n)

The chunked scan splits the sequence into chunks of T steps: inside a chunk the outputs are a masked
(T, T) "attention" product, and only one state per chunk is carried from chunk to chunk. It equals
the recurrence up to float rounding, is parallel over the sequence, and costs O(l * T) instead of
O(l) sequential steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def decay_matrix(dA_cs: torch.Tensor) -> torch.Tensor:
    """Within-chunk decays L[..., t, s] = exp(dA_cs[t] - dA_cs[s]) for s <= t, else 0.

    dA_cs: (..., T) cumulative log-decays along a chunk -> (..., T, T). exp(dA_{s+1} + ... + dA_t) is the
    decay of a state from step s to step t. The difference of cumsums is what mamba-ssm's Triton kernels
    compute too; it is accurate because the cumsum runs over one chunk only.
    """
    T = dA_cs.size(-1)
    causal = torch.ones(T, T, dtype=torch.bool, device=dA_cs.device).tril()
    # mask before exp: above the diagonal the difference is positive and exp could overflow
    return torch.exp((dA_cs[..., :, None] - dA_cs[..., None, :]).masked_fill(~causal, -torch.inf))


def _add_skip(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    """y + D * x with D of shape (h,) or (h, p); x, y (..., h, p)."""
    if D is None:
        return y
    return y + x * (D[:, None] if D.dim() == 1 else D)


def ssd_chunk_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD scan in plain PyTorch (differentiable, any device).

    x (b, l, h, p), dt (b, l, h) already softplus'ed and biased, A (h,), B and C (b, l, g, n),
    D (h,) or (h, p), initial_state (b, h, p, n). Any length l works (padded to whole chunks, then cropped).
    Returns y (b, l, h, p), and the state after the last step (b, h, p, n) if return_final_state.
    """
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    if h % g:
        raise ValueError(f"nheads ({h}) must be a multiple of ngroups ({g})")
    if l == 0:
        y = x.new_zeros(b, 0, h, p)
        state = x.new_zeros(b, h, p, n) if initial_state is None else initial_state.to(x.dtype)
        return (y, state) if return_final_state else y
    T = chunk_size
    x_in = x
    pad = -l % T
    if pad:
        # dt = 0 on the padding: no decay and no input there, so the final state is unchanged
        x, B, C = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (x, B, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    nc = (l + pad) // T

    # split heads as (g r): the r heads of group g share B and C
    x = rearrange(x, "b (c t) (g r) p -> b c t g r p", t=T, g=g)
    dt = rearrange(dt, "b (c t) (g r) -> b c g r t", t=T, g=g)
    B = rearrange(B, "b (c t) g n -> b c t g n", t=T)
    C = rearrange(C, "b (c t) g n -> b c t g n", t=T)
    A = rearrange(A, "(g r) -> g r 1", g=g)

    dA = dt * A  # (b c g r t) log-decay of each step
    dA_cs = dA.cumsum(dim=-1)  # (b c g r t) log-decay from the chunk start through step t
    xdt = x * rearrange(dt, "b c g r t -> b c t g r 1")  # (b c t g r p) dt_s x_s

    # 1. within each chunk: y_t = sum_{s <= t} (C_t . B_s) exp(dA_{s+1} + ... + dA_t) dt_s x_s
    L = decay_matrix(dA_cs)  # (b c g r t s)
    CB = torch.einsum("bctgn,bcsgn->bcgts", C, B)  # (b c g t s)
    y = torch.einsum("bcgrts,bcsgrp->bctgrp", CB[:, :, :, None] * L, xdt)

    # 2. state each chunk builds from its own inputs, at its last step (L's last row: decay s -> T-1)
    xdt_end = xdt * rearrange(L[..., -1, :], "b c g r s -> b c s g r 1")
    chunk_states = torch.einsum("bcsgn,bcsgrp->bcgrpn", B, xdt_end)  # (b c g r p n)

    # 3. carry the state across chunks: H_{c+1} = exp(total dA of chunk c) H_c + chunk_states_c.
    # A loop over chunks keeps memory linear in the length (the number of chunks is small).
    chunk_decay = torch.exp(dA_cs[..., -1])[..., None, None]  # (b c g r 1 1)
    if initial_state is None:
        H = x.new_zeros(b, g, h // g, p, n)
    else:
        H = rearrange(initial_state, "b (g r) p n -> b g r p n", g=g).to(x.dtype)
    starts = []
    for c in range(nc):
        starts.append(H)
        H = chunk_decay[:, c] * H + chunk_states[:, c]
    H_start = torch.stack(starts, dim=1)  # (b c g r p n) state entering each chunk

    # 4. contribution of the carried state: y_t += exp(dA_1 + ... + dA_t) C_t . H_start
    decay_in = rearrange(torch.exp(dA_cs), "b c g r t -> b c t g r 1")
    y = y + torch.einsum("bctgn,bcgrpn->bctgrp", C, H_start) * decay_in

    y = rearrange(y, "b c t g r p -> b (c t) (g r) p")[:, :l]
    y = _add_skip(y, x_in, D)
    if return_final_state:
        return y, rearrange(H, "b g r p n -> b (g r) p n")
    return y


def ssd_step(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    state: torch.Tensor,
    D: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrence step. x (b, h, p), dt (b, h), A (h,), B and C (b, g, n), state (b, h, p, n).

    Returns y (b, h, p) and the new state (b, h, p, n); the input state is not modified.
    """
    h, g = x.shape[1], B.shape[1]
    Bh = B.repeat_interleave(h // g, dim=1)  # (b h n) group -> its heads
    Ch = C.repeat_interleave(h // g, dim=1)
    decay = torch.exp(dt * A)[..., None, None]  # (b h 1 1)
    state = decay * state + (dt[..., None] * x)[..., None] * Bh[:, :, None, :]  # (b h p n)
    y = torch.einsum("bhpn,bhn->bhp", state, Ch)
    return _add_skip(y, x, D), state


def ssd_recurrent_reference(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    return_final_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Naive step-by-step SSD recurrence (slow; the ground truth for tests). Same arguments as ssd_chunk_scan."""
    b, l, h, p = x.shape
    state = x.new_zeros(b, h, p, B.shape[-1]) if initial_state is None else initial_state.to(x.dtype)
    ys = []
    for t in range(l):
        y_t, state = ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], state, D)
        ys.append(y_t)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(b, 0, h, p)
    return (y, state) if return_final_state else y
