"""Stereo pairs for VR by depth-image-based rendering: each eye is a forward warp of the RGB frame.

Eyes sit at x = ∓ipd/2 (parallel cameras). A pixel at depth Z moves by d = fx·(ipd/2)/Z to the right in the
left eye and to the left in the right eye; with a convergence distance C the pair is shifted so that depth C
has zero disparity: d = fx·(ipd/2)·(1/Z − 1/C). Where several pixels land on one target the nearest wins
(z-buffer). Disoccluded holes are filled row-wise from the farther (background) neighbour, since what the
other eye could not see is behind the foreground edge; anything left (a row with no valid depth) by
cv2.inpaint. Rendering the teacher's and the refined depth the same way shows their shimmer side by side.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from steadydepth.errors import InputError
from steadydepth.export.safety import atomic_file
from steadydepth.export.source import ExportSource
from steadydepth.video.encode import write_video


def eye_shift(depth: np.ndarray, fx: float, *, ipd_m: float = 0.063, convergence_m: float | None = None) -> np.ndarray:
    """Horizontal shift in pixels of each pixel in the left eye (the right eye gets its negative)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(np.isfinite(depth) & (depth > 0), 1.0 / depth, np.nan)
    converge = 0.0 if convergence_m is None else 1.0 / convergence_m
    return fx * (ipd_m / 2) * (inv - converge)


def _pack(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) uint32, one element per pixel: scatters and gathers move 4 bytes, not 3 rows."""
    return np.ascontiguousarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2RGBA)).view(np.uint32)[..., 0]


def _unpack(packed: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(packed).view(np.uint8).reshape(*packed.shape, 4)[..., :3].copy()


def forward_warp(rgb: np.ndarray, depth: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move each pixel by `shift` (pixels, + = right, rounded) with a z-buffer.

    Returns (image, depth, holes): the warped RGB and depth (inf in holes), and the mask of targets nothing
    landed on. Whole-array int32 operations only: pixels that go nowhere (invalid depth, pushed past the
    left/right edge, hidden) are sent to one spare slot instead of being filtered out, which is ~10x faster
    at video resolutions than compressing index arrays.
    """
    h, w = depth.shape
    n = h * w
    valid = np.isfinite(depth) & (depth > 0) & np.isfinite(shift)
    target_u = np.arange(w, dtype=np.int32) + np.rint(np.where(valid, shift, 0)).astype(np.int32)
    ok = valid & (target_u >= 0) & (target_u < w)
    target = np.where(ok, np.arange(0, n, w, dtype=np.int32)[:, None] + target_u, n).ravel()
    z = np.where(ok, depth, np.inf).astype(np.float32).ravel()
    # z-buffer: the nearest depth per target (ufunc.at is unbuffered, so repeated targets all count); pixels
    # at exactly that depth win (equal-depth ties may land in either order: they are the same surface).
    warped = np.full(n + 1, np.inf, dtype=np.float32)
    np.minimum.at(warped, target, z)
    winner_target = np.where(z <= warped[target], target, n)
    image = np.zeros(n + 1, dtype=np.uint32)
    image[winner_target] = _pack(rgb).ravel()
    warped = warped[:n].reshape(h, w)
    return _unpack(image[:n].reshape(h, w)), warped, np.isinf(warped)


def fill_holes_from_background(image: np.ndarray, depth: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """Fill each hole pixel with the farther of its nearest filled neighbours in the same row."""
    h, w = holes.shape
    cols = np.broadcast_to(np.arange(w, dtype=np.int32), (h, w))
    # Column of the nearest filled pixel to the left / right of every pixel (itself when it is filled; -1 / w
    # when there is none).
    left = np.maximum.accumulate(np.where(holes, -1, cols), axis=1)
    right = np.minimum.accumulate(np.where(holes, w, cols)[:, ::-1], axis=1)[:, ::-1]
    z_left = np.where(left >= 0, np.take_along_axis(depth, np.maximum(left, 0), axis=1), -np.inf)
    z_right = np.where(right < w, np.take_along_axis(depth, np.minimum(right, w - 1), axis=1), -np.inf)
    column = np.where(z_right > z_left, right, left)  # the background side; ties and edges take whichever exists
    found = (column >= 0) & (column < w)
    out = _unpack(np.take_along_axis(_pack(image), np.clip(column, 0, w - 1), axis=1))
    if not found.all():  # rows with nothing in them at all
        out = cv2.inpaint(out, (~found).astype(np.uint8), 3, cv2.INPAINT_TELEA)
    return out


def render_stereo(
    rgb: np.ndarray,
    depth: np.ndarray,
    K: np.ndarray,
    *,
    ipd_m: float = 0.063,
    convergence_m: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) (H, W, 3) uint8 views of an RGB frame with metric depth (metres) and intrinsics K."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    depth = np.asarray(depth, dtype=np.float32)
    if rgb.shape[:2] != depth.shape:
        raise ValueError(f"rgb {rgb.shape[:2]} and depth {depth.shape} must have the same size")
    shift = eye_shift(depth, float(K[0, 0]), ipd_m=ipd_m, convergence_m=convergence_m)
    views = []
    for sign in (1.0, -1.0):  # left eye: content moves right; right eye: left
        image, warped, holes = forward_warp(rgb, depth, sign * shift)
        views.append(fill_holes_from_background(image, warped, holes))
    return views[0], views[1]


def require_rgb(source: ExportSource) -> None:
    """InputError unless the source has colours to warp (checked before any stereo work starts)."""
    if not source.has_rgb:
        raise InputError(f"store {source.depth.uri} has no RGB; pass the teacher store as rgb_store_uri for stereo")


def export_stereo_video(
    depth_store_uri: str,
    out_path: str | Path,
    rgb_store_uri: str | None = None,
    *,
    ipd_m: float = 0.063,
    convergence_m: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Write a side-by-side (left | right) stereo mp4 of the video, padding cropped; returns its path.

    Depth from `depth_store_uri` (refined or teacher), RGB from it or from `rgb_store_uri` (the teacher store).
    """
    source = ExportSource(depth_store_uri, rgb_store_uri, storage_options=storage_options)
    require_rgb(source)
    out_path = Path(out_path)

    def pairs() -> Iterator[np.ndarray]:
        for frame in tqdm(
            source.frames(), total=source.num_frames, desc=f"{source.name} stereo", unit="frame", disable=not progress
        ):
            left, right = render_stereo(frame.rgb, frame.depth, frame.K, ipd_m=ipd_m, convergence_m=convergence_m)
            pair = np.concatenate([left, right], axis=1)
            yield np.pad(pair, ((0, pair.shape[0] % 2), (0, 0), (0, 0)))  # yuv420p: even height (width is 2W)

    with atomic_file(out_path, overwrite=overwrite) as tmp:
        write_video(tmp, pairs(), source.fps)
    return str(out_path)
