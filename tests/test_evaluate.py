"""evaluate_dataset end to end on tiny synthetic-teacher stores: gate, report files, no-GT mode, baselines, plots,
and the teacher-agreement check that refuses a drifting model without GT."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from evaluation.agreement import store_agreement, teacher_agreement
from evaluation.config import EvaluateConfig
from evaluation.evaluate import evaluate_dataset
from evaluation.metric_names import AGREEMENT_METRICS
from evaluation.metrics import evaluate_sequence, opw, static_mask_from_gt
from evaluation.report import fmt
from steadydepth.config import load_config
from storage.depth_store import DepthStore

CFG = EvaluateConfig(max_depth=10.0)
FLOW_KEYS = {"opw", "opw_sequence", "frame_change", *AGREEMENT_METRICS}  # what needs no GT


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
    # with GT, agreement is an extra check: the GT sits off the teacher by less than the teacher's own scale band
    assert [r.split()[1] for r in gt_report.gate.reasons] == ["AbsRel", "delta1", "teacher", "tae"]
    assert gt_report.gate.reasons[2].startswith("PASS teacher agreement (")
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
    assert set(teacher) == set(direct) | set(AGREEMENT_METRICS)
    assert teacher["scale_bias"] == teacher["scale_drift"] == 0  # the teacher agrees with itself
    band = teacher_agreement(d["depth"], d["depth"], window=CFG.agreement_window)["teacher_band"]
    assert teacher["teacher_band"] == pytest.approx(band, rel=1e-12)
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


# ------------------------------------------------------------------------ teacher agreement without GT

T, H, W, CHUNK = 40, 32, 40, 8


def _teacher_depth(scale_jitter: float, seed: int = 0) -> np.ndarray:
    """A still scene seen by a teacher with per-frame global scale jitter and 2 % per-pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    scene = 1.0 + 4.0 * (yy / H) + 0.5 * np.sin(xx / 3.0)
    log_noise = scale_jitter * rng.standard_normal((T, 1, 1)) + 0.02 * rng.standard_normal((T, H, W))
    return (scene * np.exp(log_noise)).astype(np.float32)


def _ema(depth: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """An honest smoother: a causal EMA in log depth."""
    out, acc = np.empty_like(depth), np.log(depth[0].astype(np.float64))
    for t in range(len(depth)):
        acc = alpha * np.log(depth[t]) + (1 - alpha) * acc
        out[t] = np.exp(acc)
    return out


def write_store(uri: str, depth: np.ndarray, kind: str) -> str:
    """A store of `depth` (T, H, W) without GT, pose or RGB, in chunks of CHUNK frames."""
    n = len(depth)
    attrs = {"source_hash": "agreement", "config_hash": kind, "kind": kind}
    store = DepthStore.create(uri, num_frames=n, height=H, width=W, chunk_frames=CHUNK, attrs=attrs)
    K = np.tile(np.array([[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]], dtype=np.float32), (n, 1, 1))
    for i in range(store.num_chunks):
        a, b = store.chunk_bounds(i)
        store.write_chunk(i, depth=depth[a:b], K=K[a:b], timestamp=np.arange(a, b) / 30.0, frame_index=np.arange(a, b))
    store.finalize()
    return uri


RAMP = np.arange(T, dtype=np.float64)[:, None, None]
MODELS = {  # "refined" depth made from the teacher's
    "honest": lambda d: _ema(d),
    "over-scaled": lambda d: 1.1 * _ema(d),  # a constant 10 % scale error
    "drifting": lambda d: _ema(d) * np.exp(0.004 * RAMP),  # 0.4 % a frame: +17 % by the last frame
    "zero-mean drift": lambda d: _ema(d) * np.exp(0.005 * (RAMP - (T - 1) / 2)),  # −10 % .. +10 %, no mean bias
}


def _gate(tmp_path: Path, model: str, scale_jitter: float, cfg: EvaluateConfig | None = None):
    teacher = _teacher_depth(scale_jitter)
    t_uri = write_store(str(tmp_path / "clip.teacher.zarr"), teacher, "teacher")
    r_uri = write_store(str(tmp_path / "clip.refined.zarr"), MODELS[model](teacher).astype(np.float32), "refined")
    cfg = cfg or EvaluateConfig()
    return evaluate_dataset([t_uri], [r_uri], cfg, str(tmp_path / "eval"), baselines=False, plots=False)


def _agreement_reason(report) -> str:
    (reason,) = [r for r in report.gate.reasons if "teacher agreement" in r]
    return reason


def test_an_honest_smoother_passes_without_ground_truth(tmp_path):
    report = _gate(tmp_path, "honest", scale_jitter=0.003)
    assert report.gate.passed, report.gate.summary()
    assert report.gate.flicker_metric == "frame_change"  # no GT: flicker is frame change, accuracy is agreement
    assert _agreement_reason(report).startswith("PASS teacher agreement (clip)")
    row = report.per_video["clip"]["refined"]
    assert abs(row["scale_bias"]) < 0.002 and row["scale_drift"] < 0.003 and row["teacher_band"] < 0.01


@pytest.mark.parametrize("model", ["over-scaled", "drifting", "zero-mean drift"])
def test_a_drifting_model_is_refused_without_ground_truth(tmp_path, model):
    report = _gate(tmp_path, model, scale_jitter=0.003)
    assert not report.gate.passed
    fails = [r for r in report.gate.reasons if r.startswith("FAIL")]
    assert fails == [_agreement_reason(report)], report.gate.reasons  # it is steadier: only the drift gives it away
    row = report.per_video["clip"]["refined"]
    limit = max(3 * row["teacher_band"], 0.01)
    assert row["scale_drift"] > 0.02 > limit
    assert f"scale drift {row['scale_drift']:.4f} > {limit:.4f} (limit max(3 × teacher band" in fails[0]
    if model == "zero-mean drift":  # no mean bias: only the windowed drift sees it
        assert abs(row["scale_bias"]) < 0.002 and f"<= {limit:.4f}, scale drift" in fails[0]
    md = Path(report.report_path).read_text()
    assert "## Gate: FAIL" in md and fails[0] in md and "scale drift (log)" in md
    saved = json.loads(Path(report.metrics_path).read_text())
    assert saved["gate"]["reasons"] == report.gate.reasons
    assert saved["per_video"]["clip"]["refined"]["scale_drift"] == pytest.approx(row["scale_drift"])


def test_the_band_adapts_so_the_same_offset_passes_against_a_much_noisier_teacher(tmp_path):
    # the 10 % offset is about what the noisy teacher's scale jumps between frames: below what it can resolve
    noisy = _gate(tmp_path / "noisy", "over-scaled", scale_jitter=0.15)
    row = noisy.per_video["clip"]["refined"]
    assert row["teacher_band"] > 0.05 and abs(row["scale_bias"]) < 2 * row["teacher_band"]
    assert noisy.gate.passed, noisy.gate.summary()
    strict = _gate(tmp_path / "strict", "over-scaled", scale_jitter=0.15, cfg=EvaluateConfig(agreement_k=0.5))
    assert not strict.gate.passed and _agreement_reason(strict).startswith("FAIL")


def test_store_agreement_streams_chunks_and_matches_the_arrays(tmp_path, monkeypatch):
    teacher = _teacher_depth(0.03, seed=2)
    refined = MODELS["drifting"](teacher).astype(np.float32)
    t_uri = write_store(str(tmp_path / "a.teacher.zarr"), teacher, "teacher")
    r_uri = write_store(str(tmp_path / "a.refined.zarr"), refined, "refined")
    spans = []
    real_read = DepthStore.read
    monkeypatch.setattr(DepthStore, "read", lambda self, a, b, *v: spans.append(b - a) or real_read(self, a, b, *v))
    streamed = store_agreement(t_uri, r_uri, window=10)
    assert spans and max(spans) == CHUNK  # one chunk at a time, never the whole video
    direct = teacher_agreement(teacher, refined, window=10)
    assert streamed == pytest.approx(direct, rel=1e-12)
    assert streamed["scale_bias"] == pytest.approx(0.004 * (T - 1) / 2, abs=0.003)
