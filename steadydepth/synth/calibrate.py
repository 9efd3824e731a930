"""Calibration of the simulated teacher: per-frame accuracy and flicker against GT, on the synthetic benchmark and
on a real RGB-D clip (7-Scenes). `python -m steadydepth.synth.calibrate` prints the tables in
docs/synthetic-benchmark.md.

Metrics: valid = finite GT in (1e-3, 10) m, no alignment
(the teacher is metric); AbsRel and δ1 per frame, then averaged over frames.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from steadydepth.config import SyntheticTeacherConfig
from steadydepth.synth.generate import render_video
from steadydepth.synth.scenarios import SCENARIOS
from steadydepth.synth.teacher_model import simulate_teacher

SEVEN_SCENES = Path(__file__).resolve().parents[3] / "shared/data/7scenes-redkitchen-150-199"


def load_7scenes_depth(folder: str | Path) -> np.ndarray:
    """(T, H, W) float32 metres from `frame-*.depth.png` (uint16 mm; 0 and 65535 → NaN)."""
    files = sorted(Path(folder).glob("frame-*.depth.png"))
    if not files:
        raise FileNotFoundError(f"no frame-*.depth.png in {folder}")
    raw = np.stack([cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files])
    depth = raw.astype(np.float32) / 1000.0
    depth[(raw == 0) | (raw == 65535)] = np.nan
    return depth


def frame_metrics(pred: np.ndarray, gt: np.ndarray, max_depth: float = 10.0) -> tuple[float, float]:
    """(AbsRel, δ1) of one frame over valid GT pixels, no alignment."""
    valid = np.isfinite(gt) & (gt > 1e-3) & (gt < max_depth)
    p, g = pred[valid].astype(np.float64), gt[valid].astype(np.float64)
    abs_rel = float(np.mean(np.abs(p - g) / g))
    delta1 = float(np.mean(np.maximum(p / g, g / p) < 1.25))
    return abs_rel, delta1


def frame_to_frame_change(depth: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean over t of mean |D[t+1] − D[t]| / D[t] over pixels finite in both (and in `mask` if given)."""
    values = []
    for a, b in zip(depth[:-1], depth[1:], strict=True):
        ok = np.isfinite(a) & np.isfinite(b) & (a > 0)
        if mask is not None:
            ok &= mask
        values.append(np.mean(np.abs(b[ok] - a[ok]) / a[ok]))
    return float(np.mean(values))


def run_teacher(gt: np.ndarray, video_key: str, params: SyntheticTeacherConfig) -> tuple[np.ndarray, np.ndarray]:
    """Teacher depth and confidence (T, H, W) for a GT video."""
    out = [simulate_teacher(g, video_key=video_key, frame=t, params=params) for t, g in enumerate(gt)]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def evaluate(gt: np.ndarray, pred: np.ndarray, conf: np.ndarray) -> dict[str, float]:
    """AbsRel, δ1 (frame means), worst-frame AbsRel, and the Spearman correlation of confidence with |rel. error|."""
    per_frame = np.array([frame_metrics(p, g) for p, g in zip(pred, gt, strict=True)])
    valid = np.isfinite(gt) & (gt > 1e-3) & (gt < 10)
    err = np.abs(pred[valid] - gt[valid]) / gt[valid]
    c = conf[valid]
    step = max(1, len(err) // 200_000)  # subsample for a fast rank correlation
    rank_e = np.argsort(np.argsort(err[::step])).astype(np.float64)
    rank_c = np.argsort(np.argsort(c[::step])).astype(np.float64)
    spearman = float(np.corrcoef(rank_e, rank_c)[0, 1])
    return {
        "abs_rel": float(per_frame[:, 0].mean()),
        "delta1": float(per_frame[:, 1].mean()),
        "worst_abs_rel": float(per_frame[:, 0].max()),
        "conf_spearman": spearman,
    }


def static_flicker(depth: np.ndarray, mask: np.ndarray) -> float:
    """Mean over `mask` pixels of temporal std / temporal mean (per pixel, then averaged over the pixels)."""
    d = depth[:, mask].astype(np.float64)
    return float(np.mean(d.std(axis=0) / d.mean(axis=0)))


def _row(name: str, m: dict[str, float], flicker: str) -> str:
    return (
        f"| {name} | {m['abs_rel']:.4f} | {m['delta1']:.4f} | {m['worst_abs_rel']:.4f} | "
        f"{m['conf_spearman']:.2f} | {flicker} |"
    )


def main() -> None:
    """Print the calibration table (markdown) for the default SyntheticTeacherConfig."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seven-scenes", type=Path, default=SEVEN_SCENES)
    args = parser.parse_args()
    params = SyntheticTeacherConfig()
    print("| video | AbsRel | δ1 | worst-frame AbsRel | Spearman(conf, abs. error) | flicker GT → teacher |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = []
    for index in range(len(SCENARIOS)):
        video = render_video(index, n_frames=args.frames, size=(args.height, args.width), seed=args.seed)
        pred, conf = run_teacher(video.depth, video.plan.name, params)
        m = evaluate(video.depth, pred, conf)
        rows.append(m)
        flicker = ""
        if video.plan.scenario.path == "static":
            static = np.all(video.depth == video.depth[:1], axis=0)  # pixels the moving object never touches
            flicker = (
                f"frame-to-frame change on static pixels {frame_to_frame_change(video.depth, static):.4f} → "
                f"{frame_to_frame_change(pred, static):.4f}; std/mean {static_flicker(video.depth, static):.4f} → "
                f"{static_flicker(pred, static):.4f}"
            )
        print(_row(video.plan.name, m, flicker))
    print(_row("mean of the synthetic videos", {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}, ""))
    if args.seven_scenes.is_dir():
        gt = load_7scenes_depth(args.seven_scenes)
        pred, conf = run_teacher(gt, args.seven_scenes.name, params)
        change_gt, change_pred = frame_to_frame_change(gt), frame_to_frame_change(pred)
        flicker = (
            f"frame-to-frame change {change_gt:.4f} → {change_pred:.4f} (×{change_pred / change_gt:.1f}; "
            "GT's includes the slow hand-held motion and sensor noise)"
        )
        print(
            _row(
                f"7-Scenes redkitchen 150–199 ({gt.shape[0]} frames, {gt.shape[2]}×{gt.shape[1]})",
                evaluate(gt, pred, conf),
                flicker,
            )
        )
    else:
        print(f"(7-Scenes clip not found at {args.seven_scenes}; skipped)")


if __name__ == "__main__":
    main()
