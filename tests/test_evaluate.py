"""evaluate_dataset end to end on tiny synthetic-teacher stores: gate, report files, no-GT mode, baselines, plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from evaluation.config import EvaluateConfig
from evaluation.evaluate import evaluate_dataset
from evaluation.metrics import evaluate_sequence, opw, static_mask_from_gt
from evaluation.report import fmt
from steadydepth.config import load_config
from storage.depth_store import DepthStore

CFG = EvaluateConfig(max_depth=10.0)
FLOW_KEYS = {"opw", "opw_sequence", "frame_change"}


@pytest.fixture(scope="module")
def teacher_stores(tmp_path_factory) -> list[str]:
    """00-vr-head and 01-static-camera, 12 frames at 48×64, through ingest with the synthetic teacher."""
    from steadydepth.ingest import ingest_video
    from steadydepth.synth.generate import generate_benchmark
    from steadydepth.teachers.registry import build_teacher

    root = tmp_path_factory.mktemp("bench")
    videos = generate_benchmark(root / "videos", n_videos=2, n_frames=12, size=(48, 64), seed=1)
    cfg = load_config(overrides={"store.root": str(root / "stores"), "teacher.backend": "synthetic"})
    teacher = build_teacher(cfg.teacher)
    return [ingest_video(str(v), cfg, teacher=teacher).store_uri for v in videos]


def copy_store(src_uri: str, dst_uri: str, *, depth: str, kind: str = "refined", keep: tuple[str, ...] = ()) -> str:
    """A store with src's frames, K and timestamps, depth taken from src's `depth` or `gt_depth`, plus `keep`."""
    src = DepthStore.open(src_uri)
    n = src.num_frames
    data = src.read(0, n, ["depth", "K", "timestamp", "frame_index", *{depth, *keep} - {"depth"}])
    attrs = {"source_hash": "x", "config_hash": f"copy-{depth}", "kind": kind}
    dst = DepthStore.create(
        dst_uri, num_frames=n, height=src.size[0], width=src.size[1], chunk_frames=n, attrs=attrs, variables=keep
    )
    dst.write_chunk(
        0,
        depth=data[depth],
        K=data["K"],
        timestamp=data["timestamp"],
        frame_index=data["frame_index"],
        **{v: data[v] for v in keep},
    )
    dst.finalize()
    return dst_uri


@pytest.fixture(scope="module")
def gt_report(teacher_stores, tmp_path_factory):
    """Evaluation with a "refined" store that is the ground truth itself (with plots)."""
    root = tmp_path_factory.mktemp("gt-refined")
    refined = [
        copy_store(u, str(root / f"v{i}.refined.zarr"), depth="gt_depth", keep=("gt_depth", "pose"))
        for i, u in enumerate(teacher_stores)
    ]
    return evaluate_dataset(teacher_stores, refined, CFG, str(root / "eval"))


def test_ground_truth_refined_beats_the_teacher_and_passes_the_gate(gt_report):
    means = gt_report.means
    assert gt_report.gate is not None and gt_report.gate.passed, gt_report.gate.summary()
    assert gt_report.gate.flicker_metric == "tae"
    assert means["refined"]["absrel"] == 0.0 and means["refined"]["delta1"] == 1.0
    assert means["refined"]["tae"] < 0.5 * means["teacher"]["tae"]
    static = gt_report.per_video["01-static-camera"]
    assert static["refined"]["static_flicker"] < 1e-6 < static["teacher"]["static_flicker"]
    # the moving camera has no static pixels: undefined there, and the mean is the static video's value
    assert math.isnan(gt_report.per_video["00-vr-head"]["teacher"]["static_flicker"])
    assert means["teacher"]["static_flicker"] == static["teacher"]["static_flicker"]


def test_teacher_copy_as_refined_fails_the_gate_for_lack_of_flicker_reduction(teacher_stores, tmp_path):
    refined = [copy_store(u, str(tmp_path / f"v{i}.refined.zarr"), depth="depth") for i, u in enumerate(teacher_stores)]
    report = evaluate_dataset(teacher_stores, refined, CFG, str(tmp_path / "eval"), baselines=False, plots=False)
    assert report.methods == ["teacher", "refined"]
    assert report.means["refined"] == report.means["teacher"]
    assert not report.gate.passed
    assert [r for r in report.gate.reasons if r.startswith("FAIL")] == [report.gate.reasons[-1]]
    assert "tae" in report.gate.reasons[-1] and "0.0% lower" in report.gate.reasons[-1]
    assert json.loads(Path(report.metrics_path).read_text())["gate"]["passed"] is False
    assert "## Gate: FAIL" in Path(report.report_path).read_text()


def test_optical_flow_is_computed_once_per_video_not_per_method(teacher_stores, tmp_path, monkeypatch):
    import steadydepth.video.optical_flow as of

    calls = []
    real_flow = of.optical_flow
    monkeypatch.setattr(of, "optical_flow", lambda *a: calls.append(1) or real_flow(*a))
    report = evaluate_dataset(teacher_stores, None, CFG, str(tmp_path / "eval"), plots=False)
    assert len(report.methods) == 4  # teacher and three baselines, each with opw and opw_sequence
    frames = [DepthStore.open(u).num_frames for u in teacher_stores]
    assert len(calls) == sum(n - 1 for n in frames)  # one flow per frame pair of each video


def test_files_hold_the_numbers_evaluate_sequence_gives(gt_report, teacher_stores):
    store = DepthStore.open(teacher_stores[1])  # 01-static-camera
    d = store.read(0, store.num_frames, ["depth", "K", "gt_depth", "pose", "rgb"])
    mask = static_mask_from_gt(d["gt_depth"], d["pose"], rel_tol=CFG.static_rel_tol)
    direct = evaluate_sequence(
        d["depth"], gt=d["gt_depth"], K=d["K"], poses=d["pose"], rgb=d["rgb"], static_mask=mask, cfg=CFG
    )
    direct["opw_sequence"] = opw(d["depth"], d["rgb"], normalize="sequence")

    saved = json.loads(Path(gt_report.metrics_path).read_text())
    teacher = saved["per_video"]["01-static-camera"]["teacher"]
    assert set(teacher) == set(direct)
    for key, value in direct.items():
        assert teacher[key] == pytest.approx(value, rel=1e-12), key
    assert saved["means"]["teacher"]["absrel"] == pytest.approx(gt_report.means["teacher"]["absrel"])
    assert saved["gate"]["passed"] is True and saved["gate"]["reasons"] == gt_report.gate.reasons
    assert saved["per_video"]["00-vr-head"]["teacher"]["static_flicker"] is None  # NaN -> null (strict JSON)

    md = Path(gt_report.report_path).read_text()
    assert "## Gate: PASS" in md and "## Dataset mean (2 videos)" in md
    for key in ("absrel", "delta1", "tae", "static_flicker", "opw", "opw_sequence"):
        assert fmt(direct[key]) in md, key


def test_without_ground_truth_only_flow_metrics_appear(teacher_stores, tmp_path):
    bare = copy_store(
        teacher_stores[0], str(tmp_path / "bare.teacher.zarr"), depth="depth", kind="teacher", keep=("rgb",)
    )
    report = evaluate_dataset([bare], None, CFG, str(tmp_path / "eval"), plots=False)
    assert report.gate is None and report.videos == ["bare"]
    for method in ("teacher", "ema", "motion_gated_ema", "temporal_median"):
        metrics = report.per_video["bare"][method]
        assert set(metrics) == FLOW_KEYS and all(math.isfinite(v) for v in metrics.values()), method
    assert "Gate: not run" in Path(report.report_path).read_text()


def test_baselines_reduce_flicker_on_the_static_camera(gt_report):
    static = gt_report.per_video["01-static-camera"]
    for method in ("ema", "motion_gated_ema", "temporal_median"):
        assert static[method]["static_flicker"] < 0.9 * static["teacher"]["static_flicker"], method
        assert static[method]["frame_change"] < static["teacher"]["frame_change"], method


def test_plots_are_written(gt_report):
    names = {Path(p).name for p in gt_report.plot_paths}
    expected = {"metrics-bars.png", "tradeoff.png"}
    for video in gt_report.videos:
        expected |= {f"{video}-pixel.png", f"{video}-maps.png"}
    assert names == expected
    for p in gt_report.plot_paths:
        data = Path(p).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000, p
    assert np.all([f"plots/{Path(p).name}" in Path(gt_report.report_path).read_text() for p in gt_report.plot_paths])
