"""Typed errors. Every message is one line that names the thing at fault and what to do about it.

`InputError` and its children are the user's to fix (bad video, bad config, bad teacher output):
orchestration never retries them. Everything else may be transient.
"""

from __future__ import annotations


class SteadyDepthError(Exception):
    """Base of all SteadyDepth errors; `str(err)` is a one-line, user-facing message."""


class InputError(SteadyDepthError):
    """The input is wrong and retrying cannot help (bad file, bad config value, bad teacher output)."""


class ConfigError(InputError):
    """A configuration value is invalid; raised before any work starts."""


class VideoDecodeError(InputError):
    """A video file is missing, corrupt, has no video stream or has no frames."""


class FrameFolderError(InputError):
    """An RGB-D frame folder is missing files or holds unreadable frames."""


class TeacherOutputError(InputError):
    """A teacher returned depth that cannot be stored (NaN, inf, zero or negative, wrong shape)."""


class TeacherUnavailableError(InputError):
    """A teacher backend cannot be built here (package not installed, weights not found)."""


class TeacherOutOfMemoryError(SteadyDepthError):
    """The teacher ran out of GPU memory even at batch size 1 (transient: another job may hold the GPU)."""


class StoreError(SteadyDepthError):
    """A depth store is missing, incompatible with the request, or damaged."""


class RefineFailedError(SteadyDepthError):
    """No teacher store could be refined (the message carries the first store's cause)."""
