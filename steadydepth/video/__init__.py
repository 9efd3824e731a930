"""Frame sources: encoded videos (PyAV) and RGB-D frame folders, both streamed frame by frame."""

from steadydepth.video.types import Frame, VideoInfo

__all__ = ["Frame", "VideoInfo"]
