"""Run a teacher with GPU out-of-memory back-off: halve the batch until it fits, remember what fit."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from steadydepth.errors import TeacherOutOfMemoryError
from steadydepth.teachers.base import FrameBatch, Teacher, TeacherOutput, validate_output

log = logging.getLogger(__name__)


@dataclass
class BatchSizer:
    """The batch size that currently fits; shrinks on OOM and stays there for the rest of the run."""

    size: int

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.size}")


def is_oom(err: BaseException) -> bool:
    """True for CUDA out-of-memory errors (typed, or the older RuntimeError message)."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(err, oom_type):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err)


def slice_batch(batch: FrameBatch, start: int, stop: int) -> FrameBatch:
    """Frames [start, stop) of a batch, as a FrameBatch of the same video."""
    return replace(
        batch,
        indices=list(batch.indices[start:stop]),
        source_indices=list(batch.source_indices[start:stop]),
        rgb=batch.rgb[start:stop],
        K=batch.K[start:stop] if batch.K is not None else None,
        gt_depth=batch.gt_depth[start:stop] if batch.gt_depth is not None else None,
        source_numbers=list(batch.source_numbers[start:stop]) if batch.source_numbers is not None else None,
    )


def concat_outputs(outputs: list[TeacherOutput]) -> TeacherOutput:
    """Concatenate sub-batch outputs in order; confidence survives only if every part has it."""
    confs = [o.confidence for o in outputs]
    return TeacherOutput(
        depth=torch.cat([o.depth for o in outputs]),
        K=torch.cat([o.K for o in outputs]),
        confidence=torch.cat(confs) if all(c is not None for c in confs) else None,
    )


def _free_cuda_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def predict_with_backoff(
    teacher: Teacher, batch: FrameBatch, *, min_batch: int = 1, sizer: BatchSizer | None = None
) -> TeacherOutput:
    """`teacher.predict(batch)`, split into sub-batches of `sizer.size` and halved on CUDA OOM.

    Sub-batches that already succeeded are kept, so an OOM costs only the failed sub-batch. The size
    that worked is left in `sizer` for the next call. At `min_batch` (default 1) an OOM raises
    TeacherOutOfMemoryError naming the video and frame. The result passes through validate_output
    (shapes only: bad depth values are ingest's to repair).
    """
    n = len(batch.indices)
    sizer = sizer if sizer is not None else BatchSizer(max(n, 1))
    size = max(1, sizer.size)
    floor = max(1, min_batch)
    outputs: list[TeacherOutput] = []
    start = 0
    while start < n:
        stop = min(start + size, n)
        try:
            outputs.append(teacher.predict(slice_batch(batch, start, stop) if (start, stop) != (0, n) else batch))
        except Exception as err:
            if not is_oom(err):
                raise
        else:
            start = stop
            continue
        # Emptied outside the except block, once the traceback (and the tensors its frames hold) is released.
        _free_cuda_cache()
        tried = stop - start
        if tried <= floor:
            raise TeacherOutOfMemoryError(
                f"teacher {teacher.id} ran out of GPU memory at batch size {tried} on frame {batch.indices[start]} "
                f"of video {batch.video.name}; free the GPU (another job may hold it), lower "
                "teacher.resolution_level or set teacher.device=cpu"
            ) from None
        # Halve the nominal size until it is below what just failed (8 -> 4 -> 2 even for a 7-frame batch).
        while size >= tried and size > floor:
            size = max(size // 2, floor)
        sizer.size = size
        log.warning("teacher %s: CUDA out of memory, retrying with batch size %d", teacher.id, size)
    return validate_output(concat_outputs(outputs), batch, teacher.id)
