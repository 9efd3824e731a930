"""Ground-truth sidecar stores: exact depth, camera poses and K for a video (synthetic benchmark).

A video `scene.mp4` has its sidecar at `scene.gt.zarr` beside it. Layout (Zarr v3, xarray-readable):
`depth` float32 (time, y, x) metres with NaN where invalid, `pose` float64 (time, 4, 4)
camera-to-world, `K` float64 (3, 3) for the full-resolution frames; attrs `fps` and anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from steadydepth.errors import StoreError
from storage import uri as uris

SIDECAR_SUFFIX = ".gt.zarr"


def sidecar_uri(video_uri: str) -> str:
    """Where the ground-truth sidecar of a video lives: same folder, `<stem>.gt.zarr`."""
    video_uri = str(video_uri).rstrip("/")
    parent, _, name = video_uri.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{parent}/{stem}{SIDECAR_SUFFIX}" if parent else f"{stem}{SIDECAR_SUFFIX}"


def write_ground_truth(
    uri: str,
    depth: np.ndarray,
    poses: np.ndarray,
    K: np.ndarray,
    fps: float,
    attrs: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> None:
    """Write a sidecar (overwriting any old one). depth (T,H,W) metres, poses (T,4,4), K (3,3)."""
    depth = np.asarray(depth, dtype=np.float32)
    poses = np.asarray(poses, dtype=np.float64)
    t, h, w = depth.shape
    if poses.shape != (t, 4, 4) or np.asarray(K).shape != (3, 3):
        raise StoreError(f"ground truth for {uri}: poses {poses.shape} / K {np.shape(K)} do not match {t} frames")
    group = zarr.open_group(uri, mode="w", storage_options=storage_options or None)
    group.attrs.update({"fps": float(fps), "units": "m", **(attrs or {})})
    arr = group.create_array(
        "depth", shape=(t, h, w), chunks=(min(t, 16), h, w), dtype="float32",
        compressors=ZstdCodec(level=3), dimension_names=("time", "y", "x"), fill_value=np.nan,
    )
    arr[:] = depth
    arr.attrs.update({"units": "m", "long_name": "ground-truth z-depth"})
    parr = group.create_array(
        "pose", shape=(t, 4, 4), chunks=(t, 4, 4), dtype="float64",
        compressors=BloscCodec(), dimension_names=("time", "pose_i", "pose_j"),
    )
    parr[:] = poses
    parr.attrs.update({"description": "camera-to-world, metres"})
    karr = group.create_array("K", shape=(3, 3), dtype="float64", dimension_names=("k_i", "k_j"))
    karr[:] = np.asarray(K, dtype=np.float64)


@dataclass
class GroundTruth:
    """Read access to a sidecar, one frame at a time (never loads the whole video)."""

    uri: str
    group: zarr.Group

    @property
    def num_frames(self) -> int:
        return int(self.group["depth"].shape[0])

    @property
    def size(self) -> tuple[int, int]:
        _, h, w = self.group["depth"].shape
        return int(h), int(w)

    @property
    def K(self) -> np.ndarray:
        return np.asarray(self.group["K"][:], dtype=np.float64)

    @property
    def fps(self) -> float:
        return float(self.group.attrs["fps"])

    def depth(self, t: int) -> np.ndarray:
        """(H, W) float32 metres, NaN invalid."""
        return np.asarray(self.group["depth"][t], dtype=np.float32)

    def pose(self, t: int) -> np.ndarray:
        """(4, 4) camera-to-world."""
        return np.asarray(self.group["pose"][t], dtype=np.float64)


def open_ground_truth(uri: str, storage_options: dict[str, Any] | None = None) -> GroundTruth:
    """Open a sidecar for reading; StoreError if it is missing or not a sidecar."""
    if not uris.exists(uri, storage_options):
        raise StoreError(f"ground-truth sidecar {uri} not found; regenerate it with `steadydepth synth`")
    try:
        group = zarr.open_group(uri, mode="r", storage_options=storage_options or None)
        _ = group["depth"], group["pose"], group["K"]
    except (KeyError, FileNotFoundError, ValueError) as err:
        raise StoreError(
            f"ground-truth sidecar {uri} is incomplete ({err}); regenerate it with `steadydepth synth`"
        ) from err
    return GroundTruth(uri=uri, group=group)
