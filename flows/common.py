"""Helpers shared by the flows: task runners, one-line failure text, status artifacts."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from steadydepth.config import Config


def one_line(exc: BaseException | object) -> str:
    """`Type: first line of the message` — what a failed video shows in tables and logs."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def gather(futures: dict[Any, str]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Wait for {future: store URI}; return ({uri: result} of the successes, [{"store", "error"}] of the rest).

    A failed task is reported, never raised: one bad video must not sink the others.
    """
    results, failures = {}, []
    for future, uri in futures.items():
        result = future.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            failures.append({"store": uri, "error": one_line(result)})
            print(f"FAILED {uri}: {one_line(result)}")
        else:
            results[uri] = result
    return results, failures


def task_runner(cfg: Config, dask: bool = False, dask_workers: int = 2):
    """Threads on one machine by default; a local Dask cluster of worker processes with `dask`.

    To use an existing Dask cluster, set orchestration.dask_address (a scheduler address).
    """
    if dask or cfg.orchestration.dask_address:
        from prefect_dask import DaskTaskRunner

        if cfg.orchestration.dask_address:
            return DaskTaskRunner(address=cfg.orchestration.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1, "processes": True,
                            "dashboard_address": None}
        )
    return ThreadPoolTaskRunner(max_workers=cfg.orchestration.max_parallel_videos)


def status_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """A table artifact in the Prefect UI (one row per video)."""
    if rows:
        create_table_artifact(key=key, table=rows, description=description)
