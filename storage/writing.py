"""Guards around writing a store or output folder: one writer at a time, and write failures a user can act on.

`exclusive_write` is the claim a writer holds while it writes one store (or folder): an advisory `flock` on a hidden
`.<name>.lock` file beside it, holding the writer's pid and host. The kernel drops the lock when the holder exits or
is killed, so a dead writer never leaves a stale claim behind, and the next run simply takes it. A second writer is
refused at once with one line naming the holder. The lock file itself stays (an empty claim is harmless; removing it
would race with a writer taking it). Object storage (s3://, ...) has no locks: there the claim is a no-op.

`write_errors` turns a full disk, an exceeded quota or a read-only location met half-way through a write into one
`StoreError` naming the location and what to do; chunks committed before it stay valid (stores commit chunk by
chunk), so the rerun resumes. `require_writable` checks a local output folder before any work starts.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from steadydepth.errors import InputError, StoreError
from storage import uri as uris

try:  # POSIX; elsewhere the claim is a no-op
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

# errno -> what it means for a writer (the messages of a full or read-only output location)
UNWRITABLE = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def local_path(uri: str, storage_options: Mapping[str, Any] | None = None) -> Path | None:
    """The local path of a plain path or file:// URL; None for remote storage."""
    if not uris.is_url(uri):
        return Path(uri)
    fs, path = uris.filesystem(uri, dict(storage_options or {}))
    return Path(path) if isinstance(fs, LocalFileSystem) else None


def lock_path(target: Path) -> Path:
    """The lock file of a store or folder: hidden, beside it (`<root>/.<name>.lock`)."""
    return target.with_name(f".{target.name}.lock")


@contextmanager
def exclusive_write(
    uri: str, doing: str, storage_options: Mapping[str, Any] | None = None, *, wait: bool = False
) -> Iterator[int | None]:
    """Hold the one-writer claim on `uri` while the block runs; yields the lock's file descriptor (None where there
    is no lock), which a child process given it (`pass_fds`) keeps holding until it exits too.

    doing: what the holder is doing, for the refusal, e.g. "clip is being ingested" gives
    "clip is being ingested by pid 123 on host; ...". wait: block until the holder is done instead of refusing.
    Raises StoreError when another process (or thread) holds the claim and wait is False.
    """
    target = local_path(str(uri).rstrip("/"), storage_options)
    if target is None or fcntl is None:
        yield None
        return
    lock = lock_path(target)
    with write_errors(str(lock.parent), "make it writable or choose another location"):
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
            raise StoreError(
                f"{doing} by {holder}; wait for it to finish (or stop it), then rerun: finished work is kept"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield fd
    finally:
        os.close(fd)  # releases the claim


@contextmanager
def write_errors(location: str, fix: str) -> Iterator[None]:
    """Re-raise a full-disk / quota / read-only / permission OSError as one StoreError naming `location`."""
    try:
        yield
    except OSError as err:
        if err.errno not in UNWRITABLE:
            raise
        where = f" ({err.filename})" if err.filename and str(err.filename) != location else ""
        raise StoreError(f"cannot write {location}{where}: {UNWRITABLE[err.errno]}; {fix}") from err


def require_writable(uri: str, setting: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """InputError unless a local output folder exists or can be made, and a file can be created in it (checked
    before any work starts; remote locations are left to the writer). setting: the config field naming it."""
    folder = local_path(uri, storage_options)
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        reason = UNWRITABLE.get(err.errno or 0, err.strerror or type(err).__name__)
        raise InputError(
            f"cannot write {folder} ({reason}); make it writable, free space, or set {setting} to another folder"
        ) from None
