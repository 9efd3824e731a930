"""Prefect tasks for the smoother: train (tracked in MLflow, model registered) and refine one store."""

from __future__ import annotations

import functools
from pathlib import Path

from prefect import task

from smoother.checkpoint import CHECKPOINT_NAME, load_smoother
from smoother.model import ResidualSmoother
from smoother.refine import REFINE_VERSION, model_hash, refine_store, refined_store_matches
from smoother.train import TRAIN_VERSION, train
from steadydepth import tracking
from steadydepth.config import Config
from steadydepth.device import resolve_device
from storage import naming
from storage.writing import exclusive_write, write_errors
from tasks.cache import digest, store_identity, stores_key
from tasks.progress import TaskProgress
from tasks.retry import retry_unless_bad_input

TRAIN_SECTIONS = ("smoother", "train", "loss")
_TRAIN_WRITE_FIX = "free space or set orchestration.home elsewhere, then rerun: training resumes from its checkpoint"


def train_key(store_uris: list[str], cfg: Config) -> str:
    """Training is determined by the teacher stores, the smoother/train/loss config and the code versions."""
    return stores_key("train", store_uris, cfg, TRAIN_SECTIONS, TRAIN_VERSION)


def train_dir(store_uris: list[str], cfg: Config) -> Path:
    """Where this training keeps its checkpoint: one folder per training key, so a rerun resumes it."""
    return Path(cfg.orchestration.home) / "checkpoints" / train_key(store_uris, cfg)[:16]


def train_output_complete(store_uris: list[str], cfg: Config) -> bool:
    """True when this training's final checkpoint is on disk (the cached result points at it)."""
    return (train_dir(store_uris, cfg) / CHECKPOINT_NAME).is_file()


@task(
    name="train-smoother",
    retries=1,
    retry_condition_fn=retry_unless_bad_input,
    cache_key_fn=lambda _ctx, p: train_key(p["store_uris"], Config.model_validate(p["config"])),
    persist_result=True,
)
def train_task(store_uris: list[str], config: dict, dataset: str) -> dict:
    """Train on the teacher stores, log the run to MLflow and register the model; resumes from its checkpoint."""
    cfg = Config.model_validate(config)
    out_dir = train_dir(store_uris, cfg)
    # One process per training: two would race on its checkpoint and register the model twice.
    with (
        exclusive_write(str(out_dir), f"the training in {out_dir} is being run"),
        tracking.start_run(dataset, cfg, run_name="train-smoother") as run,
    ):
        remove_checkpoint_temporaries(out_dir)
        with TaskProgress("train smoother", unit="step", bar=False) as progress:  # train() has its own bar

            def on_step(step: int, values: dict[str, float]) -> None:
                tracking.log_step(step, values)
                progress(step, cfg.train.steps)

            with write_errors(str(out_dir), _TRAIN_WRITE_FIX):
                result = train(cfg, store_uris, str(out_dir), on_step=on_step)
        model = load_smoother(result.checkpoint)
        version = tracking.log_smoother(
            model, cfg, model_name=cfg.orchestration.model_name, checkpoint=result.checkpoint, store_uris=store_uris
        )
    return {
        "checkpoint": result.checkpoint,
        "run_id": run.info.run_id,
        "model_version": version,
        "model_uri": f"models:/{cfg.orchestration.model_name}/{version}",
        "losses": result.losses,
        "seconds": result.seconds,
    }


def remove_checkpoint_temporaries(out_dir: Path) -> list[Path]:
    """Delete the hidden temporaries (`.last.pt.*.tmp`) a training killed while saving left in its folder (only
    safe while holding the training's claim); returns them. The checkpoint itself is replaced atomically."""
    stale = sorted(out_dir.glob(f".{CHECKPOINT_NAME}.*.tmp")) if out_dir.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_model(ref: str) -> ResidualSmoother:
    """A smoother from a checkpoint path (*.pt) or an MLflow model URI (models:/name@champion, runs:/...).

    An alias is resolved to its version first, so a worker that keeps models cached loads the new champion
    once the alias moves."""
    return _load_pinned(ref if ref.endswith(".pt") else tracking.pinned_uri(ref))


@functools.lru_cache(maxsize=4)
def _load_pinned(ref: str) -> ResidualSmoother:
    model = load_smoother(ref) if ref.endswith(".pt") else tracking.load_model(ref)
    return model.eval().requires_grad_(False)


def refine_key(teacher_uri: str, model_ref: str, cfg: Config) -> str:
    """Refinement is determined by the teacher store, the model's weights and the refinement code version."""
    so = cfg.store.storage_options
    return digest("refine", REFINE_VERSION, store_identity(teacher_uri, so), model_hash(load_model(model_ref)))


def refine_output_complete(teacher_uri: str, model_ref: str, cfg: Config) -> bool:
    """True when the refined store beside the teacher store is complete and this model's (see
    `refined_store_matches`); any other store is refined again rather than trusted."""
    model = load_model(model_ref)
    refined = naming.refined_uri(teacher_uri, model_hash(model))
    return refined_store_matches(refined, teacher_uri, model, cfg.store.storage_options)


@task(
    name="refine-video",
    task_run_name="refine {teacher_uri}",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_unless_bad_input,
    cache_key_fn=lambda _ctx, p: refine_key(p["teacher_uri"], p["model_ref"], Config.model_validate(p["config"])),
    persist_result=True,
)
def refine_task(teacher_uri: str, model_ref: str, config: dict) -> dict:
    """Write the refined store next to a teacher store (streaming, resumable); returns a RefineResult dict."""
    cfg = Config.model_validate(config)
    so = cfg.store.storage_options
    device = resolve_device("auto")
    model = load_model(model_ref)
    model_id = model_hash(model)
    refined = naming.refined_uri(teacher_uri, model_id)
    root, video = refined.rstrip("/").rsplit("/", 1)[0], naming.video_name(teacher_uri)
    with (
        exclusive_write(refined, f"{video} is being refined with model {model_id}", so),
        write_errors(root, "free space or make it writable, then rerun: finished chunks are kept"),
        TaskProgress(f"refine {video}") as progress,
    ):
        result = refine_store(
            teacher_uri, refined, model, device=device, storage_options=so, model_id=model_ref, on_progress=progress,
            # the same refinement, finished or not, resumes; anything else at that path is replaced
            overwrite=not refined_store_matches(refined, teacher_uri, model, so, complete=False),
        )
    return result.to_dict()

