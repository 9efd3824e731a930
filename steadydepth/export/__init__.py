"""Exports users take away: depth as npz / EXR / 16-bit PNG / PLY (metric, with K), previews that show
flicker, and stereo side-by-side video for VR. Formats and how to read them back: docs/export-formats.md.

    export_video(depth_store_uri, out_dir, formats=[...], rgb_store_uri=None, overwrite=False, ...)
    export_previews(teacher_store_uri, refined_store_uri, out_dir, ...)
    render_stereo(rgb, depth, K, ipd_m=0.063, convergence_m=None) -> (left, right)
    export_stereo_video(depth_store_uri, out_path, rgb_store_uri=None, ...)
"""

from steadydepth.export.exporter import FORMATS, export_from_config, export_video
from steadydepth.export.previews import export_previews
from steadydepth.export.stereo import export_stereo_video, render_stereo

__all__ = [
    "FORMATS",
    "export_from_config",
    "export_previews",
    "export_stereo_video",
    "export_video",
    "render_stereo",
]
