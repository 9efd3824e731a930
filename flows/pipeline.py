"""The whole pipeline: ingest → train → refine → evaluate → promote → export."""

from __future__ import annotations

from prefect import flow

from flows.common import task_runner
from flows.export import export_flow
from flows.ingest import ingest_flow
from flows.smoother import evaluate_flow
from steadydepth.config import Config
from tasks.smoother import train_task


@flow(name="pipeline", log_prints=True)
def pipeline_flow(inputs: list[str], config: dict | None = None, dask: bool = False, export: bool = True) -> dict:
    """Run every stage over a dataset of videos; finished work is cached, one bad video fails alone."""
    cfg = Config.model_validate(config or {})
    cfg_json = cfg.model_dump(mode="json")
    ingested = ingest_flow.with_options(task_runner=task_runner(cfg, dask))(inputs, cfg_json)
    teachers = [r["store_uri"] for r in ingested["stores"]]
    summary = {"ingest": ingested, "train": None, "evaluation": None, "export": None}
    if not teachers:
        print("pipeline: no video was ingested; nothing to train on")
        return summary
    dataset = inputs[0] if len(inputs) == 1 else cfg.store.root
    trained = train_task(teachers, cfg_json, dataset)
    summary["train"] = trained
    summary["evaluation"] = evaluate_flow(
        trained["checkpoint"], cfg_json, teachers, run_id=trained["run_id"],
        model_version=trained["model_version"], promote=True,
    )
    if export:
        summary["export"] = export_flow(cfg_json, None, teachers)
    return summary
