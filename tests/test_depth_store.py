"""Per-video depth stores: round trips (DepthStore and plain xarray), CF attributes, resume identity, validation,
URLs, and format 1 stores (written before the commit markers moved into a sub-group) still opening and resuming."""

from __future__ import annotations

import hashlib
import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from steadydepth.errors import StoreError
from storage.depth_store import CHUNK_DONE, OPTIONAL, DepthStore

FORMAT1_STORE = Path(__file__).parent / "data" / "format1" / "clip.teacher.zarr"  # written by format 1 code

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
    assert store.attrs["chunk_frames"] == CF and store.attrs["format_version"] == 2
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
    assert set(lazy.variables) == set(ds.variables) and lazy.depth.chunks[0] == (CF,) * 5


def test_xarray_shows_exactly_the_stored_variables_with_cf_attributes(full_store):
    ds = xr.open_zarr(full_store.uri)
    data = {"depth", "K", "confidence", "gt_depth", "pose", "rgb"}
    assert set(ds.data_vars) == data  # no commit markers
    assert set(ds.coords) == {"time", "frame_index", "y", "x"}
    assert set(ds.attrs["variables"]) == set(ds.variables)
    assert full_store.variables == ("depth", "K", "timestamp", "frame_index", *OPTIONAL)  # API names
    assert full_store.done_chunks() == list(range(5))  # the markers are there, in the bookkeeping group
    assert CHUNK_DONE.split("/")[0] in full_store.group.group_keys()
    assert ds.attrs["Conventions"] == "CF-1.10" and ds.attrs["title"] == "SteadyDepth teacher depth of walk"
    assert "steadydepth" in ds.attrs["history"]
    time_attrs = {k: ds.time.attrs[k] for k in ("units", "standard_name", "axis")}
    assert time_attrs == {"units": "s", "standard_name": "time", "axis": "T"}
    assert ds.time.dtype == np.float64  # elapsed seconds, not decoded as dates
    assert (ds.y.attrs["axis"], ds.x.attrs["axis"]) == ("Y", "X")
    np.testing.assert_array_equal(ds.y.values, np.arange(H))
    np.testing.assert_array_equal(ds.x.values, np.arange(W))
    for name in ("depth", "gt_depth"):
        assert ds[name].attrs["units"] == "m" and "z-depth" in ds[name].attrs["long_name"]
        assert "standard_name" not in ds[name].attrs  # CF's "depth" is below a surface, not along the optical axis
    assert all(ds[v].attrs.get("long_name") for v in ds.variables)
    assert not {"Conventions", "title", "history"} & set(full_store.caller_attrs)  # a derived store writes its own


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


def format1_arrays(start: int, stop: int) -> dict[str, np.ndarray]:
    """The content the format 1 fixture was written with (chunks 0 and 2 of 3; chunk 1 was never written)."""
    t = np.arange(start, stop)
    yy, xx = np.mgrid[0:4, 0:6]
    depth = (1.0 + 0.5 * t[:, None, None] + 0.1 * yy + 0.01 * xx).astype(np.float32)
    rgb = np.broadcast_to((10 * t)[:, None, None, None] + np.arange(3), (len(t), 4, 6, 3)).astype(np.uint8)
    K = np.array([[5.0, 0, 3], [0, 5.0, 2], [0, 0, 1]], np.float32)
    return {"depth": depth, "K": K, "timestamp": t / 10.0, "frame_index": 2 * t, "rgb": rgb}


def test_a_format1_store_still_opens_resumes_and_reads(tmp_path):
    uri = str(tmp_path / "clip.teacher.zarr")
    shutil.copytree(FORMAT1_STORE, uri)
    old = DepthStore.open(uri, require_complete=False)
    assert old.format_version == 1 and old.done_chunks() == [0, 2] and old.missing_chunks() == [1]
    assert old.variables == ("depth", "K", "timestamp", "frame_index", "rgb")
    np.testing.assert_array_equal(old.read(4, 6, ("depth",))["depth"], format1_arrays(4, 6)["depth"])

    attrs = {k: old.attrs[k] for k in ("source", "source_hash", "config_hash", "kind", "fps")}
    resumed = DepthStore.create(uri, num_frames=6, height=4, width=6, chunk_frames=2, attrs=attrs, variables=["rgb"])
    assert resumed.missing_chunks() == [1]  # same identity: resumed, not refused or rewritten
    resumed.write_chunk(1, **format1_arrays(2, 4))
    resumed.finalize()

    done = DepthStore.open(uri)
    assert done.is_complete and done.format_version == 1 and "bookkeeping" not in done.group  # layout kept
    got = done.read(0, 6, ("depth", "timestamp", "rgb"))
    for name, values in got.items():
        np.testing.assert_array_equal(values, format1_arrays(0, 6)[name].astype(values.dtype), err_msg=name)
    ds = done.to_xarray()
    assert set(ds.data_vars) == {"depth", "K", "rgb"} and set(ds.coords) == {"time", "frame_index"}
    with pytest.raises(StoreError, match="variables"):
        DepthStore.create(uri, num_frames=6, height=4, width=6, chunk_frames=2, attrs=attrs)


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
