"""Procedural scene description: a textured room holding boxes, spheres and (thin) cylinders, some of them moving.

World frame: metres, y up, floor at y = 0. The camera stays inside an x-z rectangle that depends on its path
(camera.camera_region), and `build_scene` keeps every object, over its whole motion, at least CLEARANCE from that
rectangle, so the nearest surface can come to about 0.4–0.5 m and the far wall is at most about 9 m away.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CLEARANCE = 0.3  # metres every object keeps from the camera's region


@dataclass(frozen=True)
class SolidTexture:
    """A 2D procedural texture on surface coordinates (u, v) in metres: a few sine waves plus soft checker tiles.

    Components finer than the pixel footprint fade out (a cheap mip-map), so distant surfaces do not shimmer.
    """

    color_a: np.ndarray  # (3,) RGB in [0, 1]
    color_b: np.ndarray  # (3,)
    wave_vectors: np.ndarray  # (n, 2) cycles per metre
    wave_phases: np.ndarray  # (n,) radians
    wave_amps: np.ndarray  # (n,)
    checker_freq: float  # cells per metre; 0 disables the tiles
    checker_amp: float

    def evaluate(self, uv: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Colour (N, 3) float32 in [0, 1] at surface coordinates uv (N, 2) with pixel footprint (N,) metres."""
        # float32 is plenty for colours (phases stay below ~10³ rad) and twice as fast as float64.
        u, v = uv[:, 0].astype(np.float32), uv[:, 1].astype(np.float32)
        fp = footprint.astype(np.float32)
        value = np.full(len(uv), 0.5, dtype=np.float32)
        for k, amp, phase in zip(self.wave_vectors, self.wave_amps, self.wave_phases, strict=True):
            fade = np.clip(1.0 - 2.5 * float(np.hypot(*k)) * fp, 0.0, 1.0)  # gone well before Nyquist
            value += (
                np.float32(amp)
                * fade
                * np.sin(np.float32(2 * np.pi * k[0]) * u + np.float32(2 * np.pi * k[1]) * v + np.float32(phase))
            )
        if self.checker_freq > 0:
            f = np.float32(np.pi * self.checker_freq)
            prod = np.sin(f * u) * np.sin(f * v)
            sharp = np.clip(0.35 / (self.checker_freq * fp + 1e-9), 1.0, 12.0)  # soft tile edges: anti-aliased
            fade = np.clip(1.0 - 2.5 * self.checker_freq * fp, 0.0, 1.0)
            value += np.float32(self.checker_amp) * fade * np.tanh(sharp * prod)
        t = np.clip(value, 0.0, 1.0)[:, None]
        return ((1.0 - t) * self.color_a.astype(np.float32) + t * self.color_b.astype(np.float32)).astype(np.float32)


@dataclass(frozen=True)
class Motion:
    """Bounded independent motion of an object: offset(t) = amplitude * sin(2π·frequency·t + phase)."""

    amplitude: np.ndarray = field(default_factory=lambda: np.zeros(3))  # (3,) metres
    frequency: float = 0.0  # Hz
    phase: float = 0.0

    @property
    def moving(self) -> bool:
        return bool(np.any(self.amplitude != 0)) and self.frequency > 0

    def offset(self, t: float) -> np.ndarray:
        """World-space translation (3,) at time t seconds."""
        return self.amplitude * np.sin(2 * np.pi * self.frequency * t + self.phase)


@dataclass(frozen=True)
class Box:
    """A box of half sizes `half` (3,), rotated by `yaw` about the vertical axis, centred at `center`."""

    center: np.ndarray
    half: np.ndarray
    yaw: float
    texture: SolidTexture
    motion: Motion = field(default_factory=Motion)


@dataclass(frozen=True)
class Sphere:
    """A sphere."""

    center: np.ndarray
    radius: float
    texture: SolidTexture
    motion: Motion = field(default_factory=Motion)


@dataclass(frozen=True)
class Cylinder:
    """A vertical cylinder from center[1] + y0 to center[1] + y1 around (center[0], center[2]), with a top cap.

    Thin ones (radius of a few centimetres, floor to ceiling) are poles.
    """

    center: np.ndarray
    radius: float
    y0: float
    y1: float
    texture: SolidTexture
    motion: Motion = field(default_factory=Motion)


Primitive = Box | Sphere | Cylinder


@dataclass(frozen=True)
class Room:
    """The axis-aligned box the camera is inside; textures for faces -x, +x, -y (floor), +y, -z, +z."""

    lo: np.ndarray
    hi: np.ndarray
    textures: tuple[SolidTexture, ...]


@dataclass(frozen=True)
class Scene:
    """Everything the renderer needs besides the camera."""

    room: Room
    objects: tuple[Primitive, ...]
    light_dir: np.ndarray  # (3,) unit vector towards the light
    ambient: float


def random_texture(rng: np.random.Generator, *, checker: bool, scale: float = 1.0) -> SolidTexture:
    """A random texture; `scale` multiplies the spatial frequencies (smaller for large surfaces)."""
    # A dark and a bright colour of different hues: strong, flow-friendly contrast.
    color_a = rng.uniform(0.05, 0.45, size=3) * rng.uniform(0.4, 0.9)
    color_b = np.clip(rng.uniform(0.3, 1.0, size=3) * rng.uniform(0.8, 1.0) + 0.15, 0.0, 1.0)
    n = 5
    angles = rng.uniform(0, np.pi, size=n)
    freqs = scale * np.exp(rng.uniform(np.log(0.6), np.log(7.0), size=n))
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1) * freqs[:, None]
    amps = rng.uniform(0.08, 0.22, size=n)
    return SolidTexture(
        color_a=color_a,
        color_b=color_b,
        wave_vectors=vectors,
        wave_phases=rng.uniform(0, 2 * np.pi, size=n),
        wave_amps=amps,
        checker_freq=float(scale * rng.uniform(1.2, 3.5)) if checker else 0.0,
        checker_amp=float(rng.uniform(0.2, 0.35)) if checker else 0.0,
    )


def _xz_radius(obj: Primitive) -> float:
    if isinstance(obj, Box):
        return float(np.hypot(obj.half[0], obj.half[2]))
    return float(obj.radius)


def _clear_of_camera(center: np.ndarray, radius: float, motion: Motion, region: tuple[float, ...]) -> bool:
    """Whether the object's x-z disc, swept by its motion, keeps CLEARANCE from the camera region."""
    x0, x1, z0, z1 = region
    reach = radius + CLEARANCE
    ax, az = abs(motion.amplitude[0]), abs(motion.amplitude[2])
    # Distance between the swept rectangle (centre ± amplitude) and the camera rectangle, as rectangles.
    dx = max(x0 - (center[0] + ax), (center[0] - ax) - x1, 0.0)
    dz = max(z0 - (center[2] + az), (center[2] - az) - z1, 0.0)
    return float(np.hypot(dx, dz)) > reach


def _random_motion(rng: np.random.Generator, strength: float) -> Motion:
    """Side-to-side motion (mostly along x) with a little bounce, amplitude scaled by `strength`."""
    amp = np.array([rng.uniform(0.5, 1.1), rng.uniform(0.0, 0.25), rng.uniform(-0.3, 0.3)]) * strength
    return Motion(amplitude=amp, frequency=float(rng.uniform(0.25, 0.55)), phase=float(rng.uniform(0, 2 * np.pi)))


def build_scene(
    rng: np.random.Generator,
    *,
    camera_region: tuple[float, float, float, float],
    n_boxes: int,
    n_spheres: int,
    n_poles: int,
    n_moving: int,
) -> Scene:
    """A random room with the given numbers of objects, `n_moving` more that move independently.

    camera_region: (x_min, x_max, z_min, z_max) the camera stays in; objects keep CLEARANCE from it.
    Also always places one near object just in front of the camera region (near depth, strong parallax)
    and one short pillar; thin poles (radius 1.5–5 cm, floor to ceiling) give thin structures and sharp edges.
    """
    half_width = rng.uniform(2.6, 3.3)
    height = rng.uniform(2.6, 3.0)
    z_far = rng.uniform(7.4, 8.3)
    room = Room(
        lo=np.array([-half_width, 0.0, -1.8]),
        hi=np.array([half_width, height, z_far]),
        textures=(
            random_texture(rng, checker=False, scale=0.7),
            random_texture(rng, checker=False, scale=0.7),
            random_texture(rng, checker=True, scale=0.8),  # floor tiles
            random_texture(rng, checker=False, scale=0.5),
            random_texture(rng, checker=True, scale=0.5),
            random_texture(rng, checker=False, scale=0.6),  # far wall
        ),
    )
    objects: list[Primitive] = []
    moving: list[Primitive] = []

    def occludes_moving(obj: Primitive) -> bool:
        """Whether a static object stands in front of a moving one's sweep (keeps moving objects visible)."""
        for m in moving:
            reach = abs(m.motion.amplitude[0]) + _xz_radius(m) + _xz_radius(obj) + 0.2
            if obj.center[2] < m.center[2] + _xz_radius(m) and abs(obj.center[0] - m.center[0]) < reach:
                return True
        return False

    def place(
        make,
        z_range: tuple[float, float],
        motion: Motion,
        x_range: tuple[float, float] | None = None,
        may_occlude: bool = False,
    ) -> None:
        x_lo, x_hi = x_range or (-half_width + 0.4, half_width - 0.4)
        for _ in range(200):  # rejection sampling; a rare failure just leaves the object out
            x = rng.uniform(x_lo, x_hi)
            z = rng.uniform(*z_range)
            obj = make(x, z, motion)
            if _clear_of_camera(obj.center, _xz_radius(obj), motion, camera_region) and (
                motion.moving or may_occlude or not occludes_moving(obj)
            ):
                (moving if motion.moving else objects).append(obj)
                return

    def make_box(x: float, z: float, motion: Motion, max_half: float = 0.6, min_height: float = 0.2) -> Box:
        half = np.array([rng.uniform(0.12, max_half), rng.uniform(min_height, 1.0), rng.uniform(0.12, max_half)])
        return Box(
            np.array([x, half[1], z]),
            half,
            float(rng.uniform(0, np.pi)),
            random_texture(rng, checker=bool(rng.random() < 0.5), scale=1.5),
            motion,
        )

    def make_sphere(x: float, z: float, motion: Motion) -> Sphere:
        r = float(rng.uniform(0.2, 0.45))
        y = r + float(rng.uniform(0.0, 1.0))
        return Sphere(np.array([x, y, z]), r, random_texture(rng, checker=False, scale=2.5), motion)

    def make_pole(x: float, z: float, motion: Motion) -> Cylinder:
        r = float(rng.uniform(0.015, 0.05))
        return Cylinder(np.array([x, 0.0, z]), r, 0.0, height, random_texture(rng, checker=False, scale=3.0), motion)

    def make_pillar(x: float, z: float, motion: Motion) -> Cylinder:
        r = float(rng.uniform(0.18, 0.35))
        return Cylinder(
            np.array([x, 0.0, z]),
            r,
            0.0,
            float(rng.uniform(0.5, 1.3)),
            random_texture(rng, checker=True, scale=2.0),
            motion,
        )

    # Independently moving objects first, near the view axis in the middle distance, so they stay in view
    # (static objects that would hide them are rejected below).
    makers = (make_sphere, make_box)
    for i in range(n_moving):
        place(makers[i % 2], (2.6, 4.2), _random_motion(rng, 1.0), (-0.8, 0.8))
    # The near object: a small box or a pole just in front of the camera region, off-axis, about 0.5–1.5 m away.
    x0, x1, _, z1 = camera_region
    near_z = (z1 + 0.3, z1 + 1.0)
    near_x = (x1 - 0.2, x1 + 0.5) if rng.random() < 0.5 else (x0 - 0.5, x0 + 0.2)
    if rng.random() < 0.5:
        place(
            lambda x, z, m: make_box(x, z, m, max_half=0.25, min_height=0.6), near_z, Motion(), near_x, may_occlude=True
        )
    else:
        place(make_pole, near_z, Motion(), near_x, may_occlude=True)
    for _ in range(n_boxes):
        place(make_box, (2.0, z_far - 0.7), Motion())
    for _ in range(n_spheres):
        place(make_sphere, (2.0, z_far - 0.7), Motion())
    for _ in range(n_poles):
        place(make_pole, (1.8, z_far - 0.4), Motion())
    place(make_pillar, (2.2, z_far - 0.8), Motion())
    objects.extend(moving)
    light = np.array([0.35, 1.0, -0.45])
    return Scene(room=room, objects=tuple(objects), light_dir=light / np.linalg.norm(light), ambient=0.42)
