"""refine_store: identity for an untrained model, streaming == one window, teacher untouched, resume, identity."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from smoother.config import SmootherConfig
from smoother.grid import downsample_confidence, downsample_depth, downsample_rgb, model_grid_size
from smoother.model import ResidualSmoother
from smoother.refine import _Block, _prefetch, model_hash, refine_store
from smoother.temporal_filter import gated_recursion, grid_flows, memory_flows
from smoother.upsample import guided_upsample, upsample_bilinear
from steadydepth.errors import StoreError
from storage.depth_store import CHUNK_DONE, DepthStore
from storage.naming import store_uri

N, H, W, CHUNK = 20, 24, 40, 4
TEACHER_ATTRS = {"source": "synthetic", "source_hash": "src123", "config_hash": "teach456", "kind": "teacher"}
CFG = SmootherConfig(d_model=16, n_layers=2, headdim=8, chunk_size=4, depth_long_edge=16)  # grid 10×16


def _teacher_frames() -> dict[str, np.ndarray]:
    """A flickering scene: a foreground bar moving over a slanted background, per-frame scale jitter."""
    rng = np.random.default_rng(0)
    t = np.arange(N)
    yy, xx = np.mgrid[0:H, 0:W]
    background = 4.0 + 0.02 * xx + 0.01 * yy
    depth = np.empty((N, H, W), np.float32)
    for i in t:
        fg = (xx >= 5 + i) & (xx < 15 + i)
        depth[i] = np.where(fg, 1.5, background) * np.exp(rng.normal(0, 0.03))  # global flicker
    depth *= np.exp(rng.normal(0, 0.01, depth.shape)).astype(np.float32)
    K = np.tile(np.array([[40.0, 0, 20], [0, 40.0, 12], [0, 0, 1]], np.float32), (N, 1, 1))
    pose = np.tile(np.eye(4), (N, 1, 1))
    pose[:, 0, 3] = 0.05 * t
    gt = depth * 1.1
    gt[:, :2] = np.nan
    return {
        "depth": depth,
        "K": K,
        "timestamp": t / 30.0,
        "frame_index": 2 * t,
        "confidence": rng.uniform(0.2, 1.0, (N, H, W)).astype(np.float32),
        "rgb": rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8),
        "gt_depth": gt.astype(np.float32),
        "pose": pose,
    }


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> tuple[str, dict[str, np.ndarray]]:
    """A finished teacher store (never modified by the tests) and its content."""
    uri = store_uri(str(tmp_path_factory.mktemp("stores")), "clip", kind="teacher")
    frames = _teacher_frames()
    store = DepthStore.create(
        uri,
        num_frames=N,
        height=H,
        width=W,
        chunk_frames=CHUNK,
        attrs=TEACHER_ATTRS,
        variables=["confidence", "rgb", "gt_depth", "pose"],
    )
    for i in store.missing_chunks():
        a, b = store.chunk_bounds(i)
        store.write_chunk(i, **{k: v[a:b] for k, v in frames.items()})
    store.finalize()
    return uri, frames


def _model(seed: int | None = 1, dtype: torch.dtype = torch.float32, cfg: SmootherConfig = CFG) -> ResidualSmoother:
    """A small smoother; with a seed its head is randomised (a 'trained' model whose output is not zero)."""
    torch.manual_seed(0)
    model = ResidualSmoother(cfg).to(dtype).eval()
    if seed is not None:
        torch.manual_seed(seed)
        torch.nn.init.normal_(model.head.weight, std=0.3)
        torch.nn.init.normal_(model.head.bias, std=0.05)
        with torch.no_grad():
            model.head.bias[1] = 0.5  # the filter's gate k: partly open, so the filter is exercised
    return model


def _read_all(uri: str) -> dict[str, np.ndarray]:
    store = DepthStore.open(uri)
    return store.read(0, store.num_frames, store.variables)


def _tree_digest(path: str) -> dict[str, str]:
    """sha256 of every file under a store folder (to prove it was not touched)."""
    root = Path(path)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_untrained_model_reproduces_the_teacher_exactly(teacher, tmp_path):
    uri, frames = teacher
    model = _model(seed=None)
    result = refine_store(uri, None, model)  # None: next to the teacher store, named by the model
    out_uri = result.uri
    assert out_uri == store_uri(str(Path(uri).parent), "clip", kind="refined", model_id=model_hash(model))
    refined = DepthStore.open(out_uri)
    assert refined.is_complete and result.chunks_written == N // CHUNK and result.chunks_skipped == 0
    assert set(refined.variables) == {"depth", "K", "timestamp", "frame_index", "confidence", "gt_depth", "pose"}
    got = _read_all(out_uri)
    for name in refined.variables:  # depth bit for bit, the rest copied
        np.testing.assert_array_equal(got[name], frames[name], err_msg=name)
    attrs = refined.attrs
    assert attrs["kind"] == "refined" and attrs["source_hash"] == "src123" and attrs["source"] == "synthetic"
    assert attrs["teacher_store"] == uri and attrs["teacher_config_hash"] == "teach456"
    assert attrs["config_hash"] != "teach456" and attrs["model_id"] == result.model_id
    assert result.residual_stats.mean_abs == 0.0 and result.residual_stats.frames == N
    assert refined.chunk_frames == CHUNK


@pytest.mark.parametrize(
    ("chunk_frames", "per_call", "band", "preroll", "flow"),
    [
        (None, None, "full", 16, True),
        (3, None, "full", 16, True),
        (3, None, "detail", 16, True),
        (3, None, "full", 0, True),
        (3, None, "full", 16, False),  # no motion compensation
        (None, 8, "full", 16, True),  # two chunks per model call (as on a GPU)
        (3, 7, "full", 5, True),  # rounded up to 3 chunks: calls of 9, 9 and 2 frames
    ],
)
def test_streaming_refine_equals_one_window_over_the_whole_video(
    teacher, tmp_path, monkeypatch, chunk_frames, per_call, band, preroll, flow
):
    uri, frames = teacher
    before = _tree_digest(uri)
    cfg = CFG.model_copy(update={"temporal_filter": band, "preroll": preroll, "flow_warp": flow, "flow_cues": flow})
    model = _model(dtype=torch.float64, cfg=cfg)  # float64: streaming == window up to rounding, not up to fp32 noise
    reads: list[tuple[int, int]] = []
    real_read = DepthStore.read

    def spy(self, start, stop, variables=("depth",)):
        if self.uri == uri:
            reads.append((start, stop))
        return real_read(self, start, stop, variables)

    monkeypatch.setattr(DepthStore, "read", spy)
    progress: list[tuple[int, int]] = []
    out_uri = store_uri(str(tmp_path), "clip", kind="refined")
    result = refine_store(
        uri,
        out_uri,
        model,
        chunk_frames=chunk_frames,
        frames_per_call=per_call,
        on_progress=lambda d, t: progress.append((d, t)),
    )
    monkeypatch.undo()

    chunk = chunk_frames or CHUNK
    step = -(-(per_call or chunk) // chunk) * chunk
    assert max(b - a for a, b in reads) == step  # streamed: never more than one call's frames in memory
    assert progress == [(min(stop, N), N) for stop in range(chunk, N + chunk, chunk)]  # each chunk, in order

    # the reference: one model call over the pre-roll (frames preroll−1..1 backwards) and all 20 frames at the
    # grid, the same upsampling and filter, then the last 20 frames
    order = np.r_[np.arange(preroll - 1, 0, -1), np.arange(N)]
    grid = model_grid_size(H, W, CFG.depth_long_edge)
    small = downsample_depth(frames["depth"][order], grid).double()
    conf = downsample_confidence(frames["confidence"][order], grid).double()
    rgb = downsample_rgb(frames["rgb"][order], grid).double()
    grid_flow = grid_flows(rgb[None])[0].double() if flow else None  # the model's motion cues: flow on the grid
    with torch.no_grad():
        out = model(small[None, :, None], conf[None, :, None], rgb[None], flows=grid_flow)
    log_hr = torch.from_numpy(frames["depth"][order]).double().log()
    residual = guided_upsample(out.residual[0, :, 0], small.log(), log_hr)
    keep = upsample_bilinear(out.keep[0, :, 0], (H, W))
    assert 0.05 < keep.mean() < 0.9  # the filter does something
    flows = memory_flows(frames["rgb"][order], None)[0][None] if flow else None  # frame t -> t−1, played order
    if band == "full":  # the filter over all frames at once, on all of the corrected log-depth
        filtered, _ = gated_recursion(
            (log_hr + residual)[None], keep[None], reset=cfg.filter_reset, flows=flows, reset_scale=out.noise_scale
        )
        residual = filtered[0] - log_hr
    else:  # ... on the detail finer than the grid
        detail = log_hr - upsample_bilinear(small.log(), (H, W))
        filtered, _ = gated_recursion(
            detail[None], keep[None], reset=cfg.filter_reset, flows=flows, reset_scale=out.noise_scale
        )
        residual = residual + (filtered[0] - detail)
    residual = residual[len(order) - N :]
    expected = (torch.from_numpy(frames["depth"]).double() * torch.exp(residual)).float().numpy()
    assert residual.abs().max() > 0.05  # a non-trivial comparison

    got = _read_all(result.uri)
    np.testing.assert_allclose(got["depth"], expected, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(got["confidence"], frames["confidence"])
    assert result.residual_stats.mean_abs == pytest.approx(float(residual.abs().mean()), rel=1e-6)
    assert _tree_digest(uri) == before  # the teacher store is byte for byte unchanged
    DepthStore.open(result.uri).to_xarray()  # a finished, consolidated store


class _Crash(Exception):
    pass


def test_resume_writes_only_missing_chunks_and_matches_an_uninterrupted_run(teacher, tmp_path):
    uri, _ = teacher
    model = _model()
    reference = refine_store(uri, str(tmp_path / "ref.refined.zarr"), model)

    out_uri = str(tmp_path / "resumed.refined.zarr")

    def crash_after_three_chunks(done: int, total: int) -> None:
        if done >= 3 * CHUNK:
            raise _Crash

    with pytest.raises(_Crash):
        refine_store(uri, out_uri, model, on_progress=crash_after_three_chunks)
    partial = DepthStore.open(out_uri, require_complete=False)
    assert partial.missing_chunks() == [3, 4]
    group = zarr.open_group(out_uri, mode="r+")
    group[CHUNK_DONE][1] = 0  # a middle chunk whose write was "killed half-way"
    a, b = partial.chunk_bounds(1)
    group["depth"][a:b] = 123.0  # its half-written data must be replaced

    written: list[int] = []
    result = refine_store(uri, out_uri, model, on_progress=lambda d, t: written.append(d))
    assert written == [2 * CHUNK, 4 * CHUNK, 5 * CHUNK]  # chunks 1, 3 and 4 only
    assert (result.chunks_written, result.chunks_skipped) == (3, 2)
    assert result.residual_stats.frames == 3 * CHUNK
    np.testing.assert_array_equal(_read_all(out_uri)["depth"], _read_all(reference.uri)["depth"])

    again = refine_store(uri, out_uri, model)  # finished: nothing to do
    assert again.chunks_written == 0 and again.residual_stats is None


def test_resume_with_several_chunks_per_call_writes_only_the_missing_ones(teacher, tmp_path):
    uri, _ = teacher
    model = _model()
    out_uri = str(tmp_path / "clip.refined.zarr")
    reference = _read_all(refine_store(uri, out_uri, model, frames_per_call=2 * CHUNK).uri)["depth"]
    group = zarr.open_group(out_uri, mode="r+")
    group.attrs["complete"] = False
    for i in (1, 3):  # two chunks "lost": one inside a call's block, one at its end
        group[CHUNK_DONE][i] = 0
        a, b = DepthStore.open(out_uri, require_complete=False).chunk_bounds(i)
        group["depth"][a:b] = 123.0

    written: list[int] = []
    result = refine_store(uri, out_uri, model, frames_per_call=2 * CHUNK, on_progress=lambda d, t: written.append(d))
    assert written == [2 * CHUNK, 4 * CHUNK]
    assert (result.chunks_written, result.residual_stats.frames) == (2, 2 * CHUNK)
    np.testing.assert_array_equal(_read_all(out_uri)["depth"], reference)


def test_a_failed_write_stops_the_run_and_keeps_the_chunks_before_it(teacher, tmp_path, monkeypatch):
    uri, _ = teacher
    real_write = DepthStore.write_chunk

    def disk_full_at_chunk_two(self, i, **arrays):
        if i == 2:
            raise OSError("no space left on device")
        return real_write(self, i, **arrays)

    monkeypatch.setattr(DepthStore, "write_chunk", disk_full_at_chunk_two)
    out_uri = str(tmp_path / "clip.refined.zarr")
    with pytest.raises(OSError, match="no space left"):
        refine_store(uri, out_uri, _model())
    # the write runs beside the next chunk's compute, but its error stops the run before anything later is written
    assert DepthStore.open(out_uri, require_complete=False).missing_chunks() == [2, 3, 4]


def test_prefetch_yields_blocks_in_order_and_raises_a_read_error_at_its_block():
    blocks = [_Block(i, i + 1, write=(i,)) for i in range(6)]
    got = [(block.start, data["x"]) for block, data in _prefetch(lambda b: {"x": 10 * b.start}, blocks, ahead=2)]
    assert got == [(i, 10 * i) for i in range(6)]

    def unreadable_at_three(block):
        if block.start == 3:
            raise OSError("chunk 3 unreadable")
        return {}

    seen = []
    with pytest.raises(OSError, match="chunk 3"):
        for block, _ in _prefetch(unreadable_at_three, blocks, ahead=2):
            seen.append(block.start)
    assert seen == [0, 1, 2]


def test_a_different_model_needs_overwrite(teacher, tmp_path):
    uri, _ = teacher
    out_uri = str(tmp_path / "clip.refined.zarr")
    first = refine_store(uri, out_uri, _model(seed=1))
    other = _model(seed=2)
    with pytest.raises(StoreError, match="different source/config"):
        refine_store(uri, out_uri, other)
    second = refine_store(uri, out_uri, other, overwrite=True)
    assert second.config_hash != first.config_hash and second.chunks_written == N // CHUNK
    assert DepthStore.open(out_uri).attrs["config_hash"] == second.config_hash
    fresh = refine_store(uri, str(tmp_path / "fresh.refined.zarr"), other)
    np.testing.assert_array_equal(_read_all(out_uri)["depth"], _read_all(fresh.uri)["depth"])


def test_refuses_to_write_over_the_teacher_store(teacher):
    uri, _ = teacher
    with pytest.raises(ValueError, match="teacher store"):
        refine_store(uri, uri + "/", _model())
    with pytest.raises(ValueError, match="identity"):
        refine_store(uri, None, _model(), attrs_extra={"kind": "teacher"})


def _bare_teacher_store(tmp_path, chunk_frames: int) -> tuple[str, dict[str, np.ndarray]]:
    """A finished teacher store with the required variables only; returns (uri, the frames written)."""
    uri = store_uri(str(tmp_path), "bare", kind="teacher")
    frames = _teacher_frames()
    store = DepthStore.create(uri, num_frames=N, height=H, width=W, chunk_frames=chunk_frames, attrs=TEACHER_ATTRS)
    for i in store.missing_chunks():
        a, b = store.chunk_bounds(i)
        store.write_chunk(i, **{k: frames[k][a:b] for k in ("depth", "K", "timestamp", "frame_index")})
    store.finalize()
    return uri, frames


def test_teacher_store_without_optional_variables(tmp_path):
    """Depth only (no confidence, rgb, gt, pose) and a model without the feature CNN."""
    uri, frames = _bare_teacher_store(tmp_path, chunk_frames=8)
    model = ResidualSmoother(CFG.model_copy(update={"use_features": False}))
    with torch.no_grad():
        model.head.bias[0] = 0.05  # a constant ΔD, temporal filter closed (k = 0)
    result = refine_store(uri, None, model)
    refined = DepthStore.open(result.uri)
    assert refined.variables == ("depth", "K", "timestamp", "frame_index") and refined.chunk_frames == 8
    ratio = _read_all(result.uri)["depth"] / frames["depth"]
    np.testing.assert_allclose(ratio, np.exp(0.05), rtol=1e-6)  # constant stays constant


def test_preroll_reading_a_single_frame_of_a_chunk_backwards(tmp_path):
    """A pre-roll that ends one frame into a chunk reads a one-frame block reversed (a negative stride once)."""
    uri, _ = _bare_teacher_store(tmp_path, chunk_frames=4)
    model = ResidualSmoother(CFG.model_copy(update={"use_features": False, "preroll": 6}))  # frames 5..1: 4 | 1
    result = refine_store(uri, None, model)
    assert DepthStore.open(result.uri).is_complete and np.isfinite(_read_all(result.uri)["depth"]).all()


def test_frames_ingest_marked_unusable_are_bridged_by_the_filter(tmp_path):
    """A run of unusable teacher frames (frame_valid 0, depth filled from the frame before, as ingest writes them),
    across a chunk boundary: the refined output holds the filter's memory over them instead of refining the copy."""
    frames = _teacher_frames()
    bad = [7, 8]  # chunks of 4: the run straddles chunks 1 and 2
    for i in bad:
        frames["depth"][i] = frames["depth"][6]
    frames["frame_valid"] = np.ones(N, np.uint8)
    frames["frame_valid"][bad] = 0
    names = ("depth", "K", "timestamp", "frame_index")
    uris = {}
    for marked in (True, False):
        uri = store_uri(str(tmp_path / str(marked)), "gap", kind="teacher")
        store = DepthStore.create(uri, num_frames=N, height=H, width=W, chunk_frames=CHUNK, attrs=TEACHER_ATTRS,
                                  variables=["frame_valid"] if marked else ())  # fmt: skip
        for i in store.missing_chunks():
            a, b = store.chunk_bounds(i)
            store.write_chunk(i, **{k: frames[k][a:b] for k in (*names, *(("frame_valid",) if marked else ()))})
        store.finalize()
        cfg = CFG.model_copy(update={"use_features": False, "preroll": 0})  # a pre-roll would replay the gap first
        uris[marked] = _read_all(refine_store(uri, None, _model(cfg=cfg)).uri)
    bridged, plain = uris[True]["depth"], uris[False]["depth"]
    np.testing.assert_array_equal(bridged[7], bridged[6])  # held: no RGB, so the memory does not move
    np.testing.assert_array_equal(bridged[8], bridged[6])
    assert not np.array_equal(plain[7], plain[6])  # unmarked, the copy is refined like any frame
    np.testing.assert_array_equal(bridged[:7], plain[:7])  # nothing before the gap changes
    assert np.isfinite(bridged).all() and not np.array_equal(bridged[9], bridged[6])  # and it moves on after
