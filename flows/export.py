"""The export flow: refine with the champion (or a given model) and write the configured formats per video."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.common import final_state, gather, run_for_summary, status_table
from flows.model_flows import refine_flow, teacher_stores
from steadydepth import tracking
from steadydepth.config import Config
from steadydepth.export.exporter import export_complete
from tasks.cache import trusted
from tasks.export import export_task


@flow(name="export", log_prints=True)
def export_flow(config: dict | None = None, model_ref: str | None = None, store_uris: list[str] | None = None) -> dict:
    """Export every video. model_ref defaults to `models:/<model_name>@champion`; without a champion the
    teacher depth is exported (and the flow says so)."""
    cfg = Config.model_validate(config or {})
    cfg_json = cfg.model_dump(mode="json")
    teachers = teacher_stores(cfg, store_uris)
    if model_ref is None and tracking.champion_version(cfg.orchestration.model_name) is not None:
        model_ref = f"models:/{cfg.orchestration.model_name}@{tracking.CHAMPION}"
    if model_ref is None:
        print("export: no champion model in the registry yet; exporting the teacher depth")
        pairs = [(t, t) for t in teachers]
        refine_failures = []
    else:
        refined, _ = run_for_summary(refine_flow, model_ref, config, teachers)
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
    previews = [p for r in written.values() for p in r.get("preview", []) if p.endswith(".png")]
    if previews:  # links the UI shows next to the run (file:// on one machine, object URLs on shared storage)
        links = "\n".join(f"- [{Path(p).parent.parent.name}/{Path(p).name}]({Path(p).resolve().as_uri()})"
                          for p in previews)
        create_markdown_artifact(key="export-previews", markdown=f"# Previews\n\n{links}\n",
                                 description="preview images of the exported videos")
    status_table("export-status", [{"store": u, "formats": ", ".join(sorted(r))} for u, r in written.items()],
                 f"{len(written)} exported to {cfg.export.out_dir}")
    summary = {"exports": written, "failures": refine_failures + failures, "model": model_ref or "teacher"}
    return final_state(summary, summary["failures"], len(teachers), "export")
