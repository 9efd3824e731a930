"""The ingest flow: every video of a dataset → its teacher depth store, one task per video."""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from steadydepth.config import Config
from steadydepth.video.open import discover_sources
from tasks.ingest import ingest_video_task


def _one_line(exc: BaseException | object) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@flow(name="ingest", log_prints=True)
def ingest_flow(inputs: list[str], config: dict | None = None) -> dict:
    """Ingest every video found in `inputs` (folders, globs, list files or paths).

    A failing video fails only its own task: the flow finishes the others and returns
    {"stores": [IngestResult dicts], "failures": [{"video", "error"}]}.
    """
    cfg = Config.model_validate(config or {})
    sources = [s for item in inputs for s in discover_sources(item)]
    print(f"ingest: {len(sources)} video(s), teacher={cfg.teacher.backend}, stores under {cfg.store.root}")
    cfg_json = cfg.model_dump(mode="json")
    futures = [(src, ingest_video_task.submit(src, cfg_json)) for src in sources]
    stores, failures = [], []
    for src, future in futures:
        result = future.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            failures.append({"video": src, "error": _one_line(result)})
            print(f"FAILED {src}: {_one_line(result)}")
        else:
            stores.append(result)
    return {"stores": stores, "failures": failures}


def run_ingest(inputs: list[str], cfg: Config) -> dict:
    """Run the ingest flow with `cfg.orchestration.max_parallel_videos` videos at a time."""
    runner = ThreadPoolTaskRunner(max_workers=cfg.orchestration.max_parallel_videos)
    return ingest_flow.with_options(task_runner=runner)(inputs, cfg.model_dump(mode="json"))
