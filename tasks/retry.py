"""Retry policy shared by all tasks: retry transient failures, never bad input."""

from __future__ import annotations

from steadydepth.errors import InputError


def retry_unless_bad_input(task, task_run, state) -> bool:
    """Prefect retry_condition_fn: False when the task failed with an InputError (retrying cannot help)."""
    try:
        state.result()
    except InputError:
        return False
    except Exception:  # noqa: BLE001 - any other failure may be transient (I/O, GPU memory)
        return True
    return True
