"""The user's cache folder for tuitrain: the data copy, time calibrations and the CPU core leases."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The user's cache folder for tuitrain (platform convention; TUITRAIN_CACHE_DIR overrides)."""
    override = os.environ.get("TUITRAIN_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tuitrain", appauthor=False))
