"""Per-frame point clouds: back-project depth with the frame's K and write binary little-endian PLY.

Points are in the camera frame of that video frame (OpenCV convention: x right, y down, z forward, metres):
X = (u - cx) · Z / fx, Y = (v - cy) · Z / fy. Invalid depth (non-finite or <= 0) is skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from steadydepth.export.formats import UNITS, frame_name
from steadydepth.export.source import ExportSource

_XYZ = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
_RGB = [("red", "u1"), ("green", "u1"), ("blue", "u1")]
_PLY_TYPES = {"<f4": "float", "u1": "uchar"}


def back_project(depth: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(points (N, 3) float32 metres in the camera frame, valid mask (H, W)) for the valid pixels, row-major."""
    h, w = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    v, u = np.nonzero(valid)
    z = depth[v, u].astype(np.float64)
    fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    y = (v - cy) / fy
    x = (u - cx - skew * y) / fx
    return np.stack([x * z, y * z, z], axis=1).astype(np.float32), valid


def ply_header(count: int, *, colour: bool, comments: list[str]) -> bytes:
    """Header of a binary little-endian PLY with `count` vertices (xyz float, optional uchar rgb)."""
    lines = ["ply", "format binary_little_endian 1.0", *(f"comment {c}" for c in comments), f"element vertex {count}"]
    lines += [f"property {_PLY_TYPES[t]} {n}" for n, t in (_XYZ + _RGB if colour else _XYZ)]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def write_ply(path: Path, points: np.ndarray, colours: np.ndarray | None, *, comments: list[str] | None = None) -> None:
    """Write points (N, 3) and optional uint8 colours (N, 3) as one binary PLY file."""
    vertex = np.empty(len(points), dtype=_XYZ + (_RGB if colours is not None else []))
    vertex["x"], vertex["y"], vertex["z"] = points[:, 0], points[:, 1], points[:, 2]
    if colours is not None:
        vertex["red"], vertex["green"], vertex["blue"] = colours[:, 0], colours[:, 1], colours[:, 2]
    with open(path, "wb") as f:
        f.write(ply_header(len(points), colour=colours is not None, comments=comments or []))
        f.write(vertex.tobytes())


def read_ply(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """(vertex structured array, comment lines) of a binary little-endian PLY as `write_ply` writes it."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    types = {"float": "<f4", "uchar": "u1"}
    fields = [(ln.split()[2], types[ln.split()[1]]) for ln in lines if ln.startswith("property")]
    count = next(int(ln.split()[2]) for ln in lines if ln.startswith("element vertex"))
    comments = [ln[len("comment ") :] for ln in lines if ln.startswith("comment ")]
    return np.frombuffer(data, dtype=np.dtype(fields), count=count, offset=end), comments


def write_point_clouds(source: ExportSource, folder: Path, *, every: int = 1, progress: bool = True) -> list[Path]:
    """`<position>.ply` for every `every`-th frame: camera-frame points in metres, RGB colours when the video
    has RGB, header comments with units, K, frame index and timestamp."""
    written = []
    total = -(-source.num_frames // every)
    frames = tqdm(source.frames(every), total=total, desc=f"{source.name} ply", unit="frame", disable=not progress)
    for frame in frames:
        points, valid = back_project(frame.depth, frame.K)
        colours = frame.rgb[valid] if frame.rgb is not None else None
        K = frame.K
        comments = [
            f"units {UNITS}",
            "frame camera: x right, y down, z forward (OpenCV); X = (u - cx) Z / fx, Y = (v - cy) Z / fy",
            f"K {' '.join(f'{k:.9g}' for k in np.asarray(K).ravel())}",
            f"fx {K[0, 0]:.9g} fy {K[1, 1]:.9g} cx {K[0, 2]:.9g} cy {K[1, 2]:.9g}",
            f"image_size {frame.depth.shape[1]} {frame.depth.shape[0]}",
            f"frame_index {frame.frame_index}",
            f"timestamp_s {frame.timestamp:.9g}",
            f"source {source.name}",
        ]
        path = folder / frame_name(frame.position, ".ply")
        write_ply(path, points, colours, comments=comments)
        written.append(path)
    return written
