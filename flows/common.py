"""Helpers shared by the flows: the run's config, task runners, one-line failure text, status artifacts, truthful
final states."""

from __future__ import annotations

from typing import Any

from prefect import Flow
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.collections import deep_merge

from steadydepth.config import Config, validate_config
from steadydepth.errors import ConfigError

# Every flow's `config` default: all fields at the code's defaults. Typed, so a deployment's parameter schema (the
# Prefect UI's run form) lists every section and field with its description, default and bounds.
DEFAULT_CONFIG = Config()
_CONFIG_REMEDY = "fix {field} in the run's config parameter or in the deployment's (prefect.yaml)"


def deployment_config() -> dict[str, Any]:
    """The `config` this flow run's deployment was deployed with: {} for a direct call or a subflow."""
    context = FlowRunContext.get()
    deployment_id = context.flow_run.deployment_id if context is not None and context.flow_run else None
    if deployment_id is None:
        return {}
    with get_client(sync_client=True) as client:
        return client.read_deployment(deployment_id).parameters.get("config") or {}


def run_config(config: Config | dict[str, Any] | None) -> Config:
    """The run's Config: the given `config` deep-merged over its deployment's, then validated.

    Prefect replaces a parameter as a whole, so a run given `{"train": {"steps": 5}}` would lose every other value
    the deployment sets (store.root, teacher.backend); merged, only the fields it names change (mappings merge at
    every depth, any other value replaces). A Config contributes the fields that were set on it. The flows take
    `validate_parameters=False` so that this, not Prefect's multi-line report, checks the value: ConfigError with
    one line naming the first bad field.
    """
    given = config.model_dump(mode="json", exclude_unset=True) if isinstance(config, Config) else config or {}
    tree = deep_merge(deployment_config(), given) if isinstance(given, dict) else given
    return validate_config(tree, _CONFIG_REMEDY)


def rejected(err: ConfigError) -> State:
    """What a run with an invalid config ends as: Failed at once, its message the one-line reason (no traceback);
    a direct call raises the error."""
    print(f"rejected: {err}")
    return Failed(message=str(err), data=err)


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


class VideosFailed(Exception):
    """A Failed state's data: the failure message plus the summary of the work that did finish.

    Prefect expects a failed state to carry an exception; this one also carries the finished videos' results.
    """

    def __init__(self, message: str, summary: dict) -> None:
        super().__init__(message, summary)  # both in args, so it pickles into a result store and back
        self.message, self.summary = message, summary

    def __str__(self) -> str:
        return self.message


def final_state(summary: dict, failures: list[dict[str, str]], total: int, stage: str) -> dict | State:
    """What a flow run ends as, so that the UI and a schedule tell the truth.

    Any failed video → Failed, with a message naming how many and which; nothing to do → Completed with a
    message saying so; otherwise the summary itself (Completed). The summary travels as the state's data
    either way: the finished videos' results are kept, and `summary_of` hands them to the caller.
    """
    if failures:
        names = [f.get("video") or f.get("store") or "?" for f in failures]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        first = failures[0].get("error", "")
        message = f"{stage}: {len(failures)} of {total} failed ({shown}); first: {first}"
        return Failed(message=message, data=VideosFailed(message, summary))
    if total == 0:
        return Completed(message=f"{stage}: nothing to do", data=summary)
    return summary


def summary_of(state: State) -> dict:
    """The summary a flow run left, whether it completed or failed on some videos; a crash is raised again."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, VideosFailed):
        return result.summary
    if isinstance(result, BaseException):
        raise result
    return result


def run_for_summary(flow_fn: Flow, *args: Any, **kwargs: Any) -> tuple[dict, State]:
    """Call a flow (or subflow) and return (its summary, its final state): a flow that failed on some videos
    still returns the work it finished, so a caller can go on with it."""
    state = flow_fn(*args, return_state=True, **kwargs)
    return summary_of(state), state
