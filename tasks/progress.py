"""Progress of a long task, where its user looks: a progress artifact in the Prefect UI and a tqdm bar on stderr.

Domain code reports `(done, total)` through a plain callback (ingest and refinement per chunk, training per
step, export per format); `TaskProgress` is that callback inside a task. The UI is updated at most every
few seconds, so a fast loop does not flood the API with writes.
"""

from __future__ import annotations

import time

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from tqdm import tqdm

_UI_EVERY_S = 2.0  # seconds between UI updates (the last one is always sent)


class TaskProgress:
    """Call with (done, total): moves the task run's progress artifact and the terminal bar."""

    def __init__(self, description: str, unit: str = "frame", bar: bool = True) -> None:
        self.description = description
        self._artifact = create_progress_artifact(progress=0.0, description=description)
        self._bar = tqdm(desc=description, unit=unit, leave=False, disable=not bar)  # off where the code has its own
        self._sent_at = 0.0

    def __call__(self, done: int, total: int) -> None:
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()
        now = time.monotonic()
        if done >= total or now - self._sent_at >= _UI_EVERY_S:
            percent = 100.0 * done / max(total, 1)
            update_progress_artifact(self._artifact, percent, description=f"{self.description}: {done}/{total}")
            self._sent_at = now

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> TaskProgress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
