"""Open any supported input as a `FrameSource`, and find the inputs of a batch.

Inputs are video files (local paths or fsspec URLs) and local RGB-D frame folders (7-Scenes layout).
"""

from __future__ import annotations

import glob
from pathlib import Path

from steadydepth.config import DecodeConfig
from steadydepth.errors import FrameFolderError, InputError, VideoDecodeError
from steadydepth.video.common import safe_name
from steadydepth.video.decode import open_video
from steadydepth.video.frame_folder import is_frame_folder, open_frame_folder
from steadydepth.video.types import FrameSource
from storage import uri as uris

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
_GLOB_CHARS = set("*?[")


def is_video_name(name: str) -> bool:
    """True for names with a video suffix (case-insensitive)."""
    return name.lower().endswith(VIDEO_SUFFIXES)


def _is_store(name: str) -> bool:
    # Ground-truth sidecars (`x.gt.zarr`) and depth stores (`x.zarr`) sit beside videos; never inputs.
    return name.rstrip("/").lower().endswith(".zarr")


def open_source(path: str | Path, cfg: DecodeConfig | None = None) -> FrameSource:
    """A frame folder for a directory of `frame-*.color.*` images, otherwise a video (file or URL)."""
    source = str(path)
    if uris.is_url(source):
        return open_video(source, cfg)
    p = Path(source)
    if p.is_dir():
        if not is_frame_folder(p):
            raise FrameFolderError(
                f"folder {p} holds no frame-NNNNNN.color.png/jpg images; pass a video file or a frame folder"
            )
        return open_frame_folder(p, cfg)
    return open_video(p, cfg)  # raises VideoDecodeError when missing or not a video


def source_name(path: str | Path) -> str:
    """The name `open_source(path).info.name` will have, without opening anything (stores are named by it)."""
    source = str(path)
    if not uris.is_url(source) and Path(source).is_dir():
        return safe_name(Path(source).resolve().name)
    return safe_name(uris.stem(source))


def _keep_local(path: Path) -> bool:
    # Hidden names are never inputs: macOS `._clip.mp4` metadata files, half-written `.partial` files.
    if path.name.startswith(".") or _is_store(path.name):
        return False
    if path.is_dir():
        return is_frame_folder(path)
    return path.is_file() and is_video_name(path.name)


def _from_list_file(list_file: Path) -> list[str]:
    """Entries of a .txt list: one path or URL per line; blank lines and `#` comments are skipped;
    relative paths are taken relative to the list file's folder."""
    entries = []
    for raw in list_file.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or _is_store(line):
            continue
        if not uris.is_url(line) and not Path(line).is_absolute():
            line = str(list_file.parent / line)
        entries.append(line)
    return entries


def _from_url(spec: str) -> list[str]:
    """Videos under a URL folder, matching a URL glob, or the URL itself (frame folders are local only)."""
    fs, path = uris.filesystem(spec)
    if _GLOB_CHARS & set(path):
        found = fs.glob(path)
    elif fs.isdir(path):
        found = fs.ls(path, detail=False)
    elif fs.exists(path):
        return [spec]
    else:
        raise InputError(f"input {spec} not found; pass a folder, a glob, a .txt list or a video")
    return sorted(fs.unstrip_protocol(p) for p in found if is_video_name(p) and not _is_store(p))


def discover_sources(spec: str | Path) -> list[str]:
    """List the inputs named by `spec`: a folder (its videos and frame folders, non-recursive, sorted;
    the folder itself when it is a frame folder), a glob (sorted), a `.txt` list file (in its order), or
    one video.

    Video suffixes: .mp4 .mov .mkv .avi .webm .m4v (any case). `*.zarr` stores, `*.gt.zarr` sidecars and
    hidden names (`.x`, e.g. macOS `._clip.mp4` files) are skipped. Raises InputError when the spec does not
    exist, or when a glob or list names no input; an existing folder without videos gives [] (an empty inbox
    is nothing to do, not an error).
    """
    spec = str(spec)
    if uris.is_url(spec):
        found = _from_url(spec)
    elif _GLOB_CHARS & set(spec) and not Path(spec).exists():
        found = sorted(p for p in glob.glob(spec) if _keep_local(Path(p)))
    else:
        root = Path(spec)
        if not root.exists():
            raise InputError(f"input {spec} not found; pass a folder, a glob, a .txt list or a video")
        if root.is_file() and root.suffix.lower() == ".txt":
            found = _from_list_file(root)  # kept in the list's order, which the user chose
        elif root.is_file():
            if not is_video_name(root.name):
                raise VideoDecodeError(
                    f"input {spec} is neither a video ({' '.join(VIDEO_SUFFIXES)}) nor a .txt list; "
                    "rename or convert it"
                )
            found = [spec]
        elif is_frame_folder(root):
            found = [spec]
        else:
            return sorted(str(p) for p in root.iterdir() if _keep_local(p))
    if not found:
        raise InputError(f"no videos or frame folders found in {spec}; check the folder, glob or list")
    return found
