"""Exports: round trips of every format against the store, padding cropped, K and units recorded, previews with
one fixed colour scale, overwrite refusal, atomic writes, resuming after a kill (identity markers) and output
paths that cannot escape out_dir."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from steadydepth.cli import build_parser
from steadydepth.config import load_config
from steadydepth.errors import ConfigError, InputError
from steadydepth.export import export_complete, export_previews, export_video
from steadydepth.export import pointcloud as pointcloud_module
from steadydepth.export import previews as previews_module
from steadydepth.export.config import EXPORT_FORMATS, ExportConfig
from steadydepth.export.exporter import EXPORT_VERSION, FORMAT_SETTINGS
from steadydepth.export.formats import decode_png16, encode_png16, read_exr_depth
from steadydepth.export.marker import MARKER
from steadydepth.export.pointcloud import read_ply
from steadydepth.export.preview_page import THUMBNAIL_WIDTH, previews_markdown
from storage.depth_store import DepthStore
from storage.naming import safe_name, store_uri

T, H, W = 6, 20, 28  # stored (padded) size
PAD = (0, 2, 0, 4)  # top, bottom, left, right: the picture is 18 x 24
h, w = H - PAD[1], W - PAD[3]
K0 = np.array([[40.0, 0.0, 11.5], [0.0, 42.0, 8.5], [0.0, 0.0, 1.0]], dtype=np.float32)


def ramp_depth(t: int) -> np.ndarray:
    """A per-pixel ramp 1..3 m that changes slightly with t; padding holds 99 m so an uncropped export shows."""
    yy, xx = np.mgrid[0:H, 0:W]
    d = 1.0 + 2.0 * (xx / W) + 0.3 * (yy / H) + 0.01 * t
    d[h:, :] = 99.0
    d[:, w:] = 99.0
    return d.astype(np.float32)


def textured_rgb(t: int) -> np.ndarray:
    rng = np.random.default_rng(t)
    return rng.integers(20, 236, size=(H, W, 3), dtype=np.uint8)


def make_store(
    root: Path,
    name: str = "clip",
    kind: str = "teacher",
    *,
    num_frames: int = T,
    depth_fn=ramp_depth,
    rgb: bool = True,
    gt: bool = False,
    chunk_frames: int = 4,
    config_hash: str = "c",
) -> str:
    """A finished store at `<root>/<name>.<kind>.zarr` with bottom/right padding and per-frame varying K;
    config_hash stands for the model/config that made it."""
    uri = store_uri(str(root), name, kind)
    variables = [*(["rgb"] if rgb else []), *(["gt_depth"] if gt else [])]
    attrs = {
        "source": f"{name}.mp4",
        "source_hash": "h",
        "config_hash": config_hash,
        "kind": kind,
        "fps": 10.0,
        "padding": list(PAD),
    }
    store = DepthStore.create(
        uri, num_frames=num_frames, height=H, width=W, chunk_frames=chunk_frames, attrs=attrs, variables=variables
    )
    for i in range(store.num_chunks):
        start, stop = store.chunk_bounds(i)
        ts = range(start, stop)
        K = np.stack([K0 + np.diag([0.5 * t, 0.5 * t, 0]).astype(np.float32) for t in ts])
        arrays = {
            "depth": np.stack([depth_fn(t) for t in ts]),
            "K": K,
            "timestamp": np.array([t / 10.0 for t in ts]),
            "frame_index": np.array([3 * t for t in ts]),
        }
        if rgb:
            arrays["rgb"] = np.stack([textured_rgb(t) for t in ts])
        if gt:
            arrays["gt_depth"] = np.stack([depth_fn(t) * 1.05 for t in ts])
        store.write_chunk(i, **arrays)
    store.finalize()
    return uri


def stored(uri: str, variable: str = "depth") -> np.ndarray:
    store = DepthStore.open(uri)
    return store.read(0, store.num_frames, [variable])[variable]


def read_video(path: str) -> list[np.ndarray]:
    with av.open(path) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture
def teacher(tmp_path: Path) -> str:
    return make_store(tmp_path / "stores")


# ---- formats --------------------------------------------------------------------------------------------------


def test_npz_is_exact_cropped_and_records_units_and_K(teacher: str, tmp_path: Path) -> None:
    out = export_video(teacher, ExportConfig(formats=["npz"], out_dir=str(tmp_path / "out")), progress=False)
    path = out["npz"][0]
    assert Path(path) == tmp_path / "out" / "clip" / "npz" / "depth.npz"
    with np.load(path) as z:
        np.testing.assert_array_equal(z["depth"], stored(teacher)[:, :h, :w])
        assert z["depth"].dtype == np.float32 and z["depth"].shape == (T, h, w)
        np.testing.assert_array_equal(z["K"], stored(teacher, "K"))  # bottom/right padding leaves K as it is
        np.testing.assert_array_equal(z["timestamps"], np.arange(T) / 10.0)
        np.testing.assert_array_equal(z["frame_index"], 3 * np.arange(T))
        assert str(z["units"]) == "m"


def test_exr_is_float32_exact_with_K_and_units_in_the_header(teacher: str, tmp_path: Path) -> None:
    out = export_video(teacher, ExportConfig(formats=["exr"], out_dir=str(tmp_path / "out")), progress=False)
    frames = sorted(p for p in out["exr"] if p.endswith(".exr"))
    assert len(frames) == T
    depth, K = stored(teacher), stored(teacher, "K")
    for t, path in enumerate(frames):
        z, header = read_exr_depth(path)
        np.testing.assert_array_equal(z, depth[t, :h, :w])
        np.testing.assert_allclose(header["K"], K[t])
        assert header["units"] == "m" and header["frame_index"] == 3 * t
    camera = json.loads(Path(out["exr"][-1]).read_text())
    assert camera["units"] == "m" and np.allclose(camera["K_per_frame"], K)


def test_png16_round_trip_within_half_a_step(teacher: str, tmp_path: Path) -> None:
    out = export_video(teacher, ExportConfig(formats=["png16"], out_dir=str(tmp_path / "out")), progress=False)
    sidecar = json.loads(Path(out["png16"][-1]).read_text())
    scale, offset = sidecar["scale"], sidecar["offset"]
    assert sidecar["units"] == "m" and sidecar["invalid_value"] == 0 and np.allclose(sidecar["K"], K0)
    depth = stored(teacher)[:, :h, :w]
    assert scale == pytest.approx(depth.max() / 65535)  # per-video scale: the max depth fits the range
    pngs = sorted(p for p in out["png16"] if p.endswith(".png"))
    assert len(pngs) == T
    for t, path in enumerate(pngs):
        code = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        assert code.dtype == np.uint16 and code.shape == (h, w)
        assert np.abs(code * scale + offset - depth[t]).max() <= scale / 2 + 1e-6
    assert cv2.imread(pngs[-1], cv2.IMREAD_UNCHANGED).max() == 65535


def test_png16_marks_invalid_and_out_of_range_depth_as_zero() -> None:
    depth = np.array([[1.0, np.nan, -1.0, 0.0, 70.0]], dtype=np.float32)
    code = encode_png16(depth, scale=0.001)
    assert code.tolist() == [[1000, 0, 0, 0, 0]]
    back = decode_png16(code, 0.001)
    assert back[0, 0] == pytest.approx(1.0) and np.isnan(back[0, 1:]).all()


def test_ply_points_reproject_to_their_pixel_and_depth(teacher: str, tmp_path: Path) -> None:
    config = ExportConfig(formats=["ply"], out_dir=str(tmp_path / "out"), ply_every=2)
    out = export_video(teacher, config, progress=False)
    assert [Path(p).name for p in out["ply"]] == ["000000.ply", "000002.ply", "000004.ply"]
    depth, K, rgb = stored(teacher), stored(teacher, "K"), stored(teacher, "rgb")
    t = 2
    vertex, comments = read_ply(out["ply"][1])
    assert len(vertex) == h * w  # every pixel valid, padding dropped
    assert "units m" in comments and any(c.startswith("K ") for c in comments)
    k_header = np.array(next(c for c in comments if c.startswith("K ")).split()[1:], dtype=float).reshape(3, 3)
    np.testing.assert_allclose(k_header, K[t], rtol=1e-6)
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)
    u = K[t, 0, 0] * xyz[:, 0] / xyz[:, 2] + K[t, 0, 2]
    v = K[t, 1, 1] * xyz[:, 1] / xyz[:, 2] + K[t, 1, 2]
    vv, uu = np.mgrid[0:h, 0:w]
    np.testing.assert_allclose(u, uu.ravel(), atol=1e-3)
    np.testing.assert_allclose(v, vv.ravel(), atol=1e-3)
    np.testing.assert_allclose(xyz[:, 2], depth[t, :h, :w].ravel(), rtol=1e-6)
    colours = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1)
    np.testing.assert_array_equal(colours, rgb[t, :h, :w].reshape(-1, 3))


def test_ply_skips_invalid_depth(tmp_path: Path) -> None:
    points, valid = pointcloud_module.back_project(np.array([[1.0, np.nan], [0.0, 2.0]], np.float32), K0)
    assert len(points) == 2 and valid.tolist() == [[True, False], [False, True]]


def test_refined_store_takes_rgb_from_the_teacher_store(teacher: str, tmp_path: Path) -> None:
    refined = make_store(tmp_path / "stores", kind="refined", rgb=False, depth_fn=lambda t: ramp_depth(t) * 1.1)
    config = ExportConfig(formats=["zarr", "ply"], out_dir=str(tmp_path / "out"))
    out = export_video(refined, config, rgb_store_uri=teacher, progress=False)
    assert out["zarr"] == [refined]
    vertex, _ = read_ply(out["ply"][0])
    np.testing.assert_array_equal(vertex["red"], stored(teacher, "rgb")[0, :h, :w, 0].ravel())
    np.testing.assert_allclose(vertex["z"], stored(refined)[0, :h, :w].ravel())


# ---- previews -------------------------------------------------------------------------------------------------


def test_previews_side_by_side_grid_and_pixel_plot(tmp_path: Path) -> None:
    stores = tmp_path / "stores"
    teacher = make_store(stores, gt=True)
    refined = make_store(stores, kind="refined", rgb=False)
    paths = export_previews(teacher, refined, tmp_path / "out", progress=False)
    frames = read_video(paths["side_by_side"])
    assert len(frames) == T and frames[0].shape == (h, 3 * w, 3)
    for key in ("grid", "pixel_trace"):
        image = cv2.imread(paths[key])
        assert image is not None and image.shape[0] > 100


def test_preview_colour_scale_is_fixed_per_video(tmp_path: Path) -> None:
    """Depth constant over time except frame 3 (×1.2): per-frame normalisation would colour it identically."""
    teacher = make_store(tmp_path / "stores", depth_fn=lambda t: ramp_depth(0) * (1.2 if t == 3 else 1.0))
    paths = export_previews(teacher, None, tmp_path / "out", progress=False)
    frames = [f[:, w : 2 * w].astype(np.float64) for f in read_video(paths["side_by_side"])]
    assert frames[0].shape == (h, w, 3)
    steady = np.abs(frames[1] - frames[0]).mean()
    jumped = np.abs(frames[3] - frames[0]).mean()
    assert steady < 3 and jumped > 15, (steady, jumped)


def test_export_video_preview_compares_refined_with_its_teacher(teacher: str, tmp_path: Path) -> None:
    refined = make_store(tmp_path / "stores", kind="refined", rgb=False)
    config = ExportConfig(formats=["preview"], out_dir=str(tmp_path / "out"))
    out = export_video(refined, config, rgb_store_uri=teacher, progress=False)
    assert read_video(out["preview"][0])[0].shape == (h, 3 * w, 3)
    with pytest.raises(InputError, match="teacher store"):
        export_video(refined, ExportConfig(formats=["preview"], out_dir=str(tmp_path / "out2")), progress=False)


def _two_videos_previews(tmp_path: Path) -> dict[str, dict[str, list[str]]]:
    """Previews of two videos that look different (RGB texture vs no RGB), as the export flow collects them."""
    stores, out = tmp_path / "stores", tmp_path / "out"
    exports = {}
    for name, rgb in (("textured", True), ("grey", False)):
        teacher = make_store(stores, name, rgb=rgb)
        refined = make_store(stores, name, kind="refined", rgb=False)
        exports[refined] = {"preview": list(export_previews(teacher, refined, out, progress=False).values())}
    return exports


def _embedded_pngs(markdown: str) -> dict[str, list[np.ndarray]]:
    """{video: its embedded images, decoded} of a previews page (a `## <video>` section per video)."""
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", markdown, flags=re.M | re.S))
    images = {}
    for video, text in sections.items():
        encoded = re.findall(r"\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)
        data = [base64.b64decode(e) for e in encoded]
        assert all(d.startswith(b"\x89PNG\r\n\x1a\n") and len(d) < 80_000 for d in data), [len(d) for d in data]
        images[video] = [cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR) for d in data]
    return images


def _difference(thumbnail: np.ndarray, full_size_path: Path) -> float:
    full = cv2.imread(str(full_size_path))
    small = cv2.resize(full, thumbnail.shape[1::-1], interpolation=cv2.INTER_AREA)
    return float(np.abs(small.astype(np.float64) - thumbnail).mean())


def test_previews_page_embeds_each_videos_thumbnails(tmp_path: Path) -> None:
    markdown = previews_markdown(_two_videos_previews(tmp_path))
    images = _embedded_pngs(markdown)
    assert set(images) == {"textured", "grey"} and all(len(pngs) == 2 for pngs in images.values())
    for video, (grid, trace) in images.items():
        assert grid.shape[1] == THUMBNAIL_WIDTH and trace.shape[1] == THUMBNAIL_WIDTH
        other = "grey" if video == "textured" else "textured"
        own, theirs = (tmp_path / "out" / v / "preview" for v in (video, other))
        assert _difference(grid, own / "grid.png") < 0.7 * _difference(grid, theirs / "grid.png"), video
        assert _difference(trace, own / "pixel_trace.png") < 8, video
        assert f"`{own.resolve()}`" in markdown  # the full-size files' folder, as text
    assert "file://" not in markdown
    assert previews_markdown({"store": {"npz": ["depth.npz"]}}) is None


def test_previews_page_is_the_export_runs_markdown_artifact(tmp_path: Path, prefect_server) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    from tasks.export import publish_previews

    exports = _two_videos_previews(tmp_path)
    artifact_id = flow(name="publish-previews-check")(publish_previews)(exports)
    with get_client(sync_client=True) as client:
        (ours,) = client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id])))
    assert ours.key == "export-previews" and ours.type == "markdown" and ours.flow_run_id is not None
    assert ours.data == previews_markdown(exports)
    assert set(_embedded_pngs(ours.data)) == {"textured", "grey"}



def test_an_export_task_reports_its_formats_as_progress_in_the_ui(tmp_path: Path, prefect_server) -> None:
    """The export task's progress artifact moves per format and ends at 100 % with every format counted."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType

    from steadydepth.config import load_config
    from tasks.export import export_task

    teacher = make_store(tmp_path / "stores", name="progress-export")  # a name no other run in this API has
    cfg = load_config(overrides={"export.out_dir": str(tmp_path / "out"), "export.formats": ["npz", "png16"]})
    @flow(name="export-progress-check")
    def export_one() -> dict:
        return export_task(teacher, teacher, cfg.model_dump(mode="json"))

    export_one()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])))
    ours = [a for a in artifacts if (a.description or "").startswith("export progress-export")]
    assert len(ours) == 1 and ours[0].data == 100.0 and ours[0].description.endswith("2/2")

# ---- safety ---------------------------------------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _temporaries(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


def test_existing_foreign_export_is_refused_unless_overwrite(teacher: str, tmp_path: Path) -> None:
    """A folder without a marker (the user's own files) is never replaced silently."""
    user = tmp_path / "out" / "clip" / "npz"
    user.mkdir(parents=True)
    (user / "depth.npz").write_bytes(b"the user's own file")
    with pytest.raises(InputError, match="--overwrite") as err:
        export_video(teacher, ExportConfig(formats=["exr", "npz"], out_dir=str(tmp_path / "out")), progress=False)
    assert str(user) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out" / "clip" / "exr").exists()  # refused before any work
    config = ExportConfig(formats=["npz"], out_dir=str(tmp_path / "out"), overwrite=True)
    out = export_video(teacher, config, progress=False)
    with np.load(out["npz"][0]) as z:
        np.testing.assert_array_equal(z["depth"], stored(teacher)[:, :h, :w])


def test_failed_frame_export_leaves_nothing_and_keeps_the_old_export(
    teacher: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pointcloud_module.write_ply
    calls = []

    def fails_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        real(*args, **kwargs)

    config = ExportConfig(formats=["ply"], out_dir=str(tmp_path / "out"))
    monkeypatch.setattr(pointcloud_module, "write_ply", fails_on_third)
    with pytest.raises(OSError, match="disk full"):
        export_video(teacher, config, progress=False)
    assert _leftovers(tmp_path / "out" / "clip") == []  # no partial folder, no temporary
    monkeypatch.setattr(pointcloud_module, "write_ply", real)
    export_video(teacher, config, progress=False)
    monkeypatch.setattr(pointcloud_module, "write_ply", fails_on_third)
    calls.clear()
    with pytest.raises(OSError):
        export_video(teacher, config.model_copy(update={"overwrite": True}), progress=False)
    assert _leftovers(tmp_path / "out" / "clip") == ["ply"]
    assert len(_leftovers(tmp_path / "out" / "clip" / "ply")) == T + 1  # the previous export and its marker


def test_failed_video_write_leaves_no_partial_file(
    teacher: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_then_fail(path, frames, fps, **kwargs):
        Path(path).write_bytes(b"partial mp4")
        raise RuntimeError("encoder died")

    monkeypatch.setattr(previews_module, "write_video", half_then_fail)
    with pytest.raises(RuntimeError, match="encoder died"):
        export_previews(teacher, None, tmp_path / "out", progress=False)
    assert _leftovers(tmp_path / "out" / "clip") == []


def test_video_names_cannot_escape_the_output_folder(teacher: str, tmp_path: Path) -> None:
    out_dir = tmp_path / "a" / "out"
    config = ExportConfig(formats=["npz", "preview"], out_dir=str(out_dir))
    out = export_video(teacher, config, video_name="../../evil", progress=False)
    for paths in out.values():
        for p in paths:
            assert Path(p).resolve().is_relative_to(out_dir.resolve()), p
    assert not (tmp_path / "evil").exists() and not (tmp_path / "a" / "evil").exists()
    assert safe_name("../../evil") == "_.._evil" and "/" not in safe_name("a/b\\c")
    with pytest.raises(InputError):
        export_video(teacher, ExportConfig(formats=["npz"], out_dir=str(out_dir)), video_name="..", progress=False)


def test_formats_are_listed_once(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as err:
        ExportConfig(formats=["tiff"])
    assert all(f"'{fmt}'" in str(err.value) for fmt in EXPORT_FORMATS)
    with pytest.raises(ConfigError, match="export.formats"):
        load_config(overrides={"export.formats": ["tiff"]})
    assert set(FORMAT_SETTINGS) == set(EXPORT_FORMATS) - {"zarr"}  # every folder format says what shapes it
    assert {f for fields in FORMAT_SETTINGS.values() for f in fields} <= set(ExportConfig.model_fields)
    parser = build_parser()
    assert parser.parse_args(["export", "--formats", *EXPORT_FORMATS]).formats == list(EXPORT_FORMATS)
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "--formats", "tiff"])


def test_export_video_takes_its_options_from_the_config(teacher: str, tmp_path: Path) -> None:
    config = ExportConfig(formats=["npz", "png16"], out_dir=str(tmp_path / "out"), png16_scale=0.001)
    assert config.ipd_m == 0.063 and config.overwrite is False
    out = export_video(teacher, config, progress=False)
    assert json.loads(Path(out["png16"][-1]).read_text())["scale"] == 0.001
    assert os.path.isfile(out["npz"][0])


# ---- resuming: identity markers -------------------------------------------------------------------------------


def test_marker_records_what_the_folder_was_made_from(teacher: str, tmp_path: Path) -> None:
    refined = make_store(tmp_path / "stores", kind="refined", rgb=False, config_hash="model-a")
    config = ExportConfig(formats=["png16"], out_dir=str(tmp_path / "out"), png16_scale=0.001)
    out = export_video(refined, config, rgb_store_uri=teacher, progress=False)
    marker = json.loads((tmp_path / "out" / "clip" / "png16" / MARKER).read_text())
    identity = marker["identity"]
    assert identity["export_version"] == EXPORT_VERSION and identity["format"] == "png16"
    assert identity["depth_store"]["config_hash"] == "model-a" and identity["rgb_store"]["config_hash"] == "c"
    assert marker["stores"] == {"depth": refined, "rgb": teacher} and marker["settings"] == {"png16_scale": 0.001}
    assert [str(tmp_path / "out" / "clip" / "png16" / f) for f in marker["files"]] == out["png16"]


def test_rerun_after_a_partial_export_completes_and_keeps_finished_formats(teacher: str, tmp_path: Path) -> None:
    out_dir = str(tmp_path / "out")
    first = export_video(teacher, ExportConfig(formats=["npz", "exr"], out_dir=out_dir), progress=False)
    finished = _mtimes(tmp_path / "out")
    config = ExportConfig(formats=["npz", "exr", "png16"], out_dir=out_dir)
    assert not export_complete(config, teacher)
    second = export_video(teacher, config, progress=False)  # no overwrite: the finished folders are ours
    assert {k: v for k, v in _mtimes(tmp_path / "out").items() if k in finished} == finished
    assert second["npz"] == first["npz"] and second["exr"] == first["exr"]
    assert len([p for p in second["png16"] if p.endswith(".png")]) == T
    assert export_complete(config, teacher)
    assert export_video(teacher, config, progress=False) == second  # everything done: nothing written
    assert {k: v for k, v in _mtimes(tmp_path / "out").items() if k in finished} == finished


def test_export_complete_checks_stores_settings_and_files(teacher: str, tmp_path: Path) -> None:
    refined = make_store(tmp_path / "stores", kind="refined", rgb=False)
    config = ExportConfig(formats=["zarr", "ply"], out_dir=str(tmp_path / "out"))
    export_video(refined, config, rgb_store_uri=teacher, progress=False)
    assert export_complete(config, refined, teacher)
    assert not export_complete(config, refined)  # made with the teacher store's colours
    assert not export_complete(config.model_copy(update={"ply_every": 2}), refined, teacher)
    (tmp_path / "out" / "clip" / "ply" / "000003.ply").unlink()
    assert not export_complete(config, refined, teacher)
    assert not export_complete(config, str(tmp_path / "stores" / "missing.refined.zarr"), teacher)


def test_export_of_another_model_is_refused_and_replaced_with_overwrite(teacher: str, tmp_path: Path) -> None:
    model_a = make_store(tmp_path / "a", kind="refined", rgb=False, config_hash="model-a")
    model_b = make_store(
        tmp_path / "b", kind="refined", rgb=False, config_hash="model-b", depth_fn=lambda t: ramp_depth(t) * 1.1
    )
    config = ExportConfig(formats=["npz", "ply"], out_dir=str(tmp_path / "out"))
    export_video(model_a, config, rgb_store_uri=teacher, progress=False)
    before = _mtimes(tmp_path / "out")
    with pytest.raises(InputError, match="already exists; delete it or pass --overwrite") as err:
        export_video(model_b, config, rgb_store_uri=teacher, progress=False)
    assert str(tmp_path / "out" / "clip" / "npz") in str(err.value) and "\n" not in str(err.value)
    assert _mtimes(tmp_path / "out") == before  # refused before any work
    assert not export_complete(config, model_b, teacher)
    out = export_video(model_b, config.model_copy(update={"overwrite": True}), rgb_store_uri=teacher, progress=False)
    with np.load(out["npz"][0]) as z:
        np.testing.assert_array_equal(z["depth"], stored(model_b)[:, :h, :w])
    assert export_complete(config, model_b, teacher) and not export_complete(config, model_a, teacher)


def test_stale_temporaries_of_a_killed_run_are_removed(teacher: str, tmp_path: Path) -> None:
    video = tmp_path / "out" / "clip"
    (video / ".npz.tmp-0123abcd").mkdir(parents=True)
    (video / ".npz.tmp-0123abcd" / "depth.npz").write_bytes(b"half")
    (video / ".exr.old-89abcdef").mkdir()
    (video / "notes.txt").write_text("not ours: kept")
    out = export_video(teacher, ExportConfig(formats=["npz"], out_dir=str(tmp_path / "out")), progress=False)
    assert _leftovers(video) == ["notes.txt", "npz"] and Path(out["npz"][0]).is_file()


_KILLED_EXPORT = """
import sys, time
from steadydepth.export import export_video, formats
from steadydepth.export.config import ExportConfig

real, calls = formats.encode_png16, []

def stalls(*args, **kwargs):  # park mid-folder, a few frames in, until the test kills the process
    calls.append(1)
    if len(calls) > 3:
        time.sleep(600)
    return real(*args, **kwargs)

formats.encode_png16 = stalls
export_video(sys.argv[1], ExportConfig.model_validate_json(sys.argv[2]), progress=False)
"""


def _wait_for_partial_folder(proc: subprocess.Popen, video: Path, deadline_s: float = 300.0) -> Path:
    """The png16 temporary once it holds some frames (the child is then parked inside the export)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        partial = [d for d in video.glob(".png16.tmp-*") if len(list(d.glob("*.png"))) >= 3]
        if partial:
            return partial[0]
        if proc.poll() is not None:
            pytest.fail(f"the export ended before it was killed: {proc.communicate()[1]}")
        time.sleep(0.05)
    pytest.fail("no partial png16 folder appeared")


def test_export_killed_with_sigkill_resumes_to_the_same_output(tmp_path: Path) -> None:
    store = make_store(tmp_path / "stores", num_frames=40, chunk_frames=8)
    config = ExportConfig(formats=["npz", "png16", "ply"], out_dir=str(tmp_path / "out"), ply_every=4)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_EXPORT, store, config.model_dump_json()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        partial = _wait_for_partial_folder(proc, tmp_path / "out" / "clip")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert partial.is_dir() and not (tmp_path / "out" / "clip" / "png16").exists()  # killed mid-folder
    npz_done = _mtimes(tmp_path / "out" / "clip" / "npz")
    assert npz_done  # finished before the kill

    resumed = export_video(store, config, progress=False)  # same command, no overwrite
    assert _mtimes(tmp_path / "out" / "clip" / "npz") == npz_done
    clean = export_video(store, config.model_copy(update={"out_dir": str(tmp_path / "clean")}), progress=False)
    assert _temporaries(tmp_path / "out") == [] and export_complete(config, store)
    with np.load(resumed["npz"][0]) as got, np.load(clean["npz"][0]) as want:
        assert sorted(got.files) == sorted(want.files)
        for key in want.files:
            np.testing.assert_array_equal(got[key], want[key])
    for fmt in ("png16", "ply"):
        assert [Path(p).name for p in resumed[fmt]] == [Path(p).name for p in clean[fmt]]
        for got_path, want_path in zip(resumed[fmt], clean[fmt], strict=True):
            assert Path(got_path).read_bytes() == Path(want_path).read_bytes(), got_path
