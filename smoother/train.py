"""Self-supervised training of the residual smoother on teacher depth stores.

    loss = anchor to the teacher + temporal stability (+ small regularisers), see smoother/losses.py

Each step: a batch of windows (smoother/dataset.py) whose first `context` frames are burn-in, run without
gradients so the window starts from the state of a long streaming run, as in refinement; the model's
residual passed through its gated temporal filter (smoother/temporal_filter.py), whose memory follows the optical
flow of the window's low-res RGB as in refinement (SmootherConfig.flow_warp), gives the correction the losses
judge. The same flow (`grid_flows`, once per batch) feeds the model's motion cues (SmootherConfig.flow_cues) and
the flow-compensated temporal losses (LossConfig.flow_compensated). Per-pixel noise hidden from the model
(`unseen_noise`, in units of the teacher's own noise: smoother/noise.py) stands in for the store-resolution noise
that only the filter can remove.

Ground truth is never read (smoother/dataset.py reads depth, confidence and rgb only). AdamW with no weight
decay on biases, norms and the SSM's `_no_weight_decay` parameters; linear warm-up then cosine decay to
lr·min_lr_ratio; global grad-norm clipping; bf16 autocast on CUDA only. One checkpoint `<out_dir>/last.pt`,
rewritten atomically every `checkpoint_every` steps and at the end, holds model, optimizer, scheduler, step,
all RNG states, the sampler state and the config: resuming from it continues bit-for-bit (N steps + resume
for N more gives the same weights as 2N straight, on the same device).
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from smoother.checkpoint import (
    CHECKPOINT_NAME,
    checkpoint_config,
    load_checkpoint,
    load_smoother,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from smoother.dataset import Batch, TeacherWindows, WindowSampler
from smoother.losses import smoother_losses
from smoother.model import ResidualSmoother
from smoother.temporal_filter import apply_filter, detail_band, grid_flows
from steadydepth.config import Config
from steadydepth.device import resolve_device
from steadydepth.errors import InputError

__all__ = ["TRAIN_VERSION", "TrainResult", "load_smoother", "needs_flows", "param_groups", "train"]

# Bump when the same config and data would train different weights (2: the filter's memory follows the RGB's
# optical flow in training too; 3: flow-compensated motion cues and losses; 4: thresholds in units of the
# teacher's own noise, smoother/noise.py; 5: the scale-agreement loss, motion judged by the RGB; 6: the depth
# motion cue on the teacher's running median). Part of the training cache key; a checkpoint of another version
# never resumes.
TRAIN_VERSION = 6

StepFn = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    """What a `train` call did; plain data so orchestration can log it."""

    checkpoint: str  # path of the final checkpoint
    losses: dict[str, float]  # mean of each loss term over the last (up to) 20 steps
    steps: int  # steps run in this call
    step: int  # optimizer steps done in total (== cfg.train.steps once finished)
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices/conv kernels decay; biases, norms (1-D) and `_no_weight_decay` params do not."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or getattr(p, "_no_weight_decay", False)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over `warmup` steps, then cosine from 1 down to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class _Run:
    """One training run: what its checkpoint saves and restores, and where it goes."""

    cfg: Config
    store_uris: list[str]
    ckpt_path: Path
    device: torch.device
    model: ResidualSmoother
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    sampler: WindowSampler
    step: int = 0  # optimizer steps done
    recent: deque = field(default_factory=lambda: deque(maxlen=20))  # the last steps' loss terms


def train(
    cfg: Config,
    store_uris: list[str],
    out_dir: str,
    *,
    resume: bool = True,
    on_step: StepFn | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train the smoother on the teacher stores for cfg.train.steps optimizer steps; returns a TrainResult.

    resume: continue from `<out_dir>/last.pt` if it exists (its smoother config must match cfg.smoother),
    else start afresh (an existing checkpoint is overwritten). on_step(step, losses) is called after every
    step with the loss terms, "lr" and "grad_norm" as floats (e.g. to log to MLflow). stop_after: stop once
    this many steps are done in total, with a checkpoint, as if interrupted (the LR schedule still runs to
    cfg.train.steps); None runs to the end.
    """
    t0 = time.perf_counter()
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME
    run = _set_up(cfg, store_uris, ckpt_path)
    if resume and ckpt_path.exists():
        _resume(run)
    first = run.step
    _train_until(run, cfg.train.steps if stop_after is None else min(cfg.train.steps, stop_after), on_step)
    if run.step > first or not ckpt_path.exists():
        _save(run)
    return TrainResult(
        checkpoint=str(ckpt_path),
        losses=_mean_losses(run.recent),
        steps=run.step - first,
        step=run.step,
        seconds=round(time.perf_counter() - t0, 3),
    )


def _set_up(cfg: Config, store_uris: list[str], ckpt_path: Path) -> _Run:
    """A fresh run: the RNGs seeded first (the model's initial weights draw from them), then the model, AdamW, the
    warm-up + cosine schedule and the window sampler over the stores."""
    tc = cfg.train
    device = resolve_device(tc.device, "train.device")
    _seed_everything(tc.seed)
    model = ResidualSmoother(cfg.smoother).to(device)
    opt = torch.optim.AdamW(param_groups(model, tc.weight_decay), lr=tc.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, warmup=tc.warmup_steps, total=tc.steps, min_ratio=tc.min_lr_ratio)
    )
    data = TeacherWindows(
        store_uris,
        long_edge=cfg.smoother.depth_long_edge,
        use_rgb=tc.use_rgb,
        use_confidence=tc.use_confidence,
        cache_mb=tc.cache_mb,
        storage_options=cfg.store.storage_options,
    )
    sampler = WindowSampler(
        data,
        window=tc.window,
        batch_size=tc.batch_size,
        seed=tc.seed,
        crop_size=tc.crop_size,
        flip=tc.flip,
        max_stride=tc.max_stride,
        burn_in=tc.burn_in,
    )
    return _Run(
        cfg=cfg,
        store_uris=store_uris,
        ckpt_path=ckpt_path,
        device=device,
        model=model,
        opt=opt,
        sched=sched,
        sampler=sampler,
    )


def _resume(run: _Run) -> None:
    """Load every state the checkpoint holds, RNGs included, so the next step is the one an uninterrupted run takes.

    Refuses (InputError) a checkpoint of other training code or of another smoother config.
    """
    ckpt = load_checkpoint(run.ckpt_path, map_location=run.device)
    saved = checkpoint_config(ckpt, run.ckpt_path)
    version = ckpt.get("train_version", 1)
    if version != TRAIN_VERSION:
        raise InputError(
            f"checkpoint {run.ckpt_path} was made by training code version {version} "
            f"(now {TRAIN_VERSION}); use another out_dir or pass resume=False"
        )
    if saved.smoother != run.cfg.smoother:
        raise InputError(
            f"checkpoint {run.ckpt_path} was trained with another smoother config; "
            "use another out_dir or pass resume=False"
        )
    run.model.load_state_dict(ckpt["model"])
    run.opt.load_state_dict(ckpt["optimizer"])
    run.sched.load_state_dict(ckpt["scheduler"])
    run.sampler.load_state_dict(ckpt["sampler"])
    set_rng_state(ckpt["rng"])
    run.step = int(ckpt["step"])
    if ckpt["losses"]:
        run.recent.append(ckpt["losses"])


def _save(run: _Run) -> None:
    """Write the checkpoint (atomically): everything `_resume` needs, plus the config and the stores trained on."""
    cfg = run.cfg
    save_checkpoint(
        run.ckpt_path,
        {
            "step": run.step,
            "train_version": TRAIN_VERSION,
            "config": cfg.model_dump(mode="json", exclude={"store": {"storage_options"}}),  # may hold secrets
            "model": run.model.state_dict(),
            "optimizer": run.opt.state_dict(),
            "scheduler": run.sched.state_dict(),
            "rng": rng_state(),
            "sampler": run.sampler.state_dict(),
            "losses": _mean_losses(run.recent),
            "store_uris": list(run.store_uris),
        },
    )


def _train_until(run: _Run, end: int, on_step: StepFn | None) -> None:
    """Optimizer steps until `end` steps are done, a checkpoint every checkpoint_every steps before the end."""
    tc = run.cfg.train
    amp = tc.amp and run.device.type == "cuda"
    use_flows = needs_flows(run.cfg)
    run.model.train()
    bar = tqdm(total=tc.steps, initial=run.step, disable=not tc.progress, desc="train smoother", unit="step")
    threads = torch.get_num_threads()
    if tc.num_threads is not None:
        torch.set_num_threads(tc.num_threads)  # spinning OpenMP threads cost 10× on a shared CPU
    try:
        while run.step < end:
            logs, grad_norm = _train_step(run, use_flows=use_flows, amp=amp)
            run.recent.append(logs)
            bar.update(1)
            bar.set_postfix(loss=f"{logs['total']:.4g}")
            if on_step is not None:
                on_step(run.step, {**logs, "lr": run.opt.param_groups[0]["lr"], "grad_norm": grad_norm})
            if run.step % tc.checkpoint_every == 0 and run.step < end:
                _save(run)
    finally:
        bar.close()
        torch.set_num_threads(threads)


def _train_step(run: _Run, *, use_flows: bool, amp: bool) -> tuple[dict[str, float], float]:
    """One optimizer step on a fresh batch; returns its loss terms and the gradient norm (before clipping).

    The random draws come in a fixed order (the sampler's batch, then `unseen_noise`), so a resumed run repeats them.
    """
    cfg, tc = run.cfg, run.cfg.train
    batch = run.sampler.sample().to(run.device)
    context, window = batch.split()
    noise = unseen_noise(batch.depth, tc.hidden_noise if cfg.smoother.temporal_filter != "off" else 0.0)
    flows = grid_flows(batch.rgb)[0] if batch.rgb is not None and use_flows else None
    with torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext():
        residual, scale = _forward(run.model, context, window, noise, flows)
    losses = smoother_losses(
        residual,
        batch.depth * torch.exp(noise * _frames(scale)),
        cfg.loss,
        confidence=batch.confidence,
        rgb=batch.rgb,
        frame_mask=batch.valid,
        first=batch.context,
        flows=flows,
        noise_scale=scale,
    )
    run.opt.zero_grad(set_to_none=True)
    losses["total"].backward()
    clip = tc.grad_clip if tc.grad_clip is not None else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), clip)
    run.opt.step()
    run.sched.step()
    run.step += 1
    return {k: float(v.detach()) for k, v in losses.items()}, float(grad_norm)


def unseen_noise(depth: torch.Tensor, max_std: float) -> torch.Tensor:
    """Per-pixel log-noise (B, N, 1, h, w), std drawn per item in [0, max_std] (torch's CPU RNG: resumable).

    At store resolution the teacher has noise finer than the model grid, which the model never sees (the grid
    averages it away) and which only the temporal filter can remove. Training reproduces that on the grid: this
    noise joins the teacher the losses judge and what the filter smooths, but not the model's input.
    """
    if max_std == 0:
        return torch.zeros_like(depth)
    std = torch.rand(depth.shape[0], 1, 1, 1, 1) * max_std
    return (std * torch.randn(depth.shape)).to(depth.device, depth.dtype)


def needs_flows(cfg: Config) -> bool:
    """Whether training (and refinement, for the model) uses the optical flow of the low-res RGB."""
    sm = cfg.smoother
    return (sm.flow_warp and sm.temporal_filter != "off") or sm.flow_cues or cfg.loss.flow_compensated


def _forward(
    model: ResidualSmoother,
    context: Batch | None,
    window: Batch,
    noise: torch.Tensor | None = None,
    flows: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-depth correction (B, context + window, 1, h, w) on the model grid relative to the teacher plus the hidden
    noise: the residual passed through the gated temporal filter (`apply_filter`), whose input holds the noise the
    model did not see, `noise` times the model's teacher-noise scale. Burn-in frames run without gradients, then the
    window continues from their model and filter state. flows (B, context + window, h, w, 2): `grid_flows` of the
    batch's RGB, or None; the model's motion cues (SmootherConfig.flow_cues) and the filter's memory (flow_warp)
    follow it, as in refinement. Also the model's teacher-noise scale (B, context + window) (smoother/noise.py),
    for the losses' thresholds."""
    cfg = model.cfg
    state, prev, parts, scales, first = None, None, [], [], 0
    for part, grad in ((context, False), (window, True)):
        if part is None:
            continue
        n = part.depth.shape[1]
        part_flows = None if flows is None else flows[:, first : first + n]
        with torch.set_grad_enabled(grad):
            out = model(part.depth, part.confidence, part.rgb, state=state, flows=part_flows)
            log_d = part.depth.clamp_min(1e-6).log()
            # the hidden noise is in units of the teacher's own noise: a noisy teacher's sub-grid noise is larger too
            unseen = 0.0 if noise is None else noise[:, first : first + n] * _frames(out.noise_scale)
            detail = None
            if cfg.temporal_filter == "detail":  # the band one octave below the grid plays the sub-grid detail
                detail = detail_band(log_d) + unseen
            correction, prev = apply_filter(
                cfg.temporal_filter,
                log_d + unseen,  # the teacher the losses judge
                out.residual,
                out.keep,
                prev,
                detail=detail,
                reset=cfg.filter_reset,
                flows=part_flows if cfg.flow_warp else None,
                reset_scale=out.noise_scale.to(log_d.dtype),
            )
            parts.append(correction)
        scales.append(out.noise_scale)
        state, first = out.state, first + n
    return torch.cat(parts, dim=1), torch.cat(scales, dim=1).float()


def _frames(scale: torch.Tensor) -> torch.Tensor:
    """Per-frame scale (B, N) as (B, N, 1, 1, 1), detached, to multiply a (B, N, C, h, w) tensor by."""
    return scale.detach()[:, :, None, None, None]


def _mean_losses(recent: deque) -> dict[str, float]:
    if not recent:
        return {}
    return {k: float(np.mean([r[k] for r in recent])) for k in recent[-1]}
