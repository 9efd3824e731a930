"""Where stores live and what they are called, the one definition of that layout.

    <root>/<name>.teacher.zarr            the teacher's depth of video <name>
    <root>/<name>.refined-<model>.zarr    that depth refined by one model (<model>: its weights hash)

Each model refines into a store of its own, so one model's evaluation or export can never read another's
depth, and switching between models never recomputes (or overwrites) the other's refinement.

Every reader and writer builds, parses and lists store URIs through this module, so a change of layout
(a new kind, another suffix) happens in one place.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from steadydepth.errors import InputError, StoreError
from storage import uri as uris

KINDS = ("teacher", "refined")
MAX_NAME = 200  # characters of a sanitised video name: `.<name>.refined-<model hash>.zarr.lock` fits in 255 bytes
_SUFFIX = ".zarr"
_STORE_NAME = re.compile(r"^(?P<name>.+)\.(?P<kind>teacher|refined)(?:-(?P<model>[A-Za-z0-9_]+))?\.zarr$")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"store kind {kind!r} is not one of {KINDS}")


def safe_name(video_name: str) -> str:
    """A video name made safe as one path component (store or export folder): no '/', no '..' prefix, not hidden,
    at most MAX_NAME characters (a longer name keeps its first part and a hash of the whole, so it stays unique and
    the store's name, `<name>.refined-<model>.zarr`, stays within the file systems' 255-byte limit)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", str(video_name)).lstrip(".")
    if not name.strip("_"):
        raise InputError(f"video name {video_name!r} has no usable characters for a file name; rename the video")
    if len(name) > MAX_NAME:
        name = f"{name[: MAX_NAME - 9]}-{hashlib.sha256(str(video_name).encode()).hexdigest()[:8]}"
    return name


def require_distinct_names(names: Mapping[str, str]) -> None:
    """InputError when two different sources ({source: video name}) would write the same store (their names become
    equal once made file-safe, e.g. `a b.mp4` and `a_b.mp4`, or two `clip.mp4` in different folders)."""
    claimed: dict[str, str] = {}
    for source, name in names.items():
        key = safe_name(name)
        if key in claimed:
            raise InputError(
                f"{claimed[key]} and {source} would both write the store {key}.teacher.zarr (names are made "
                "file-safe); rename one of them, or ingest them into different store roots (--store-root)"
            )
        claimed.setdefault(key, source)


def store_uri(root: str, video_name: str, kind: str = "teacher", model_id: str | None = None) -> str:
    """Where a video's store lives: `<root>/<name>.<kind>[-<model>].zarr`, the name sanitised so it stays inside
    root. model_id names the model of a refined store (None: a refined store outside the per-model layout)."""
    _check_kind(kind)
    if model_id is not None and (kind != "refined" or not re.fullmatch(r"[A-Za-z0-9_]+", model_id)):
        raise ValueError(f"model id {model_id!r} must be letters, digits or '_', on a refined store")
    tag = f"-{model_id}" if model_id else ""
    return uris.join(root, f"{safe_name(video_name)}.{kind}{tag}{_SUFFIX}")


def _leaf(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def video_name(uri: str) -> str:
    """The video name of a store URI: `.../<name>.teacher.zarr` -> `<name>` (other `.zarr` leaves lose `.zarr`)."""
    leaf = _leaf(uri)
    match = _STORE_NAME.match(leaf)
    if match:
        return match["name"]
    return leaf[: -len(_SUFFIX)] if leaf.endswith(_SUFFIX) else leaf


def store_kind(uri: str) -> str | None:
    """"teacher" or "refined" from a store URI's name, or None when the name follows no store layout."""
    match = _STORE_NAME.match(_leaf(uri))
    return match["kind"] if match else None


def model_of(uri: str) -> str | None:
    """The model id in a refined store's name (`<name>.refined-<model>.zarr`), or None."""
    match = _STORE_NAME.match(_leaf(uri))
    return match["model"] if match else None


def refined_uri(teacher_uri: str, model_id: str) -> str:
    """One model's refined store beside a teacher store: `<root>/<name>.teacher.zarr` ->
    `<root>/<name>.refined-<model>.zarr`."""
    match = _STORE_NAME.match(_leaf(teacher_uri))
    if not match or match["kind"] != "teacher" or match["model"]:
        raise ValueError(f"{teacher_uri} does not end in .teacher.zarr; pass the refined store's URI explicitly")
    base = str(teacher_uri).rstrip("/")
    return base[: -len(f".teacher{_SUFFIX}")] + f".refined-{model_id}{_SUFFIX}"


def list_stores(root: str, kind: str = "teacher", storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """URIs of the `<name>.<kind>.zarr` stores directly under root, sorted (none if root does not exist)."""
    _check_kind(kind)
    fs, path = uris.filesystem(str(root), dict(storage_options or {}))
    if not fs.exists(path):
        return []
    names = sorted(_leaf(p) for p in fs.ls(path, detail=False))
    return [uris.join(root, n) for n in names if store_kind(n) == kind]


def teacher_stores_by_state(
    root: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[list[str], list[str]]:
    """(complete, unfinished) teacher stores under root: an unfinished one is still being written, or its ingest was
    interrupted (a rerun of the ingest finishes it)."""
    from storage.depth_store import DepthStore  # late: depth_store builds on this module

    complete, unfinished = [], []
    for uri in list_stores(root, "teacher", storage_options):
        try:
            done = DepthStore.open(uri, storage_options, require_complete=False).is_complete
        except StoreError:  # so far only its folder, or not a store at all
            done = False
        (complete if done else unfinished).append(uri)
    return complete, unfinished


def require_teacher_stores(
    root: str, storage_options: Mapping[str, Any] | None = None, report: Callable[[str], None] | None = None
) -> list[str]:
    """The complete teacher stores under root; `report` is told (one line) which unfinished ones are skipped.

    InputError telling the user to ingest when there is no complete one."""
    complete, unfinished = teacher_stores_by_state(root, storage_options)
    names = ", ".join(video_name(u) for u in unfinished)
    if not complete:
        if unfinished:
            raise InputError(
                f"no complete teacher stores under {root}: {names} unfinished (an ingest was interrupted or is "
                "running); rerun `steadydepth ingest` on their videos to finish them"
            )
        raise InputError(f"no teacher stores under {root}; run `steadydepth ingest` first")
    if unfinished and report is not None:
        report(
            f"skipping {len(unfinished)} unfinished teacher store(s) under {root}: {names} (an ingest was "
            "interrupted or is running); rerun `steadydepth ingest` on their videos to include them"
        )
    return complete
