"""The synthetic teacher: ground truth passed through the simulated error model (steadydepth/synth/teacher_model.py).

It needs the batch's ground-truth depth (a `<stem>.gt.zarr` sidecar beside a video, or the depth of an RGB-D
frame folder) and gives a flickering, metric, UniDepth-like prediction of it, so the whole pipeline can be
trained and evaluated without model weights.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from steadydepth.config import SyntheticTeacherConfig
from steadydepth.errors import TeacherUnavailableError
from steadydepth.synth.teacher_model import MODEL_VERSION, simulate_teacher
from steadydepth.teachers.base import FrameBatch, Teacher, TeacherOutput, validate_output

DEFAULT_FOCAL_FRACTION = 0.8  # fx = fy = 0.8 · W (about 64° horizontal FOV) when no K is known


def default_intrinsics(size: tuple[int, int]) -> np.ndarray:
    """A plausible K for frames of `size` (H, W): fx = fy = 0.8·W, principal point at the centre ((W−1)/2, (H−1)/2)."""
    h, w = size
    f = DEFAULT_FOCAL_FRACTION * w
    return np.array([[f, 0.0, (w - 1) / 2], [0.0, f, (h - 1) / 2], [0.0, 0.0, 1.0]])


class SyntheticTeacher(Teacher):
    """Simulated teacher over ground truth; deterministic in (config.seed, video name, source frame number).

    Output K: the batch's K if given, else the video's K if known, else `default_intrinsics`.
    """

    id = "synthetic"
    version = MODEL_VERSION

    def __init__(self, config: SyntheticTeacherConfig | None = None) -> None:
        self.config = config if config is not None else SyntheticTeacherConfig()

    def predict(self, batch: FrameBatch) -> TeacherOutput:
        """Depth and confidence for every frame of the batch from its ground truth (frames are independent)."""
        name = batch.video.name
        if batch.gt_depth is None:
            raise TeacherUnavailableError(
                f"synthetic teacher needs ground truth: video {name} has no {name}.gt.zarr sidecar or frame-folder "
                "depth; use teacher.backend=unidepth or precomputed"
            )
        b = len(batch.indices)
        h, w = batch.rgb.shape[-2:]
        gt = batch.gt_depth.detach().to("cpu", torch.float32).numpy().reshape(b, *batch.gt_depth.shape[-2:])
        depth = np.empty((b, 1, h, w), dtype=np.float32)
        confidence = np.empty((b, 1, h, w), dtype=np.float32)
        for i, frame in enumerate(batch.source_indices):
            g = gt[i]
            if g.shape != (h, w):  # defensive: GT should already match the frames; nearest keeps edges sharp
                g = cv2.resize(g, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
            depth[i, 0], confidence[i, 0] = simulate_teacher(g, video_key=name, frame=int(frame), params=self.config)
        out = TeacherOutput(
            depth=torch.from_numpy(depth),
            K=self._intrinsics(batch, (h, w)),
            confidence=torch.from_numpy(confidence),
        )
        return validate_output(out, batch, self.id)

    @staticmethod
    def _intrinsics(batch: FrameBatch, size: tuple[int, int]) -> torch.Tensor:
        b = len(batch.indices)
        if batch.K is not None:
            return batch.K.detach().to("cpu", torch.float32).clone()
        K = batch.video.K if batch.video.K is not None else default_intrinsics(size)
        return torch.as_tensor(np.asarray(K), dtype=torch.float32).expand(b, 3, 3).clone()
