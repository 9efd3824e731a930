"""Helpers shared by video decoding and frame folders: which frames to keep, names and content hashes."""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
from collections.abc import Iterable
from typing import BinaryIO

from steadydepth.config import DecodeConfig

_CHUNK = 1 << 20


def effective_stride(source_fps: float, cfg: DecodeConfig) -> int:
    """The step between kept source frames.

    Rule: stride = max(cfg.stride, ceil(source_fps / cfg.target_fps)), i.e. the smallest step that honours
    both the explicit stride and an output rate <= target_fps (30 fps, target 10 -> 3; target 12 -> 3,
    giving 10 fps; target >= source fps -> 1). A tiny tolerance keeps 29.97 / 10 at 3, not 4.
    """
    stride = cfg.stride
    if cfg.target_fps is not None and source_fps > 0:
        stride = max(stride, math.ceil(source_fps / cfg.target_fps - 1e-6))
    return max(1, stride)


def select_indices(num_source: int, stride: int, max_frames: int | None) -> list[int]:
    """Source frame indices 0, stride, 2·stride, ... truncated to max_frames."""
    indices = list(range(0, num_source, stride))
    return indices[:max_frames] if max_frames is not None else indices


def safe_name(stem: str) -> str:
    """A filesystem-safe version of a file or folder stem (anything but [A-Za-z0-9._-] becomes '_')."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")
    return name or "video"


def sha256_update(digest: hashlib._Hash, fileobj: BinaryIO) -> None:
    """Feed a binary file object to a digest in 1 MiB chunks (never reads it whole)."""
    while chunk := fileobj.read(_CHUNK):
        digest.update(chunk)


def sha256_files(paths: Iterable[str]) -> str:
    """Hex sha256 over the bytes of local files, concatenated in the given order.

    Memoised per process on every file's (path, size, mtime): a source is hashed by both the ingest cache key
    and the ingest itself, and videos are large, so the bytes are read once per run. A rewritten file has a
    new mtime or size and is hashed again.
    """
    stats = []
    for path in paths:
        st = os.stat(path)
        stats.append((os.path.abspath(path), st.st_size, st.st_mtime_ns))
    return _sha256_stats(tuple(stats))


@functools.lru_cache(maxsize=4096)
def _sha256_stats(stats: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for path, _, _ in stats:
        with open(path, "rb") as f:
            sha256_update(digest, f)
    return digest.hexdigest()
