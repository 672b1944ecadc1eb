"""Atomic writes: readers see the old file or the new one, and files get the mode an ordinary write gives."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tuitrain.core.atomic import atomic_write_text, current_umask


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it after."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_file_respects_umask(tmp_path: Path, umask, mask: int, expected: int) -> None:
    umask(mask)
    assert current_umask() == mask
    path = tmp_path / "new.json"
    atomic_write_text(path, "{}")
    assert path.read_text() == "{}"
    assert mode_of(path) == expected
    assert [p.name for p in tmp_path.iterdir()] == ["new.json"]  # no temporary file left


def test_replaced_file_keeps_its_mode(tmp_path: Path, umask) -> None:
    umask(0o077)
    path = tmp_path / "table.txt"
    path.write_text("old")
    path.chmod(0o644)
    atomic_write_text(path, "new")
    assert (path.read_text(), mode_of(path)) == ("new", 0o644)
    path.chmod(0o640)
    atomic_write_text(path, "newer")
    assert (path.read_text(), mode_of(path)) == ("newer", 0o640)
