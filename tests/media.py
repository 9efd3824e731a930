"""Test helpers that write small real media files: encoded videos (PyAV), audio-only files, frame folders.

Videos carry two things a test can read back after lossy coding:
- an orientation marker: a white block in the top-left corner of the *displayed* frame;
- the frame number: the bottom band is a flat grey of level `index_level(i)` (decode with `read_index`).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from steadydepth.video.encode import write_video

MARKER = 16  # side of the top-left marker block, pixels
BAND = 12  # height of the bottom index band, pixels


def index_level(i: int) -> int:
    """Grey level that encodes frame number i (0 <= i <= 30); levels are 7 apart to survive coding."""
    return 16 + 7 * i


def read_index(rgb: np.ndarray, band: int = BAND // 2) -> int:
    """Frame number encoded in the bottom band of an (unpadded, upright) frame."""
    level = float(np.median(rgb[-band:, :, 1]))
    return int(round((level - 16) / 7))


def pattern_frame(i: int, size: tuple[int, int] = (64, 96)) -> np.ndarray:
    """Upright (H, W, 3) uint8 frame i: dark background, white top-left marker, index band at the bottom."""
    h, w = size
    rgb = np.full((h, w, 3), 40, np.uint8)
    rgb[:MARKER, :MARKER] = 255
    rgb[h - BAND :, :] = index_level(i)
    return rgb


def make_video(
    path: Path,
    num_frames: int = 30,
    size: tuple[int, int] = (64, 96),
    fps: float = 30.0,
    rotation: int = 0,
) -> Path:
    """Write pattern frames; with `rotation` the coded frames are turned so that a player applying the
    display matrix (counter-clockwise `rotation` degrees) shows the upright pattern of `size`."""
    k = -(rotation // 90)  # undo the display rotation when coding
    frames = (np.ascontiguousarray(np.rot90(pattern_frame(i, size), k=k)) for i in range(num_frames))
    write_video(path, frames, fps, rotation=rotation)
    return Path(path)


def make_faststart_video(path: Path, num_frames: int = 30, size: tuple[int, int] = (64, 96)) -> Path:
    """Pattern frames in an mp4 whose index (moov) comes first, so a truncated copy still opens."""
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for i in range(num_frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pattern_frame(i, size), format="rgb24")))
        container.mux(stream.encode(None))
    return Path(path)


def make_dot_video(path: Path, centre: tuple[float, float], size: tuple[int, int] = (64, 96), num_frames: int = 2):
    """Black frames with a 4×4 white block whose centre is at pixel coordinates (u, v) = centre
    (must be x.5: the block covers u-1.5 .. u+1.5)."""
    h, w = size
    u0, v0 = int(centre[0] - 1.5), int(centre[1] - 1.5)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[v0 : v0 + 4, u0 : u0 + 4] = 255
    write_video(path, (rgb for _ in range(num_frames)), 30.0, crf=0)
    return Path(path)


def make_audio_only(path: Path, seconds: float = 0.5, rate: int = 16000, empty_video_track: bool = False) -> Path:
    """A file with one AAC audio stream and no video stream; with `empty_video_track` (use .mkv: mp4 drops
    it) it also declares an H.264 video stream that holds no frames."""
    with av.open(str(path), mode="w") as container:
        video = None
        if empty_video_track:
            video = container.add_stream("libx264", rate=30)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        samples = int(seconds * rate)
        t = np.arange(samples) / rate
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        for start in range(0, samples, 1024):
            frame = av.AudioFrame.from_ndarray(tone[:, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if video is not None:
            container.mux(video.encode(None))
    return Path(path)


def make_frame_folder(
    folder: Path,
    num_frames: int = 4,
    size: tuple[int, int] = (48, 64),
    first_number: int = 0,
    depth: bool = True,
    pose: bool = True,
    intrinsics: bool = True,
    ext: str = "png",
) -> Path:
    """A 7-Scenes-style folder: colour pattern frames, uint16 mm depth (row 0 = 0 and row 1 = 65535,
    i.e. invalid; elsewhere 1000 + 100·i mm), poses translating along x by 0.1 m per frame, and K."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in range(num_frames):
        stem = folder / f"frame-{first_number + i:06d}"
        cv2.imwrite(f"{stem}.color.{ext}", cv2.cvtColor(pattern_frame(i, size), cv2.COLOR_RGB2BGR))
        if depth:
            d = np.full((h, w), 1000 + 100 * i, np.uint16)
            d[0], d[1] = 0, 65535
            cv2.imwrite(f"{stem}.depth.png", d)
        if pose:
            T = np.eye(4)
            T[0, 3] = 0.1 * i
            np.savetxt(f"{stem}.pose.txt", T)
    if intrinsics:
        np.savetxt(folder / "camera-intrinsics.txt", [[50.0, 0, (w - 1) / 2], [0, 50.0, (h - 1) / 2], [0, 0, 1]])
    return folder
