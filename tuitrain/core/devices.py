"""How devices are named to the user, the same in the training process and in a watcher."""

from __future__ import annotations


def cpu_device(threads: int) -> str:
    """The CPU as the progress lines name it (the training process, and a watcher reading its file)."""
    return f"CPU ({threads} thread{'s' if threads != 1 else ''})"
