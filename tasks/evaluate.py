"""Prefect tasks: evaluate refined vs teacher (+ baselines) with the gate; promote in the MLflow registry."""

from __future__ import annotations

from pathlib import Path

import mlflow
from prefect import task

from evaluation.evaluate import EVALUATE_VERSION, evaluate_dataset
from steadydepth import tracking
from steadydepth.config import Config
from tasks.cache import digest, store_identity
from tasks.retry import retry_unless_bad_input


def evaluate_key(teacher_uris: list[str], refined_uris: list[str], cfg: Config, out_dir: str) -> str:
    so = cfg.store.storage_options
    identities = [store_identity(u, so) for u in [*teacher_uris, *refined_uris]]
    return digest("evaluate", EVALUATE_VERSION, identities, cfg.section_hash("evaluate"), out_dir)


@task(
    name="evaluate",
    retries=1,
    retry_condition_fn=retry_unless_bad_input,
    cache_key_fn=lambda _ctx, p: evaluate_key(
        p["teacher_uris"], p["refined_uris"], Config.model_validate(p["config"]), p["out_dir"]
    ),
    persist_result=True,
)
def evaluate_task(
    teacher_uris: list[str], refined_uris: list[str], config: dict, out_dir: str, run_id: str | None = None
) -> dict:
    """Metrics, report, plots and the gate verdict; logged into the training run when run_id is given."""
    cfg = Config.model_validate(config)
    report = evaluate_dataset(teacher_uris, refined_uris, cfg.evaluate, out_dir)
    gate = report.gate
    refined = report.means.get("refined", {})
    result = {
        "gate_passed": gate.passed,
        "gate_reasons": gate.reasons,
        "flicker_metric": gate.flicker_metric,
        "flicker_value": refined.get(gate.flicker_metric) if gate.flicker_metric else None,
        "means": report.means,
        "report_dir": out_dir,
        "markdown": Path(out_dir, "report.md").read_text(),
        "verdict": f"gate {gate.summary()}",
    }
    if run_id is not None:
        with mlflow.start_run(run_id=run_id):
            for method, metrics in report.means.items():
                prefix = "eval/" if method == "refined" else f"eval_{method}/"
                mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()})
            mlflow.log_metric("eval/gate_passed", float(gate.passed))
            mlflow.log_artifacts(out_dir, artifact_path="evaluation")
    return result


@task(name="promote")
def promote_task(model_version: str, evaluation: dict, model_name: str) -> dict:
    """Record the gate verdict on the version, then set the `champion` alias iff the gate passed and the model beats
    the current champion."""
    tracking.tag_version(
        model_version,
        gate_passed=evaluation["gate_passed"],
        verdict=evaluation.get("verdict", ""),
        metrics=evaluation.get("means", {}).get("refined", {}),
        model_name=model_name,
    )
    decision = tracking.promote(
        model_version,
        gate_passed=evaluation["gate_passed"],
        metric=evaluation["flicker_metric"],
        value=evaluation["flicker_value"],
        model_name=model_name,
    )
    return {"promoted": decision.promoted, "reason": decision.reason, "previous_version": decision.previous_version}
