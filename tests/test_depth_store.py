"""Per-video depth stores: round trips (DepthStore and plain xarray), resume identity, validation, URLs."""

from __future__ import annotations

import hashlib
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from steadydepth.errors import StoreError
from storage.depth_store import OPTIONAL, DepthStore

T, H, W, CF = 40, 24, 32, 8
ATTRS = {
    "source": "clips/walk.mp4",
    "source_hash": "sha-1",
    "config_hash": "cfg-1",
    "kind": "teacher",
    "fps": 30.0,
    "original_size": [480, 640],
    "padding": [0, 0, 0, 0],
    "teacher": "synthetic",
    "teacher_version": "0",
}


def frames(start: int, stop: int, variables=OPTIONAL) -> dict[str, np.ndarray]:
    """Deterministic arrays for frames [start, stop), each value depending on its frame index."""
    rng = np.random.default_rng(start)
    n = stop - start
    t = np.arange(start, stop)
    out = {
        "depth": (0.5 + rng.random((n, H, W)) * 10).astype(np.float32),
        "K": np.tile(np.array([[25.0, 0, 16], [0, 25.0, 12], [0, 0, 1]], np.float32), (n, 1, 1)),
        "timestamp": t / 30.0,
        "frame_index": 3 * t + 1,
    }
    gt = (1 + rng.random((n, H, W))).astype(np.float32)
    gt[:, :2] = np.nan
    optional = {
        "confidence": rng.random((n, H, W)).astype(np.float32),
        "gt_depth": gt,
        "pose": np.tile(np.eye(4), (n, 1, 1)) + t[:, None, None] * 0.01,
        "rgb": rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8),
    }
    return out | {k: v for k, v in optional.items() if k in variables}


def create(uri, variables=OPTIONAL, attrs=ATTRS, **kwargs) -> DepthStore:
    return DepthStore.create(
        uri, num_frames=T, height=H, width=W, chunk_frames=CF, attrs=attrs, variables=variables, **kwargs
    )


def fill(store: DepthStore, chunks=None) -> None:
    for i in store.missing_chunks() if chunks is None else chunks:
        store.write_chunk(i, **frames(*store.chunk_bounds(i), variables=store.variables))


def expected(start=0, stop=T, variables=OPTIONAL) -> dict[str, np.ndarray]:
    parts = [frames(*b, variables=variables) for b in [(s, min(s + CF, T)) for s in range(0, T, CF)]]
    return {k: np.concatenate([p[k] for p in parts])[start:stop] for k in parts[0]}


@pytest.fixture
def full_store(tmp_path) -> DepthStore:
    store = create(str(tmp_path / "walk.teacher.zarr"))
    fill(store)
    store.finalize()
    return store


DTYPES = {
    "depth": "float32",
    "confidence": "float32",
    "K": "float32",
    "timestamp": "float64",
    "frame_index": "int64",
    "gt_depth": "float32",
    "pose": "float64",
    "rgb": "uint8",
}


def test_round_trip_every_variable_via_read(full_store):
    store = DepthStore.open(full_store.uri)
    assert store.is_complete and store.num_frames == T and store.size == (H, W) and store.num_chunks == 5
    assert {k: store.attrs[k] for k in ATTRS} == ATTRS
    assert store.attrs["chunk_frames"] == CF and store.attrs["format_version"] == 1
    assert store.caller_attrs == ATTRS  # bookkeeping left out
    got = store.read(0, T, tuple(DTYPES))
    for name, values in expected().items():
        assert got[name].dtype == DTYPES[name], name
        np.testing.assert_array_equal(got[name], values.astype(DTYPES[name]), err_msg=name)


def test_round_trip_via_plain_xarray_open_zarr(full_store):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated at finalize: no "failed to open consolidated" warning
        ds = xr.open_zarr(full_store.uri)
    want = expected()
    assert ds.depth.dims == ("time", "y", "x") and ds.depth.attrs["units"] == "m"
    assert ds.gt_depth.attrs["units"] == "m" and ds.time.attrs["units"] == "s"
    assert ds.K.dims == ("time", "k_i", "k_j") and ds.pose.dims == ("time", "pose_i", "pose_j")
    assert ds.rgb.dims == ("time", "y", "x", "channel") and ds.confidence.dims == ("time", "y", "x")
    assert "time" in ds.indexes and "frame_index" in ds.coords
    np.testing.assert_array_equal(ds.time.values, want["timestamp"])
    np.testing.assert_array_equal(ds.frame_index.values, want["frame_index"])
    for name in ("depth", "confidence", "K", "gt_depth", "pose", "rgb"):
        assert ds[name].dtype == DTYPES[name], name
        np.testing.assert_array_equal(ds[name].values, want[name], err_msg=name)
    assert ds.attrs["source_hash"] == "sha-1" and ds.attrs["complete"] is True
    # Select by timestamp; frame_index rides along as a coordinate.
    frame = ds.depth.sel(time=10 / 30.0, method="nearest")
    assert int(frame.frame_index) == 31
    np.testing.assert_array_equal(frame.values, want["depth"][10])
    lazy = full_store.to_xarray()
    assert "chunk_done" not in lazy and lazy.depth.chunks[0] == (CF,) * 5


def test_partial_read_of_a_temporal_window(full_store):
    got = full_store.read(13, 29, ("depth", "timestamp", "rgb"))
    want = expected(13, 29)
    for name in got:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert got["depth"].shape == (16, H, W)
    with pytest.raises(ValueError):
        full_store.read(30, T + 1)


def test_windows_cover_every_frame(full_store):
    wins = list(full_store.windows(16, 8))
    assert wins == [(0, 16), (8, 24), (16, 32), (24, 40)]
    assert list(full_store.windows(16, 10)) == [(0, 16), (10, 26), (20, 36), (24, 40)]
    assert list(full_store.windows(64, 8)) == [(0, 40)]


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_writing_a_chunk_twice_is_idempotent(tmp_path):
    store = create(str(tmp_path / "a.teacher.zarr"))
    fill(store)
    before = _digest(tmp_path / "a.teacher.zarr")
    fill(store, chunks=[1, 4])
    assert _digest(tmp_path / "a.teacher.zarr") == before
    assert store.missing_chunks() == [] and store.done_chunks() == [0, 1, 2, 3, 4]


def test_reopen_same_identity_resumes_and_other_identity_is_refused(tmp_path):
    uri = str(tmp_path / "walk.teacher.zarr")
    fill(create(uri), chunks=[0, 3])
    resumed = create(uri, attrs=ATTRS | {"source": "moved/walk.mp4"})  # source path is not identity
    assert resumed.missing_chunks() == [1, 2, 4]
    with pytest.raises(StoreError, match="different source/config .*config_hash.*delete it or pass overwrite"):
        create(uri, attrs=ATTRS | {"config_hash": "cfg-2"})
    with pytest.raises(StoreError, match="source_hash"):
        create(uri, attrs=ATTRS | {"source_hash": "sha-2"})
    with pytest.raises(StoreError, match="num_frames"):
        DepthStore.create(uri, num_frames=T + 1, height=H, width=W, chunk_frames=CF, attrs=ATTRS, variables=OPTIONAL)
    fresh = create(uri, attrs=ATTRS | {"config_hash": "cfg-2"}, overwrite=True)
    assert fresh.missing_chunks() == list(range(5)) and fresh.attrs["config_hash"] == "cfg-2"


def test_finalize_refuses_missing_chunks(tmp_path):
    uri = str(tmp_path / "walk.teacher.zarr")
    store = create(uri)
    fill(store, chunks=[0, 4])
    with pytest.raises(StoreError, match=r"chunks 1-3 of 5 are missing"):
        store.finalize()
    assert not store.is_complete
    with pytest.raises(StoreError, match="incomplete"):
        DepthStore.open(uri)
    assert DepthStore.open(uri, require_complete=False).done_chunks() == [0, 4]
    fill(store)
    store.finalize()
    assert DepthStore.open(uri).is_complete
    with pytest.raises(StoreError, match="finalized"):
        fill(store, chunks=[0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0, -1.0])
def test_invalid_depth_is_rejected_before_anything_is_written(tmp_path, bad):
    uri = str(tmp_path / "walk.teacher.zarr")
    store = create(uri, variables=())
    arrays = frames(8, 16, variables=())
    arrays["depth"][3, 5, 7] = bad
    with pytest.raises(StoreError, match=rf"store {uri} chunk 1 \(frames 8..15\): depth has 1 values"):
        store.write_chunk(1, **arrays)
    assert store.missing_chunks() == [0, 1, 2, 3, 4]
    assert np.isnan(store.read(8, 16)["depth"]).all()


def test_other_validation_errors(tmp_path):
    store = create(str(tmp_path / "walk.teacher.zarr"))
    good = frames(0, 8)
    cases = {
        "shape": {"depth": good["depth"][:, :-1]},
        "confidence": {"confidence": good["confidence"] + 1},
        "rgb": {"rgb": good["rgb"].astype(np.float32)},
        "gt_depth": {"gt_depth": -good["gt_depth"]},
        "pose": {"pose": np.full_like(good["pose"], np.inf)},
    }
    for match, change in cases.items():
        with pytest.raises(StoreError, match=f"chunk 0.*{match}"):
            store.write_chunk(0, **(good | change))
    with pytest.raises(StoreError, match="missing \\['rgb'\\]"):
        store.write_chunk(0, **{k: v for k, v in good.items() if k != "rgb"})
    store.write_chunk(0, **(good | {"K": good["K"][0]}))  # one K for the whole chunk is broadcast
    np.testing.assert_array_equal(store.read(0, 8, ("K",))["K"], good["K"])


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_fsspec_url_round_trip(tmp_path, scheme):
    uri = (
        f"memory://stores-{uuid.uuid4().hex}/walk.refined.zarr"
        if scheme == "memory"
        else f"file://{tmp_path}/stores/walk.refined.zarr"
    )
    attrs = ATTRS | {"kind": "refined"}
    store = create(uri, variables=("confidence",), attrs=attrs, storage_options={})
    fill(store)
    store.finalize()
    opened = DepthStore.open(uri, storage_options={})
    got = opened.read(5, 20, ("depth", "confidence", "frame_index"))
    want = expected(5, 20, variables=("confidence",))
    for name in got:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(uri, storage_options={})
    np.testing.assert_array_equal(ds.depth.isel(time=slice(5, 20)).values, want["depth"])
    assert create(uri, variables=("confidence",), attrs=attrs).is_complete  # reopening a finished store


def test_open_errors(tmp_path):
    with pytest.raises(StoreError, match="not found"):
        DepthStore.open(str(tmp_path / "nope.teacher.zarr"))
    (tmp_path / "junk.zarr").mkdir()
    (tmp_path / "junk.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match="not a readable depth store"):
        DepthStore.open(str(tmp_path / "junk.zarr"))
    with pytest.raises(StoreError, match="delete it or pass overwrite"):
        create(str(tmp_path / "junk.zarr"))
    xr.Dataset({"a": ("t", np.arange(3))}).to_zarr(tmp_path / "other.zarr", zarr_format=3, consolidated=False)
    with pytest.raises(StoreError, match="not a depth store"):
        DepthStore.open(str(tmp_path / "other.zarr"))
