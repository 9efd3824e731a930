"""Training windows: shapes, determinism, window bounds, windowed reads only, mixed sizes, short videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from smoother.dataset import TeacherWindows, WindowSampler
from smoother.grid import downsample_depth, model_grid_size
from storage.depth_store import DepthStore

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_teacher_store(
    path: Path,
    *,
    num_frames: int = 24,
    height: int = 24,
    width: int = 40,
    chunk_frames: int = 8,
    seed: int = 0,
    jitter: float = 0.05,
    gt: str | None = "good",
    variables: tuple[str, ...] = ("confidence", "rgb"),
) -> str:
    """A finished teacher store of a static scene (slanted wall + a near box) with per-frame scale jitter.

    depth_t = scene · exp(n_t), n_t ~ N(0, jitter²) per frame, plus 0.5 % pixel noise; rgb is a fixed texture
    (static camera); gt = "good" (the scene), "nan" (all invalid), "garbage" (random) or None (no gt_depth).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = 3.0 + 0.03 * xx + 0.02 * yy
    box = (yy > height / 3) & (yy < 2 * height / 3) & (xx > width / 4) & (xx < width / 2)
    scene = np.where(box, 1.2, scene).astype(np.float32)
    scale = np.exp(rng.normal(0.0, jitter, num_frames)).astype(np.float32)
    depth = scene[None] * scale[:, None, None] * np.exp(rng.normal(0, 0.005, (num_frames, height, width)))
    texture = (rng.random((height, width, 3)) * 200 + 20).astype(np.uint8)
    arrays = {
        "depth": depth.astype(np.float32),
        "K": np.array([[30.0, 0, width / 2], [0, 30.0, height / 2], [0, 0, 1]], np.float32),
        "timestamp": np.arange(num_frames) / 30.0,
        "frame_index": np.arange(num_frames),
        "confidence": np.full((num_frames, height, width), 0.9, np.float32),
        "rgb": np.broadcast_to(texture, (num_frames, height, width, 3)),
    }
    if gt is not None:
        variables = (*variables, "gt_depth")
        arrays["gt_depth"] = {
            "good": np.broadcast_to(scene, depth.shape),
            "nan": np.full(depth.shape, np.nan, np.float32),
            "garbage": rng.random(depth.shape).astype(np.float32) * 100 + 0.1,
        }[gt]
    attrs = {"source": str(path), "source_hash": f"h{seed}", "config_hash": "c", "kind": "teacher"}
    store = DepthStore.create(
        str(path),
        num_frames=num_frames,
        height=height,
        width=width,
        chunk_frames=chunk_frames,
        attrs=attrs,
        variables=variables,
    )
    per_frame = {k: v for k, v in arrays.items() if k != "K" and k in store.variables}
    for i in range(store.num_chunks):
        a, b = store.chunk_bounds(i)
        store.write_chunk(i, K=arrays["K"], **{k: v[a:b] for k, v in per_frame.items()})
    store.finalize()
    return str(path)


@pytest.fixture
def stores(tmp_path):
    return [
        make_teacher_store(tmp_path / "a.teacher.zarr", num_frames=30, seed=0),
        make_teacher_store(tmp_path / "b.teacher.zarr", num_frames=20, height=32, width=32, seed=1),
    ]


def test_batch_shapes_and_values(stores):
    data = TeacherWindows(stores, long_edge=16)
    batch = WindowSampler(data, window=8, batch_size=3, seed=0, crop_size=None).sample()
    # grids 10×16 and 16×16 → common size = the smallest of the batch's items
    b, n, c, h, w = batch.depth.shape
    assert (b, n, c) == (3, 8, 1) and h <= 16 and w == 16
    assert batch.confidence.shape == batch.depth.shape and batch.rgb.shape == (3, 8, 3, h, w)
    assert batch.valid.all()
    assert torch.all(batch.depth > 0) and torch.allclose(batch.confidence, torch.tensor(0.9))
    assert batch.rgb.min() >= 0 and batch.rgb.max() <= 1


def test_window_content_matches_the_store(stores):
    data = TeacherWindows(stores, long_edge=16)
    sampler = WindowSampler(data, window=6, batch_size=1, seed=3, crop_size=None, flip=False)
    for _ in range(4):
        batch = sampler.sample()
        i, s = batch.store_index[0], batch.start[0]
        store = DepthStore.open(stores[i])
        assert s >= 0 and s + 6 <= store.num_frames  # the window lies inside the video
        want = downsample_depth(store.read(s, s + 6)["depth"], model_grid_size(*store.size, 16))
        h, w = batch.depth.shape[-2:]
        if want.shape[-2:] == (h, w):  # uncropped item
            torch.testing.assert_close(batch.depth[0, :, 0], want)


def test_frame_stride(stores):
    data = TeacherWindows(stores, long_edge=16)
    sampler = WindowSampler(data, window=5, batch_size=1, seed=0, crop_size=None, flip=False, max_stride=3)
    seen = set()
    for _ in range(12):
        batch = sampler.sample()
        i, s, k = batch.store_index[0], batch.start[0], batch.stride[0]
        seen.add(k)
        store = DepthStore.open(stores[i])
        assert s + 4 * k < store.num_frames
        want = downsample_depth(store.read(s, s + 4 * k + 1)["depth"][::k], model_grid_size(*store.size, 16))
        if want.shape[-2:] == batch.depth.shape[-2:]:
            torch.testing.assert_close(batch.depth[0, :, 0], want)
    assert seen == {1, 2, 3}


def test_deterministic_for_a_seed_and_resumable(stores):
    def draw(seed, k=3, state=None):
        s = WindowSampler(TeacherWindows(stores, long_edge=16), window=8, batch_size=2, seed=seed, crop_size=8)
        if state is not None:
            s.load_state_dict(state)
        return [s.sample() for _ in range(k)], s.state_dict()

    a, _ = draw(0)
    b, _ = draw(0)
    c, _ = draw(1)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.depth, y.depth) and torch.equal(x.rgb, y.rgb)
    assert not all(torch.equal(x.depth, y.depth) for x, y in zip(a, c, strict=True))
    # a sampler restored from a state dict continues the same sequence
    _, state = draw(0, k=1)
    rest, _ = draw(0, k=2, state=state)
    for x, y in zip(a[1:], rest, strict=True):
        assert torch.equal(x.depth, y.depth)


def test_crop_and_mixed_sizes(stores):
    sampler = WindowSampler(TeacherWindows(stores, long_edge=16), window=4, batch_size=4, seed=0, crop_size=7)
    for _ in range(3):
        batch = sampler.sample()
        assert batch.depth.shape == (4, 4, 1, 7, 7)
    assert len({i for _ in range(10) for i in sampler.sample().store_index}) == 2  # both stores are drawn


def test_reads_are_windows_never_whole_stores(stores, monkeypatch):
    calls = []
    original = DepthStore.read

    def spy(self, start, stop, variables=("depth",)):
        calls.append((stop - start, tuple(variables)))
        return original(self, start, stop, variables)

    monkeypatch.setattr(DepthStore, "read", spy)
    for cache_mb in (0.0, 512.0):
        calls.clear()
        sampler = WindowSampler(TeacherWindows(stores, long_edge=16, cache_mb=cache_mb), window=5, batch_size=2, seed=0)
        for _ in range(5):
            sampler.sample()
        assert calls and all(n <= 5 for n, _ in calls)
        assert all(set(v) <= {"depth", "confidence", "rgb"} for _, v in calls)  # never gt_depth or pose
    # with the cache, frames already read are not read again
    cached_frames = sum(n for n, _ in calls)
    assert cached_frames <= 30 + 20


def test_cache_gives_the_same_batches(stores):
    a = WindowSampler(TeacherWindows(stores, long_edge=16, cache_mb=0), window=8, batch_size=2, seed=5)
    b = WindowSampler(TeacherWindows(stores, long_edge=16, cache_mb=64), window=8, batch_size=2, seed=5)
    for _ in range(6):
        x, y = a.sample(), b.sample()
        assert torch.equal(x.depth, y.depth) and torch.equal(x.confidence, y.confidence)


def test_short_video_is_padded_and_masked(tmp_path):
    short = make_teacher_store(tmp_path / "s.teacher.zarr", num_frames=5, chunk_frames=4, variables=())
    batch = WindowSampler(TeacherWindows([short], long_edge=16), window=8, batch_size=2, seed=0, max_stride=4).sample()
    assert batch.depth.shape[:2] == (2, 8) and batch.stride == [1, 1]  # no stride fits a 5-frame video
    assert batch.valid[:, :5].all() and not batch.valid[:, 5:].any()
    assert torch.equal(batch.depth[:, 5:], batch.depth[:, 4:5].expand(-1, 3, -1, -1, -1))  # last frame repeated
    assert batch.rgb is None and torch.all(batch.confidence == 1)  # store without rgb / confidence


def test_burn_in_prepends_context_that_fits_the_shortest_video(stores):
    data = TeacherWindows(stores, long_edge=16)
    sampler = WindowSampler(data, window=6, batch_size=2, seed=0, crop_size=None, flip=False, burn_in=20)
    contexts = set()
    for _ in range(12):
        batch = sampler.sample()
        k = batch.context
        contexts.add(k)
        shortest = min(data.num_frames(i) for i in batch.store_index)
        assert 0 <= k <= min(20, shortest - 6)
        assert batch.depth.shape[1] == k + 6 and batch.valid.all()  # every frame real, none padded
        context, window = batch.split()
        assert window.depth.shape[1] == 6 and torch.equal(window.depth, batch.depth[:, k:])
        if k:
            assert torch.equal(context.depth, batch.depth[:, :k]) and torch.equal(context.rgb, batch.rgb[:, :k])
        else:
            assert context is None and window is batch
    assert len(contexts) > 3  # k is drawn per batch
    assert max(contexts) > 6


def test_burn_in_off_gives_plain_windows(stores):
    batch = WindowSampler(TeacherWindows(stores, long_edge=16), window=6, batch_size=2, seed=0).sample()
    assert batch.context == 0 and batch.depth.shape[1] == 6 and batch.split() == (None, batch)
