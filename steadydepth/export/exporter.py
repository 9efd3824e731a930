"""`export_video`: write the chosen formats of one video's depth to `<out_dir>/<video name>/<format>/`.

Every format folder is written atomically (filled under a temporary name, then renamed) and existing ones are
refused before any work starts unless overwrite=True.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from steadydepth.config import ExportConfig
from steadydepth.errors import InputError
from steadydepth.export.formats import write_exr, write_npz, write_png16
from steadydepth.export.pointcloud import write_point_clouds
from steadydepth.export.previews import export_previews
from steadydepth.export.safety import atomic_dir, inside, refuse_existing
from steadydepth.export.source import ExportSource
from steadydepth.export.stereo import export_stereo_video

FORMATS = ("zarr", "npz", "exr", "png16", "ply", "preview", "stereo")
STEREO_FILE = "stereo_sbs.mp4"


def export_video(
    depth_store_uri: str,
    out_dir: str | Path,
    *,
    formats: Sequence[str],
    rgb_store_uri: str | None = None,
    overwrite: bool = False,
    video_name: str | None = None,
    ply_every: int = 1,
    png16_scale: float | None = None,
    preview_cmap: str = "turbo",
    preview_grid_frames: int = 6,
    ipd_m: float = 0.063,
    convergence_m: float | None = None,
    progress: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, list[str]]:
    """Export one video; returns {format: [paths written]} (for `zarr`, the store's URI: it is the export).

    depth_store_uri: the refined (or teacher) store; rgb_store_uri: the teacher store, for colours when the
    depth store has no RGB (and as the teacher side of `preview`). video_name overrides the name taken from the
    store URI; either way it is sanitised so that nothing is written outside out_dir.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InputError(f"unknown export formats {unknown}; choose from {list(FORMATS)}")
    if ply_every < 1:
        raise InputError(f"ply_every must be >= 1, got {ply_every}")
    source = ExportSource(depth_store_uri, rgb_store_uri, storage_options=storage_options)
    root = inside(out_dir, video_name or source.name)
    wanted = list(dict.fromkeys(formats))  # keep order, drop repeats
    refuse_existing([root / f for f in wanted if f != "zarr"], overwrite)  # before any work

    folder_writers: dict[str, Callable[[Path], list[Path]]] = {
        "npz": lambda tmp: write_npz(source, tmp, progress=progress),
        "exr": lambda tmp: write_exr(source, tmp, progress=progress),
        "png16": lambda tmp: write_png16(source, tmp, scale=png16_scale, progress=progress),
        "ply": lambda tmp: write_point_clouds(source, tmp, every=ply_every, progress=progress),
    }
    written: dict[str, list[str]] = {}
    for fmt in wanted:
        if fmt == "zarr":
            written[fmt] = [source.depth.uri]  # the store is already the Zarr export
        elif fmt in folder_writers:
            final = root / fmt
            with atomic_dir(final, overwrite=overwrite) as tmp:
                names = [p.relative_to(tmp) for p in folder_writers[fmt](tmp)]
            written[fmt] = [str(final / n) for n in names]
        elif fmt == "preview":
            teacher, refined = _preview_stores(source, depth_store_uri, rgb_store_uri)
            paths = export_previews(
                teacher,
                refined,
                out_dir,
                overwrite=overwrite,
                video_name=root.name,
                cmap=preview_cmap,
                grid_frames=preview_grid_frames,
                progress=progress,
                storage_options=storage_options,
            )
            written[fmt] = list(paths.values())
        elif fmt == "stereo":
            final = root / fmt
            with atomic_dir(final, overwrite=overwrite) as tmp:
                export_stereo_video(
                    depth_store_uri,
                    tmp / STEREO_FILE,
                    rgb_store_uri,
                    ipd_m=ipd_m,
                    convergence_m=convergence_m,
                    progress=progress,
                    storage_options=storage_options,
                )
            written[fmt] = [str(final / STEREO_FILE)]
    return written


def _preview_stores(source: ExportSource, depth_uri: str, rgb_uri: str | None) -> tuple[str, str | None]:
    """(teacher, refined) URIs for previews: a refined depth store is compared against its teacher store."""
    if source.depth.attrs.get("kind") == "refined":
        if rgb_uri is None:
            raise InputError(f"preview of refined store {depth_uri} needs its teacher store as rgb_store_uri")
        return rgb_uri, depth_uri
    return depth_uri, None


def export_from_config(
    config: ExportConfig,
    depth_store_uri: str,
    rgb_store_uri: str | None = None,
    *,
    progress: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, list[str]]:
    """`export_video` with every option taken from the `export:` section of the run config."""
    return export_video(
        depth_store_uri,
        config.out_dir,
        formats=config.formats,
        rgb_store_uri=rgb_store_uri,
        overwrite=config.overwrite,
        ply_every=config.ply_every,
        png16_scale=config.png16_scale,
        preview_cmap=config.preview_cmap,
        preview_grid_frames=config.preview_grid_frames,
        ipd_m=config.ipd_m,
        convergence_m=config.convergence_m,
        progress=progress,
        storage_options=storage_options,
    )
