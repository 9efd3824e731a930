"""Flows for the model: train on a dataset's teacher stores; refine + evaluate (+ promote) a model."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.common import gather, status_table, task_runner
from steadydepth.config import Config
from steadydepth.errors import InputError
from storage.depth_store import list_stores
from tasks.evaluate import evaluate_task, promote_task
from tasks.smoother import refine_task, train_task


def teacher_stores(cfg: Config, store_uris: list[str] | None) -> list[str]:
    """The given store URIs, or every complete teacher store under store.root."""
    uris = store_uris or list_stores(cfg.store.root, "teacher", cfg.store.storage_options)
    if not uris:
        raise InputError(f"no teacher stores under {cfg.store.root}; run `steadydepth ingest` first")
    return uris


@flow(name="train", log_prints=True)
def train_flow(config: dict | None = None, store_uris: list[str] | None = None, dataset: str | None = None) -> dict:
    """Train the smoother on teacher stores (tracked in MLflow, model registered, not yet promoted)."""
    cfg = Config.model_validate(config or {})
    uris = teacher_stores(cfg, store_uris)
    print(f"train: {len(uris)} teacher store(s), {cfg.train.steps} steps")
    return train_task(uris, cfg.model_dump(mode="json"), dataset or cfg.store.root)


@flow(name="refine", log_prints=True)
def refine_flow(model_ref: str, config: dict | None = None, store_uris: list[str] | None = None) -> dict:
    """Refine every teacher store with a model (checkpoint path or MLflow model URI), one task per video."""
    cfg = Config.model_validate(config or {})
    cfg_json = cfg.model_dump(mode="json")
    futures = {refine_task.submit(uri, model_ref, cfg_json): uri for uri in teacher_stores(cfg, store_uris)}
    done, failures = gather(futures)
    refined = list(done.values())
    status_table("refine-status", [{"teacher": r["teacher_uri"], "refined": r["uri"], "frames": r["num_frames"],
                                    "seconds": r["seconds"]} for r in refined], f"{len(refined)} refined")
    return {"refined": refined, "failures": failures}


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    model_ref: str,
    config: dict | None = None,
    store_uris: list[str] | None = None,
    out_dir: str | None = None,
    run_id: str | None = None,
    model_version: str | None = None,
    promote: bool = False,
) -> dict:
    """Refine with `model_ref`, evaluate refined vs teacher vs baselines, apply the gate, optionally promote."""
    cfg = Config.model_validate(config or {})
    refined = refine_flow(model_ref, config, store_uris)
    pairs = [(r["teacher_uri"], r["uri"]) for r in refined["refined"]]
    if not pairs:
        raise InputError("no store could be refined; see the failures above")
    out_dir = out_dir or f"{cfg.orchestration.home}/evaluation"
    evaluation = evaluate_task([t for t, _ in pairs], [r for _, r in pairs], cfg.model_dump(mode="json"), out_dir,
                               run_id)
    create_markdown_artifact(key="evaluation", markdown=evaluation["markdown"], description=evaluation["verdict"])
    print(evaluation["verdict"])
    evaluation["promotion"] = None
    if promote and model_version is not None:
        evaluation["promotion"] = promote_task(model_version, evaluation, cfg.orchestration.model_name)
        print(evaluation["promotion"]["reason"])
    evaluation["refine_failures"] = refined["failures"]
    return evaluation


def run_flow(flow_fn, cfg: Config, *args, dask: bool = False, **kwargs):
    """Call a flow with the configured task runner."""
    return flow_fn.with_options(task_runner=task_runner(cfg, dask))(*args, **kwargs)
