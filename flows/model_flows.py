"""Flows for the model: train on a dataset's teacher stores; refine + evaluate (+ promote) a model."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from evaluation.evaluate import evaluation_complete
from flows.common import DEFAULT_CONFIG, final_state, gather, rejected, run_config, run_for_summary, status_table
from steadydepth.config import Config
from steadydepth.errors import ConfigError, RefineFailedError
from storage.naming import require_teacher_stores
from tasks.cache import trusted
from tasks.evaluate import evaluate_task, promote_task
from tasks.smoother import refine_output_complete, refine_task, train_output_complete, train_task


def teacher_stores(cfg: Config, store_uris: list[str] | None) -> list[str]:
    """The given store URIs, or every complete teacher store under store.root (the unfinished ones it skips are
    named in the run's log: an interrupted ingest never stops training on the others)."""
    return store_uris or require_teacher_stores(cfg.store.root, cfg.store.storage_options, report=print)


@flow(name="train", log_prints=True, validate_parameters=False)  # run_config checks `config`
def train_flow(
    config: Config = DEFAULT_CONFIG, store_uris: list[str] | None = None, dataset: str | None = None
) -> dict:
    """Train the smoother on teacher stores (tracked in MLflow, model registered, not yet promoted).

    Args:
        config: settings of the run; a deployment run's value is merged over the deployment's, field by field
        store_uris: teacher stores to train on (default: every complete teacher store under store.root)
        dataset: the dataset the MLflow experiment is named after (default: store.root)
    """
    try:
        cfg = run_config(config)
    except ConfigError as err:
        return rejected(err)
    uris = teacher_stores(cfg, store_uris)
    print(f"train: {len(uris)} teacher store(s), {cfg.train.steps} steps")
    return train_smoother(uris, cfg, dataset or cfg.store.root)


def train_smoother(store_uris: list[str], cfg: Config, dataset: str) -> dict:
    """The training task, its cached result trusted only while its checkpoint is on disk."""
    task = trusted(train_task, train_output_complete(store_uris, cfg))
    return task(store_uris, cfg.model_dump(mode="json"), dataset)


@flow(name="refine", log_prints=True, validate_parameters=False)  # run_config checks `config`
def refine_flow(model_ref: str, config: Config = DEFAULT_CONFIG, store_uris: list[str] | None = None) -> dict:
    """Refine every teacher store with a model (checkpoint path or MLflow model URI), one task per video.

    Args:
        model_ref: checkpoint (.pt) or MLflow model URI (models:/name/version, models:/name@alias)
        config: settings of the run
        store_uris: teacher stores to refine (default: every complete teacher store under store.root)
    """
    try:
        cfg = run_config(config)
    except ConfigError as err:
        return rejected(err)
    cfg_json = cfg.model_dump(mode="json")
    uris = teacher_stores(cfg, store_uris)
    futures = {
        trusted(refine_task, refine_output_complete(uri, model_ref, cfg)).submit(uri, model_ref, cfg_json): uri
        for uri in uris
    }
    done, failures = gather(futures)
    refined = list(done.values())
    status_table("refine-status", [{"teacher": r["teacher_uri"], "refined": r["uri"], "frames": r["num_frames"],
                                    "seconds": r["seconds"]} for r in refined], f"{len(refined)} refined")
    return final_state({"refined": refined, "failures": failures}, failures, len(uris), "refine")


@flow(name="evaluate", log_prints=True, validate_parameters=False)  # run_config checks `config`
def evaluate_flow(
    model_ref: str,
    config: Config = DEFAULT_CONFIG,
    store_uris: list[str] | None = None,
    out_dir: str | None = None,
    run_id: str | None = None,
    model_version: str | None = None,
    promote: bool = False,
) -> dict:
    """Refine with `model_ref`, evaluate refined vs teacher vs baselines, apply the gate, optionally promote.

    Args:
        model_ref: checkpoint (.pt) or MLflow model URI (models:/name/version, models:/name@alias)
        config: settings of the run; a deployment run's value is merged over the deployment's, field by field
        store_uris: teacher stores to evaluate on (default: every complete teacher store under store.root)
        out_dir: folder of the report (default: <orchestration.home>/evaluation)
        run_id: MLflow run (e.g. the training run) to log the metrics and report into (default: none)
        model_version: registered version of the model, for `promote`
        promote: set the champion alias on model_version when the gate passes and it beats the champion
    """
    try:
        cfg = run_config(config)
    except ConfigError as err:
        return rejected(err)
    refined, _ = run_for_summary(refine_flow, model_ref, cfg, store_uris)
    pairs = [(r["teacher_uri"], r["uri"]) for r in refined["refined"]]
    if not pairs:
        first = refined["failures"][0]
        raise RefineFailedError(f"no store could be refined; {first['store']}: {first['error']}")
    out_dir = out_dir or f"{cfg.orchestration.home}/evaluation"
    task = trusted(evaluate_task, evaluation_complete(out_dir))
    evaluation = task([t for t, _ in pairs], [r for _, r in pairs], cfg.model_dump(mode="json"), out_dir, run_id)
    create_markdown_artifact(key="evaluation", markdown=evaluation["markdown"], description=evaluation["verdict"])
    print(evaluation["verdict"])
    evaluation["promotion"] = None
    if promote and model_version is not None:
        evaluation["promotion"] = promote_task(model_version, evaluation, cfg.orchestration.model_name)
        print(evaluation["promotion"]["reason"])
    evaluation["refine_failures"] = refined["failures"]
    # Evaluated on the stores that refined; the run is still red when some could not be.
    return final_state(evaluation, refined["failures"], len(pairs) + len(refined["failures"]), "evaluate")

