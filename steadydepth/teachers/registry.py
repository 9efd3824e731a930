"""Build the configured teacher backend. Heavy backends are imported only when chosen."""

from __future__ import annotations

from steadydepth.config import TeacherConfig
from steadydepth.teachers.base import Teacher


def build_teacher(cfg: TeacherConfig) -> Teacher:
    """Return the teacher named by `cfg.backend` ("unidepth", "precomputed" or "synthetic").

    Raises TeacherUnavailableError (unidepth not installed or weights not loadable) or ConfigError.
    """
    if cfg.backend == "unidepth":
        from steadydepth.teachers.unidepth import UniDepthTeacher

        return UniDepthTeacher(cfg)
    if cfg.backend == "precomputed":
        from steadydepth.teachers.precomputed import PrecomputedTeacher

        return PrecomputedTeacher(cfg)
    if cfg.backend == "synthetic":
        from steadydepth.teachers.synthetic import SyntheticTeacher

        return SyntheticTeacher(cfg.synthetic)
    # pydantic's Literal already rejects anything else; this guards programmatic construction.
    raise ValueError(f"unknown teacher backend {cfg.backend!r}")
