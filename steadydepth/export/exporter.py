"""`export_video`: write the configured formats of one video's depth to `<out_dir>/<video name>/<format>/`.

Every format folder is written atomically (filled under a temporary name, then renamed) with an identity
marker inside (marker.py). A rerun skips the folders it already made from the same stores and settings, writes
the missing ones and, unless overwrite, refuses a folder made from anything else before any work starts.
Temporaries a killed run left behind are removed first, so an interrupted export resumes by running it again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from steadydepth.errors import InputError, SteadyDepthError
from steadydepth.export.config import EXPORT_FORMATS, ExportConfig
from steadydepth.export.formats import write_exr, write_npz, write_png16
from steadydepth.export.marker import folder_state, marker_files, settings_hash, write_marker
from steadydepth.export.pointcloud import write_point_clouds
from steadydepth.export.previews import open_preview_sources, write_previews
from steadydepth.export.safety import atomic_dir, inside, refuse_existing, remove_stale_temporaries
from steadydepth.export.source import ExportSource
from steadydepth.export.stereo import export_stereo_video, require_rgb
from storage import naming
from storage.depth_store import IDENTITY_KEYS, DepthStore

STEREO_FILE = "stereo_sbs.mp4"
EXPORT_VERSION = 2  # bump when what a format writes changes: part of the export's cache key and of each marker

# The ExportConfig fields that change what each folder format writes (the others say where, and whether to replace).
FORMAT_SETTINGS: dict[str, tuple[str, ...]] = {
    "npz": (),
    "exr": (),
    "png16": ("png16_scale",),
    "ply": ("ply_every",),
    "preview": ("preview_cmap", "preview_grid_frames"),
    "stereo": ("ipd_m", "convergence_m"),
}

Writer = Callable[[Path], list[Path]]  # fills a fresh folder, returns the files it wrote


def _folder_formats(config: ExportConfig) -> list[str]:
    """The configured formats written as folders, in order, without repeats (`zarr` is the store itself)."""
    return [f for f in dict.fromkeys(config.formats) if f != "zarr"]


def _store_identity(store: DepthStore | None) -> dict[str, Any] | None:
    return None if store is None else {key: store.attrs.get(key) for key in IDENTITY_KEYS}


def _settings(config: ExportConfig, fmt: str) -> dict[str, Any]:
    return {name: getattr(config, name) for name in FORMAT_SETTINGS[fmt]}


def folder_identity(config: ExportConfig, fmt: str, depth: DepthStore, rgb: DepthStore | None) -> dict[str, Any]:
    """What a format folder is made from: the code version, the format, the depth and RGB/teacher stores'
    identity attrs (source and config hashes, kind) and the settings of that format."""
    return {
        "export_version": EXPORT_VERSION,
        "format": fmt,
        "depth_store": _store_identity(depth),
        "rgb_store": _store_identity(rgb),
        "settings_hash": settings_hash(_settings(config, fmt)),
    }


def _open_rgb_store(rgb_store_uri: str | None, storage_options: Mapping[str, Any] | None) -> DepthStore | None:
    return None if rgb_store_uri is None else DepthStore.open(rgb_store_uri, storage_options, require_complete=False)


def export_complete(
    config: ExportConfig,
    depth_store_uri: str,
    rgb_store_uri: str | None = None,
    video_name: str | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> bool:
    """True when every configured format of this video is on disk, whole, and made from these stores with
    these settings (its marker matches): what `export_video` would skip."""
    try:
        depth = DepthStore.open(depth_store_uri, storage_options)
        rgb = _open_rgb_store(rgb_store_uri, storage_options)
    except SteadyDepthError:
        return False
    root = inside(config.out_dir, video_name or naming.video_name(depth_store_uri))
    return all(
        folder_state(root / fmt, folder_identity(config, fmt, depth, rgb)) == "done" for fmt in _folder_formats(config)
    )


def export_video(
    depth_store_uri: str,
    config: ExportConfig,
    *,
    rgb_store_uri: str | None = None,
    video_name: str | None = None,
    progress: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[str]]:
    """Export one video as `config` says; returns {format: [paths]} (for `zarr`, the store's URI: it is the
    export). Folders already made from the same stores and settings are kept and their files returned.

    depth_store_uri: the refined (or teacher) store; rgb_store_uri: the teacher store, for colours when the
    depth store has no RGB (and as the teacher side of `preview`). video_name overrides the name taken from the
    store URI; either way it is sanitised so that nothing is written outside config.out_dir. on_progress(done,
    total) is called as each format is finished (formats already there count at once).
    """
    source = ExportSource(depth_store_uri, rgb_store_uri, storage_options=storage_options)
    rgb = _open_rgb_store(rgb_store_uri, storage_options)
    root = inside(config.out_dir, video_name or source.name)
    identities = {fmt: folder_identity(config, fmt, source.depth, rgb) for fmt in _folder_formats(config)}
    states = {fmt: folder_state(root / fmt, identity) for fmt, identity in identities.items()}
    foreign = [root / fmt for fmt, state in states.items() if state == "foreign"]
    refuse_existing(foreign, config.overwrite)  # before any work
    writers = _writers(source, config, rgb_store_uri, progress, storage_options)
    for fmt in EXPORT_FORMATS:  # a killed run's half-written folders (the finished ones carry their marker)
        remove_stale_temporaries(root / fmt)
    stores = {"depth": source.depth.uri, "rgb": rgb_store_uri}  # in the marker for people; not compared
    written: dict[str, list[str]] = {}
    formats = list(dict.fromkeys(config.formats))
    for done, fmt in enumerate(formats, start=1):
        final = root / fmt
        if fmt == "zarr":
            written[fmt] = [source.depth.uri]  # the store is already the Zarr export
        elif states[fmt] == "done" and not config.overwrite:
            written[fmt] = [str(p) for p in marker_files(final)]
        else:
            info = {"stores": stores, "settings": _settings(config, fmt)}
            written[fmt] = _write_folder(final, writers[fmt], identities[fmt], config.overwrite, info)
        if on_progress is not None:
            on_progress(done, len(formats))
    return written


def _write_folder(
    final: Path, writer: Writer, identity: Mapping[str, Any], overwrite: bool, info: Mapping[str, Any]
) -> list[str]:
    """Fill the format folder under a temporary name, marker last, then rename it into place."""
    with atomic_dir(final, overwrite=overwrite) as tmp:
        names = [str(p.relative_to(tmp)) for p in writer(tmp)]
        write_marker(tmp, identity, names, **info)
    return [str(final / n) for n in names]


def _writers(
    source: ExportSource,
    config: ExportConfig,
    rgb_store_uri: str | None,
    progress: bool,
    storage_options: Mapping[str, Any] | None,
) -> dict[str, Writer]:
    """One folder writer per format; inputs that a configured format cannot use fail here, before any work."""
    formats = set(config.formats)
    writers: dict[str, Writer] = {
        "npz": lambda tmp: write_npz(source, tmp, progress=progress),
        "exr": lambda tmp: write_exr(source, tmp, progress=progress),
        "png16": lambda tmp: write_png16(source, tmp, scale=config.png16_scale, progress=progress),
        "ply": lambda tmp: write_point_clouds(source, tmp, every=config.ply_every, progress=progress),
        "stereo": lambda tmp: [
            Path(
                export_stereo_video(
                    source.depth.uri,
                    tmp / STEREO_FILE,
                    rgb_store_uri,
                    ipd_m=config.ipd_m,
                    convergence_m=config.convergence_m,
                    progress=progress,
                    storage_options=storage_options,
                )
            )
        ],
    }
    if "stereo" in formats:
        require_rgb(source)
    if "preview" in formats:
        teacher, refined = open_preview_sources(*_preview_stores(source, rgb_store_uri), storage_options)
        writers["preview"] = lambda tmp: write_previews(
            teacher,
            refined,
            tmp,
            cmap=config.preview_cmap,
            grid_frames=config.preview_grid_frames,
            progress=progress,
        )
    return writers


def _preview_stores(source: ExportSource, rgb_uri: str | None) -> tuple[str, str | None]:
    """(teacher, refined) URIs for previews: a refined depth store is compared against its teacher store."""
    if source.depth.attrs.get("kind") == "refined":
        if rgb_uri is None:
            raise InputError(f"preview of refined store {source.depth.uri} needs its teacher store as rgb_store_uri")
        return rgb_uri, source.depth.uri
    return source.depth.uri, None
