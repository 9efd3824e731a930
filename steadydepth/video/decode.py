"""Stream frames out of an encoded video with PyAV.

`open_video` reads the whole container once without decoding pictures (packets only) to learn the exact
frame count and timestamps, decodes just the first frame to learn the rotation, and hashes the file.
`VideoFile.frames()` then decodes one frame at a time; nothing holds more than the current frame.

Frame selection: see `steadydepth.video.common.effective_stride` (stride = max(stride,
ceil(source_fps / target_fps)), then max_frames). Geometry (resize, bottom/right padding, K update in
the pixel-centre convention): see `steadydepth.video.geometry`. Rotation: the display matrix's
rotation is applied (rounded to a multiple of 90°; flips in the matrix are ignored), so frames come
out upright and `original_size` is the displayed size.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import fsspec
import numpy as np

from steadydepth.config import DecodeConfig
from steadydepth.errors import StoreError, VideoDecodeError
from steadydepth.video.common import effective_stride, safe_name, select_indices, sha256_files, sha256_update
from steadydepth.video.geometry import Geometry, intrinsics_from_config, plan_geometry
from steadydepth.video.types import Frame, VideoInfo
from storage import uri as uris
from storage.ground_truth import GroundTruth, open_ground_truth, sidecar_uri

# Errors PyAV raises for unreadable input (InvalidDataError, EOFError, decoder errors, ...).
_AV_ERRORS = (av.error.FFmpegError, OSError)


@dataclass(frozen=True)
class _Probe:
    """What one demux pass (plus decoding the first frame) tells about a video stream."""

    timestamps: list[float]  # seconds from the first frame, presentation order
    source_fps: float
    coded_size: tuple[int, int]  # (H, W) as stored, before rotation
    rotation: int  # counter-clockwise degrees to display upright: 0, 90, 180, 270
    codec: str
    container_format: str


@contextlib.contextmanager
def _open_container(source: str) -> Iterator[av.container.InputContainer]:
    """av.open a local path directly, or an fsspec URL through a file object."""
    if uris.is_url(source):
        with fsspec.open(source, "rb") as f, av.open(f, mode="r") as container:
            yield container
    else:
        with av.open(source, mode="r") as container:
            yield container


def _reason(err: Exception) -> str:
    """Short cause of a PyAV error, without the file name it repeats."""
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _check_exists(source: str) -> None:
    if uris.is_url(source):
        if not uris.exists(source):
            raise VideoDecodeError(f"video {source} not found; check the URL and its storage credentials")
        return
    path = Path(source)
    if not path.exists():
        raise VideoDecodeError(f"video {source} not found; check the path (or pass a folder of frames)")
    if not path.is_file():
        raise VideoDecodeError(f"video {source} is not a file; pass a video file or an RGB-D frame folder")
    if path.stat().st_size == 0:
        raise VideoDecodeError(f"video {source} is empty (0 bytes); re-export it or remove it from the inputs")


def _hash_file(source: str) -> str:
    if not uris.is_url(source):
        return sha256_files([source])  # memoised: the cache key and the ingest both ask
    digest = hashlib.sha256()
    with fsspec.open(source, "rb") as f:
        sha256_update(digest, f)
    return digest.hexdigest()


def _normalise_rotation(degrees: float) -> int:
    return int(round(degrees / 90.0)) * 90 % 360


def _probe(source: str) -> _Probe:
    """Demux every packet of the first video stream (no picture decoding except the first frame)."""
    try:
        with _open_container(source) as container:
            if not container.streams.video:
                raise VideoDecodeError(
                    f"video {source} has no video stream (audio or data only); pass a file with a video track"
                )
            stream = container.streams.video[0]
            pts: list[int | None] = []
            dts: list[int | None] = []
            first = None
            stored = 0  # packets present in the file, including ones an edit list discards
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream flush packet
                    continue
                stored += 1
                if first is None:  # feed discarded packets too: they may be the keyframe the rest needs
                    decoded = stream.decode(packet)
                    first = decoded[0] if decoded else None
                if packet.is_discard:  # hidden by an edit list: the decoder drops it, so it is no frame
                    continue
                pts.append(packet.pts)
                dts.append(packet.dts)
            if first is None and pts:
                decoded = stream.decode(None)  # drain a decoder that buffers before its first output
                first = decoded[0] if decoded else None
            if stream.frames and stored < stream.frames:
                raise VideoDecodeError(
                    f"video {source} is truncated: its index lists {stream.frames} frames but only {stored} "
                    "are in the file; re-download or re-encode it"
                )
            time_base = stream.time_base
            rate = stream.average_rate or stream.guessed_rate
            codec = stream.codec_context.name
            fmt = container.format.name
    except VideoDecodeError:
        raise
    except _AV_ERRORS as err:
        raise VideoDecodeError(
            f"video {source} cannot be read ({_reason(err)}); is it a complete video file? re-encode it"
        ) from None
    if not pts:
        raise VideoDecodeError(f"video {source} has no frames; re-export it or remove it from the inputs")
    if first is None:
        raise VideoDecodeError(f"video {source}: its first frame does not decode; the file is damaged, re-encode it")

    stamps = pts if all(p is not None for p in pts) else dts
    if all(s is not None for s in stamps) and time_base is not None:
        origin = min(stamps)
        timestamps = sorted(float((s - origin) * time_base) for s in stamps)
    else:
        timestamps = []
    if rate:
        fps = float(rate)
    elif len(timestamps) > 1 and timestamps[-1] > 0:
        fps = (len(timestamps) - 1) / timestamps[-1]
    else:
        fps = 30.0  # nothing in the file says; a single frame or raw stream without rates
    if not timestamps:
        timestamps = [i / fps for i in range(len(pts))]
    return _Probe(
        timestamps=timestamps,
        source_fps=fps,
        coded_size=(first.height, first.width),
        rotation=_normalise_rotation(first.rotation or 0),
        codec=codec,
        container_format=fmt,
    )


class VideoFile:
    """A video opened for streaming (a `FrameSource`); build it with `open_video`.

    `geometry` maps original-frame quantities to output frames (e.g. `geometry.update_K(K)` for a K
    known for the original frames, such as a ground-truth sidecar's)."""

    def __init__(self, info: VideoInfo, geometry: Geometry, stride: int, timestamps: list[float], gt_uri: str | None):
        self.info = info
        self.geometry = geometry
        self._stride = stride
        self._timestamps = timestamps
        self._gt_uri = gt_uri

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """Colour-convert and resize in one swscale call on the coded frame, then rotate upright and pad."""
        g = self.geometry
        rotation = self.info.rotation
        h, w = g.resized_size
        coded_h, coded_w = (w, h) if rotation in (90, 270) else (h, w)
        shrink = coded_h * coded_w < frame.height * frame.width
        rgb = frame.to_ndarray(
            format="rgb24", width=coded_w, height=coded_h, interpolation="AREA" if shrink else "BILINEAR"
        )
        if rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))  # rot90 turns counter-clockwise
        return g.pad(rgb, 0)

    def frames(self) -> Iterator[Frame]:
        """Decode and yield the selected frames in order.

        Raises VideoDecodeError naming the (0-based) source frame that fails to decode, or when the
        stream ends before the frames counted at open time.
        """
        source = self.info.source
        last = (self.info.num_frames - 1) * self._stride
        gt: GroundTruth | None = open_ground_truth(self._gt_uri) if self._gt_uri else None
        position = 0
        index = -1
        try:
            with _open_container(source) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    index += 1
                    if index > last:
                        break
                    if index % self._stride:
                        continue
                    out = Frame(
                        index=position,
                        source_index=index,
                        timestamp=self._timestamps[index],
                        rgb=self._to_rgb(frame),
                    )
                    if gt is not None:
                        out.gt_depth = self.geometry.fit_depth(gt.depth(index))
                        out.pose = gt.pose(index)
                    position += 1
                    yield out
        except _AV_ERRORS as err:
            raise VideoDecodeError(
                f"video {source}: decoding failed at source frame {index + 1} ({_reason(err)}); "
                "the file is damaged, re-encode it"
            ) from None
        if position < self.info.num_frames:
            raise VideoDecodeError(
                f"video {source} ended after {index + 1} decodable frames but its container lists "
                f"{len(self._timestamps)}; the file is truncated or damaged, re-encode it"
            )


def _ground_truth(source: str, num_frames: int) -> str | None:
    """The sidecar URI if one exists beside the video and matches its frame count."""
    uri = sidecar_uri(source)
    if not uris.exists(uri):
        return None
    try:
        gt = open_ground_truth(uri)
    except StoreError as err:
        raise VideoDecodeError(str(err)) from None
    if gt.num_frames != num_frames:
        raise VideoDecodeError(
            f"ground-truth sidecar {uri} has {gt.num_frames} frames but video {source} has {num_frames}; "
            "regenerate the sidecar or remove it"
        )
    return uri


def open_video(path: str | Path, cfg: DecodeConfig | None = None) -> VideoFile:
    """Open a video file (local path or fsspec URL) for streaming.

    Raises VideoDecodeError (one line naming the file) when it is missing, not a video, has no video
    stream, has no frames, or its first frame does not decode.
    """
    cfg = cfg or DecodeConfig()
    source = str(path)
    _check_exists(source)
    probe = _probe(source)
    num_source = len(probe.timestamps)
    stride = effective_stride(probe.source_fps, cfg)
    indices = select_indices(num_source, stride, cfg.max_frames)

    coded_h, coded_w = probe.coded_size
    original = (coded_w, coded_h) if probe.rotation in (90, 270) else (coded_h, coded_w)
    geometry = plan_geometry(original, cfg.long_edge, cfg.pad_multiple)
    K = intrinsics_from_config(cfg.intrinsics, original) if cfg.intrinsics is not None else None
    gt_uri = _ground_truth(source, num_source)
    if K is None and gt_uri is not None:
        K = open_ground_truth(gt_uri).K  # the sidecar knows the true camera (synthetic benchmark)

    info = VideoInfo(
        source=source,
        name=safe_name(uris.stem(source)),
        content_hash=_hash_file(source),
        source_fps=probe.source_fps,
        fps=probe.source_fps / stride,
        num_frames=len(indices),
        original_size=original,
        size=geometry.size,
        padding=geometry.padding,
        rotation=probe.rotation,
        K=geometry.update_K(K),
        has_ground_truth=gt_uri is not None,
        extra={
            "kind": "video",
            "codec": probe.codec,
            "container": probe.container_format,
            "stride": str(stride),
            "source_frames": str(num_source),
        },
    )
    return VideoFile(info, geometry, stride, probe.timestamps, gt_uri)
