"""Retry policy shared by all tasks: retry transient failures, never ones that fail the same way again."""

from __future__ import annotations

from steadydepth.errors import InputError, StoreError

# Failures a retry reproduces: the user's input or config, a missing or damaged store or file, a programming
# error. Everything else (I/O hiccups, GPU memory held by another job, a lost worker) may pass on retry.
PERMANENT = (InputError, StoreError, FileNotFoundError, NotADirectoryError, PermissionError, TypeError, ValueError,
             KeyError, AttributeError, ImportError)


def retry_unless_bad_input(task, task_run, state) -> bool:
    """Prefect retry_condition_fn: False when the task failed in a way a retry cannot fix."""
    try:
        state.result()
    except PERMANENT:
        return False
    except Exception:  # noqa: BLE001 - any other failure may be transient (I/O, GPU memory)
        return True
    return True
