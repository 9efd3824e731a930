"""The previews as one markdown page for the Prefect UI: per video, small PNG thumbnails of `grid.png` and
`pixel_trace.png` embedded as `data:` URIs (the UI's markdown renderer shows them; a `file://` link does not open
from an http page) and the paths of the full-size preview files.

Thumbnails are palette PNGs a few tens of KB each, and only the first `MAX_EMBEDDED_VIDEOS` videos get them, so
the page stays well under a few MB however many videos were exported.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

THUMBNAIL_WIDTH = 480  # px; the UI's content column is ~800 px wide
THUMBNAIL_COLOURS = 64  # a 64-colour palette: ~40 KB for a 480 px grid instead of ~180 KB in full colour
MAX_EMBEDDED_VIDEOS = 12
EMBEDDED = {  # preview file -> what its thumbnail shows (alt text)
    "grid.png": "sampled frames (RGB, teacher, refined; one colour scale)",
    "pixel_trace.png": "depth of one pixel over time",
}


def thumbnail_png(path: str | Path, width: int = THUMBNAIL_WIDTH) -> bytes:
    """A PNG of the image at `path`, shrunk to at most `width` px wide and reduced to a small palette."""
    with Image.open(path) as image:
        small = image.convert("RGB")
    small.thumbnail((width, small.height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    small.quantize(THUMBNAIL_COLOURS).save(out, format="PNG", optimize=True)
    return out.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _preview_folders(exports: Mapping[str, Mapping[str, Sequence[str]]]) -> dict[Path, list[str]]:
    """{`<video>/preview` folder: its file names} of the exports ({store: {format: [paths]}}), in order."""
    folders: dict[Path, list[str]] = {}
    for files in exports.values():
        for path in map(Path, files.get("preview", [])):
            folders.setdefault(path.parent, []).append(path.name)
    return folders


def _video_section(folder: Path, names: list[str], embed: bool) -> list[str]:
    video = folder.parent.name
    lines = [f"## {video}", ""]
    for name, shows in EMBEDDED.items():
        if not embed or name not in names:
            continue
        try:
            lines += [f"![{video}: {shows}]({_data_uri(thumbnail_png(folder / name))})", ""]
        except (OSError, UnidentifiedImageError):  # a preview deleted or replaced since: list its path only
            lines += [f"({name} could not be read)", ""]
    lines += [f"Full size in `{folder.resolve()}`: " + ", ".join(f"`{n}`" for n in names), ""]
    return lines


def previews_markdown(exports: Mapping[str, Mapping[str, Sequence[str]]]) -> str | None:
    """The page for `{store: {format: [paths]}}` (what `export_video` returns, per store); None without previews."""
    folders = _preview_folders(exports)
    if not folders:
        return None
    lines = ["# Previews", ""]
    for i, (folder, names) in enumerate(folders.items()):
        lines += _video_section(folder, names, embed=i < MAX_EMBEDDED_VIDEOS)
    if len(folders) > MAX_EMBEDDED_VIDEOS:
        lines += [f"Thumbnails of the first {MAX_EMBEDDED_VIDEOS} of {len(folders)} videos only.", ""]
    return "\n".join(lines)
