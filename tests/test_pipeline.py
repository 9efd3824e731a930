"""The whole pipeline on a real Prefect API and MLflow on SQLite: tracking, gate-driven promotion, caching."""

from __future__ import annotations

from pathlib import Path

import mlflow

from steadydepth import tracking
from steadydepth.config import load_config


def _cfg(tmp_path, **extra):
    overrides = {
        "store.root": str(tmp_path / "stores"), "teacher.backend": "synthetic", "store.chunk_frames": 8,
        "orchestration.home": str(tmp_path / "home"), "orchestration.model_name": "pipeline-test",
        "train.steps": 4, "train.batch_size": 2, "train.window": 8, "train.progress": False,
        "export.out_dir": str(tmp_path / "exports"), "export.formats": ["npz", "png16", "preview"],
    }
    overrides.update(extra)
    return load_config(overrides=overrides)


def _files(root: Path) -> set[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every file under root: changes if any file is written again."""
    return {(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_pipeline_tracks_gates_promotes_exports_and_reruns_cached(tmp_path, prefect_server, mlflow_sqlite):
    from flows.pipeline import pipeline_flow
    from steadydepth.synth.generate import generate_benchmark

    videos = tmp_path / "videos"
    generate_benchmark(videos, n_videos=2, n_frames=16, size=(48, 64), seed=1)

    # An impossible gate: the model is trained, logged and registered but never promoted.
    strict = _cfg(tmp_path, **{"evaluate.min_flicker_reduction": 1.0})
    first = pipeline_flow([str(videos)], strict.model_dump(mode="json"))
    evaluation = first["evaluation"]
    assert not evaluation["gate_passed"] and any(r.startswith("FAIL") for r in evaluation["gate_reasons"])
    assert not evaluation["promotion"]["promoted"] and tracking.champion_version("pipeline-test") is None
    run = mlflow.get_run(first["train"]["run_id"])
    assert run.data.params["train.steps"] == "4" and "train/total" in run.data.metrics
    assert "eval/absrel" in run.data.metrics and "eval_teacher/absrel" in run.data.metrics
    assert first["export"]["model"] == "teacher"  # no champion yet: the teacher depth is exported
    assert not first["export"]["failures"] and len(first["export"]["exports"]) == 2

    # The same data and config again: every stage is cached, so no store or export file is written again
    # (checked on the files, not with a timer: timings flake on a shared machine).
    written = _files(tmp_path / "stores") | _files(tmp_path / "exports")
    again = pipeline_flow([str(videos)], strict.model_dump(mode="json"))
    assert all(r["cached"] for r in again["ingest"]["stores"])
    assert again["train"]["run_id"] == first["train"]["run_id"]  # training was not repeated
    assert any(".refined-" in name for name, _, _ in written)  # the model's own refined store
    assert _files(tmp_path / "stores") | _files(tmp_path / "exports") == written

    # A gate the model can pass: it becomes champion and export uses it.
    # (the teacher export of the first run is replaced only because overwrite is asked for, like --overwrite)
    lenient = _cfg(tmp_path, **{"evaluate.min_flicker_reduction": 0.0, "evaluate.absrel_tolerance": 1.0,
                               "evaluate.delta1_tolerance": 1.0, "export.overwrite": True})
    second = pipeline_flow([str(videos)], lenient.model_dump(mode="json"))
    assert second["evaluation"]["gate_passed"] and second["evaluation"]["promotion"]["promoted"]
    assert str(tracking.champion_version("pipeline-test").version) == second["train"]["model_version"]
    assert second["export"]["model"] == "models:/pipeline-test@champion" and not second["export"]["failures"]
    previews = [p for r in second["export"]["exports"].values() for p in r["preview"]]
    assert any(p.endswith("side_by_side.mp4") for p in previews) and any(p.endswith(".png") for p in previews)
