"""What an evaluation works on and produces: one video's data in memory (`VideoData`) and the whole run's
results (`EvaluationReport`). Shared by the driver (evaluation/evaluate.py) and the report writer
(evaluation/report.py), so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evaluation.gate import GateResult
from evaluation.temporal import FlowWarps


@dataclass
class VideoData:
    """One video's depth per method and the shared references, all at store resolution (in memory)."""

    name: str
    depth: dict[str, np.ndarray]  # method -> (T, H, W) metres
    K: np.ndarray  # (T, 3, 3)
    gt: np.ndarray | None = None  # (T, H, W), NaN = invalid
    pose: np.ndarray | None = None  # (T, 4, 4) camera-to-world
    rgb: np.ndarray | None = None  # (T, H, W, 3) uint8
    static_mask: np.ndarray | None = None  # (H, W); None without GT + pose
    warps: FlowWarps | None = None  # OPW's optical flow of rgb, computed once for every method; None without rgb


@dataclass
class EvaluationReport:
    """Everything `evaluate_dataset` computed; metric dicts map metric name -> float (NaN = undefined)."""

    videos: list[str]
    methods: list[str]
    per_video: dict[str, dict[str, dict[str, float]]]  # video -> method -> metrics
    means: dict[str, dict[str, float]]  # method -> dataset-mean metrics (mean_over_sequences)
    gate: GateResult | None  # refined vs teacher; None without refined stores
    baseline_gates: dict[str, GateResult]  # what the gate would say about each baseline (for context)
    video_info: dict[str, dict[str, Any]]
    report_path: str
    metrics_path: str
    plot_paths: list[str] = field(default_factory=list)
