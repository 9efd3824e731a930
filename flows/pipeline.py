"""The whole pipeline: ingest → train → refine → evaluate → promote → export."""

from __future__ import annotations

from prefect import flow

from flows.common import DEFAULT_CONFIG, final_state, rejected, run_config, run_for_summary, task_runner
from flows.export import export_flow
from flows.ingest import ingest_flow
from flows.model_flows import evaluate_flow, train_smoother
from steadydepth.config import Config
from steadydepth.errors import ConfigError


@flow(name="pipeline", log_prints=True, validate_parameters=False)  # run_config checks `config`
def pipeline_flow(
    inputs: list[str], config: Config = DEFAULT_CONFIG, dask: bool = False, export: bool = True
) -> dict:
    """Run every stage over a dataset of videos; finished work is cached, one bad video fails alone.

    The stages go on with the videos that succeeded; the run ends Failed when any video failed anywhere.

    Args:
        inputs: videos to ingest: folders, globs, text files listing paths, video files or RGB-D frame folders
        config: settings of the run; a deployment run's value is merged over the deployment's, field by field
        dask: run the per-video tasks on a local Dask cluster (orchestration.dask_address names an existing one)
        export: export the refined depth at the end
    """
    try:
        cfg = run_config(config)
    except ConfigError as err:
        return rejected(err)
    cfg_json = cfg.model_dump(mode="json")
    ingested, _ = run_for_summary(ingest_flow.with_options(task_runner=task_runner(cfg, dask)), inputs, cfg_json)
    teachers = [r["store_uri"] for r in ingested["stores"]]
    summary = {"ingest": ingested, "train": None, "evaluation": None, "export": None}
    total = len(teachers) + len(ingested["failures"])
    if not teachers:
        print("pipeline: no video was ingested; nothing to train on")
        return final_state(summary, ingested["failures"], total, "pipeline")
    dataset = inputs[0] if len(inputs) == 1 else cfg.store.root
    trained = train_smoother(teachers, cfg, dataset)
    summary["train"] = trained
    summary["evaluation"], _ = run_for_summary(
        evaluate_flow, trained["checkpoint"], cfg_json, teachers, run_id=trained["run_id"],
        model_version=trained["model_version"], promote=True,
    )
    failures = [*ingested["failures"], *summary["evaluation"]["refine_failures"]]
    if export:
        summary["export"], _ = run_for_summary(export_flow, cfg_json, None, teachers)
        failures += summary["export"]["failures"]
    return final_state(summary, failures, total, "pipeline")
