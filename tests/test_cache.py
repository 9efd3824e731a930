"""Cached stages on a real Prefect API: a stage reruns when its code version changes or its output is gone.

Both are checked on what the user has on disk (stores, reports, export folders), not on Prefect's bookkeeping.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from steadydepth.config import Config, load_config


def _cfg(tmp_path: Path) -> Config:
    return load_config(overrides={
        "store.root": str(tmp_path / "stores"), "teacher.backend": "synthetic", "store.chunk_frames": 4,
        "orchestration.home": str(tmp_path / "home"), "orchestration.model_name": "cache-test",
        "train.steps": 2, "train.batch_size": 2, "train.window": 8, "train.progress": False,
        "export.out_dir": str(tmp_path / "exports"), "export.formats": ["npz", "png16"],
    })


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def ingested(tmp_path, prefect_server) -> tuple[Config, list[str]]:
    from flows.ingest import run_ingest
    from steadydepth.synth.generate import generate_benchmark

    generate_benchmark(tmp_path / "videos", n_videos=1, n_frames=8, size=(48, 64), seed=2)
    cfg = _cfg(tmp_path)
    stores = [r["store_uri"] for r in run_ingest([str(tmp_path / "videos")], cfg)["stores"]]
    assert len(stores) == 1
    return cfg, stores


def test_every_stage_key_includes_its_code_version(ingested, monkeypatch, mlflow_sqlite):
    import tasks.cache
    import tasks.evaluate
    import tasks.export
    import tasks.smoother
    from flows.model_flows import train_flow

    cfg, stores = ingested
    checkpoint = train_flow(cfg.model_dump(mode="json"), stores)["checkpoint"]
    keys = {
        "ingest": lambda: tasks.cache.ingest_key(str(Path(cfg.store.root).parent / "videos" / "00-vr-head.mp4"), cfg),
        "train": lambda: tasks.smoother.train_key(stores, cfg),
        "refine": lambda: tasks.smoother.refine_key(stores[0], checkpoint, cfg),
        "evaluate": lambda: tasks.evaluate.evaluate_key(stores, stores, cfg, "out"),
        "export": lambda: tasks.export.export_key(stores[0], stores[0], cfg),
    }
    versions = {"ingest": (tasks.cache, "INGEST_VERSION"), "train": (tasks.smoother, "TRAIN_VERSION"),
                "refine": (tasks.smoother, "REFINE_VERSION"), "evaluate": (tasks.evaluate, "EVALUATE_VERSION"),
                "export": (tasks.export, "EXPORT_VERSION")}
    for stage, (module, name) in versions.items():
        before = {s: key() for s, key in keys.items()}
        with monkeypatch.context() as m:
            m.setattr(module, name, getattr(module, name) + 1)
            after = {s: key() for s, key in keys.items()}
        assert after[stage] != before[stage], f"{stage}'s cache key ignores {name}"
        assert all(after[s] == before[s] for s in keys if s != stage), f"{name} leaks into other stages' keys"


def test_refine_evaluate_export_rerun_when_output_is_gone_or_code_changed(ingested, monkeypatch, mlflow_sqlite):
    import smoother.refine
    import tasks.smoother
    from flows.export import export_flow
    from flows.model_flows import evaluate_flow, train_flow
    from smoother.checkpoint import load_smoother
    from smoother.refine import model_hash
    from storage.depth_store import DepthStore
    from storage.naming import refined_uri

    cfg, stores = ingested
    cfg_json = cfg.model_dump(mode="json")
    trained = train_flow(cfg_json, stores)
    checkpoint = Path(trained["checkpoint"])
    out_dir = str(Path(cfg.orchestration.home) / "evaluation")
    evaluate_flow(str(checkpoint), cfg_json, stores, out_dir=out_dir)
    refined = refined_uri(stores[0], model_hash(load_smoother(checkpoint)))
    first_hash = DepthStore.open(refined).attrs["config_hash"]
    export_flow(cfg_json, str(checkpoint), stores)
    written = _mtimes(Path(cfg.store.root)) | _mtimes(Path(out_dir)) | _mtimes(Path(cfg.export.out_dir))

    # Unchanged: every stage is cached, nothing is written again.
    evaluate_flow(str(checkpoint), cfg_json, stores, out_dir=out_dir)
    export_flow(cfg_json, str(checkpoint), stores)
    assert _mtimes(Path(cfg.store.root)) | _mtimes(Path(out_dir)) | _mtimes(Path(cfg.export.out_dir)) == written

    # Deleted outputs are made again, never trusted from the cache.
    shutil.rmtree(refined)
    Path(out_dir, "report.md").unlink()
    evaluate_flow(str(checkpoint), cfg_json, stores, out_dir=out_dir)
    assert DepthStore.open(refined).is_complete and Path(out_dir, "report.md").is_file()

    # A new refinement code version: the refined store is made again with the new identity.
    for module in (smoother.refine, tasks.smoother):
        monkeypatch.setattr(module, "REFINE_VERSION", smoother.refine.REFINE_VERSION + 1)
    evaluate_flow(str(checkpoint), cfg_json, stores, out_dir=out_dir)
    assert DepthStore.open(refined).attrs["config_hash"] != first_hash

    # A deleted checkpoint: training runs again (resuming is impossible, so it starts afresh) and rewrites it.
    checkpoint.unlink()
    assert Path(train_flow(cfg_json, stores)["checkpoint"]) == checkpoint and checkpoint.is_file()
