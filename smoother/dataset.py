"""Training windows for the smoother: random temporal windows across many teacher stores, on the model grid.

Sampling (deterministic for a seed; the whole sampler state is one numpy Generator state):
  1. each batch item picks a store with probability ∝ its number of window starts (so every window of the
     dataset is equally likely, whatever the store sizes), then a uniform start frame;
  2. the window is read with `DepthStore.read(start, stop)` (only the chunks it touches, never a whole
     store) and downsampled to the store's model grid (smoother.grid, long edge `depth_long_edge`);
  3. every item of a batch is cut to one common size by a random crop: (min(crop, h_i), min(crop, w_i))
     over the batch's items (crop None = the smallest grid of the batch). This lets stores of different
     sizes share a batch and keeps CPU steps cheap; crops stay contiguous because the model's CNN and the
     smoothness loss need spatial neighbours (scattered pixels would not do);
  4. optional augmentations: horizontal flip, and a random frame stride in 1..max_stride (every s-th frame:
     faster apparent motion, so the model also learns to back off where large motion makes per-pixel
     filtering smear). The stride is capped so the window fits the video;
  5. optional burn-in: each batch draws k in 0..burn_in and prepends k context frames to every window
     (`Batch.context`), capped so that context + window fits the batch's shortest video. The trainer runs
     the model over them without gradients and starts the window from that state, so training sees the
     states of a long streaming run (inference carries state over the whole video), not only a fresh one.
Videos shorter than the window are padded by repeating their last frame; `Batch.valid` marks real frames
(the model is causal, so padding at the end never changes the outputs of real frames).

Only depth, confidence and rgb are ever read: ground truth (gt_depth, pose) stays untouched in training.
The optional cache keeps low-res frames (≈ 64×38 floats each) per store in memory, filled lazily window by
window, up to `cache_mb`; stores that do not fit are read from disk every time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from smoother.grid import downsample_confidence, downsample_depth, downsample_rgb, model_grid_size
from storage.depth_store import DepthStore


@dataclass
class Batch:
    """One training batch on the model grid."""

    depth: torch.Tensor  # (B, N, 1, h, w) teacher depth, metres
    confidence: torch.Tensor  # (B, N, 1, h, w) in [0, 1]; ones where the store has none
    rgb: torch.Tensor | None  # (B, N, 3, h, w) in [0, 1]; zeros for stores without RGB; None when unused
    valid: torch.Tensor  # (B, N) bool, False on padding frames of short videos
    store_index: list[int]  # which store each item came from
    start: list[int]  # first frame of each item
    stride: list[int]  # frame stride of each item
    context: int = 0  # the first `context` frames are burn-in (no loss), the rest is the training window

    def to(self, device: torch.device | str) -> Batch:
        rgb = None if self.rgb is None else self.rgb.to(device)
        d, c, v = self.depth.to(device), self.confidence.to(device), self.valid.to(device)
        return Batch(d, c, rgb, v, self.store_index, self.start, self.stride, self.context)

    def split(self) -> tuple[Batch | None, Batch]:
        """(burn-in frames or None, training window): both Batches cut along time at `context`."""
        if self.context == 0:
            return None, self

        def cut(sl: slice) -> Batch:
            rgb = None if self.rgb is None else self.rgb[:, sl]
            return Batch(
                self.depth[:, sl],
                self.confidence[:, sl],
                rgb,
                self.valid[:, sl],
                self.store_index,
                self.start,
                self.stride,
            )

        return cut(slice(0, self.context)), cut(slice(self.context, None))


class _LowResCache:
    """Low-res frames of one store, filled lazily: arrays for all T frames plus a per-frame `filled` flag."""

    def __init__(self, num_frames: int, size: tuple[int, int], channels: int):
        h, w = size
        self.data = torch.zeros(num_frames, channels, h, w)  # depth | confidence | rgb(3), as present
        self.filled = np.zeros(num_frames, dtype=bool)

    @staticmethod
    def nbytes(num_frames: int, size: tuple[int, int], channels: int) -> int:
        return num_frames * channels * size[0] * size[1] * 4


class TeacherWindows:
    """Low-res windows of a list of teacher stores; `read_window` is the only place stores are read."""

    def __init__(
        self,
        store_uris: Sequence[str],
        *,
        long_edge: int,
        use_rgb: bool = True,
        use_confidence: bool = True,
        cache_mb: float = 512.0,
        storage_options: Mapping[str, Any] | None = None,
    ):
        if not store_uris:
            raise ValueError("no teacher stores to train on; ingest some videos first")
        self.stores = [DepthStore.open(u, storage_options) for u in store_uris]
        self.grids = [model_grid_size(*s.size, long_edge) for s in self.stores]
        self.has_conf = [use_confidence and "confidence" in s.variables for s in self.stores]
        self.has_rgb = [use_rgb and "rgb" in s.variables for s in self.stores]
        self.use_rgb = any(self.has_rgb)
        budget = int(cache_mb * 2**20)
        self._caches: list[_LowResCache | None] = []
        for store, grid in zip(self.stores, self.grids, strict=True):
            need = _LowResCache.nbytes(store.num_frames, grid, 5)
            if need <= budget:  # first come, first cached; the rest stream from disk
                self._caches.append(_LowResCache(store.num_frames, grid, 5))
                budget -= need
            else:
                self._caches.append(None)

    def __len__(self) -> int:
        return len(self.stores)

    def num_frames(self, i: int) -> int:
        return self.stores[i].num_frames

    def _read(self, i: int, start: int, stop: int) -> torch.Tensor:
        """Frames [start, stop) of store i from disk → (n, 5, h, w): depth, confidence, rgb (0 when absent)."""
        store, grid = self.stores[i], self.grids[i]
        names = ["depth"] + ["confidence"] * self.has_conf[i] + ["rgb"] * self.has_rgb[i]
        raw = store.read(start, stop, names)
        n = stop - start
        out = torch.zeros(n, 5, *grid)
        out[:, 0] = downsample_depth(raw["depth"], grid)
        out[:, 1] = downsample_confidence(raw["confidence"], grid) if self.has_conf[i] else 1.0
        if self.has_rgb[i]:
            out[:, 2:] = downsample_rgb(raw["rgb"], grid)
        return out

    def read_window(self, i: int, start: int, stop: int) -> torch.Tensor:
        """Frames [start, stop) of store i on its model grid: (n, 5, h, w) = depth, confidence, rgb."""
        cache = self._caches[i]
        if cache is None:
            return self._read(i, start, stop)
        missing = np.flatnonzero(~cache.filled[start:stop])
        if missing.size:  # read only the span of frames not cached yet (inside this window)
            a, b = start + int(missing[0]), start + int(missing[-1]) + 1
            cache.data[a:b] = self._read(i, a, b)
            cache.filled[a:b] = True
        return cache.data[start:stop].clone()


class WindowSampler:
    """Draws `Batch`es of `window` frames; deterministic for a seed, with a state dict for exact resume."""

    def __init__(
        self,
        data: TeacherWindows,
        *,
        window: int,
        batch_size: int,
        seed: int,
        crop_size: int | None = None,
        flip: bool = True,
        max_stride: int = 1,
        burn_in: int = 0,
    ):
        self.data, self.window, self.batch_size = data, window, batch_size
        self.crop_size, self.flip, self.max_stride, self.burn_in = crop_size, flip, max_stride, burn_in
        self.rng = np.random.default_rng(seed)
        starts = np.array([max(1, data.num_frames(i) - window + 1) for i in range(len(data))], dtype=np.float64)
        self.store_p = starts / starts.sum()  # every window start of the dataset equally likely

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = dict(state["rng"])

    def sample(self) -> Batch:
        """Next batch: depth/confidence (B, N, 1, h, w), rgb (B, N, 3, h, w) or None, valid (B, N).

        N = context + window, where context (0..burn_in) is drawn once per batch.
        """
        rng = self.rng
        idx = [int(rng.choice(len(self.data), p=self.store_p)) for _ in range(self.batch_size)]
        context = 0
        if self.burn_in:
            shortest = min(self.data.num_frames(i) for i in idx)
            context = min(int(rng.integers(0, self.burn_in + 1)), max(0, shortest - self.window))
        n = context + self.window
        items, starts, strides = [], [], []
        for i in idx:
            t = self.data.num_frames(i)
            length = min(n, t)
            stride = int(rng.integers(1, self.max_stride + 1))
            stride = max(1, min(stride, (t - 1) // max(1, length - 1)))  # the strided window must fit the video
            span = (length - 1) * stride + 1
            start = int(rng.integers(0, t - span + 1))
            items.append(self.data.read_window(i, start, start + span)[::stride])  # (length, 5, h_i, w_i)
            starts.append(start)
            strides.append(stride)
        ch = min(min(x.shape[-2] for x in items), self.crop_size or 1 << 30)
        cw = min(min(x.shape[-1] for x in items), self.crop_size or 1 << 30)
        out = torch.empty(self.batch_size, n, 5, ch, cw)
        valid = torch.zeros(self.batch_size, n, dtype=torch.bool)
        for b, x in enumerate(items):
            y0 = int(rng.integers(0, x.shape[-2] - ch + 1))
            x0 = int(rng.integers(0, x.shape[-1] - cw + 1))
            x = x[..., y0 : y0 + ch, x0 : x0 + cw]
            if self.flip and rng.random() < 0.5:
                x = x.flip(-1)
            length = x.shape[0]
            out[b, :length] = x
            out[b, length:] = x[-1:]  # pad short videos with their last frame
            valid[b, :length] = True
        rgb = out[:, :, 2:5].contiguous() if self.data.use_rgb else None
        depth, conf = out[:, :, 0:1].contiguous(), out[:, :, 1:2].contiguous()
        return Batch(depth, conf, rgb, valid, idx, starts, strides, context)
