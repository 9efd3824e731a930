"""Every way in, through the CLI as a user runs it: `steadydepth ingest` with each teacher backend.

The synthetic teacher (on `steadydepth synth` output); precomputed `.npy`, 16-bit PNG + scale and EXR, with
and without K files, on a video and on a frame folder, under stride / target fps / max_frames; the UniDepth
wrapper through the fake UniDepth package; and the real 7-Scenes clip with a real network's depth. Two of
them go on through `train` → `evaluate` → `export`. Each command finds the previous one's state through the
same `--config` (store root, orchestration home), as a user's shell session would.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest
import xarray as xr
import yaml
from fake_unidepth import FakeUniDepth, install_fake_unidepth
from media import make_frame_folder, make_video

from steadydepth.cli import main
from storage.depth_store import DepthStore

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SEVEN_SCENES = SHARED_DATA / "7scenes-redkitchen-150-199"
PYDNET = SHARED_DATA / "teacher-pydnet"

H, W = 48, 64
VIDEO_FRAMES = 10  # clip.mp4, 30 fps
FOLDER_FRAMES, FIRST_NUMBER = 8, 100  # room/frame-000100 .. frame-000107
PNG_SCALE = 1000.0
# What `steadydepth.runtime.use_embedded_defaults` may set; restored after each test so nothing leaks.
_ENV_KEYS = ("STEADYDEPTH_HOME", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "STEADYDEPTH_ARTIFACT_ROOT")


def truth(n: int) -> np.ndarray:
    """(n, H, W) metres, different in every frame and pixel, so a misplaced file shows."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([1.0 + 0.25 * i + 0.02 * yy + 0.01 * xx for i in range(n)]).astype(np.float32)


def K_matrix(f: float) -> np.ndarray:
    return np.array([[f, 0.0, (W - 1) / 2], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]], np.float32)


def write_depth(folder: Path, names: list[str], depth: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, d in zip(names, depth, strict=True):
        path = folder / name
        if path.suffix == ".npy":
            np.save(path, d)
        elif path.suffix == ".png":
            cv2.imwrite(str(path), np.round(np.nan_to_num(d, nan=0.0) * PNG_SCALE).astype(np.uint16))
        else:
            header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
            with OpenEXR.File(header, {"Z": d}) as f:
                f.write(str(path))


@dataclass
class Cli:
    """`steadydepth ...` in this process, with the test's run config; returns (exit code, stdout)."""

    config: Path

    def __call__(self, *args: str) -> tuple[int, str]:
        # Only stdout is redirected: Prefect's log handler keeps the stderr it first saw (capsys would close it).
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()) as buffer:
            code = main([*args] if args[0] == "synth" else [*args, "--config", str(self.config)])
        print(f"$ steadydepth {' '.join(args)}  # exit {code}, {time.perf_counter() - t0:.1f} s")
        print(buffer.getvalue())  # shown by pytest when a check fails
        return code, buffer.getvalue()


@pytest.fixture
def cli(tmp_path, prefect_server, mlflow_sqlite) -> Iterator[Cli]:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        # 3-frame chunks: several per video, so the repair carries depth across chunk boundaries
        "store": {"root": str(tmp_path / "stores"), "chunk_frames": 3},
        "orchestration": {"home": str(tmp_path / "home"), "model_name": "teacher-paths"},
        "train": {"steps": 2, "batch_size": 1, "window": 6, "progress": False, "burn_in": 0},
        "export": {"out_dir": str(tmp_path / "exports"), "formats": ["npz", "png16"]},
    }))
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    yield Cli(config)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@dataclass
class Case:
    """One way in: what to ingest, with which settings, and what the store must then hold."""

    inputs: list[Path]
    args: list[str]
    name: str
    frame_index: list[int]
    depth: np.ndarray | None  # expected depth (metres), or None when the teacher is not exact
    tol: float = 1e-6
    K: np.ndarray | None = None  # expected K of every frame
    confidence: bool = False
    ground_truth: bool = False
    invalid_pixels: list[int] = field(default_factory=list)  # per kept frame; empty = none
    check: Callable[[DepthStore], None] | None = None  # what else this way in must give


def _precomputed(root: Path, *extra: str) -> list[str]:
    return ["--teacher", "precomputed", "--set", f"teacher.precomputed_dir={root}", *extra]


def npy_video_with_K_at_target_fps(tmp: Path) -> Case:
    video = make_video(tmp / "in" / "clip.mp4", VIDEO_FRAMES, (H, W))
    depth = truth(VIDEO_FRAMES)
    write_depth(tmp / "depth" / "clip", [f"depth_{i:06d}.npy" for i in range(VIDEO_FRAMES)], depth)
    np.savetxt(tmp / "depth" / "clip" / "K.txt", K_matrix(40.0))
    kept = [0, 3, 6, 9]  # 30 fps to at most 10 fps: every 3rd source frame
    return Case([video], _precomputed(tmp / "depth", "--set", "decode.target_fps=10"), "clip", kept,
                depth[kept], K=K_matrix(40.0))


def npy_video_at_stride_2(tmp: Path) -> Case:
    video = make_video(tmp / "in" / "clip.mp4", VIDEO_FRAMES, (H, W))
    depth = truth(VIDEO_FRAMES)
    write_depth(tmp / "depth" / "clip", [f"depth_{i:06d}.npy" for i in range(VIDEO_FRAMES)], depth)
    kept = [0, 2, 4, 6, 8]
    return Case([video], _precomputed(tmp / "depth", "--set", "decode.stride=2"), "clip", kept, depth[kept])


def npy_folder_max_frames(tmp: Path) -> Case:
    folder = make_frame_folder(tmp / "in" / "room", FOLDER_FRAMES, (H, W), first_number=FIRST_NUMBER)
    depth = truth(FOLDER_FRAMES)
    numbers = range(FIRST_NUMBER, FIRST_NUMBER + FOLDER_FRAMES)  # named by the folder's frame numbers
    write_depth(tmp / "depth" / "room", [f"depth_{n:06d}.npy" for n in numbers], depth)
    kept = [0, 1, 2, 3, 4]
    # No K file: the folder's camera-intrinsics.txt (fx = 50) is used.
    return Case([folder], _precomputed(tmp / "depth", "--set", "decode.max_frames=5"), "room", kept, depth[kept],
                K=K_matrix(50.0), ground_truth=True)


def exr_folder_by_position_with_per_file_K(tmp: Path) -> Case:
    folder = make_frame_folder(tmp / "in" / "room", FOLDER_FRAMES, (H, W), first_number=FIRST_NUMBER)
    depth = truth(FOLDER_FRAMES)
    # Numbered 0..7 while the frames are 100..107: one file per source frame, so matched by position.
    write_depth(tmp / "depth" / "room", [f"{i:04d}.exr" for i in range(FOLDER_FRAMES)], depth)
    Ks = np.stack([K_matrix(30.0 + i) for i in range(FOLDER_FRAMES)])
    np.save(tmp / "depth" / "room" / "K.npy", Ks)
    kept = [0, 2, 4, 6]
    return Case([folder], _precomputed(tmp / "depth", "--set", "decode.stride=2"), "room", kept, depth[kept],
                K=Ks[kept], ground_truth=True)


def synthetic_on_synth_videos(tmp: Path, cli: Cli) -> Case:
    code, _ = cli("synth", str(tmp / "videos"), "--videos", "1", "--frames", "8", "--size", f"{H}x{W}")
    assert code == 0

    def near_ground_truth(store: DepthStore) -> None:  # simulated from the sidecar's ground truth
        data = store.read(0, store.num_frames, ("depth", "gt_depth"))
        rel = np.nanmean(np.abs(data["depth"] - data["gt_depth"]) / data["gt_depth"])
        assert 0.005 < rel < 0.3

    return Case([tmp / "videos"], ["--teacher", "synthetic"], "00-vr-head", list(range(8)), None,
                confidence=True, ground_truth=True, check=near_ground_truth)


def unidepth_through_the_fake_package(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    loaded = install_fake_unidepth(monkeypatch)
    weights = tmp / "unidepth-weights"
    weights.mkdir()
    video = make_video(tmp / "in" / "clip.mp4", VIDEO_FRAMES, (H, W))

    def the_models_depth(store: DepthStore) -> None:
        assert loaded == [str(weights)]  # teacher.model, a local save_pretrained folder
        data = store.read(0, store.num_frames, ("depth", "rgb"))
        # The fake's depth scales with the K it is given: the shared median of its own predictions.
        expected = (data["rgb"].astype(np.float32).mean(axis=-1) / 255 + 1) * FakeUniDepth.PRED_F / 10
        np.testing.assert_allclose(data["depth"], expected, rtol=1e-5)

    args = ["--teacher", "unidepth", "--set", f"teacher.model={weights}", "--set", "teacher.device=cpu"]
    f = FakeUniDepth.PRED_F
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], np.float32)  # the fake's own prediction
    return Case([video], args, "clip", list(range(VIDEO_FRAMES)), None, K=K, confidence=True, check=the_models_depth)


def _case(kind: str, tmp: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Case:
    makers: dict[str, Callable[[], Case]] = {
        "synthetic": lambda: synthetic_on_synth_videos(tmp, cli),
        "npy-video-K-target-fps": lambda: npy_video_with_K_at_target_fps(tmp),
        "npy-video-stride-2": lambda: npy_video_at_stride_2(tmp),
        "npy-folder-max-frames": lambda: npy_folder_max_frames(tmp),
        "exr-folder-by-position-K-npy": lambda: exr_folder_by_position_with_per_file_K(tmp),
        "unidepth-fake": lambda: unidepth_through_the_fake_package(tmp, monkeypatch),
    }
    return makers[kind]()


def ingest(cli: Cli, case: Case) -> DepthStore:
    code, out = cli("ingest", *map(str, case.inputs), *case.args)
    assert code == 0, out
    uri = str(Path(yaml.safe_load(cli.config.read_text())["store"]["root"]) / f"{case.name}.teacher.zarr")
    assert uri in out  # the summary table names the store
    return DepthStore.open(uri)


def check_store(store: DepthStore, case: Case) -> None:
    """What the user gets: variables, shapes, frames, depth equal to the files', intrinsics, invalid counts."""
    n = len(case.frame_index)
    ds = xr.open_zarr(store.uri)
    h, w = store.size
    assert ds.depth.shape == (n, h, w) and ds.K.shape == (n, 3, 3)
    expected_vars = {"depth", "K", "time", "frame_index", "y", "x", "rgb", "invalid_pixels", "frame_valid"}
    expected_vars |= {"confidence"} if case.confidence else set()
    expected_vars |= {"gt_depth", "pose"} if case.ground_truth else set()
    assert set(ds.variables) == expected_vars
    np.testing.assert_array_equal(ds.frame_index.values, case.frame_index)
    depth = ds.depth.values
    assert np.isfinite(depth).all() and (depth > 0).all()
    if case.depth is not None:
        assert float(np.abs(depth - case.depth).max()) <= case.tol
    if case.K is not None:
        np.testing.assert_allclose(ds.K.values, np.broadcast_to(case.K, (n, 3, 3)), rtol=1e-6)
    counts = case.invalid_pixels or [0] * n
    np.testing.assert_array_equal(ds.invalid_pixels.values, counts)
    np.testing.assert_array_equal(ds.frame_valid.values, np.ones(n))
    assert ds.attrs["invalid_pixels_total"] == sum(counts)
    if case.confidence:
        conf = ds.confidence.values
        assert (conf >= 0).all() and (conf <= 1).all()
    if case.check is not None:
        case.check(store)


CASES = [
    "synthetic",
    "npy-video-K-target-fps",
    "npy-video-stride-2",
    "npy-folder-max-frames",
    "exr-folder-by-position-K-npy",
    "unidepth-fake",
]


@pytest.mark.parametrize("kind", CASES)
def test_ingest_through_the_cli(kind: str, tmp_path, cli: Cli, monkeypatch) -> None:
    case = _case(kind, tmp_path, cli, monkeypatch)
    check_store(ingest(cli, case), case)


def _checkpoint(out: str) -> str:
    found = re.search(r"^checkpoint: (\S+)$", out, re.MULTILINE)
    assert found, out
    return found.group(1)


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def check_json_stdout(config: Path, checkpoint: str) -> None:
    """`steadydepth evaluate --json` in its own process, as a script reads it: stdout is one strict JSON document
    (no Prefect log line, no NaN); the rest goes to stderr."""
    run = subprocess.run([sys.executable, "-m", "steadydepth.cli", "evaluate", "--model", checkpoint, "--json",
                          "--config", str(config)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode in (0, 3), run.stderr
    document = json.loads(run.stdout, parse_constant=_no_constants)
    assert "teacher" in json.dumps(document) and run.stderr.strip()  # the state line and logs are on stderr


def train_evaluate_export(cli: Cli, stores: list[DepthStore], tmp: Path) -> None:
    """The rest of the chain on the ingested stores; checks what each command leaves for the user."""
    code, out = cli("train")
    assert code == 0, out
    checkpoint = _checkpoint(out)
    assert Path(checkpoint).is_file()
    code, out = cli("evaluate", "--model", checkpoint)
    assert code in (0, 3), out  # 3: the gate says no, which two training steps may well earn
    assert (tmp / "home" / "evaluation" / "report.md").is_file() and "teacher" in out
    check_json_stdout(cli.config, checkpoint)
    code, out = cli("export", "--model", checkpoint)
    assert code == 0, out
    for store in stores:
        name = store.attrs["source_name"]
        with np.load(tmp / "exports" / name / "npz" / "depth.npz") as npz:
            exported = npz["depth"]
        top, bottom, left, right = store.attrs["padding"]
        h, w = store.size
        assert exported.shape == (store.num_frames, h - top - bottom, w - left - right)
        assert np.isfinite(exported).all() and (exported > 0).all()
        assert len(list((tmp / "exports" / name / "png16").glob("*.png"))) >= store.num_frames


def png16_video_with_holes(tmp: Path) -> Case:
    """A video's 16-bit PNG depth in millimetres, with the zeros ("no depth") a real network leaves."""
    video = make_video(tmp / "in" / "clip.mp4", VIDEO_FRAMES, (H, W))
    depth = truth(VIDEO_FRAMES)
    expected = depth.copy()
    rng = np.random.default_rng(0)
    holes = {3: 6, 7: 40}  # frame: pixels (frame 3 starts a chunk: filled from the chunk before)
    for i, n in holes.items():
        mask = np.zeros(H * W, bool)
        mask[rng.choice(H * W, n, replace=False)] = True
        mask = mask.reshape(H, W)
        depth[i][mask] = np.nan  # written as 0
        expected[i][mask] = expected[i - 1][mask]  # filled from the previous frame at that pixel
    write_depth(tmp / "depth" / "clip", [f"depth_{i:06d}.png" for i in range(VIDEO_FRAMES)], depth)

    def holes_counted(store: DepthStore) -> None:
        assert store.attrs["invalid_pixel_frames"] == 2 and store.attrs["invalid_frames"] == 0

    args = _precomputed(tmp / "depth", "--set", f"teacher.png_scale={PNG_SCALE:g}")
    return Case([video], args, "clip", list(range(VIDEO_FRAMES)), expected, tol=0.5 / PNG_SCALE + 1e-6,
                invalid_pixels=[holes.get(i, 0) for i in range(VIDEO_FRAMES)], check=holes_counted)


def real_clip_with_real_network_depth() -> Case:
    """The 7-Scenes clip with mobilePydnet++ depth (per its SOURCE.md: depth_NNNNNN.png, 16-bit millimetres)."""
    args = _precomputed(PYDNET, "--set", "teacher.png_scale=1000", "--set", "decode.stride=5",
                        "--set", "decode.max_frames=6")
    kept = list(range(0, 30, 5))  # source frames 150, 155, ..., 175
    raw = np.stack([cv2.imread(str(PYDNET / SEVEN_SCENES.name / f"depth_{150 + i:06d}.png"), cv2.IMREAD_UNCHANGED)
                    for i in kept])

    def the_files_depth(store: DepthStore) -> None:  # read as written, not resampled
        valid = raw > 0
        np.testing.assert_allclose(store.read(0, store.num_frames)["depth"][valid], raw[valid] / 1000.0, rtol=1e-6)

    K = np.array([[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1.0]], np.float32)  # camera-intrinsics.txt
    return Case([SEVEN_SCENES], args, SEVEN_SCENES.name, kept, None, K=K, ground_truth=True,
                invalid_pixels=[int(n) for n in (raw == 0).sum(axis=(1, 2))], check=the_files_depth)


def test_precomputed_png_video_and_real_clip_through_train_evaluate_export(tmp_path, cli: Cli) -> None:
    """Both ingested into one store root (each with its own settings), then one train → evaluate → export."""
    cases = [png16_video_with_holes(tmp_path)]
    if SEVEN_SCENES.is_dir() and PYDNET.is_dir():  # the real data is optional: the rest still runs without it
        cases.append(real_clip_with_real_network_depth())
    stores = []
    for case in cases:
        stores.append(ingest(cli, case))
        check_store(stores[-1], case)
    train_evaluate_export(cli, stores, tmp_path)
