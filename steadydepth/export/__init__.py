"""Exports users take away: depth as npz / EXR / 16-bit PNG / PLY (metric, with K), previews that show
flicker, and stereo side-by-side video for VR. Formats and how to read them back: docs/export-formats.md.

    export_video(depth_store_uri, ExportConfig(out_dir=..., formats=[...]), rgb_store_uri=None, ...)
    export_complete(config, depth_store_uri, rgb_store_uri=None) -> bool
    export_previews(teacher_store_uri, refined_store_uri, out_dir, ...)
    render_stereo(rgb, depth, K, ipd_m=0.063, convergence_m=None) -> (left, right)
    export_stereo_video(depth_store_uri, out_path, rgb_store_uri=None, ...)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from steadydepth.export.config import EXPORT_FORMATS, ExportConfig

if TYPE_CHECKING:
    from steadydepth.export.exporter import export_complete, export_video
    from steadydepth.export.previews import export_previews
    from steadydepth.export.stereo import export_stereo_video, render_stereo

# Loaded on first use: the run config imports steadydepth.export.config, which must not pull in OpenCV,
# matplotlib, OpenEXR and PyAV with it.
_LAZY = {
    "export_complete": "steadydepth.export.exporter",
    "export_video": "steadydepth.export.exporter",
    "export_previews": "steadydepth.export.previews",
    "export_stereo_video": "steadydepth.export.stereo",
    "render_stereo": "steadydepth.export.stereo",
}

__all__ = [
    "EXPORT_FORMATS",
    "ExportConfig",
    "export_complete",
    "export_previews",
    "export_stereo_video",
    "export_video",
    "render_stereo",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
