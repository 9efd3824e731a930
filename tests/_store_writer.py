"""Writes a small depth store chunk by chunk, slowly, so a test can kill it mid-run (crash-resume test).

Usage: python tests/_store_writer.py URI [SLEEP_SECONDS]. Prints "chunk i done" after each chunk it
writes (only the missing ones: a rerun resumes), then "finalized".
"""

from __future__ import annotations

import sys
import time

import numpy as np

from storage.depth_store import DepthStore

NUM_FRAMES, HEIGHT, WIDTH, CHUNK_FRAMES = 40, 24, 32, 8
ATTRS = {"source": "synthetic", "source_hash": "abc123", "config_hash": "cfg456", "kind": "teacher", "fps": 30.0}


def frame_arrays(start: int, stop: int) -> dict[str, np.ndarray]:
    """Deterministic content of frames [start, stop): every value depends on its frame index."""
    t = np.arange(start, stop)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    depth = (1.0 + 0.1 * t[:, None, None] + 0.01 * yy + 0.001 * xx).astype(np.float32)
    K = np.tile(np.array([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]], dtype=np.float32), (len(t), 1, 1))
    K[:, 0, 0] += t
    return {"depth": depth, "K": K, "timestamp": t / 30.0, "frame_index": 2 * t}


def create(uri: str) -> DepthStore:
    return DepthStore.create(
        uri, num_frames=NUM_FRAMES, height=HEIGHT, width=WIDTH, chunk_frames=CHUNK_FRAMES, attrs=ATTRS
    )


def main(uri: str, sleep_s: float) -> None:
    store = create(uri)
    for i in store.missing_chunks():
        store.write_chunk(i, **frame_arrays(*store.chunk_bounds(i)))
        print(f"chunk {i} done", flush=True)
        time.sleep(sleep_s)
    store.finalize()
    print("finalized", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
