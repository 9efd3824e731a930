"""The one hash of JSON-like data: config sections, cache keys, store identities, export settings.

Canonical JSON (sorted keys, compact separators, `str()` for anything JSON cannot hold) through sha256, so
the same content always gives the same hex digest on every machine and Python version.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def stable_hash(obj: Any, length: int = 64) -> str:
    """Hex sha256 of obj's canonical JSON, cut to `length` characters (16 is plenty for an identity)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
