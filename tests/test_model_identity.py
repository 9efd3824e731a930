"""Each model refines into a store of its own: evaluating or exporting one model never reads another's depth.

The sequence users hit: evaluate model A, then B, then A again; export A after B was refined last.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from steadydepth.config import load_config


def _refined_depth(uri: str) -> np.ndarray:
    return xr.open_zarr(uri).depth.values


def test_a_b_a_evaluations_and_export_use_each_models_own_depth(tmp_path, prefect_server, mlflow_sqlite):
    from flows.export import export_flow
    from flows.ingest import run_ingest
    from flows.model_flows import evaluate_flow
    from smoother.checkpoint import load_smoother
    from smoother.refine import model_hash
    from smoother.train import train
    from steadydepth.synth.generate import generate_benchmark
    from storage.naming import refined_uri

    generate_benchmark(tmp_path / "videos", n_videos=1, n_frames=8, size=(48, 64), seed=6)
    base = {
        "store.root": str(tmp_path / "stores"), "teacher.backend": "synthetic", "store.chunk_frames": 4,
        "orchestration.home": str(tmp_path / "home"), "train.batch_size": 2, "train.window": 8,
        "train.progress": False, "export.out_dir": str(tmp_path / "exports"), "export.formats": ["npz"],
    }
    cfg = load_config(overrides=base)
    stores = [r["store_uri"] for r in run_ingest([str(tmp_path / "videos")], cfg)["stores"]]
    models = {}
    for name, steps, seed in (("A", 3, 0), ("B", 6, 1)):  # two trainings, two different sets of weights
        run_cfg = load_config(overrides={**base, "train.steps": steps, "train.seed": seed})
        models[name] = train(run_cfg, stores, str(tmp_path / f"model-{name}")).checkpoint
    hashes = {name: model_hash(load_smoother(ckpt)) for name, ckpt in models.items()}
    assert hashes["A"] != hashes["B"]

    cfg_json = cfg.model_dump(mode="json")
    absrel = []
    for name in ("A", "B", "A"):
        evaluation = evaluate_flow(models[name], cfg_json, stores, out_dir=str(tmp_path / f"eval-{name}"))
        absrel.append(evaluation["means"]["refined"]["absrel"])
    assert absrel[0] == absrel[2] != absrel[1]  # A's numbers come back: its depth was never replaced by B's

    own = {name: refined_uri(stores[0], hashes[name]) for name in models}
    assert xr.open_zarr(own["A"]).attrs["model_hash"] == hashes["A"]
    assert xr.open_zarr(own["B"]).attrs["model_hash"] == hashes["B"]
    assert not np.array_equal(_refined_depth(own["A"]), _refined_depth(own["B"]))

    # B was refined last; exporting A writes A's depth, not whatever was refined most recently.
    export_flow(cfg_json, models["A"], stores)
    exported = np.load(Path(cfg.export.out_dir) / "00-vr-head" / "npz" / "depth.npz")
    np.testing.assert_array_equal(exported["depth"], _refined_depth(own["A"]))
