"""App tests: the long-run question is asked only where a test asks for it."""

from __future__ import annotations

import pytest

from tuitrain.tui.screens import home


@pytest.fixture(autouse=True)
def no_long_run_question(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app asks before a preset estimated at an hour or more on a CPU, and the tests' presets are estimated for
    the full dataset (they train on a few synthetic images): on a loaded machine that can pass an hour, and a test
    that starts a preset would meet the question. Only test_long_cpu_run.py, which fixes the estimate, asks it."""
    if request.module.__name__.rpartition(".")[2] != "test_long_cpu_run":
        monkeypatch.setattr(home, "LONG_CPU_RUN_S", float("inf"))
