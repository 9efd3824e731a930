"""The benchmark's scenarios: which camera path and which objects each video gets.

`generate_benchmark` cycles through SCENARIOS in order; video i is named `f"{i:02d}-{scenario.name}"`.
Every scene also has thin floor-to-ceiling poles, boxes with sharp depth edges, one near object and a pillar.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    """One kind of benchmark video."""

    name: str
    path: str  # camera path kind, see camera.camera_path
    n_boxes: int
    n_spheres: int
    n_poles: int
    n_moving: int  # independently moving objects (spheres and boxes)
    description: str


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "vr-head", "vr-head", 4, 2, 3, 0, "head-mounted camera: look-around rotations, gait sway and bob, slow wander"
    ),
    Scenario(
        "static-camera",
        "static",
        4,
        1,
        3,
        1,
        "tripod camera; one object moves independently (flicker on static pixels is pure teacher noise)",
    ),
    Scenario(
        "fast-motion",
        "fast",
        4,
        2,
        3,
        1,
        "fast pans (peak about 130°/s) and translation up to about 1.5 m/s; large optical flow",
    ),
    Scenario(
        "moving-objects",
        "dolly",
        3,
        1,
        2,
        3,
        "slow dolly; three objects move independently (occlusion and disocclusion)",
    ),
    Scenario(
        "thin-structures",
        "track",
        3,
        1,
        9,
        0,
        "lateral tracking shot past many thin poles: sharp depth edges and strong parallax",
    ),
)


def scenario_for(index: int) -> Scenario:
    """The scenario of video `index` (SCENARIOS cycled)."""
    return SCENARIOS[index % len(SCENARIOS)]
