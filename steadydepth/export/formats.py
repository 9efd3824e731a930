"""Depth exports: npz (one file), EXR and 16-bit PNG (one image per frame). Each writer fills a fresh folder.

Every format records metric units and the K that goes with its pixels (cropped frames); see
docs/export-formats.md for how to read each back.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import OpenEXR
from tqdm import tqdm

from steadydepth.export.source import ExportFrame, ExportSource

UNITS = "m"
PNG16_MAX = 65535


def frame_name(position: int, suffix: str) -> str:
    """Per-frame file name: the frame's position in the export (its source frame number is in the metadata)."""
    return f"{position:06d}{suffix}"


def camera_metadata(source: ExportSource) -> dict[str, Any]:
    """Units, K and timing every sidecar carries. K is one matrix when constant over the video (the default
    pipeline shares one K per video), else also listed per frame."""
    K = source.intrinsics()
    timestamps, frame_index = source.timing()
    h, w = source.size
    meta: dict[str, Any] = {
        "units": UNITS,
        "depth_kind": "z-depth along the optical axis (not ray length)",
        "height": h,
        "width": w,
        "K": K[0].tolist(),
        "K_convention": "pixels; pixel (u, v) centre at integer coordinates; x right, y down, z forward",
        "fps": source.fps,
        "source": source.depth.attrs.get("source"),
        "frame_index": frame_index.tolist(),
        "timestamps_s": timestamps.tolist(),
    }
    if not np.allclose(K, K[:1]):
        meta["K_per_frame"] = K.tolist()
    return meta


def _progress(frames: Iterator[ExportFrame], total: int, desc: str, enabled: bool) -> Iterator[ExportFrame]:
    return tqdm(frames, total=total, desc=desc, unit="frame", disable=not enabled)


# ---- npz ------------------------------------------------------------------------------------------------------


def _npy_member(archive: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> Any:
    """Open `name.npy` inside the archive for streaming: header now, rows (C order) written by the caller."""
    member = archive.open(f"{name}.npy", mode="w", force_zip64=True)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_2_0(member, header)
    return member


def write_npz(source: ExportSource, folder: Path, *, progress: bool = True) -> list[Path]:
    """`depth.npz`: depth float32 (T, H, W) metres, K (T, 3, 3), timestamps (T,) s, frame_index (T,), units "m"
    (plus confidence (T, H, W) when stored). Streamed: the depth member is written chunk by chunk, so the
    archive never holds the video in memory; `np.load` reads it like any `np.savez_compressed` file."""
    path = folder / "depth.npz"
    t, (h, w) = source.num_frames, source.size
    timestamps, frame_index = source.timing()
    small = {
        "K": source.intrinsics().astype(np.float32),
        "timestamps": timestamps,
        "frame_index": frame_index,
        "units": np.array(UNITS),
    }
    streamed = ["depth", *(["confidence"] if "confidence" in source.depth.variables else [])]
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, values in small.items():
            with archive.open(f"{name}.npy", mode="w") as member:
                np.lib.format.write_array(member, np.asarray(values), allow_pickle=False)
        for name in streamed:  # one zip member at a time: zipfile allows a single open writer
            with _npy_member(archive, name, np.dtype(np.float32), (t, h, w)) as member:
                bar = tqdm(total=t, desc=f"{source.name} npz {name}", unit="frame", disable=not progress)
                for _, arrays in source.chunks((name,)):
                    member.write(np.ascontiguousarray(arrays[name], dtype=np.float32).tobytes())
                    bar.update(arrays[name].shape[0])
                bar.close()
    return [path]


# ---- EXR ------------------------------------------------------------------------------------------------------


def write_exr(source: ExportSource, folder: Path, *, progress: bool = True) -> list[Path]:
    """One float32 EXR per frame, channel `Z`, metres (invalid = NaN as stored), ZIP-compressed; header
    attributes `K` (M33d), `units`, `frame_index`, `timestamp` (s). Also `camera.json` with the same for the
    whole video, for readers that drop custom attributes."""
    written = []
    for frame in _progress(source.frames(), source.num_frames, f"{source.name} exr", progress):
        header = {
            "compression": OpenEXR.ZIP_COMPRESSION,
            "type": OpenEXR.scanlineimage,
            "K": np.asarray(frame.K, dtype=np.float64),
            "units": UNITS,
            "depth_kind": "z",
            "frame_index": frame.frame_index,
            "timestamp": frame.timestamp,
        }
        path = folder / frame_name(frame.position, ".exr")
        with OpenEXR.File(header, {"Z": np.ascontiguousarray(frame.depth, dtype=np.float32)}) as exr:
            exr.write(str(path))
        written.append(path)
    sidecar = folder / "camera.json"
    sidecar.write_text(json.dumps({**camera_metadata(source), "channel": "Z", "invalid": "NaN"}, indent=1))
    return [*written, sidecar]


def read_exr_depth(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """(depth (H, W) float32 metres, header) of one exported EXR frame."""
    with OpenEXR.File(str(path)) as exr:
        return np.array(exr.channels()["Z"].pixels, dtype=np.float32), dict(exr.header())


# ---- 16-bit PNG -----------------------------------------------------------------------------------------------


def png16_scale_for(max_depth_m: float) -> float:
    """Metres per PNG step so that `max_depth_m` is the largest code, 65535 (finest step that fits the video)."""
    return float(max_depth_m) / PNG16_MAX


def encode_png16(depth: np.ndarray, scale: float, offset: float = 0.0) -> np.ndarray:
    """uint16 codes, depth_m = code · scale + offset; 0 = invalid (non-finite, <= 0, or out of range)."""
    d = np.asarray(depth, dtype=np.float64)
    code = np.rint((d - offset) / scale)
    valid = np.isfinite(d) & (d > 0) & (code <= PNG16_MAX)
    return np.where(valid, np.clip(code, 1, PNG16_MAX), 0).astype(np.uint16)  # valid never maps to 0


def decode_png16(code: np.ndarray, scale: float, offset: float = 0.0) -> np.ndarray:
    """float32 metres from codes; NaN where code is 0 (invalid)."""
    d = code.astype(np.float64) * scale + offset
    return np.where(code > 0, d, np.nan).astype(np.float32)


def write_png16(source: ExportSource, folder: Path, *, scale: float | None = None, progress: bool = True) -> list[Path]:
    """One uint16 PNG per frame plus `depth_scale.json`: depth_m = value · scale + offset, 0 = invalid.

    scale None picks it per video (one extra streamed pass for the max depth) so the farthest valid depth
    is 65535: the finest quantisation that fits, error <= scale/2. A fixed scale (e.g. 0.001 = millimetres,
    the ScanNet / 7-Scenes convention) marks depth beyond 65535 · scale invalid and counts it in the sidecar.
    """
    lo, hi = source.depth_range()
    chosen = png16_scale_for(hi) if scale is None else float(scale)
    offset = 0.0
    written, clipped = [], 0
    for frame in _progress(source.frames(), source.num_frames, f"{source.name} png16", progress):
        code = encode_png16(frame.depth, chosen, offset)
        clipped += int(np.count_nonzero((code == 0) & np.isfinite(frame.depth) & (frame.depth > 0)))
        path = folder / frame_name(frame.position, ".png")
        if not cv2.imwrite(str(path), code):
            raise OSError(f"could not write 16-bit PNG {path}")
        written.append(path)
    sidecar = folder / "depth_scale.json"
    record = {
        "formula": "depth_m = value * scale + offset",
        "scale": chosen,
        "offset": offset,
        "invalid_value": 0,
        "dtype": "uint16",
        "scale_policy": "per-video: max depth -> 65535" if scale is None else "fixed",
        "depth_scale_units_per_m": 1.0 / chosen,  # the 'depth_scale' of TUM/ScanNet-style loaders (value / this)
        "min_depth_m": lo,
        "max_depth_m": hi,
        "out_of_range_pixels": clipped,
        **camera_metadata(source),
    }
    sidecar.write_text(json.dumps(record, indent=1))
    return [*written, sidecar]
