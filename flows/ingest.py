"""The ingest flow: every video of a dataset → its teacher depth store, one task per video."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from flows.common import (
    DEFAULT_CONFIG,
    final_state,
    one_line,
    rejected,
    run_config,
    run_for_summary,
    status_table,
    task_runner,
)
from steadydepth.config import Config
from steadydepth.errors import ConfigError
from steadydepth.video.open import discover_sources, source_name
from storage.naming import store_uri
from tasks.cache import is_complete, trusted
from tasks.ingest import ingest_video_task


@flow(name="ingest", log_prints=True, validate_parameters=False)  # run_config checks `config`
def ingest_flow(inputs: list[str], config: Config = DEFAULT_CONFIG) -> dict:
    """Ingest every video found in `inputs` (folders, globs, list files or paths).

    A failing video fails only its own task: the flow finishes the others and returns
    {"stores": [IngestResult dicts], "failures": [{"video", "error"}]}. Videos whose store is complete
    and unchanged are cached (skipped); incomplete stores are resumed.

    Args:
        inputs: videos to ingest: folders, globs, text files listing paths, video files or RGB-D frame folders
        config: settings of the run; a deployment run's value is merged over the deployment's, field by field
    """
    try:
        cfg = run_config(config)
    except ConfigError as err:
        return rejected(err)
    sources = [s for item in inputs for s in discover_sources(item)]
    print(f"ingest: {len(sources)} video(s), teacher={cfg.teacher.backend}, stores under {cfg.store.root}")
    cfg_json = cfg.model_dump(mode="json")
    futures = {}
    for src in sources:
        done = is_complete(store_uri(cfg.store.root, source_name(src)), cfg.store.storage_options)
        futures[trusted(ingest_video_task, done).submit(src, cfg_json)] = src

    progress = create_progress_artifact(progress=0.0, key="ingest-progress", description="videos ingested")
    stores, failures, rows = [], [], []
    for finished, future in enumerate(as_completed(list(futures)), start=1):
        src = futures[future]
        result = future.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            failures.append({"video": src, "error": one_line(result)})
            rows.append({"video": src, "status": "failed", "frames": "", "invalid pixels / frames": "",
                         "seconds": "", "store": "", "reason": one_line(result)})
            print(f"FAILED {src}: {one_line(result)}")
        else:
            result = {**result, "cached": future.state.name == "Cached"}
            stores.append(result)
            status = "cached" if result["cached"] else "ok"
            invalid = f"{result.get('invalid_pixels_total', 0)} / {result.get('invalid_frames', 0)}"
            rows.append({"video": src, "status": status, "frames": result["num_frames"],
                         "invalid pixels / frames": invalid, "seconds": result["seconds"],
                         "store": result["store_uri"], "reason": ""})
        update_progress_artifact(progress, 100.0 * finished / max(len(futures), 1))
    stores.sort(key=lambda r: r["name"])
    status_table("ingest-status", rows, f"{len(stores)} stored, {len(failures)} failed")
    return final_state({"stores": stores, "failures": failures}, failures, len(sources), "ingest")


def run_ingest(inputs: list[str], cfg: Config, *, dask: bool = False) -> dict:
    """Run the ingest flow with the configured task runner (threads, or a local Dask cluster); returns its
    summary, failed videos included (the flow run itself is Failed when any video failed)."""
    flow_fn = ingest_flow.with_options(task_runner=task_runner(cfg, dask))
    return run_for_summary(flow_fn, inputs, cfg.model_dump(mode="json"))[0]
