"""A tiny synthetic scene to try the exports on (and to draw docs/preview.png): a ray-cast room with a sphere,
a flickering "teacher" (per-frame scale jitter and smooth spatial error, as a per-frame model gives) and a
steady "refined" depth, written as teacher/refined depth stores.

    python -m steadydepth.export.demo_scene OUT_DIR [--preview docs/preview.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from storage.depth_store import DepthStore, store_uri

SIZE = (180, 240)  # (H, W)
FPS = 15.0


def _render(t: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb uint8, z-depth metres, K) of frame t: the camera slides sideways in a 5 x 2.4 x 7 m room."""
    h, w = size
    f = 0.8 * w
    K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]])
    cam = np.array([0.6 * np.sin(t / 12), 0.0, 0.0])
    v, u = np.mgrid[0:h, 0:w]
    rays = np.stack([(u - K[0, 2]) / f, (v - K[1, 2]) / f, np.ones_like(u, dtype=float)], axis=-1)  # z = 1
    hit = np.full((h, w), np.inf)
    colour = np.zeros((h, w, 3))
    planes = [  # (axis, position, base colour): floor, ceiling, left, right, back wall (camera: y down)
        (1, 1.2, (0.55, 0.45, 0.35)),
        (1, -1.2, (0.85, 0.85, 0.8)),
        (0, -2.5, (0.45, 0.6, 0.75)),
        (0, 2.5, (0.75, 0.55, 0.45)),
        (2, 7.0, (0.6, 0.7, 0.55)),
    ]
    for axis, pos, base in planes:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (pos - cam[axis]) / rays[..., axis]
        s = np.where(s > 0, s, np.inf)
        point = cam + rays * s[..., None]
        others = [a for a in range(3) if a != axis]
        checker = (np.floor(point[..., others[0]] * 2) + np.floor(point[..., others[1]] * 2)) % 2
        closer = s < hit
        hit = np.where(closer, s, hit)
        colour = np.where(closer[..., None], np.array(base) * (0.75 + 0.25 * checker[..., None]), colour)
    centre, radius = np.array([0.3, 0.4, 3.2]), 0.7
    oc = cam - centre
    b = (rays * oc).sum(-1)
    a = (rays * rays).sum(-1)
    disc = b * b - a * ((oc * oc).sum() - radius**2)
    s = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)
    closer = (s > 0) & (s < hit)
    normal = (cam + rays * s[..., None] - centre) / radius
    shade = np.clip(normal @ np.array([-0.4, -0.6, -0.7]), 0.15, 1.0)
    colour = np.where(closer[..., None], np.array([0.9, 0.35, 0.2]) * shade[..., None], colour)
    hit = np.where(closer, s, hit)
    return (np.clip(colour, 0, 1) * 255).astype(np.uint8), hit.astype(np.float32), K  # s is z (rays have z = 1)


def write_demo_stores(root: str | Path, *, num_frames: int = 24, seed: int = 0) -> tuple[str, str]:
    """Write `<root>/demo.teacher.zarr` (rgb, flickering depth, GT) and `<root>/demo.refined.zarr`; returns URIs."""
    rng = np.random.default_rng(seed)
    h, w = SIZE
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = {
        "source": "synthetic demo scene",
        "source_hash": f"demo-{seed}",
        "config_hash": "demo",
        "fps": FPS,
        "padding": [0, 0, 0, 0],
    }
    teacher = DepthStore.create(
        store_uri(str(root), "demo", "teacher"),
        num_frames=num_frames,
        height=h,
        width=w,
        chunk_frames=8,
        attrs={**base, "kind": "teacher"},
        variables=["rgb", "gt_depth"],
    )
    refined = DepthStore.create(
        store_uri(str(root), "demo", "refined"),
        num_frames=num_frames,
        height=h,
        width=w,
        chunk_frames=8,
        attrs={**base, "kind": "refined"},
    )
    for i in range(teacher.num_chunks):
        start, stop = teacher.chunk_bounds(i)
        frames = [_render(t, SIZE) for t in range(start, stop)]
        gt = np.stack([d for _, d, _ in frames])
        # Teacher error in log-depth: a per-frame global scale (flicker) plus a drifting smooth spatial error.
        jitter = rng.normal(0, 0.06, size=len(frames))
        smooth = np.stack([0.05 * np.sin(6 * xx + 0.7 * t) * np.cos(4 * yy - 0.5 * t) for t in range(start, stop)])
        common = {
            "K": np.stack([k for *_, k in frames]),
            "timestamp": np.arange(start, stop) / FPS,
            "frame_index": np.arange(start, stop),
        }
        teacher.write_chunk(
            i,
            depth=gt * np.exp(jitter[:, None, None] + smooth),
            gt_depth=gt,
            rgb=np.stack([c for c, _, _ in frames]),
            **common,
        )
        refined.write_chunk(i, depth=gt * np.exp(0.01 + 0.1 * smooth.mean(0)), **common)
    teacher.finalize()
    refined.finalize()
    return teacher.uri, refined.uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--preview", help="also save one side-by-side preview frame as this PNG")
    args = parser.parse_args()
    teacher, refined = write_demo_stores(Path(args.out_dir) / "stores")
    if args.preview:
        import av
        import cv2

        from steadydepth.export import export_previews

        paths = export_previews(teacher, refined, Path(args.out_dir) / "exports", overwrite=True)
        with av.open(paths["side_by_side"]) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        cv2.imwrite(args.preview, cv2.cvtColor(frames[len(frames) // 2], cv2.COLOR_RGB2BGR))
        print(args.preview, *paths.values(), sep="\n")


if __name__ == "__main__":
    main()
