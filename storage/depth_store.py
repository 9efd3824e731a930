"""Per-video depth stores: one Zarr v3 group per video, written chunk by chunk, resumable after a crash.

Layout of `<root>/<name>.<kind>.zarr` (kind "teacher" or "refined"); every per-frame array is chunked over
time (`chunk_frames` frames, full spatial extent), zstd-compressed and has `dimension_names`:

    time         float64 (time,)                 seconds from the source start; xarray's index for `time`
    frame_index  int64   (time,)                 source frame numbers (a coordinate on `time`)
    y, x         int64   (y,), (x,)              pixel row / column of the stored (padded) frame, from 0
    depth        float32 (time, y, x)            metres, finite and > 0
    K            float32 (time, k_i, k_j)        3x3 pinhole intrinsics per frame
    confidence   float32 (time, y, x)            optional, in [0, 1]
    gt_depth     float32 (time, y, x)            optional, metres, NaN where invalid
    pose         float64 (time, pose_i, pose_j)  optional, 4x4 camera-to-world
    rgb          uint8   (time, y, x, channel)   optional
    invalid_pixels int64 (time,)                 optional, teacher pixels that were NaN/inf, zero or negative
    frame_valid  uint8   (time,)                 optional, 0 where the teacher's frame was unusable
    bookkeeping/chunk_done uint8 (chunk,)        commit markers: 1 once chunk i is fully written

`xr.open_zarr` reads only the root group's arrays, so the markers (in the `bookkeeping` sub-group) never show
as data: the Dataset holds exactly the variables above. In the Python API the `time` array is called
`timestamp`. Group attrs hold the caller's metadata (see `steadydepth.ingest.video_attrs`), CF-1.10 global
attributes (`Conventions`, `title`, `history`) and bookkeeping (`format_version`, `num_frames`,
`chunk_frames`, `variables` = the arrays of the Dataset, `complete`). Variables carry CF `long_name` /
`units`; coordinates carry `axis` (T, Y, X). Depth has no CF `standard_name`: CF's `depth` is depth below a
surface, not distance along a camera's optical axis, and no standard name means that.

`time` is elapsed seconds (`units` "s", no reference date), so xarray keeps it as float seconds rather
than decoding dates.

Format 1 stores (written before the layout above) keep `chunk_done` at the root, list `timestamp` in
`variables` and have no y/x coordinates; they open, read and resume as before (`xr.open_zarr` shows their
`chunk_done`; `to_xarray` drops it).

Invalid teacher depth (teacher stores written by ingest; `steadydepth.teachers.invalid`): `depth` is always
finite and > 0 because ingest fills the teacher's bad pixels (from the last valid depth at that pixel,
else the nearest valid pixel) and sets `confidence` 0 there. `invalid_pixels[t]` counts frame t's bad
pixels. `frame_valid[t]` is 0 when more than `teacher.max_invalid_fraction_per_frame` of the frame was bad:
its `depth` is then a copy of the previous valid frame (or, at the start, the first valid one) and carries
no new information, so a temporal model should carry its state over it rather than learn from it. Attrs
`invalid_pixels_total`, `invalid_pixel_frames` and `invalid_frames` sum them per video.

Crash safety: `chunk_done` has chunk size 1, so each marker is its own object. `write_chunk` clears the
marker, writes the data arrays, then sets the marker: the marker is the commit point, and a chunk killed
half-way is reported missing and rewritten on the next run. Different chunks touch disjoint objects.

`finalize` consolidates the metadata, so a finished store opens with a plain `xarray.open_zarr(uri)`
(add `storage_options=` for remote URLs); open an unfinished one with `consolidated=False`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import numpy as np
import xarray as xr
import zarr
from fsspec.implementations.local import LocalFileSystem
from zarr.codecs import ZstdCodec

from steadydepth.errors import StoreError
from storage import uri as uris
from storage.naming import KINDS, video_name


def _package_version() -> str:
    """The installed steadydepth's version, from its metadata (storage imports nothing above it)."""
    try:
        return metadata.version("steadydepth")
    except metadata.PackageNotFoundError:
        return "unknown"


FORMAT_VERSION = 2  # 2: markers in a sub-group, y/x coordinates, CF attributes; format 1 stores still open and resume
REQUIRED = ("depth", "K", "timestamp", "frame_index")
OPTIONAL = ("confidence", "gt_depth", "pose", "rgb")
TEACHER_QUALITY = ("invalid_pixels", "frame_valid")  # optional per-frame records of invalid teacher depth
_ANY_OPTIONAL = (*OPTIONAL, *TEACHER_QUALITY)
IDENTITY_KEYS = ("source_hash", "config_hash", "kind")  # caller attrs that must match to resume
# attrs the store writes for itself (shape, chunking, progress); a caller may not set them, and `caller_attrs`
# leaves them out, e.g. so a derived store copies a video's metadata without its source's shape
BOOKKEEPING_KEYS = (
    "Conventions",
    "title",
    "history",
    "format_version",
    "num_frames",
    "height",
    "width",
    "chunk_frames",
    "num_chunks",
    "variables",
    "complete",
)
CONVENTIONS = "CF-1.10"
CHUNK_DONE = "bookkeeping/chunk_done"  # in a sub-group: xr.open_zarr reads only the root group's arrays
_LEGACY_CHUNK_DONE = "chunk_done"  # where format 1 stores keep their markers


@dataclass(frozen=True)
class _Var:
    """How one per-frame variable is stored. `dims` are the dims after `time` (y/x/sizes filled in later)."""

    path: str  # array name in the group
    dtype: str
    dims: tuple[str, ...]
    fill: float | int
    attrs: dict[str, Any]


_VARS: dict[str, _Var] = {
    # "s" without "since <date>": elapsed time, so xarray keeps float seconds instead of decoding dates
    "timestamp": _Var(
        "time",
        "float64",
        (),
        np.nan,
        {"units": "s", "standard_name": "time", "axis": "T", "long_name": "time from the start of the source video"},
    ),
    "frame_index": _Var("frame_index", "int64", (), -1, {"long_name": "frame number in the source"}),
    "depth": _Var(
        "depth", "float32", ("y", "x"), np.nan, {"units": "m", "long_name": "metric z-depth along the optical axis"}
    ),
    "K": _Var("K", "float32", ("k_i", "k_j"), np.nan, {"long_name": "pinhole intrinsics, pixels"}),
    "confidence": _Var(
        "confidence",
        "float32",
        ("y", "x"),
        np.nan,
        {"units": "1", "long_name": "depth confidence", "valid_range": [0.0, 1.0]},
    ),
    "gt_depth": _Var(
        "gt_depth",
        "float32",
        ("y", "x"),
        np.nan,
        {"units": "m", "long_name": "ground-truth z-depth along the optical axis", "comment": "NaN where invalid"},
    ),
    "pose": _Var("pose", "float64", ("pose_i", "pose_j"), np.nan, {"long_name": "camera-to-world, metres"}),
    "rgb": _Var("rgb", "uint8", ("y", "x", "channel"), 0, {"long_name": "decoded RGB frame"}),
    "invalid_pixels": _Var(
        "invalid_pixels", "int64", (), -1, {"long_name": "teacher pixels that were NaN/inf, zero or negative"}
    ),
    "frame_valid": _Var("frame_valid", "uint8", (), 0, {"long_name": "1 where the teacher's frame was usable"}),
}
_FIXED_SIZES = {"k_i": 3, "k_j": 3, "pose_i": 4, "pose_j": 4, "channel": 3}
_API_NAMES = {var.path: name for name, var in _VARS.items()}  # array name -> API name ("time" -> "timestamp")
# Pixel coordinates of the stored (padded) frame, written with the arrays; CF axis Y/X.
_PIXEL_COORDS = {
    "y": {"axis": "Y", "long_name": "pixel row of the stored frame, 0 at the top"},
    "x": {"axis": "X", "long_name": "pixel column of the stored frame, 0 at the left"},
}


def _per_frame(names: Sequence[str]) -> tuple[str, ...]:
    """The API names of the per-frame variables in a `variables` attr (array names, or API names in format 1)."""
    api = (_API_NAMES.get(n, n) for n in names)
    return tuple(n for n in api if n in _VARS)


def _location(uri: str, storage_options: Mapping[str, Any] | None) -> tuple[str, dict[str, Any] | None]:
    """What to hand zarr/xarray: file:// URLs become local paths (zarr's LocalStore writes atomically and
    creates folders); other URLs go through fsspec with their storage_options."""
    uri = str(uri)
    if not uris.is_url(uri):
        return uri, None
    fs, path = uris.filesystem(uri, dict(storage_options or {}))
    if isinstance(fs, LocalFileSystem):
        return path, None
    return uri, dict(storage_options or {})


def _json(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """attrs as they will read back (tuples become lists), so identities compare equal across runs."""
    try:
        return json.loads(json.dumps(dict(attrs)))
    except TypeError as err:
        raise ValueError(f"store attrs must be JSON-serialisable: {err}") from None


class DepthStore:
    """One video's depth store. Build with `DepthStore.create` (write/resume) or `DepthStore.open` (read)."""

    def __init__(self, uri: str, group: zarr.Group, storage_options: Mapping[str, Any] | None = None) -> None:
        self.uri = str(uri)
        self.group = group
        self.storage_options = dict(storage_options or {})

    # ---- creating and opening -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        uri: str,
        *,
        num_frames: int,
        height: int,
        width: int,
        chunk_frames: int,
        attrs: Mapping[str, Any],
        variables: Sequence[str] = (),
        compression_level: int = 3,
        storage_options: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> DepthStore:
        """Create a store, or reopen the one at uri for resume when its identity matches.

        `variables` names the optional variables to store (confidence, gt_depth, pose, rgb, invalid_pixels,
        frame_valid). The identity is attrs `source_hash`, `config_hash` and `kind` plus shape, chunking and
        variables; a store with another identity raises StoreError unless overwrite=True, which deletes it first.
        """
        if min(num_frames, height, width, chunk_frames) < 1:
            raise ValueError(f"store {uri}: num_frames, height, width and chunk_frames must be >= 1")
        unknown = sorted(set(variables) - set(_ANY_OPTIONAL))
        if unknown:
            raise ValueError(f"store {uri}: unknown optional variables {unknown}; choose from {_ANY_OPTIONAL}")
        attrs = _json(attrs)
        missing = [k for k in IDENTITY_KEYS if k not in attrs]
        if missing:
            raise ValueError(f"store {uri}: attrs lack {missing} (see steadydepth.ingest.video_attrs)")
        if attrs["kind"] not in KINDS:
            raise ValueError(f"store {uri}: attrs kind {attrs['kind']!r} is not one of {KINDS}")
        clash = sorted(set(attrs) & set(BOOKKEEPING_KEYS))
        if clash:
            raise ValueError(f"store {uri}: attrs {clash} are reserved for the store's bookkeeping")
        chunk_frames = min(chunk_frames, num_frames)
        names = [*REQUIRED, *(v for v in _ANY_OPTIONAL if v in variables)]
        meta = {
            **attrs,
            **_cf_globals(uri, attrs),
            "format_version": FORMAT_VERSION,
            "num_frames": num_frames,
            "height": height,
            "width": width,
            "chunk_frames": chunk_frames,
            "num_chunks": math.ceil(num_frames / chunk_frames),
            "variables": [*(_VARS[n].path for n in names), *_PIXEL_COORDS],  # the arrays xarray shows
            "complete": False,
        }
        where, so = _location(uri, storage_options)
        if overwrite or not uris.exists(uri, storage_options):
            # Attrs first, arrays after: a crash in between leaves a store that a rerun completes (below).
            group = zarr.open_group(where, mode="w", storage_options=so, attributes=meta)
        else:
            group = _open_group(uri, where, so, "delete it or pass overwrite", mode="r+", use_consolidated=False)
            old = dict(group.attrs)
            if "format_version" not in old:
                raise StoreError(f"{uri} exists but is not a depth store; delete it or pass overwrite")
            keys = [*IDENTITY_KEYS, "num_frames", "height", "width", "chunk_frames"]
            diff = [k for k in keys if old.get(k) != meta[k]]
            if _per_frame(old.get("variables", [])) != tuple(names):  # compared as API names: format 1 differs
                diff.append("variables")
            if diff:
                raise StoreError(
                    f"store {uri} was written from a different source/config ({', '.join(diff)} differ); "
                    "delete it or pass overwrite"
                )
        store = cls(uri, group, storage_options)
        store._ensure_arrays(compression_level)
        return store

    @classmethod
    def open(
        cls, uri: str, storage_options: Mapping[str, Any] | None = None, *, require_complete: bool = True
    ) -> DepthStore:
        """Open a store for reading; StoreError if it is missing, not a depth store, or (by default) unfinished."""
        if not uris.exists(uri, storage_options):
            raise StoreError(f"depth store {uri} not found; run the teacher stage to write it")
        where, so = _location(uri, storage_options)
        group = _open_group(uri, where, so, "delete it and rerun the stage that writes it", mode="r")
        store = cls(uri, group, storage_options)
        if "format_version" not in group.attrs or store._done_path not in group:
            raise StoreError(f"{uri} is not a depth store; delete it and rerun the stage that writes it")
        if require_complete and not store.is_complete:
            raise StoreError(
                f"depth store {uri} is incomplete ({len(store.missing_chunks())} of {store.num_chunks} chunks "
                "missing); rerun the stage that writes it to resume"
            )
        return store

    def _ensure_arrays(self, compression_level: int) -> None:
        """Create whichever arrays do not exist yet (all on a fresh store; the rest after a crashed create)."""
        t, h, w, c = self.num_frames, *self.size, self.chunk_frames
        sizes = {"y": h, "x": w, **_FIXED_SIZES}
        existing = set(self.group.array_keys())
        legacy = self.format_version < 2
        for name in self.variables:
            var = _VARS[name]
            if var.path in existing:
                continue
            shape = (t, *(sizes[d] for d in var.dims))
            arr = self.group.create_array(
                var.path,
                shape=shape,
                chunks=(c, *shape[1:]),
                dtype=var.dtype,
                fill_value=var.fill,
                compressors=ZstdCodec(level=compression_level),
                dimension_names=("time", *var.dims),
            )
            # CF "coordinates" makes xarray attach frame_index to every per-frame variable.
            extra = {"coordinates": "frame_index"} if var.dims else {}
            arr.attrs.update({**var.attrs, **extra})
        if not legacy:
            self._ensure_pixel_coords(existing)
        if self._done_path not in self.group:
            done = self.group.create_array(
                self._done_path,
                shape=(self.num_chunks,),
                chunks=(1,),
                dtype="uint8",
                fill_value=0,
                compressors=None,
                dimension_names=("chunk",),
            )
            done.attrs.update({"long_name": "1 once every variable of chunk i is written (the commit marker)"})

    def _ensure_pixel_coords(self, existing: set[str]) -> None:
        """The y/x coordinate arrays, (re)written while the store is unfinished: a crash between creating and
        filling one leaves it at its fill value, and a rerun must not keep that."""
        if self.is_complete:
            return
        for dim, size in zip(_PIXEL_COORDS, self.size, strict=True):
            if dim not in existing:
                arr = self.group.create_array(
                    dim, shape=(size,), dtype="int64", fill_value=-1, compressors=None, dimension_names=(dim,)
                )
                arr.attrs.update(_PIXEL_COORDS[dim])
            self.group[dim][:] = np.arange(size)

    # ---- metadata ---------------------------------------------------------------------------------------

    @property
    def attrs(self) -> dict[str, Any]:
        """All group attrs: the caller's metadata plus bookkeeping."""
        return dict(self.group.attrs)

    @property
    def caller_attrs(self) -> dict[str, Any]:
        """The caller's metadata only: `attrs` without the `BOOKKEEPING_KEYS`."""
        return {k: v for k, v in self.group.attrs.items() if k not in BOOKKEEPING_KEYS}

    @property
    def format_version(self) -> int:
        return int(self.group.attrs["format_version"])

    @property
    def _done_path(self) -> str:
        return CHUNK_DONE if self.format_version >= 2 else _LEGACY_CHUNK_DONE

    @property
    def num_frames(self) -> int:
        return int(self.group.attrs["num_frames"])

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the stored frames."""
        return int(self.group.attrs["height"]), int(self.group.attrs["width"])

    @property
    def chunk_frames(self) -> int:
        return int(self.group.attrs["chunk_frames"])

    @property
    def num_chunks(self) -> int:
        return int(self.group.attrs["num_chunks"])

    @property
    def variables(self) -> tuple[str, ...]:
        """API names of the stored per-frame variables (required ones first)."""
        return _per_frame(self.group.attrs["variables"])

    @property
    def is_complete(self) -> bool:
        return bool(self.group.attrs.get("complete", False))

    # ---- writing ----------------------------------------------------------------------------------------

    def chunk_bounds(self, i: int) -> tuple[int, int]:
        """Frames [start, stop) of chunk i."""
        if not 0 <= i < self.num_chunks:
            raise IndexError(f"store {self.uri} has chunks 0..{self.num_chunks - 1}, not {i}")
        start = i * self.chunk_frames
        return start, min(start + self.chunk_frames, self.num_frames)

    def done_chunks(self) -> list[int]:
        """Chunks whose commit marker is set."""
        return [int(i) for i in np.flatnonzero(self.group[self._done_path][:])]

    def missing_chunks(self) -> list[int]:
        """Chunks still to write (never written, or killed before their marker was set)."""
        return [int(i) for i in np.flatnonzero(self.group[self._done_path][:] == 0)]

    def write_chunk(self, i: int, **arrays: Any) -> None:
        """Write chunk i: every stored variable for frames chunk_bounds(i), validated before anything is written.

        Keywords are the API names (depth, K, timestamp, frame_index and the optional ones the store has);
        K may be a single (3, 3) matrix for all frames. Rewriting a chunk gives the same store (idempotent).
        """
        if self.is_complete:
            raise StoreError(f"store {self.uri} is finalized; pass overwrite to DepthStore.create to rewrite it")
        start, stop = self.chunk_bounds(i)
        where = f"store {self.uri} chunk {i} (frames {start}..{stop - 1})"
        given, wanted = set(arrays), set(self.variables)
        if given != wanted:
            extra, lacking = sorted(given - wanted), sorted(wanted - given)
            raise StoreError(f"{where}: got unexpected {extra} / missing {lacking}; the store holds {sorted(wanted)}")
        data = {name: _validate(where, name, arrays[name], stop - start, self.size) for name in self.variables}
        marker = self.group[self._done_path]
        marker[i] = 0  # un-commit first: a rewrite killed half-way must not look done
        for name, values in data.items():
            self.group[_VARS[name].path][start:stop] = values
        marker[i] = 1  # the commit point: data first, marker last

    def finalize(self) -> None:
        """Check every chunk is written, mark the store complete and consolidate its metadata."""
        missing = self.missing_chunks()
        if missing:
            raise StoreError(
                f"store {self.uri} cannot be finalized: chunks {_ranges(missing)} of {self.num_chunks} are missing"
            )
        self.group.attrs["complete"] = True
        with warnings.catch_warnings():
            # zarr warns that v3 consolidated metadata is not in the spec yet; xarray relies on it anyway.
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            zarr.consolidate_metadata(self.group.store_path)

    # ---- reading ----------------------------------------------------------------------------------------

    def read(self, start: int, stop: int, variables: Sequence[str] = ("depth",)) -> dict[str, np.ndarray]:
        """Frames [start, stop) of the named variables (API names), read from only the chunks involved.

        Frames of chunks not yet written read as fill values (NaN, frame_index -1, rgb 0).
        """
        if isinstance(variables, str):
            variables = (variables,)
        if not 0 <= start < stop <= self.num_frames:
            raise ValueError(f"store {self.uri}: frames [{start}, {stop}) are outside 0..{self.num_frames}")
        absent = [v for v in variables if v not in self.variables]
        if absent:
            raise StoreError(f"store {self.uri} has no {absent}; it holds {list(self.variables)}")
        return {v: np.asarray(self.group[_VARS[v].path][start:stop]) for v in variables}

    def windows(self, length: int, stride: int) -> Iterator[tuple[int, int]]:
        """(start, stop) windows of `length` frames every `stride` frames; the last one ends at the last frame,
        so every frame is covered. A video shorter than `length` gives one window over all of it."""
        if length < 1 or stride < 1:
            raise ValueError(f"window length and stride must be >= 1, got {length} and {stride}")
        n = self.num_frames
        if n <= length:
            yield 0, n
            return
        start = 0
        for start in range(0, n - length + 1, stride):
            yield start, start + length
        if start + length < n:
            yield n - length, n

    def to_xarray(self) -> xr.Dataset:
        """The store as a lazy (dask-backed) xarray Dataset indexed by `time` (seconds)."""
        where, so = _location(self.uri, self.storage_options)
        drop = [_LEGACY_CHUNK_DONE] if self.format_version < 2 else None  # format 1 keeps its markers at the root
        return xr.open_zarr(where, storage_options=so, consolidated=self.is_complete, drop_variables=drop)


def _cf_globals(uri: str, attrs: Mapping[str, Any]) -> dict[str, str]:
    """CF global attributes of a new store (the caller's `source` already names the video)."""
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "Conventions": CONVENTIONS,
        "title": f"SteadyDepth {attrs['kind']} depth of {video_name(uri)}",
        "history": f"{created} written by steadydepth {_package_version()}",
    }


def _open_group(uri: str, where: str, so: dict[str, Any] | None, fix: str, **kwargs: Any) -> zarr.Group:
    try:
        return zarr.open_group(where, storage_options=so, **kwargs)
    except (FileNotFoundError, KeyError, ValueError) as err:  # zarr's errors and bad JSON are ValueErrors
        raise StoreError(f"{uri} is not a readable depth store ({type(err).__name__}); {fix}") from err


def _validate(where: str, name: str, values: Any, n: int, size: tuple[int, int]) -> np.ndarray:
    """One variable of one chunk as the store dtype; StoreError naming store, chunk and variable if invalid."""
    var = _VARS[name]
    h, w = size
    raw = np.asarray(values)
    if name == "K" and raw.shape == (3, 3):
        raw = np.broadcast_to(raw, (n, 3, 3))
    sizes = {"y": h, "x": w, **_FIXED_SIZES}
    shape = (n, *(sizes[d] for d in var.dims))
    if raw.shape != shape:
        raise StoreError(f"{where}: {name} has shape {raw.shape}, expected {shape}")
    if var.dtype in ("uint8", "int64") and not np.issubdtype(raw.dtype, np.integer):
        raise StoreError(f"{where}: {name} has dtype {raw.dtype}, expected integers ({var.dtype})")
    if name == "rgb" and raw.dtype != np.uint8:
        raise StoreError(f"{where}: rgb has dtype {raw.dtype}, expected uint8")
    arr = raw.astype(var.dtype, copy=False)
    if name in ("frame_index", "invalid_pixels"):
        bad = arr < 0
    elif name == "frame_valid":
        bad = arr > 1
    elif name == "depth":
        bad = ~(np.isfinite(arr) & (arr > 0))
    elif name == "confidence":
        bad = ~((arr >= 0) & (arr <= 1))  # NaN fails both comparisons
    elif name == "gt_depth":
        bad = ~(np.isnan(arr) | (np.isfinite(arr) & (arr > 0)))
    elif name == "rgb":
        bad = np.zeros(1, dtype=bool)
    else:  # timestamp, K, pose
        bad = ~np.isfinite(arr)
    count = int(np.count_nonzero(bad))
    if count:
        rule = {
            "depth": "finite and > 0 metres",
            "confidence": "in [0, 1]",
            "frame_index": ">= 0",
            "invalid_pixels": ">= 0",
            "frame_valid": "0 or 1",
            "gt_depth": "> 0 metres or NaN for invalid",
        }.get(name, "finite")
        raise StoreError(f"{where}: {name} has {count} values that are not {rule}")
    return arr


def _ranges(indices: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5' (short enough for a one-line error)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
