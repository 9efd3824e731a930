"""Camera paths: camera-to-world poses (OpenCV axes: x right, y down, z forward) as smooth functions of time.

Every path is a sum of bounded sinusoids around a base pose, so it stays inside `camera_region(kind)` for
any video length (scene.build_scene keeps objects clear of that region). Frequencies and phases are drawn from
the scenario's random generator.
"""

from __future__ import annotations

import numpy as np

# Camera looking along world +z with world +y up, in OpenCV axes: columns are the camera x, y, z in world.
_BASE_ROTATION = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])

PATH_KINDS = ("vr-head", "static", "fast", "dolly", "track")
_X_MID, _Z_MID = 0.0, 0.4  # centre of every path in the room's x-z plane
# Half extents (x, z) of the region each path stays in: the sums of its sinusoid amplitudes, plus a margin.
_HALF_EXTENT = {
    "vr-head": (0.2, 0.42),
    "static": (0.3, 0.3),
    "fast": (0.55, 0.65),
    "dolly": (0.15, 0.65),
    "track": (0.65, 0.2),
}


def camera_region(kind: str) -> tuple[float, float, float, float]:
    """(x_min, x_max, z_min, z_max) in world metres that path `kind` never leaves."""
    hx, hz = _HALF_EXTENT[kind]
    return _X_MID - hx, _X_MID + hx, _Z_MID - hz, _Z_MID + hz


def _rot_x(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _rot_y(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rot_z(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def poses_from_euler(position: np.ndarray, yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """(T, 4, 4) camera-to-world poses from positions (T, 3) and yaw (about world up), pitch, roll (camera axes).

    At zero angles the camera looks along world +z, upright. The paths below are symmetric in every angle,
    so the sign conventions do not matter to them.
    """
    rot = _rot_y(yaw) @ _BASE_ROTATION @ _rot_x(pitch) @ _rot_z(roll)
    poses = np.zeros((len(position), 4, 4))
    poses[:, :3, :3] = rot
    poses[:, :3, 3] = position
    poses[:, 3, 3] = 1.0
    return poses


def _wave(rng: np.random.Generator, t: np.ndarray, amp: float, freq: float) -> np.ndarray:
    """amp · sin(2π f t + φ) with f jittered ±20 % and a random phase."""
    f = freq * rng.uniform(0.8, 1.2)
    return amp * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))


def camera_path(kind: str, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera-to-world poses (T, 4, 4) for path `kind` (one of PATH_KINDS) at `times` seconds.

    - vr-head: head-mounted display — look-around yaw (±20°) and pitch, small roll, gait sway and bob,
      a slow forward/back wander.
    - static: a fixed pose (tripod).
    - fast: fast pans (peak ≈ 130°/s) while moving at up to ≈ 1.5 m/s.
    - dolly: a slow forward/back dolly with a gentle pan.
    - track: a lateral tracking shot (strong parallax across thin poles).
    """
    t = np.asarray(times, dtype=np.float64)
    n = len(t)
    if kind not in PATH_KINDS:
        raise ValueError(f"unknown camera path {kind!r}; expected one of {', '.join(PATH_KINDS)}")
    x_mid, z_mid = _X_MID, _Z_MID
    height = rng.uniform(1.45, 1.7)
    yaw0 = rng.uniform(-0.15, 0.15)
    pitch0 = rng.uniform(-0.12, -0.02)
    zeros = np.zeros(n)
    if kind == "static":
        pos = np.tile([x_mid + rng.uniform(-0.3, 0.3), height, z_mid + rng.uniform(-0.3, 0.3)], (n, 1))
        return poses_from_euler(pos, zeros + yaw0, zeros + pitch0, zeros + rng.uniform(-0.02, 0.02))
    if kind == "vr-head":
        x = x_mid + _wave(rng, t, 0.12, 0.2) + _wave(rng, t, 0.03, 0.9)  # wander + gait sway
        y = height + _wave(rng, t, 0.02, 1.8) + _wave(rng, t, 0.02, 0.3)  # bob
        z = z_mid + _wave(rng, t, 0.35, 0.12) + _wave(rng, t, 0.02, 0.9)
        yaw = yaw0 + _wave(rng, t, 0.35, 0.2) + _wave(rng, t, 0.05, 0.7) + _wave(rng, t, 0.01, 2.5)
        pitch = pitch0 + _wave(rng, t, 0.08, 0.3) + _wave(rng, t, 0.02, 1.3)
        roll = _wave(rng, t, 0.03, 0.4) + _wave(rng, t, 0.01, 1.7)
    elif kind == "fast":
        x = x_mid + _wave(rng, t, 0.5, 0.5)
        y = height + _wave(rng, t, 0.05, 1.0)
        z = z_mid + _wave(rng, t, 0.6, 0.35)
        yaw = yaw0 + _wave(rng, t, 0.8, 0.45) + _wave(rng, t, 0.1, 1.5)
        pitch = pitch0 + _wave(rng, t, 0.15, 0.7)
        roll = _wave(rng, t, 0.05, 0.9)
    elif kind == "dolly":
        x = x_mid + _wave(rng, t, 0.1, 0.1)
        y = height + _wave(rng, t, 0.02, 0.25)
        z = z_mid + _wave(rng, t, 0.6, 0.12)
        yaw = yaw0 + _wave(rng, t, 0.15, 0.1)
        pitch = pitch0 + _wave(rng, t, 0.03, 0.2)
        roll = zeros
    else:  # track
        x = x_mid + _wave(rng, t, 0.6, 0.18)
        y = height + _wave(rng, t, 0.03, 0.3)
        z = z_mid + _wave(rng, t, 0.15, 0.1)
        yaw = yaw0 + _wave(rng, t, 0.1, 0.15)
        pitch = pitch0 + zeros
        roll = zeros
    return poses_from_euler(np.stack([x, y, z], axis=1), yaw, pitch, roll)
