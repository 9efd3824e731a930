"""Cache keys for Prefect tasks: a task is skipped when everything that determines its output is unchanged.

Keys combine content hashes (video bytes, teacher store identities, model weights), the part of the
config the stage depends on, the stage's code version (`INGEST_VERSION`, `TRAIN_VERSION`, `REFINE_VERSION`,
`EVALUATE_VERSION`, `EXPORT_VERSION`, each defined beside the code it versions) and the package version.
A cached result only says "this output was made": flows ask each stage whether its output is still on disk
and complete and pass the task through `trusted`, which runs it again otherwise — a deleted or half-written
output never hides behind a cached result.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prefect import Task

from steadydepth import __version__
from steadydepth.config import Config
from steadydepth.errors import SteadyDepthError
from steadydepth.hashing import stable_hash
from steadydepth.ingest import INGEST_VERSION, ingest_config_hash
from steadydepth.video.open import open_source
from storage import uri as uris
from storage.depth_store import DepthStore


def digest(*parts: Any) -> str:
    """Stable sha256 of JSON-serialisable parts, with the package version mixed in."""
    return stable_hash([__version__, *parts])


def trusted(task: Task, output_complete: bool) -> Task:
    """The task as it is while its output is on disk and complete; otherwise the same task with
    refresh_cache=True, so it runs again and replaces its cached result (a deleted or half-written output never
    hides behind a cache hit)."""
    return task if output_complete else task.with_options(refresh_cache=True)


def is_complete(uri: str, storage_options: dict | None = None) -> bool:
    """True if a finished store exists at uri."""
    if not uris.exists(uri, storage_options):
        return False
    try:
        return DepthStore.open(uri, storage_options, require_complete=False).is_complete
    except SteadyDepthError:
        return False


def store_identity(uri: str, storage_options: dict | None = None) -> list[str]:
    """What a store's content is determined by: its source bytes, the config that wrote it, its kind."""
    attrs = DepthStore.open(uri, storage_options, require_complete=False).attrs
    return [uri, attrs["source_hash"], attrs["config_hash"], attrs["kind"]]


def ingest_key(source: str, cfg: Config) -> str | None:
    """Key of one video's ingest: source content hash + ingest config (decode, teacher, store layout) + root."""
    try:
        content = open_source(source, cfg.decode).info.content_hash
    except SteadyDepthError:
        return None  # no caching: let the task run and report the bad input itself
    return digest("ingest", INGEST_VERSION, content, ingest_config_hash(cfg), cfg.store.root)


def stores_key(stage: str, store_uris: Iterable[str], cfg: Config, sections: Iterable[str], *extra: Any) -> str:
    """Key of a stage over stores: their identities + the config sections the stage depends on + extras."""
    identities = [store_identity(u, cfg.store.storage_options) for u in sorted(store_uris)]
    return digest(stage, identities, cfg.section_hash(*sections), *extra)
