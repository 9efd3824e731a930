"""The export's config section and the one list of export formats.

Composed into the run's `Config` as `export` (steadydepth/config.py), so YAML and `--set export.FIELD=...` reach
it there. Kept free of numpy / OpenCV so the config (and the CLI's `--formats` choices) can import it cheaply.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from steadydepth.config_base import Section

# Every export format, in the order they are written; the config, the exporter and the CLI all take them from here.
EXPORT_FORMATS: tuple[str, ...] = ("zarr", "npz", "exr", "png16", "ply", "preview", "stereo")

# Literal[tuple] is Literal[*names]: the config validates against the same names (built at import, not spelled out)
ExportFormat = Literal[EXPORT_FORMATS]  # type: ignore[valid-type]


class ExportConfig(Section):
    """What `steadydepth.export` writes (formats and their units: docs/export-formats.md)."""

    formats: list[ExportFormat] = Field(default=["zarr"], description="what to write (docs/export-formats.md)")
    out_dir: str = Field(default=".steadydepth/exports", description="local folder; <out_dir>/<video>/<format>/")
    overwrite: bool = Field(default=False, description="replace existing exports instead of refusing")
    ply_every: int = Field(default=1, ge=1, description="write a point cloud for every k-th frame")
    png16_scale: float | None = Field(
        default=None, gt=0, description="metres per 16-bit PNG step; None = per video, so the max depth fits 65535"
    )
    preview_cmap: str = Field(default="turbo", description="matplotlib colormap of the inverse-depth previews")
    preview_grid_frames: int = Field(default=6, ge=1, le=64, description="sampled frames in the preview grid PNG")
    ipd_m: float = Field(default=0.063, gt=0, description="stereo: interpupillary distance, metres")
    convergence_m: float | None = Field(
        default=None, gt=0, description="stereo: depth shown at screen distance (zero disparity); None = infinity"
    )

    @field_validator("preview_cmap")
    @classmethod
    def _known_colormap(cls, name: str) -> str:
        from matplotlib import colormaps  # only when set: matplotlib is slow to import

        if name not in colormaps:
            raise ValueError(f"unknown matplotlib colormap {name!r}; e.g. turbo, viridis, magma, inferno")
        return name
