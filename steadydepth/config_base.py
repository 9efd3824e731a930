"""The base of every config section, shared by the packages that own sections (steadydepth, smoother)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section: unknown keys fail (a typo names its field), and assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
