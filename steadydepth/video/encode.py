"""Write RGB frames to an encoded video file with PyAV (used by the synthetic benchmark, tests, previews)."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    codec: str = "libx264",
    crf: int = 18,
    rotation: int = 0,
) -> int:
    """Encode (H, W, 3) uint8 RGB frames to `path` (mp4/mkv/...); returns the number of frames written.

    H and W must be even for yuv420p. Frames are streamed: only one is held at a time.
    `rotation` (degrees counter-clockwise, as `VideoFrame.rotation` reads it back) is written as
    display-matrix metadata: players show the coded frames rotated by it (like a phone in portrait).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for rgb in frames:
            if stream is None:
                h, w = rgb.shape[:2]
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height = w, h
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf)} if codec == "libx264" else {}
                if rotation % 360:
                    stream.set_display_rotation(rotation)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
            count += 1
        if stream is not None:
            container.mux(stream.encode(None))
    return count
