"""Safe output paths and atomic writes for exports.

Every export appears all at once or not at all: files are written under a temporary name in the same
folder and `os.replace`d into place; folders of frames are filled under a temporary name and renamed.
A failure mid-way removes the temporary and leaves any previous export untouched. Existing exports are
refused unless `overwrite=True`, and names derived from videos cannot leave the output folder. A process
killed mid-way leaves its hidden temporaries behind; `remove_stale_temporaries` clears them before a rerun.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from steadydepth.errors import InputError
from storage.naming import safe_name


def inside(root: str | Path, *parts: str) -> Path:
    """`root/parts...`, every part sanitised, checked to resolve inside root (symlinks included)."""
    root = Path(root).resolve()
    path = root.joinpath(*(safe_name(p) for p in parts))
    if not path.resolve().is_relative_to(root):
        raise InputError(f"export path {path} escapes the output folder {root}; rename the video")
    return path


def refuse_existing(paths: Iterable[Path], overwrite: bool) -> None:
    """InputError naming the first existing path unless overwrite (checked before any work starts)."""
    if overwrite:
        return
    for path in paths:
        if os.path.lexists(path):
            raise InputError(f"export {path} already exists; delete it or pass --overwrite to replace it")


_TEMP_TAGS = ("tmp", "old")  # being written / moved aside while being replaced
_TEMP_ID = "[0-9a-f]" * 8  # glob of the unique part of a temporary's name


def _temp_sibling(path: Path, tag: str) -> Path:
    # Same folder (so the rename stays on one filesystem), hidden, unique, and keeping the suffix so writers
    # that pick a format from the extension (cv2, PyAV) still do the right thing.
    return path.with_name(f".{path.stem}.{tag}-{uuid.uuid4().hex[:8]}{path.suffix}")


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove the temporaries of `path` (`.<name>.tmp-*`, `.<name>.old-*`) that a killed writer left next to it;
    returns what was removed. Only safe while no other process is writing `path`."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = [p for tag in _TEMP_TAGS for p in path.parent.glob(f".{path.stem}.{tag}-{_TEMP_ID}{path.suffix}")]
    for p in stale:
        _remove(p)
    return stale


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_file(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    refuse_existing([path], overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path, "tmp")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"export writer produced nothing at {tmp}")
        refuse_existing([path], overwrite)  # someone else may have written it meanwhile
        os.replace(tmp, path)
    finally:
        _remove(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder next to `path`; on success it is renamed to `path` (replacing an existing
    one only if overwrite), on error it is removed."""
    path = Path(path)
    refuse_existing([path], overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        refuse_existing([path], overwrite)
        if os.path.lexists(path):
            # A folder cannot be os.replace'd over a non-empty one: move the old one aside first, then drop it.
            old = _temp_sibling(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        _remove(tmp)
