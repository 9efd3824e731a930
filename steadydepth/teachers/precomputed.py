"""A teacher that reads depth someone already computed, one file per source frame.

Layout: `<precomputed_dir>/<video name>/` holds one depth file per frame of the *source* (every frame of
the video or frame folder, before stride, fps resampling and max_frames), so the same files serve any
frame selection: the decode picks the frames and the teacher reads the matching files.

Matching: a file belongs to the source frame whose number is the last number in its name, e.g.
`depth_000123.png` is source frame 123 (video frames count from 0; a frame folder's frames by their
`frame-NNNNNN` numbers). Files without distinct numbers in their names are matched by position instead: the
i-th file in natural name order (`f2` < `f10`) is the i-th source frame; so are numbered files that hold
exactly one file per source frame but number them from elsewhere (ffmpeg's `%06d` starts at 1). A kept
frame without a file is an error naming it.

- `.npy`: float metres, (H, W) or (1, H, W).
- `.png`: 16-bit, depth = value / teacher.png_scale; 0 means invalid.
- `.exr`: float, channel Z (else Y, R, depth or the only channel), read with the OpenEXR package.

Optional intrinsics in the same folder: `K.txt` or `intrinsics.txt` (one 3×3 matrix for every frame)
or `K.npy` ((N, 3, 3): one per depth file, in the files' order, so it follows the same matching). Without
them the batch's K (known intrinsics) is used, and failing that a 60° horizontal field of view with a warning.

Depth must have exactly the size of the decoded frames: a mismatch is an error rather than a
resize, because decoding may pad or resize and a silent resample would misalign depth and RGB.
Invalid pixels (0, NaN) are passed through untouched: ingest repairs and records them
(`steadydepth.teachers.invalid`).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from steadydepth.config import TeacherConfig
from steadydepth.errors import ConfigError, TeacherOutputError, TeacherUnavailableError
from steadydepth.teachers.base import FrameBatch, Teacher, TeacherOutput
from steadydepth.video.types import VideoInfo

log = logging.getLogger(__name__)

_FORMATS = {".npy": "npy", ".png": "png16", ".exr": "exr"}
_K_FILES = ("K.txt", "intrinsics.txt")
_K_PER_FRAME = "K.npy"
_DEFAULT_HFOV_DEG = 60.0


def _natural_key(path: Path) -> list[object]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", path.name)]


def read_depth_file(path: Path, fmt: str, png_scale: float) -> np.ndarray:
    """Read one depth file as (H, W) float32 metres; raise TeacherOutputError naming the file if unreadable."""
    if fmt == "npy":
        arr = np.load(path, allow_pickle=False)
        if arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
    elif fmt == "png16":
        import cv2  # lazy: only this format needs it

        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise TeacherOutputError(f"cannot read depth PNG {path}; check the file is a valid PNG")
        if arr.dtype != np.uint16 or arr.ndim != 2:
            raise TeacherOutputError(
                f"depth PNG {path} is {arr.dtype} with shape {arr.shape}, expected single-channel 16-bit; "
                "write depth PNGs as uint16 (value = metres * teacher.png_scale)"
            )
        arr = arr.astype(np.float32) / np.float32(png_scale)
    elif fmt == "exr":
        arr = _read_exr(path)
    else:  # pragma: no cover - pydantic restricts the format
        raise ConfigError(f"unknown precomputed depth format {fmt!r}; use auto, npy, png16 or exr")
    if arr.ndim != 2:
        raise TeacherOutputError(
            f"depth file {path} has shape {arr.shape}, expected (H, W) or (1, H, W); write one depth map per file"
        )
    return np.asarray(arr, dtype=np.float32)


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR  # lazy: only this format needs it

    try:
        with OpenEXR.File(str(path), separate_channels=True) as f:
            channels = {name: ch.pixels for name, ch in f.channels().items()}
    except Exception as err:  # OpenEXR raises plain RuntimeError on corrupt files
        raise TeacherOutputError(
            f"cannot read depth EXR {path} ({err}); check the file is a valid OpenEXR image"
        ) from None
    for name in ("Z", "Y", "R", "depth", "D"):
        if name in channels:
            return channels[name]
    if len(channels) == 1:
        return next(iter(channels.values()))
    raise TeacherOutputError(
        f"depth EXR {path} has channels {sorted(channels)} and none is a depth channel; name it Z (or Y, R, depth)"
    )


def frame_number(path: Path) -> int | None:
    """The last number in a file's name without its suffix (`depth_000123.png` -> 123), or None."""
    found = re.findall(r"\d+", path.name[: -len(path.suffix)] if path.suffix else path.name)
    return int(found[-1]) if found else None


def _read_K(folder: Path, num_files: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(shared K, per-file K) from the folder's K files; both None when it has none."""
    per_file = folder / _K_PER_FRAME
    if per_file.is_file():
        K = np.load(per_file, allow_pickle=False).astype(np.float32)
        if K.shape != (num_files, 3, 3):
            raise TeacherOutputError(
                f"{per_file} has shape {K.shape}, expected ({num_files}, 3, 3): one K per depth file, in the "
                "files' order"
            )
        return None, K
    for fname in _K_FILES:
        if (folder / fname).is_file():
            K = np.loadtxt(folder / fname, dtype=np.float32).reshape(-1)
            if K.size != 9:
                raise TeacherOutputError(f"{folder / fname} must hold a 3×3 matrix, found {K.size} values")
            return K.reshape(3, 3), None
    return None, None


@dataclass
class _VideoDepth:
    folder: Path
    files: list[Path]  # natural name order
    fmt_of: dict[Path, str]
    by_number: dict[int, int] | None  # source frame number -> file position; None: matched by position
    K_shared: np.ndarray | None  # (3, 3)
    K_per_file: np.ndarray | None  # (len(files), 3, 3)
    warned_fov: bool = False  # the default-K warning is given once per video, not per batch


def _match_by_number(files: list[Path], info: VideoInfo) -> dict[int, int] | None:
    """number -> file position when the names carry distinct frame numbers that fit the source, else None."""
    numbers = [frame_number(p) for p in files]
    if None in numbers or len(set(numbers)) != len(numbers):
        return None
    source_frames = int(info.extra.get("source_frames", info.num_frames))
    first = int(info.extra.get("first_frame_number", 0))
    if len(files) == source_frames and min(numbers) != first:
        return None  # one file per source frame, numbered from elsewhere (e.g. from 1): by position
    return {n: i for i, n in enumerate(numbers)}


def _describe(files: list[Path], by_number: dict[int, int] | None) -> str:
    if by_number is None:
        return f"{len(files)} depth files matched by position in the source"
    return f"{len(files)} depth files numbered {min(by_number)}..{max(by_number)} (the number in each name)"


class PrecomputedTeacher(Teacher):
    """Per-frame depth read from `<precomputed_dir>/<video name>/` (see the module docstring for the layout)."""

    has_confidence = False  # depth files carry no confidence: the store gets no `confidence` variable

    def __init__(self, cfg: TeacherConfig) -> None:
        if cfg.precomputed_dir is None:
            raise ConfigError(
                "teacher.backend=precomputed needs teacher.precomputed_dir; set it to the folder holding one "
                "sub-folder of depth files per video"
            )
        self.root = Path(cfg.precomputed_dir).expanduser()
        if not self.root.is_dir():
            raise TeacherUnavailableError(
                f"precomputed depth folder {self.root} not found; set teacher.precomputed_dir to an existing folder"
            )
        self.format = cfg.precomputed_format
        self.png_scale = cfg.png_scale
        self.id = f"precomputed:{self.root}"
        self.version = f"2:{self.format}:png_scale={self.png_scale:g}"  # 2: files follow source frames
        self._videos: dict[str, _VideoDepth] = {}

    def _video(self, batch: FrameBatch) -> _VideoDepth:
        name = batch.video.name
        if name in self._videos:
            return self._videos[name]
        folder = self.root / name
        if not folder.is_dir():
            raise TeacherUnavailableError(
                f"no precomputed depth for video {name}: folder {folder} not found; write one depth file per "
                "source frame there (.npy, 16-bit .png or .exr)"
            )
        wanted = set(_FORMATS) if self.format == "auto" else {e for e, f in _FORMATS.items() if f == self.format}
        files = sorted(
            (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in wanted and p.name != _K_PER_FRAME),
            key=_natural_key,
        )
        if not files:
            raise TeacherOutputError(
                f"precomputed depth folder {folder} holds no depth files ({', '.join(sorted(wanted))}); "
                f"write one per source frame of video {name}"
            )
        by_number = _match_by_number(files, batch.video)
        info = _VideoDepth(
            folder, files, {p: _FORMATS[p.suffix.lower()] for p in files}, by_number, *_read_K(folder, len(files))
        )
        log.info("precomputed depth of video %s: %s", name, _describe(files, by_number))
        self._videos[name] = info
        return info

    def _file_positions(self, info: _VideoDepth, batch: FrameBatch) -> list[int]:
        """The depth file of every frame of the batch; TeacherOutputError naming the first kept frame without one."""
        if info.by_number is None:
            keys, lookup = list(batch.source_indices), dict(enumerate(range(len(info.files))))
        else:
            keys = list(batch.source_numbers if batch.source_numbers is not None else batch.source_indices)
            lookup = info.by_number
        for key, index in zip(keys, batch.indices, strict=True):
            if key not in lookup:
                has = _describe(info.files, info.by_number)
                raise TeacherOutputError(
                    f"precomputed depth folder {info.folder} has no depth file for source frame {key} of video "
                    f"{batch.video.name} (kept as frame {index}; the folder has {has}); write it, or choose "
                    "decode.stride/target_fps/max_frames that keep only frames with depth"
                )
        return [lookup[k] for k in keys]

    def _file_K(self, info: _VideoDepth, batch: FrameBatch) -> torch.Tensor | None:
        if info.K_per_file is not None:
            return torch.from_numpy(info.K_per_file[self._file_positions(info, batch)].copy())
        if info.K_shared is not None:
            return torch.from_numpy(info.K_shared).expand(len(batch.indices), 3, 3).clone()
        return None

    def predict(self, batch: FrameBatch) -> TeacherOutput:
        """Read the depth files of the batch's source frames; K from the folder, else the batch's K, else 60°."""
        info = self._video(batch)
        h, w = batch.rgb.shape[-2:]
        maps = []
        for i in self._file_positions(info, batch):
            path = info.files[i]
            arr = read_depth_file(path, info.fmt_of[path], self.png_scale)
            if arr.shape != (h, w):
                raise TeacherOutputError(
                    f"precomputed depth {path} is {arr.shape[0]}x{arr.shape[1]} but video {batch.video.name} "
                    f"frames are decoded at {h}x{w}; decode at the depth's size (decode.long_edge/pad_multiple) "
                    "or rewrite the depth files at the frame size"
                )
            maps.append(torch.from_numpy(arr))
        depth = torch.stack(maps).unsqueeze(1)
        K = self._file_K(info, batch)
        if K is None and batch.K is not None:
            K = batch.K.detach().float().clone()
        if K is None:
            if not info.warned_fov:
                info.warned_fov = True
                log.warning(
                    "no intrinsics for precomputed depth of video %s: assuming a %.0f° horizontal field of view; "
                    "add K.txt to %s or set decode.intrinsics",
                    batch.video.name,
                    _DEFAULT_HFOV_DEG,
                    info.folder,
                )
            f = (w / 2) / math.tan(math.radians(_DEFAULT_HFOV_DEG) / 2)
            K0 = torch.tensor([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], dtype=torch.float32)
            K = K0.expand(len(batch.indices), 3, 3).clone()
        return TeacherOutput(depth=depth, K=K, confidence=None)

    def estimate_intrinsics(self, batch: FrameBatch) -> torch.Tensor | None:
        """The K stored beside the depth files, or None when the folder has none."""
        return self._file_K(self._video(batch), batch)
