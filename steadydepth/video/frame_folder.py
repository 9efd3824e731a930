"""RGB-D frame folders in the 7-Scenes layout, streamed frame by frame (local folders).

Layout (per frame number NNNNNN, any number of digits):
- `frame-NNNNNN.color.png|jpg` RGB (required),
- `frame-NNNNNN.depth.png` uint16 millimetres, 0 and 65535 invalid (optional, all frames or none),
- `frame-NNNNNN.pose.txt` 4×4 camera-to-world in metres (optional, all frames or none),
- `camera-intrinsics.txt` 3×3 K for the colour frames.

Frames are ordered by number. `Frame.source_index` is the position in that sorted list (0, 1, ...) and
`Frame.source_number` the number itself; the timestamp keeps it too: timestamp = (number - first number)
/ cfg.folder_fps, so number = int(info.extra["first_frame_number"]) + round(timestamp * info.source_fps).
Gaps in the numbering therefore show up as gaps in time. Frame selection, resize, padding and the K
update follow the same rules as videos (`steadydepth.video.common`, `steadydepth.video.geometry`).

K: cfg.intrinsics when given (it overrides the file), else camera-intrinsics.txt, else None; a folder
with depth but no intrinsics at all is an error (its depth could not be back-projected).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from steadydepth.config import DecodeConfig
from steadydepth.errors import FrameFolderError
from steadydepth.video.common import effective_stride, safe_name, select_indices, sha256_files
from steadydepth.video.geometry import Geometry, intrinsics_from_config, plan_geometry
from steadydepth.video.types import Frame, VideoInfo

COLOR_PATTERN = re.compile(r"^frame-(\d+)\.color\.(png|jpe?g)$", re.IGNORECASE)
INTRINSICS_FILE = "camera-intrinsics.txt"
DEPTH_SCALE = 1000.0  # depth PNG units per metre (millimetres)


def is_frame_folder(path: str | Path) -> bool:
    """True for a local directory holding at least one `frame-*.color.*` image."""
    path = Path(path)
    return path.is_dir() and any(COLOR_PATTERN.match(p.name) for p in path.iterdir())


def read_color(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; FrameFolderError naming the file when it cannot be decoded."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FrameFolderError(f"colour frame {path} cannot be read; replace or delete the damaged image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_depth(path: Path) -> np.ndarray:
    """(H, W) float32 metres from a uint16 millimetre PNG, NaN where the sensor gave 0 or 65535."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2 or raw.dtype != np.uint16:
        got = "unreadable" if raw is None else f"{raw.dtype} {raw.shape}"
        raise FrameFolderError(f"depth frame {path} is not a 16-bit single-channel PNG ({got}); replace it")
    depth = raw.astype(np.float32) / DEPTH_SCALE
    depth[(raw == 0) | (raw == 65535)] = np.nan  # no return / saturated: both mean invalid
    return depth


def _read_matrix(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    try:
        matrix = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as err:
        raise FrameFolderError(f"{what} {path} cannot be parsed ({err}); it must hold a {shape} matrix") from None
    if matrix.shape != shape or not np.all(np.isfinite(matrix)):
        raise FrameFolderError(f"{what} {path} holds a {matrix.shape} matrix, expected finite {shape}; fix the file")
    return matrix


def read_pose(path: Path) -> np.ndarray:
    """(4, 4) float64 camera-to-world pose from a whitespace-separated text file."""
    return _read_matrix(path, (4, 4), "pose file")


class FrameFolder:
    """An RGB-D frame folder opened for streaming (a `FrameSource`); build it with `open_frame_folder`.

    `geometry` maps original-frame quantities to output frames (e.g. `geometry.update_K(K)` for a K
    known for the original frames, such as a ground-truth sidecar's)."""

    def __init__(
        self,
        info: VideoInfo,
        geometry: Geometry,
        colors: list[Path],
        depths: list[Path] | None,
        poses: list[Path] | None,
        timestamps: list[float],
        indices: list[int],
        numbers: list[int] | None = None,
    ):
        self.info = info
        self.geometry = geometry
        self._colors, self._depths, self._poses = colors, depths, poses
        self._timestamps = timestamps
        self._indices = indices
        self._numbers = numbers  # frame number of each colour file (frame-NNNNNN), in order

    def frames(self) -> Iterator[Frame]:
        """Read and yield the selected frames in order."""
        g = self.geometry
        for position, i in enumerate(self._indices):
            rgb = read_color(self._colors[i])
            if rgb.shape[:2] != g.original_size:
                raise FrameFolderError(
                    f"colour frame {self._colors[i]} is {rgb.shape[1]}×{rgb.shape[0]} but the first frame is "
                    f"{g.original_size[1]}×{g.original_size[0]}; all frames of a folder must have one size"
                )
            yield Frame(
                index=position,
                source_index=i,
                timestamp=self._timestamps[i],
                rgb=g.fit_rgb(rgb),
                gt_depth=g.fit_depth(read_depth(self._depths[i])) if self._depths else None,
                pose=read_pose(self._poses[i]) if self._poses else None,
                source_number=self._numbers[i] if self._numbers is not None else None,
            )


def _companions(folder: Path, numbers: list[str], suffix: str) -> list[Path] | None:
    """Per-frame companion files (`frame-N<suffix>`): all present, or None when none is; else an error."""
    paths = [folder / f"frame-{n}{suffix}" for n in numbers]
    present = [p.is_file() for p in paths]
    if not any(present):
        return None
    if not all(present):
        missing = paths[present.index(False)]
        raise FrameFolderError(
            f"frame folder {folder} has {suffix} files for some frames but not {missing.name}; "
            "add it or remove the others"
        )
    return paths


def open_frame_folder(path: str | Path, cfg: DecodeConfig | None = None) -> FrameFolder:
    """Open a 7-Scenes-style RGB-D frame folder for streaming.

    Raises FrameFolderError (one line) when the folder is missing, has no colour frames, its first
    colour frame is unreadable, companion files are incomplete, or intrinsics are needed but missing.
    """
    cfg = cfg or DecodeConfig()
    folder = Path(path)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "not found"
        raise FrameFolderError(f"frame folder {folder} {what}; pass a folder of frame-NNNNNN.color.png files")

    by_number: dict[int, tuple[str, Path]] = {}
    for p in folder.iterdir():
        m = COLOR_PATTERN.match(p.name)
        if not m:
            continue
        number = int(m.group(1))
        if number in by_number:
            raise FrameFolderError(
                f"frame folder {folder} has two colour images for frame {number} "
                f"({by_number[number][1].name}, {p.name}); keep one"
            )
        by_number[number] = (m.group(1), p)
    if not by_number:
        raise FrameFolderError(
            f"frame folder {folder} has no colour frames (frame-NNNNNN.color.png or .jpg); check the path"
        )
    ordered = sorted(by_number)
    digits = [by_number[n][0] for n in ordered]
    colors = [by_number[n][1] for n in ordered]
    depths = _companions(folder, digits, ".depth.png")
    poses = _companions(folder, digits, ".pose.txt")

    original = read_color(colors[0]).shape[:2]
    intrinsics_path = folder / INTRINSICS_FILE
    if cfg.intrinsics is not None:
        K = intrinsics_from_config(cfg.intrinsics, original)
    elif intrinsics_path.is_file():
        K = _read_matrix(intrinsics_path, (3, 3), "intrinsics file")
    elif depths is not None:
        raise FrameFolderError(
            f"frame folder {folder} has depth but no {INTRINSICS_FILE}; add it or set decode.intrinsics"
        )
    else:
        K = None

    source_fps = cfg.folder_fps
    timestamps = [(n - ordered[0]) / source_fps for n in ordered]
    stride = effective_stride(source_fps, cfg)
    indices = select_indices(len(colors), stride, cfg.max_frames)
    geometry = plan_geometry(original, cfg.long_edge, cfg.pad_multiple)

    files = [p for i in range(len(colors)) for p in (colors[i], *(x[i] for x in (depths, poses) if x))]
    if intrinsics_path.is_file():
        files.append(intrinsics_path)

    info = VideoInfo(
        source=str(folder),
        name=safe_name(folder.resolve().name),
        content_hash=sha256_files(str(p) for p in files),
        source_fps=source_fps,
        fps=source_fps / stride,
        num_frames=len(indices),
        original_size=original,
        size=geometry.size,
        padding=geometry.padding,
        K=geometry.update_K(K),
        has_ground_truth=depths is not None,
        extra={
            "kind": "frame_folder",
            "first_frame_number": str(ordered[0]),
            "last_frame_number": str(ordered[-1]),
            "stride": str(stride),
            "source_frames": str(len(colors)),
        },
    )
    return FrameFolder(info, geometry, colors, depths, poses, timestamps, indices, ordered)
