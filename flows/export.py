"""The export flow: refine with the champion (or a given model) and write the configured formats per video."""

from __future__ import annotations

from prefect import flow

from flows.common import DEFAULT_CONFIG, final_state, gather, rejected, run_config, run_for_summary, status_table
from flows.model_flows import refine_flow, teacher_stores
from steadydepth import tracking
from steadydepth.config import Config
from steadydepth.errors import ConfigError
from steadydepth.export.exporter import export_complete
from tasks.cache import trusted
from tasks.export import export_task, publish_previews


@flow(name="export", log_prints=True, validate_parameters=False)  # run_config checks `config`
def export_flow(
    config: Config = DEFAULT_CONFIG, model_ref: str | None = None, store_uris: list[str] | None = None
) -> dict:
    """Export every video. model_ref defaults to `models:/<model_name>@champion`; without a champion the
    teacher depth is exported (and the flow says so).

    Args:
        config: settings of the run; a deployment run's value is merged over the deployment's, field by field
        model_ref: checkpoint (.pt) or MLflow model URI to refine with (default: the champion)
        store_uris: teacher stores to export (default: every complete teacher store under store.root)
    """
    try:
        cfg = run_config(config)
    except ConfigError as err:
        return rejected(err)
    cfg_json = cfg.model_dump(mode="json")
    teachers = teacher_stores(cfg, store_uris)
    if model_ref is None and tracking.champion_version(cfg.orchestration.model_name) is not None:
        model_ref = f"models:/{cfg.orchestration.model_name}@{tracking.CHAMPION}"
    if model_ref is None:
        print("export: no champion model in the registry yet; exporting the teacher depth")
        pairs = [(t, t) for t in teachers]
        refine_failures = []
    else:
        refined, _ = run_for_summary(refine_flow, model_ref, cfg, teachers)
        pairs = [(r["uri"], r["teacher_uri"]) for r in refined["refined"]]
        refine_failures = refined["failures"]
    so = cfg.store.storage_options
    futures = {
        trusted(export_task, export_complete(cfg.export, depth_uri, teacher_uri, storage_options=so)).submit(
            depth_uri, teacher_uri, cfg_json
        ): depth_uri
        for depth_uri, teacher_uri in pairs
    }
    written, failures = gather(futures)
    publish_previews(written)  # thumbnails embedded in the run's artifact: the UI shows them over http
    status_table("export-status", [{"store": u, "formats": ", ".join(sorted(r))} for u, r in written.items()],
                 f"{len(written)} exported to {cfg.export.out_dir}")
    summary = {"exports": written, "failures": refine_failures + failures, "model": model_ref or "teacher"}
    return final_state(summary, summary["failures"], len(teachers), "export")
