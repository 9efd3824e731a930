"""The UniDepthTeacher around the real UniDepthV2 (ViT-S, random weights), on CPU and, when there is one, CUDA.

Needs the UniDepth package and the repository's `configs/config_v2_vits14.json`, which is not part of
the installed package: point STEADYDEPTH_UNIDEPTH_CONFIG at it. Slow on CPU (several s per frame).
On CUDA the teacher runs under fp16 autocast, so batched and single-frame outputs agree to fp16 precision only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("unidepth.models", reason="UniDepth is not installed (pip install 'steadydepth[unidepth]')")

from steadydepth.config import TeacherConfig  # noqa: E402
from steadydepth.teachers.base import FrameBatch  # noqa: E402
from steadydepth.teachers.batching import BatchSizer, predict_with_backoff, slice_batch  # noqa: E402
from steadydepth.teachers.unidepth import UniDepthTeacher  # noqa: E402
from steadydepth.video.types import VideoInfo  # noqa: E402

pytestmark = pytest.mark.slow

H, W = 480, 640  # 0.31 MP: infer() refuses less than 0.2 MP


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")]),
]


@pytest.fixture(scope="module", params=DEVICES)
def teacher(request: pytest.FixtureRequest) -> UniDepthTeacher:
    cfg_path = os.environ.get("STEADYDEPTH_UNIDEPTH_CONFIG")
    if not cfg_path or not Path(cfg_path).is_file():
        pytest.skip("set STEADYDEPTH_UNIDEPTH_CONFIG to UniDepth's configs/config_v2_vits14.json to run this test")
    from unidepth.models import UniDepthV2

    torch.manual_seed(0)
    model = UniDepthV2(json.loads(Path(cfg_path).read_text()))  # random weights, no download
    cfg = TeacherConfig(device=request.param, resolution_level=0, batch_size=2)
    return UniDepthTeacher(cfg, model, model_id="vits14-random")


def _batch(K: torch.Tensor | None = None) -> FrameBatch:
    info = VideoInfo(
        source="/videos/clip.mp4",
        name="clip",
        content_hash="0" * 64,
        source_fps=30.0,
        fps=30.0,
        num_frames=2,
        original_size=(H, W),
        size=(H, W),
    )
    g = torch.Generator().manual_seed(1)
    # Smooth gradients plus noise: something image-like at full 0–255 range.
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    base = torch.stack([xx, yy, (xx + yy) / 2]) * 200
    rgb = torch.stack([base, base.flip(-1)]) + torch.rand(2, 3, H, W, generator=g) * 55
    return FrameBatch(video=info, indices=[0, 1], source_indices=[0, 1], rgb=rgb.round().to(torch.uint8), K=K)


def _check(out, b: int = 2) -> None:
    assert out.depth.shape == (b, 1, H, W) and out.depth.dtype == torch.float32
    assert bool(torch.isfinite(out.depth).all()) and bool((out.depth > 0).all())
    assert out.K.shape == (b, 3, 3) and bool(torch.isfinite(out.K).all())
    assert out.confidence is not None and out.confidence.shape == (b, 1, H, W)
    assert float(out.confidence.min()) >= 0.0 and float(out.confidence.max()) <= 1.0


def test_unidepth_predicts_without_K(teacher: UniDepthTeacher) -> None:
    out = predict_with_backoff(teacher, _batch(), sizer=BatchSizer(2))
    _check(out)
    assert float(out.K[0, 0, 0]) > 0 and float(out.K[0, 2, 2]) == pytest.approx(1.0)


def test_unidepth_uses_given_K_without_mutating_it(teacher: UniDepthTeacher) -> None:
    K = torch.tensor([[500.0, 0, (W - 1) / 2], [0, 500.0, (H - 1) / 2], [0, 0, 1]]).expand(2, 3, 3).clone()
    K[1, 0, 0] = K[1, 1, 1] = 400.0  # a different K per frame: each frame must get its own camera
    batch = _batch(K.clone())
    first = predict_with_backoff(teacher, batch)
    _check(first)
    assert torch.equal(batch.K, K), "UniDepth modified the caller's K in place"
    assert torch.equal(first.K, K), "returned K must be the given one, not out['intrinsics']"
    # Frame 1 again, alone: without the clone its K would have been rescaled and the depth would drift;
    # it also checks the batched per-frame cameras against UniDepth's single-frame path.
    second = teacher.predict(slice_batch(batch, 1, 2))
    assert torch.equal(batch.K, K)
    tol = 1e-4 if teacher.device.type == "cpu" else 1e-2  # fp16 autocast on CUDA
    assert torch.allclose(second.depth[0], first.depth[1], rtol=tol, atol=tol)


def test_unidepth_estimates_intrinsics(teacher: UniDepthTeacher) -> None:
    K = teacher.estimate_intrinsics(slice_batch(_batch(), 0, 1))
    assert K.shape == (1, 3, 3) and bool(torch.isfinite(K).all()) and float(K[0, 0, 0]) > 0
