"""Prefect task wrapping `steadydepth.ingest.ingest_video` (one video → one teacher store)."""

from __future__ import annotations

import functools
import json
import os
import socket

from prefect import task

from steadydepth.config import Config, TeacherConfig
from steadydepth.ingest import ingest_video
from steadydepth.teachers.base import Teacher
from steadydepth.teachers.registry import build_teacher
from steadydepth.video.open import source_name
from storage.writing import write_errors
from tasks.cache import ingest_key
from tasks.progress import TaskProgress
from tasks.retry import retry_unless_bad_input


@functools.lru_cache(maxsize=2)
def _teacher(teacher_json: str) -> Teacher:
    # Loading UniDepth costs seconds; keep one per worker process and teacher config.
    return build_teacher(TeacherConfig.model_validate_json(teacher_json))


def cached_teacher(cfg: TeacherConfig) -> Teacher:
    """The process-wide teacher for this config (built on first use)."""
    return _teacher(json.dumps(cfg.model_dump(mode="json"), sort_keys=True))


@task(
    name="ingest-video",
    task_run_name="ingest {source}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_unless_bad_input,
    cache_key_fn=lambda _ctx, params: ingest_key(params["source"], Config.model_validate(params["config"])),
    persist_result=True,
    tags=["teacher"],  # `prefect concurrency-limit create teacher 1` keeps one teacher per GPU worker
)
def ingest_video_task(source: str, config: dict) -> dict:
    """Decode one video, run the teacher and write its teacher store; returns an IngestResult dict.

    Resumable: finished chunks of an interrupted store are kept and only missing ones are computed.
    """
    cfg = Config.model_validate(config)
    fix = "free space or make it writable (or set store.root elsewhere), then rerun: finished chunks are kept"
    with write_errors(cfg.store.root, fix), TaskProgress(f"ingest {source_name(source)}") as progress:
        result = ingest_video(source, cfg, teacher=cached_teacher(cfg.teacher), on_progress=progress).to_dict()
    result["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return result
