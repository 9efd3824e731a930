"""Previews that make flicker visible: a side-by-side mp4 (RGB | teacher | refined), a grid PNG of sampled
frames and a plot of one pixel's depth over time. All depth panels share one fixed colour scale per video
(colour_scale.py). Written in one streamed pass over the stores.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from tqdm import tqdm

from steadydepth.errors import InputError
from steadydepth.export.colour_scale import DepthColourScale, fixed_scale
from steadydepth.export.safety import atomic_dir, inside, refuse_existing
from steadydepth.export.source import ExportFrame, ExportSource
from steadydepth.video.encode import write_video

PREVIEW_FILES = ("side_by_side.mp4", "grid.png", "pixel_trace.png")


def _label(panel: np.ndarray, text: str) -> np.ndarray:
    """Name a panel in its corner (only when the frame is big enough for text not to hide it)."""
    if panel.shape[0] < 96:
        return panel
    panel = panel.copy()  # the unlabelled panel may also go into the grid
    scale = max(0.4, panel.shape[0] / 600)
    org = (6, int(22 * scale) + 4)
    cv2.putText(panel, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(panel, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return panel


def _even(image: np.ndarray, max_width: int) -> np.ndarray:
    """Shrink to at most max_width and pad to even H and W (yuv420p needs both even)."""
    h, w = image.shape[:2]
    if w > max_width:
        s = max_width / w
        image = cv2.resize(image, (max_width, max(2, round(h * s))), interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)))


def _panels(
    teacher: ExportFrame, refined: ExportFrame | None, colours: DepthColourScale
) -> list[tuple[str, np.ndarray]]:
    rgb = teacher.rgb if teacher.rgb is not None else np.full((*teacher.depth.shape, 3), 64, np.uint8)
    panels = [("RGB", np.array(rgb)), ("teacher", colours(teacher.depth))]
    if refined is not None:
        panels.append(("refined", colours(refined.depth)))
    return panels


def _sample_positions(num_frames: int, count: int) -> set[int]:
    return {int(t) for t in np.linspace(0, num_frames - 1, min(count, num_frames)).round()}


def _plot_grid(
    path: Path, rows: list[tuple[ExportFrame, list[tuple[str, np.ndarray]]]], colours: DepthColourScale
) -> None:
    names = [name for name, _ in rows[0][1]]
    h, w = rows[0][1][0][1].shape[:2]
    cell = 2.6
    fig = Figure(figsize=(cell * len(names) * w / max(h, w) + 1.2, cell * len(rows) * h / max(h, w) + 0.6), dpi=110)
    axes = fig.subplots(len(rows), len(names), squeeze=False)
    for r, (frame, panels) in enumerate(rows):
        for c, (name, image) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"frame {frame.frame_index}\nt={frame.timestamp:.2f}s", fontsize=8)
    # Colourbar over inverse depth, ticks labelled in metres: the one scale every depth panel uses.
    mappable = ScalarMappable(Normalize(1 / colours.far_m, 1 / colours.near_m), cmap=colours.cmap)
    bar = fig.colorbar(mappable, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
    ticks = np.geomspace(colours.near_m, colours.far_m, 5)
    bar.set_ticks(1 / ticks, labels=[f"{t:.2g} m" for t in ticks])
    bar.set_label("depth (fixed scale for the whole video)", fontsize=8)
    fig.savefig(path, bbox_inches="tight")


def _plot_trace(path: Path, name: str, pixel: tuple[int, int], traces: dict[str, list[float]], t: list[float]) -> None:
    fig = Figure(figsize=(7, 3.2), dpi=110)
    ax = fig.subplots()
    styles = {
        "teacher": dict(color="tab:orange", lw=1.0),
        "refined": dict(color="tab:blue", lw=1.6),
        "GT": dict(color="black", lw=1.0, ls="--"),
    }
    for label, values in traces.items():
        ax.plot(t, values, label=label, **styles.get(label, {}))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("depth (m)")
    ax.set_title(f"{name}: depth at pixel (x={pixel[1]}, y={pixel[0]})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")


def open_preview_sources(
    teacher_store_uri: str, refined_store_uri: str | None, storage_options: Mapping[str, Any] | None = None
) -> tuple[ExportSource, ExportSource | None]:
    """The teacher and (optional) refined store of a preview, checked to cover the same frames."""
    teacher = ExportSource(teacher_store_uri, storage_options=storage_options)
    refined = ExportSource(refined_store_uri, storage_options=storage_options) if refined_store_uri else None
    if refined is not None and (refined.num_frames, refined.size) != (teacher.num_frames, teacher.size):
        raise InputError(
            f"refined store {refined_store_uri} ({refined.num_frames} frames of {refined.size}) does not match "
            f"teacher store {teacher_store_uri} ({teacher.num_frames} frames of {teacher.size})"
        )
    return teacher, refined


def _trace_pixel(teacher: ExportSource, pixel: tuple[int, int] | None) -> tuple[int, int]:
    h, w = teacher.size
    y, x = pixel if pixel is not None else (h // 2, w // 2)
    if not (0 <= y < h and 0 <= x < w):
        raise InputError(f"preview pixel (y={y}, x={x}) is outside the {h}x{w} frame; pick one inside")
    return y, x


def export_previews(
    teacher_store_uri: str,
    refined_store_uri: str | None,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    video_name: str | None = None,
    cmap: str = "turbo",
    grid_frames: int = 6,
    pixel: tuple[int, int] | None = None,
    max_width: int = 3840,
    progress: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Write `<out_dir>/<video>/preview/{side_by_side.mp4, grid.png, pixel_trace.png}`; returns their paths.

    Colours come from one fixed inverse-depth scale per video (robust range of the teacher); `pixel` is the
    (y, x) whose depth over time is plotted (default the centre). RGB comes from the teacher store (grey when
    it has none); GT depth is plotted when the teacher store has it.
    """
    teacher, refined = open_preview_sources(teacher_store_uri, refined_store_uri, storage_options)
    folder = inside(out_dir, video_name or teacher.name, "preview")
    refuse_existing([folder], overwrite)
    _trace_pixel(teacher, pixel)
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        write_previews(
            teacher,
            refined,
            tmp,
            cmap=cmap,
            grid_frames=grid_frames,
            pixel=pixel,
            max_width=max_width,
            progress=progress,
        )
    return {name.split(".")[0]: str(folder / name) for name in PREVIEW_FILES}


def write_previews(
    teacher: ExportSource,
    refined: ExportSource | None,
    folder: Path,
    *,
    cmap: str = "turbo",
    grid_frames: int = 6,
    pixel: tuple[int, int] | None = None,
    max_width: int = 3840,
    progress: bool = True,
) -> list[Path]:
    """Fill an (empty) folder with the PREVIEW_FILES of `export_previews`; returns their paths."""
    y, x = _trace_pixel(teacher, pixel)
    colours = fixed_scale(teacher, cmap=cmap)
    sampled = _sample_positions(teacher.num_frames, grid_frames)
    has_gt = "gt_depth" in teacher.depth.variables
    traces: dict[str, list[float]] = {"teacher": []}
    traces.update({"refined": []} if refined else {})
    traces.update({"GT": []} if has_gt else {})
    times: list[float] = []
    grid_rows: list[tuple[ExportFrame, list[tuple[str, np.ndarray]]]] = []

    def composites() -> Iterator[np.ndarray]:
        refined_frames = refined.frames(with_rgb=False) if refined else None
        for tf in tqdm(
            teacher.frames(with_gt=has_gt),
            total=teacher.num_frames,
            desc=f"{teacher.name} preview",
            unit="frame",
            disable=not progress,
        ):
            rf = next(refined_frames) if refined_frames else None
            times.append(tf.timestamp)
            traces["teacher"].append(float(tf.depth[y, x]))
            if rf is not None:
                traces["refined"].append(float(rf.depth[y, x]))
            if has_gt:
                traces["GT"].append(float(tf.gt_depth[y, x]))
            panels = _panels(tf, rf, colours)
            if tf.position in sampled:
                extra = [("GT", colours(tf.gt_depth))] if has_gt else []
                grid_rows.append((tf, [(n, _shrink(p, 480)) for n, p in panels + extra]))
            yield _even(np.concatenate([_label(p, n) for n, p in panels], axis=1), max_width)

    paths = [folder / name for name in PREVIEW_FILES]
    write_video(paths[0], composites(), teacher.fps)
    _plot_grid(paths[1], grid_rows, colours)
    _plot_trace(paths[2], teacher.name, (y, x), traces, times)
    return paths


def _shrink(image: np.ndarray, long_edge: int) -> np.ndarray:
    h, w = image.shape[:2]
    if max(h, w) <= long_edge:
        return image
    s = long_edge / max(h, w)
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
