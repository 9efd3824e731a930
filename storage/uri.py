"""Local paths and fsspec URLs, treated alike. zarr resolves both from a string plus storage_options."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import fsspec

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_url(uri: str) -> bool:
    """True for fsspec URLs (s3://, gs://, memory://, file://), False for plain local paths."""
    return bool(_URL.match(str(uri)))


def join(root: str | Path, *parts: str) -> str:
    """Join path components onto a local path or URL (always with '/')."""
    root = str(root)
    if not is_url(root):
        return str(Path(root).joinpath(*parts))
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and in-filesystem path for a local path or URL."""
    fs, path = fsspec.core.url_to_fs(str(uri), **(storage_options or {}))
    return fs, path


def exists(uri: str, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether anything exists at uri."""
    fs, path = filesystem(uri, storage_options)
    return fs.exists(path)


def stem(uri: str) -> str:
    """File or folder name without its last suffix (video.mp4 -> video)."""
    name = str(uri).rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name
