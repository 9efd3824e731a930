"""Teachers without a GPU or the real UniDepth: a fake UniDepth-like module, precomputed files, OOM back-off."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace

import cv2
import numpy as np
import OpenEXR
import pytest
import torch
from fake_unidepth import FakeUniDepth, install_fake_unidepth
from torch import nn

from steadydepth.config import TeacherConfig
from steadydepth.errors import TeacherOutOfMemoryError, TeacherOutputError, TeacherUnavailableError
from steadydepth.teachers.base import FrameBatch, Teacher, TeacherOutput, validate_output
from steadydepth.teachers.batching import BatchSizer, predict_with_backoff, slice_batch
from steadydepth.teachers.precomputed import PrecomputedTeacher
from steadydepth.teachers.registry import build_teacher
from steadydepth.teachers.unidepth import UniDepthTeacher, confidence_to_unit
from steadydepth.video.types import VideoInfo

H, W = 12, 16


def make_info(name: str = "clip", num_frames: int = 4, size: tuple[int, int] = (H, W)) -> VideoInfo:
    return VideoInfo(
        source=f"/videos/{name}.mp4",
        name=name,
        content_hash="0" * 64,
        source_fps=30.0,
        fps=30.0,
        num_frames=num_frames,
        original_size=size,
        size=size,
    )


def make_batch(
    indices: list[int], *, K: torch.Tensor | None = None, info: VideoInfo | None = None, seed: int = 0
) -> FrameBatch:
    info = info or make_info(num_frames=max(indices) + 1)
    # Frame content depends only on its index, so a frame looks the same in any (sub-)batch.
    gens = [torch.Generator().manual_seed(seed * 1000 + i) for i in indices]
    frames = [torch.randint(0, 256, (3, *info.size), generator=g) for g in gens]
    rgb = torch.stack(frames).to(torch.uint8)
    rgb[:, :, 0, 0] = 255  # a known full-scale pixel in every frame
    return FrameBatch(video=info, indices=list(indices), source_indices=list(indices), rgb=rgb, K=K)


def known_K(b: int, f: float = 20.0) -> torch.Tensor:
    K = torch.tensor([[f, 0.0, (W - 1) / 2], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]])
    return K.expand(b, 3, 3).clone()


# -- UniDepth wrapper against a fake model ----------------------------------------------------------


def fake_teacher(**cfg_kw) -> tuple[UniDepthTeacher, FakeUniDepth]:
    model = FakeUniDepth()
    cfg = TeacherConfig(device="cpu", **cfg_kw)
    return UniDepthTeacher(cfg, model, model_id="fake"), model


def test_unidepth_clones_K_and_returns_given_K() -> None:
    teacher, _ = fake_teacher()
    K = known_K(2)
    batch = make_batch([0, 1], K=K.clone())
    first = teacher.predict(batch)
    second = teacher.predict(batch)
    assert torch.equal(batch.K, K), "the caller's K was modified in place"
    assert torch.equal(first.depth, second.depth), "outputs drift between calls"
    assert torch.equal(first.K, K), "returned K must be the given K, not the model's prediction"
    assert not torch.allclose(first.K[:, 0, 0], torch.tensor(FakeUniDepth.PRED_F))


def test_unidepth_without_K_returns_predicted_K() -> None:
    teacher, _ = fake_teacher()
    out = teacher.predict(make_batch([0, 1]))
    assert torch.allclose(out.K[:, 0, 0], torch.tensor(FakeUniDepth.PRED_F))
    assert out.depth.shape == (2, 1, H, W) and out.depth.dtype == torch.float32
    # Plain tensors, not inference tensors: later stages may update them in place.
    assert not any(t.is_inference() for t in (out.depth, out.K, out.confidence))
    out.depth.clamp_(min=0.1)


def test_unidepth_estimate_intrinsics_ignores_given_K() -> None:
    teacher, _ = fake_teacher()
    K = teacher.estimate_intrinsics(make_batch([0, 1, 2], K=known_K(3)))
    assert K.shape == (3, 3, 3)
    assert torch.allclose(K[:, 0, 0], torch.tensor(FakeUniDepth.PRED_F))


def test_unidepth_input_scaling_mode_and_resolution_level() -> None:
    teacher, model = fake_teacher(resolution_level=3)
    teacher.predict(make_batch([0]))
    call = model.calls[-1]
    assert call["dtype"] == torch.float32 and call["max"] == 255.0  # 0–255 floats, not 0–1
    assert call["resolution_level"] == 3 and model.resolution_level == 3
    assert call["inference_mode"]
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_unidepth_confidence_in_unit_range_and_batch_independent() -> None:
    teacher, _ = fake_teacher(batch_size=4)
    full = teacher.predict(make_batch([0, 1, 2]))
    assert full.confidence is not None and full.confidence.shape == (3, 1, H, W)
    assert float(full.confidence.min()) >= 0.0 and float(full.confidence.max()) <= 1.0
    assert float(full.confidence.min()) < 1.0  # not trivially constant
    # A frame's confidence must not depend on its batch neighbours.
    solo = teacher.predict(_single(make_batch([0, 1, 2]), 1))
    assert torch.allclose(solo.confidence[0], full.confidence[1])
    assert torch.allclose(solo.depth[0], full.depth[1])


def test_unidepth_internal_chunking_matches_one_batch() -> None:
    big, _ = fake_teacher(batch_size=8)
    small, model = fake_teacher(batch_size=2)
    batch = make_batch([0, 1, 2, 3, 4], K=known_K(5))
    a, b = big.predict(batch), small.predict(batch)
    assert [c["batch"] for c in model.calls] == [2, 2, 1]
    assert torch.equal(a.depth, b.depth) and torch.equal(a.K, b.K) and torch.equal(a.confidence, b.confidence)


def test_confidence_mapping_is_monotone() -> None:
    depth = torch.full((3,), 2.0)
    raw = torch.exp(torch.tensor([0.0, 0.2, 2.0]))  # predicted abs errors 0, 0.2 m, 2 m at 2 m depth
    conf = confidence_to_unit(raw, depth)
    assert torch.allclose(conf, torch.exp(-torch.tensor([0.0, 0.1, 1.0])))
    assert float(confidence_to_unit(torch.tensor([1e-3]), torch.tensor([1.0]))) == 1.0  # e < 0 clamps to 1


def _single(batch: FrameBatch, pos: int) -> FrameBatch:
    return slice_batch(batch, pos, pos + 1)


def test_unidepth_missing_package_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # Both entries: an earlier test (the integration one) may already have imported unidepth.models.
    monkeypatch.setitem(sys.modules, "unidepth", None)
    monkeypatch.setitem(sys.modules, "unidepth.models", None)
    with pytest.raises(TeacherUnavailableError) as info:
        UniDepthTeacher(TeacherConfig(device="cpu"))
    msg = str(info.value)
    assert "pip install 'steadydepth[unidepth]'" in msg and "git+https://github.com/lpiccinelli-eth/UniDepth" in msg
    assert "\n" not in msg
    with pytest.raises(TeacherUnavailableError):
        build_teacher(TeacherConfig(backend="unidepth", device="cpu"))


def test_unidepth_loads_from_local_dir(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    seen = install_fake_unidepth(monkeypatch, lambda _src: FakeUniDepth())
    teacher = build_teacher(TeacherConfig(backend="unidepth", model=str(tmp_path), device="cpu"))
    assert isinstance(teacher, UniDepthTeacher) and seen == [str(tmp_path)]
    assert teacher.id == f"unidepth:{tmp_path}" and str(tmp_path) in teacher.version


def test_unidepth_unloadable_weights_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(_src: str) -> nn.Module:
        raise OSError("We couldn't connect to the hub.\nCheck your connection.")

    install_fake_unidepth(monkeypatch, fail)
    with pytest.raises(TeacherUnavailableError) as info:
        UniDepthTeacher(TeacherConfig(model="lpiccinelli/unidepth-v2-vits14", device="cpu"))
    msg = str(info.value)
    assert "lpiccinelli/unidepth-v2-vits14" in msg and "save_pretrained" in msg and "\n" not in msg


# -- precomputed depth -------------------------------------------------------------------------------


def _depth_maps(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 20.0, size=(n, H, W)).astype(np.float32)


def _write_exr(path, depth: np.ndarray) -> None:
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Z": depth}) as f:
        f.write(str(path))


def _precomputed(tmp_path, **kw) -> PrecomputedTeacher:
    return PrecomputedTeacher(TeacherConfig(backend="precomputed", precomputed_dir=str(tmp_path), **kw))


@pytest.mark.parametrize("fmt", ["npy", "png16", "exr"])
def test_precomputed_round_trips(tmp_path, fmt: str) -> None:
    depth = _depth_maps(3)
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, d in enumerate(depth):
        if fmt == "npy":
            np.save(folder / f"{i:05d}.npy", d[None] if i == 1 else d)  # (1, H, W) accepted too
        elif fmt == "png16":
            cv2.imwrite(str(folder / f"{i:05d}.png"), np.round(d * 1000).astype(np.uint16))
        else:
            _write_exr(folder / f"{i:05d}.exr", d)
    teacher = build_teacher(TeacherConfig(backend="precomputed", precomputed_dir=str(tmp_path)))
    assert isinstance(teacher, PrecomputedTeacher)
    batch = make_batch([2, 0], info=make_info(num_frames=3))
    out = predict_with_backoff(teacher, batch)
    expected = torch.from_numpy(depth[[2, 0]]).unsqueeze(1)
    tol = 0.5 / 1000 + 1e-6 if fmt == "png16" else 0.0
    assert out.depth.shape == (2, 1, H, W)
    assert float((out.depth - expected).abs().max()) <= tol
    assert out.confidence is None


def test_precomputed_natural_order_and_K_files(tmp_path) -> None:
    depth = _depth_maps(11)
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, d in enumerate(depth):
        np.save(folder / f"f{i}.npy", d)  # f10 must come after f9, not after f1
    K = known_K(1)[0].numpy()
    np.savetxt(folder / "K.txt", K)
    teacher = _precomputed(tmp_path)
    out = teacher.predict(make_batch([9, 10], info=make_info(num_frames=11)))
    assert torch.equal(out.depth[:, 0], torch.from_numpy(depth[[9, 10]]))
    assert torch.allclose(out.K, torch.from_numpy(K).expand(2, 3, 3))
    # Per-frame K.npy (T, 3, 3) is indexed by the frame position.
    per_frame = np.stack([K * (1 + i / 10) for i in range(11)]).astype(np.float32)
    per_frame[:, 2, 2] = 1
    np.save(folder / "K.npy", per_frame)
    out = _precomputed(tmp_path).predict(make_batch([3], info=make_info(num_frames=11)))
    assert torch.allclose(out.K[0], torch.from_numpy(per_frame[3]))


def test_precomputed_without_K_uses_batch_K_then_default(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, d in enumerate(_depth_maps(2)):
        np.save(folder / f"{i}.npy", d)
    teacher = _precomputed(tmp_path)
    K = known_K(2, f=33.0)
    assert torch.equal(teacher.predict(make_batch([0, 1], K=K, info=make_info(num_frames=2))).K, K)
    with caplog.at_level(logging.WARNING):
        out = teacher.predict(make_batch([0, 1], info=make_info(num_frames=2)))
    assert out.K.shape == (2, 3, 3) and "field of view" in caplog.text
    assert teacher.estimate_intrinsics(make_batch([0], info=make_info(num_frames=2))) is None


def _batch_of_source(frames: list[int], *, numbers: list[int] | None = None, source_frames: int = 10) -> FrameBatch:
    """Kept frames 0, 1, ... taken from source frames `frames` (as a stride / fps / max_frames decode gives)."""
    info = replace(make_info(num_frames=len(frames)), extra={"source_frames": str(source_frames)})
    batch = make_batch(list(range(len(frames))), info=info)
    return replace(batch, source_indices=list(frames), source_numbers=numbers)


def _npy_folder(tmp_path, names: list[str]) -> np.ndarray:
    folder = tmp_path / "clip"
    folder.mkdir()
    depth = _depth_maps(len(names))
    for name, d in zip(names, depth, strict=True):
        np.save(folder / name, d)
    return depth


def test_precomputed_files_follow_source_frames_by_number(tmp_path) -> None:
    depth = _npy_folder(tmp_path, [f"depth_{i:06d}.npy" for i in range(10)])
    out = _precomputed(tmp_path).predict(_batch_of_source([0, 3, 6, 9]))  # decode.stride=3
    assert torch.equal(out.depth[:, 0], torch.from_numpy(depth[[0, 3, 6, 9]]))


def test_precomputed_frame_folder_numbers_match_file_numbers(tmp_path) -> None:
    depth = _npy_folder(tmp_path, [f"depth_{150 + i:06d}.npy" for i in range(6)])
    # A frame folder starting at frame-000150 with depth for frames 150..155 only, decoded with stride 2.
    batch = _batch_of_source([0, 2, 4], numbers=[150, 152, 154], source_frames=50)
    out = _precomputed(tmp_path).predict(batch)
    assert torch.equal(out.depth[:, 0], torch.from_numpy(depth[[0, 2, 4]]))


@pytest.mark.parametrize("names", [[f"d{c}.npy" for c in "abcdefghij"], [f"{i:04d}.npy" for i in range(1, 11)]])
def test_precomputed_by_position_without_numbers_or_when_numbered_from_one(tmp_path, names: list[str]) -> None:
    depth = _npy_folder(tmp_path, names)
    K = np.stack([known_K(1, f=10.0 + i)[0].numpy() for i in range(10)])
    np.save(tmp_path / "clip" / "K.npy", K)  # one K per file, in the files' order
    teacher = _precomputed(tmp_path)
    out = teacher.predict(_batch_of_source([1, 5, 9]))
    assert torch.equal(out.depth[:, 0], torch.from_numpy(depth[[1, 5, 9]]))
    assert torch.equal(out.K, torch.from_numpy(K[[1, 5, 9]]))


def test_precomputed_missing_file_for_a_kept_frame_is_named(tmp_path) -> None:
    _npy_folder(tmp_path, [f"depth_{i:06d}.npy" for i in range(3)])
    teacher = _precomputed(tmp_path)
    teacher.predict(_batch_of_source([0, 2]))  # present: fine
    with pytest.raises(TeacherOutputError) as info:
        teacher.predict(_batch_of_source([0, 4]))
    msg = str(info.value)
    assert "source frame 4 of video clip" in msg and "numbered 0..2" in msg and "decode.stride" in msg
    assert str(tmp_path / "clip") in msg and "\n" not in msg


def test_precomputed_K_npy_must_have_one_K_per_file(tmp_path) -> None:
    _npy_folder(tmp_path, [f"{i}.npy" for i in range(3)])
    np.save(tmp_path / "clip" / "K.npy", np.stack([np.eye(3, dtype=np.float32)] * 2))
    with pytest.raises(TeacherOutputError, match=r"expected \(3, 3, 3\): one K per depth file"):
        _precomputed(tmp_path).predict(_batch_of_source([0]))


def test_precomputed_missing_dirs_and_size_mismatch(tmp_path) -> None:
    with pytest.raises(TeacherUnavailableError, match="not found"):
        _precomputed(tmp_path / "nope")
    with pytest.raises(TeacherUnavailableError, match="no precomputed depth for video clip"):
        _precomputed(tmp_path).predict(make_batch([0], info=make_info(num_frames=1)))
    folder = tmp_path / "clip"
    folder.mkdir()
    np.save(folder / "0.npy", np.ones((H + 2, W), np.float32))
    with pytest.raises(TeacherOutputError, match=rf"{H + 2}x{W} but .* decoded at {H}x{W}"):
        _precomputed(tmp_path).predict(make_batch([0], info=make_info(num_frames=1)))


def test_precomputed_passes_nan_and_zero_through_to_ingest(tmp_path) -> None:
    depth = _depth_maps(3)
    depth[2, 4, 5] = np.nan
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, d in enumerate(depth):
        np.save(folder / f"{i}.npy", d)
    out = predict_with_backoff(_precomputed(tmp_path), make_batch([0, 1, 2], info=make_info(num_frames=3)))
    assert bool(torch.isnan(out.depth[2, 0, 4, 5])) and int(torch.isnan(out.depth).sum()) == 1

    png_root = tmp_path / "png"
    (png_root / "clip").mkdir(parents=True)
    for i, d in enumerate(_depth_maps(2)):
        raw = np.round(d * 1000).astype(np.uint16)
        raw[0, 0] = 0 if i == 1 else raw[0, 0]  # a hole in frame 1
        cv2.imwrite(str(png_root / "clip" / f"{i}.png"), raw)
    teacher = _precomputed(png_root)
    batch = make_batch([0, 1], info=make_info(num_frames=2))
    out = validate_output(teacher.predict(batch), batch, teacher.id)
    assert float(out.depth[1, 0, 0, 0]) == 0.0


def test_validate_output_rejects_wrong_shapes() -> None:
    batch = make_batch([0, 1])
    bad = TeacherOutput(depth=torch.ones(2, 1, H, W + 1), K=known_K(2))
    with pytest.raises(TeacherOutputError, match=r"depth of shape \(2, 1, 12, 17\) for video clip"):
        validate_output(bad, batch, "t")
    with pytest.raises(TeacherOutputError, match="K of shape"):
        validate_output(TeacherOutput(depth=torch.ones(2, 1, H, W), K=known_K(1)), batch, "t")


# -- OOM back-off ------------------------------------------------------------------------------------


class OOMTeacher(Teacher):
    """Deterministic per-frame output; CUDA-OOMs for batches larger than `limit`."""

    id = "oom-fake"

    def __init__(self, limit: int, style: str = "typed") -> None:
        self.limit, self.style, self.sizes = limit, style, []

    def predict(self, batch: FrameBatch) -> TeacherOutput:
        b = len(batch.indices)
        self.sizes.append(b)
        if b > self.limit:
            if self.style == "typed":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise RuntimeError("CUDA error: out of memory")
        depth = batch.rgb.float().mean(1, keepdim=True) / 255 + 1
        idx = torch.tensor(list(batch.indices), dtype=torch.float32)
        K = torch.eye(3).expand(b, 3, 3) * (idx + 1).view(b, 1, 1)
        return TeacherOutput(depth=depth, K=K.clone(), confidence=torch.sigmoid(depth - 1.5))


@pytest.mark.parametrize("style", ["typed", "message"])
def test_backoff_halves_until_it_fits_and_remembers(style: str) -> None:
    batch = make_batch(list(range(7)))
    reference = [OOMTeacher(limit=1).predict(_single(batch, i)) for i in range(7)]
    teacher, sizer = OOMTeacher(limit=2, style=style), BatchSizer(8)
    out = predict_with_backoff(teacher, batch, sizer=sizer)
    assert sizer.size == 2
    assert torch.equal(out.depth, torch.cat([r.depth for r in reference]))
    assert torch.equal(out.K, torch.cat([r.K for r in reference]))
    assert torch.equal(out.confidence, torch.cat([r.confidence for r in reference]))
    teacher.sizes.clear()
    predict_with_backoff(teacher, batch, sizer=sizer)
    assert teacher.sizes == [2, 2, 2, 1], "the settled size is reused without new OOMs"


def test_backoff_at_batch_one_raises_naming_video_and_frame() -> None:
    batch = make_batch([5, 6, 7, 8])
    with pytest.raises(TeacherOutOfMemoryError) as info:
        predict_with_backoff(OOMTeacher(limit=0), batch)
    msg = str(info.value)
    assert "frame 5 of video clip" in msg and "\n" not in msg


def test_backoff_does_not_swallow_other_errors() -> None:
    class Broken(Teacher):
        def predict(self, batch: FrameBatch) -> TeacherOutput:
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        predict_with_backoff(Broken(), make_batch([0, 1]))


def test_registry_builds_synthetic() -> None:
    synthetic = pytest.importorskip("steadydepth.teachers.synthetic")
    teacher = build_teacher(TeacherConfig(backend="synthetic"))
    assert isinstance(teacher, synthetic.SyntheticTeacher)
