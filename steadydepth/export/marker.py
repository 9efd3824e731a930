"""Identity markers of export folders: what each `<video>/<format>/` folder was made from.

Every format folder holds `.export.json`, written into its temporary folder before the rename, so a folder
never appears without it. The marker's `identity` (code version, format, the stores' identity attrs, a hash
of the settings that shape that format) is compared with what an export would write now: equal, and every
listed file present, means the folder is done (a killed export resumes after it); anything else means the
folder is someone else's (another model's refinement, other settings, a user's own files).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from steadydepth.hashing import stable_hash

MARKER = ".export.json"

FolderState = Literal["done", "missing", "foreign"]


def settings_hash(settings: Mapping[str, Any]) -> str:
    """Stable short hash of the settings that change what a format writes."""
    return stable_hash(dict(settings), 16)


def _as_json(value: Mapping[str, Any]) -> dict[str, Any]:
    # What the marker reads back as (tuples become lists), so a fresh identity compares equal to a stored one.
    return json.loads(json.dumps(dict(value), default=str))


def write_marker(folder: Path, identity: Mapping[str, Any], files: Sequence[str], **info: Any) -> None:
    """Write the marker into `folder`: its identity, the files it holds (relative, in the writer's order) and
    informational extras (store URIs, readable settings) that are not compared."""
    record = {"identity": _as_json(identity), "files": [str(f) for f in files], **_as_json(info)}
    (folder / MARKER).write_text(json.dumps(record, indent=1))


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The folder's marker, or None when it has none (or an unreadable one: then it is not ours either)."""
    try:
        record = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("files"), list) else None


def folder_state(folder: Path, identity: Mapping[str, Any]) -> FolderState:
    """missing: no folder; done: made from exactly this identity and whole; foreign: anything else."""
    if not folder.exists() and not folder.is_symlink():
        return "missing"
    record = read_marker(folder) if folder.is_dir() else None
    if record is None or record.get("identity") != _as_json(identity):
        return "foreign"
    if not all((folder / name).is_file() for name in record["files"]):
        return "foreign"  # ours, but files were removed since: not done, and not silently replaced either
    return "done"


def marker_files(folder: Path) -> list[Path]:
    """The files a done folder holds, as its marker lists them."""
    record = read_marker(folder)
    return [folder / name for name in (record or {}).get("files", [])]
