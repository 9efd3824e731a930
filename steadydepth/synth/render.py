"""Vectorised ray casting of a `Scene`: exact z-depth and a shaded, textured RGB image per camera pose.

One ray per pixel centre, r = R · K⁻¹ [u, v, 1]ᵀ with u, v the integer pixel coordinates (so K's cx = (W − 1)/2
convention matches the pixel grid). Because the camera-space ray has z = 1, the ray parameter of the nearest hit
*is* the z-depth. Intersection runs over all primitives on all pixels; shading then runs once per primitive on the
pixels it won.
"""

from __future__ import annotations

import numpy as np

from steadydepth.synth.scene import Box, Cylinder, Primitive, Room, Scene, Sphere

_EPS = 1e-6


def pixel_rays(K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Camera-space rays (H, W, 3) with z = 1 through every pixel centre."""
    h, w = size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pix = np.stack([u, v, np.ones((h, w))], axis=-1)
    return pix @ np.linalg.inv(K).T


def _mul(v: np.ndarray, m: np.ndarray) -> np.ndarray:
    """v @ m for (..., 3) vectors and a 3×3 (or 3×k) matrix, elementwise (no BLAS threads: fast on busy cores)."""
    return v[..., 0:1] * m[0] + v[..., 1:2] * m[1] + v[..., 2:3] * m[2]


def _rot_y(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _intersect_room(room: Room, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exit distance of rays (H, W, 3) from inside the room, and the face index (0..5 for -x,+x,-y,+y,-z,+z)."""
    t = np.full(d.shape[:2], np.inf)
    face = np.zeros(d.shape[:2], dtype=np.int64)
    for axis in range(3):
        da = d[..., axis]
        positive = da > 0
        t_axis = np.where(positive, (room.hi[axis] - o[axis]) / da, (room.lo[axis] - o[axis]) / da)
        closer = t_axis < t
        t = np.where(closer, t_axis, t)
        face = np.where(closer, 2 * axis + positive, face)
    return t, face


def _bounds(obj: Primitive, time: float) -> tuple[np.ndarray, np.ndarray]:
    """World axis-aligned bounding box (lo, hi) of the object at `time`."""
    c = obj.center + obj.motion.offset(time)
    if isinstance(obj, Sphere):
        ext = np.full(3, obj.radius)
        return c - ext, c + ext
    if isinstance(obj, Box):
        r = float(np.hypot(obj.half[0], obj.half[2]))
        ext = np.array([r, obj.half[1], r])
        return c - ext, c + ext
    return c + np.array([-obj.radius, obj.y0, -obj.radius]), c + np.array([obj.radius, obj.y1, obj.radius])


def screen_rect(obj: Primitive, pose: np.ndarray, K: np.ndarray, size: tuple[int, int], time: float):
    """Pixel rectangle (slice rows, slice cols) that can contain the object, or None if it is behind the camera."""
    lo, hi = _bounds(obj, time)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    cam = (corners - pose[:3, 3]) @ pose[:3, :3]
    h, w = size
    if np.all(cam[:, 2] <= 0):
        return None  # the convex box lies wholly behind the camera
    if np.any(cam[:, 2] <= 1e-3):
        return slice(0, h), slice(0, w)
    uv = cam[:, :2] / cam[:, 2:] * K[[0, 1], [0, 1]] + K[[0, 1], [2, 2]]
    u0, v0 = np.floor(uv.min(axis=0)).astype(int) - 1
    u1, v1 = np.ceil(uv.max(axis=0)).astype(int) + 2
    if u1 <= 0 or v1 <= 0 or u0 >= w or v0 >= h:
        return None
    return slice(max(v0, 0), min(v1, h)), slice(max(u0, 0), min(u1, w))


def _intersect(obj: Primitive, o: np.ndarray, d: np.ndarray, time: float) -> np.ndarray:
    """Distance to the first hit of rays d (h, w, 3) from o (3,): (h, w), inf where they miss."""
    c = obj.center + obj.motion.offset(time)
    oc = o - c
    dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
    if isinstance(obj, Sphere):
        a = dx * dx + dy * dy + dz * dz
        b = dx * oc[0] + dy * oc[1] + dz * oc[2]
        disc = b * b - a * (oc @ oc - obj.radius**2)
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        return np.where((disc >= 0) & (t > _EPS), t, np.inf)
    if isinstance(obj, Box):
        rot = _rot_y(obj.yaw)
        o_l = oc @ rot
        t_near = np.full(d.shape[:2], -np.inf)
        t_far = np.full(d.shape[:2], np.inf)
        for axis in range(3):
            da = dx * rot[0, axis] + dy * rot[1, axis] + dz * rot[2, axis]
            t1 = (-obj.half[axis] - o_l[axis]) / da
            t2 = (obj.half[axis] - o_l[axis]) / da
            t_near = np.maximum(t_near, np.minimum(t1, t2))
            t_far = np.minimum(t_far, np.maximum(t1, t2))
        return np.where((t_near <= t_far) & (t_near > _EPS), t_near, np.inf)
    if isinstance(obj, Cylinder):
        a = dx * dx + dz * dz
        b = dx * oc[0] + dz * oc[2]
        disc = b * b - a * (oc[0] ** 2 + oc[2] ** 2 - obj.radius**2)
        t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / np.maximum(a, 1e-12)
        y = oc[1] + t_side * dy  # relative to the (moving) base, like y0 and y1
        t_side = np.where((disc >= 0) & (t_side > _EPS) & (y >= obj.y0) & (y <= obj.y1), t_side, np.inf)
        if oc[1] <= obj.y1:  # the top cap is only visible from above
            return t_side
        t_cap = (obj.y1 - oc[1]) / dy
        px, pz = oc[0] + t_cap * dx, oc[2] + t_cap * dz
        t_cap = np.where((t_cap > _EPS) & (px * px + pz * pz <= obj.radius**2), t_cap, np.inf)
        return np.minimum(t_side, t_cap)
    raise TypeError(f"cannot intersect {type(obj).__name__}")


def _surface(obj: Primitive, p: np.ndarray, time: float) -> tuple[np.ndarray, np.ndarray]:
    """World normals (N, 3) and texture coordinates (N, 2) in metres at hit points p (N, 3)."""
    local = p - (obj.center + obj.motion.offset(time))  # texture moves with the object
    if isinstance(obj, Sphere):
        normal = local / obj.radius
        # A planar projection: no seam, mild stretching at the rim.
        uv = np.stack([local[:, 0] + 0.4 * local[:, 2], local[:, 1] - 0.3 * local[:, 2]], axis=1)
        return normal, uv
    if isinstance(obj, Box):
        rot = _rot_y(obj.yaw)
        p_l = _mul(local, rot)
        axis = np.argmax(np.abs(p_l) / obj.half, axis=1)
        n_l = np.zeros_like(p_l)
        n_l[np.arange(len(p_l)), axis] = np.sign(p_l[np.arange(len(p_l)), axis])
        others = np.array([[2, 1], [0, 2], [0, 1]])[axis]  # face-plane coordinates
        uv = np.take_along_axis(p_l, others, axis=1) + 0.37 * axis[:, None]  # faces differ
        return _mul(n_l, rot.T), uv
    if isinstance(obj, Cylinder):
        radial = local * np.array([1.0, 0.0, 1.0])
        on_cap = np.abs(local[:, 1] - obj.y1) < 1e-6
        r = np.linalg.norm(radial, axis=1, keepdims=True)
        normal = np.where(on_cap[:, None], np.array([0.0, 1.0, 0.0]), radial / np.maximum(r, 1e-12))
        uv = np.stack([local[:, 0] - 0.6 * local[:, 2], np.where(on_cap, local[:, 2], local[:, 1])], axis=1)
        return normal, uv
    raise TypeError(f"cannot shade {type(obj).__name__}")


_ROOM_UV = np.array([[2, 1], [2, 1], [0, 2], [0, 2], [0, 1], [0, 1]])  # face-plane coordinates per room face


def render_frame(
    scene: Scene, pose: np.ndarray, K: np.ndarray, rays_cam: np.ndarray, time: float
) -> tuple[np.ndarray, np.ndarray]:
    """Render one frame: z-depth (H, W) float32 metres and RGB (H, W, 3) uint8.

    pose: (4, 4) camera-to-world; K: (3, 3); rays_cam: (H, W, 3) from `pixel_rays`; time: seconds (drives
    moving objects). Each object is only intersected inside its projected bounding rectangle.
    """
    h, w = rays_cam.shape[:2]
    rot, o = pose[:3, :3], pose[:3, 3]
    d = _mul(rays_cam, rot.T)
    with np.errstate(divide="ignore", invalid="ignore"):  # axis-parallel rays: ±inf slabs are fine
        t_best, face = _intersect_room(scene.room, o, d)
        winner = np.full((h, w), -1)
        for i, obj in enumerate(scene.objects):
            rect = screen_rect(obj, pose, K, (h, w), time)
            if rect is None:
                continue
            t = _intersect(obj, o, d[rect], time)
            closer = t < t_best[rect]
            t_best[rect] = np.where(closer, t, t_best[rect])
            winner[rect] = np.where(closer, i, winner[rect])

    # Shade one surface at a time: group pixels by surface id (0..5 room faces, 6.. objects) with one sort.
    t_flat, d_flat = t_best.ravel(), d.reshape(-1, 3)
    surface_id = np.where(winner >= 0, winner + 6, face).ravel()
    order = np.argsort(surface_id, kind="stable")
    ids, starts = np.unique(surface_id[order], return_index=True)
    textures = (*scene.room.textures, *(obj.texture for obj in scene.objects))
    color = np.empty((h * w, 3), dtype=np.float32)
    for k, a, b in zip(ids, starts, [*starts[1:], h * w], strict=True):
        idx = order[a:b]
        t_s, d_s = t_flat[idx], d_flat[idx]
        p = o + t_s[:, None] * d_s
        if k < 6:  # room face: constant inward normal, the two in-plane coordinates as uv
            normal = np.zeros((len(idx), 3))
            normal[:, k // 2] = 1.0 if k % 2 == 0 else -1.0
            uv = p[:, _ROOM_UV[k]]
        else:
            normal, uv = _surface(scene.objects[k - 6], p, time)
        n_dot_d = (normal * d_s).sum(axis=1)
        cos_view = np.abs(n_dot_d) / np.sqrt((d_s * d_s).sum(axis=1))
        footprint = t_s / K[0, 0] / np.maximum(cos_view, 0.2)  # metres per pixel on the surface
        normal = np.where((n_dot_d > 0)[:, None], -normal, normal)  # face the camera
        shade = scene.ambient + (1.0 - scene.ambient) * np.clip(_mul(normal, scene.light_dir[:, None])[:, 0], 0, 1)
        color[idx] = textures[k].evaluate(uv, footprint) * shade[:, None].astype(np.float32)
    rgb = np.clip(color * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return t_best.astype(np.float32), rgb.reshape(h, w, 3)
