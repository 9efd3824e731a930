"""Prefect task: export one video's refined depth (formats, previews, stereo) from its stores; the previews' page
in the Prefect UI."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from steadydepth.config import Config
from steadydepth.export.exporter import EXPORT_VERSION, export_video
from steadydepth.export.preview_page import previews_markdown
from storage.naming import video_name
from storage.writing import write_errors
from tasks.cache import digest, store_identity
from tasks.progress import TaskProgress
from tasks.retry import retry_unless_bad_input


def export_key(refined_uri: str, teacher_uri: str, cfg: Config) -> str:
    so = cfg.store.storage_options
    identities = store_identity(refined_uri, so), store_identity(teacher_uri, so)
    return digest("export", EXPORT_VERSION, *identities, cfg.section_hash("export"))


@task(
    name="export-video",
    task_run_name="export {refined_uri}",
    retries=1,
    retry_condition_fn=retry_unless_bad_input,
    cache_key_fn=lambda _ctx, p: export_key(p["refined_uri"], p["teacher_uri"], Config.model_validate(p["config"])),
    persist_result=True,
)
def export_task(refined_uri: str, teacher_uri: str, config: dict) -> dict:
    """Write the configured export formats of one video (resuming a killed export); returns {format: [paths]}."""
    cfg = Config.model_validate(config)
    fix = "free space or make it writable (or set export.out_dir elsewhere), then rerun: finished formats are kept"
    # per format in the UI; the terminal has each format's own per-frame bar
    progress = TaskProgress(f"export {video_name(refined_uri)}", unit="format", bar=False)
    with write_errors(cfg.export.out_dir, fix), progress:
        return export_video(refined_uri, cfg.export, rgb_store_uri=teacher_uri, progress=True,
                            storage_options=cfg.store.storage_options, on_progress=progress)  # fmt: skip


def publish_previews(exports: dict[str, dict[str, list[str]]]) -> str | None:
    """The `export-previews` markdown artifact of the current run: each video's preview thumbnails, embedded so the
    UI shows them, and the files' paths. exports: {store: export_task's result}. Returns the artifact's id (None
    when no video has previews)."""
    markdown = previews_markdown(exports)
    if markdown is None:
        return None
    artifact = create_markdown_artifact(
        key="export-previews", markdown=markdown, description="preview thumbnails of the exported videos"
    )
    return str(artifact)
