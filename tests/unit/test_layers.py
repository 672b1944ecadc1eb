"""What the layers import at run time, each in a fresh interpreter: the core never imports torch or textual,
and watching and comparing never import torch (the import graph is checked by `lint-imports`; this checks the
imports that really happen, lazy ones included)."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import tuitrain.core
from tests.compare_fixtures import normal_pair
from tests.helpers import ROOT
from tuitrain.records import write_record

pytestmark = pytest.mark.subprocess

HEAVY = ("torch", "torchvision", "textual")

CORE_MODULES = sorted(f"tuitrain.core.{m.name}" for m in pkgutil.iter_modules(tuitrain.core.__path__))

TORCH_FREE_MODULES = [
    "tuitrain.records",
    "tuitrain.tblogs",
    "tuitrain.catalog",
    "tuitrain.format",
    "tuitrain.monitor",
    "tuitrain.presets",
    "tuitrain.follow",
    "tuitrain.compare",
    "tuitrain.compare_cli",
    "tuitrain.headless",
    "tuitrain.signals",
    "tuitrain.script",
    "tuitrain.cli",
    "tuitrain.tui.compare_app",
    "tuitrain.tui.app",
]


def python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """This interpreter on this checkout's code, started outside the checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TUITRAIN_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def heavy_modules_after(tmp_path: Path, code: str) -> list[str]:
    """Which of HEAVY are in sys.modules once `code` has run in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    result = python(tmp_path, "-c", probe)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def imported_modules(importtime_log: str) -> set[str]:
    """Module names from `python -X importtime` output (stderr)."""
    return {line.rsplit("|", 1)[-1].strip() for line in importtime_log.splitlines() if line.startswith("import time:")}


def torch_modules(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in ("torch", "torchvision"))


@pytest.fixture
def finished_runs(tmp_path: Path) -> Path:
    """An invocation folder with two completed run files (numbers made by hand, not trained)."""
    folder = tmp_path / "runs" / "fixture-invocation"
    folder.mkdir(parents=True)
    for n, record in enumerate(normal_pair(), start=1):
        write_record(record, folder / f"{n:02d}-{record.label}.json")
    return folder


def test_core_imports_neither_torch_nor_textual(tmp_path: Path) -> None:
    assert "tuitrain.core.spec" in CORE_MODULES and "tuitrain.core.events" in CORE_MODULES
    imports = "\n".join(f"import {name}" for name in CORE_MODULES)
    assert heavy_modules_after(tmp_path, imports) == []


def first_to_import_torch(tmp_path: Path, modules: list[str]) -> str | None:
    """Import `modules` in order in a fresh interpreter: the first after which torch is loaded, if any."""
    probe = (
        "import importlib, json, sys\n"
        "first = None\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    if 'torch' in sys.modules or 'torchvision' in sys.modules:\n"
        "        first = name\n"
        "        break\n"
        "print(json.dumps(first))\n"
    )
    result = python(tmp_path, "-c", probe)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_watching_and_comparing_modules_import_without_torch(tmp_path: Path) -> None:
    assert first_to_import_torch(tmp_path, TORCH_FREE_MODULES) is None


def test_the_torch_probe_names_the_module_that_loaded_torch(tmp_path: Path) -> None:
    # a stand-in that registers a module named torch: the probe's logic, without torch's import time
    (tmp_path / "loads_torch.py").write_text("import sys, types\nsys.modules['torch'] = types.ModuleType('torch')\n")
    assert first_to_import_torch(tmp_path, ["tuitrain.records", "loads_torch", "tuitrain.catalog"]) == "loads_torch"


def test_app_made_for_watching_imports_without_torch(tmp_path: Path, finished_runs: Path) -> None:
    code = (
        "from pathlib import Path\n"
        "from tuitrain.tui.app import TuitrainApp\n"
        f"app = TuitrainApp(runs_dir=Path({str(finished_runs.parent)!r}), watch=Path({str(finished_runs)!r}))\n"
    )
    assert heavy_modules_after(tmp_path, code) == ["textual"]


def test_compare_no_ui_never_imports_torch(tmp_path: Path, finished_runs: Path) -> None:
    result = python(tmp_path, "-X", "importtime", "-m", "tuitrain", "compare", "--no-ui", str(finished_runs))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tanh" in result.stdout and "relu" in result.stdout
    modules = imported_modules(result.stderr)
    assert "tuitrain.compare" in modules
    assert torch_modules(modules) == []


def test_watch_no_ui_never_imports_torch(tmp_path: Path, finished_runs: Path) -> None:
    run_file = finished_runs / "01-relu.json"
    result = python(tmp_path, "-X", "importtime", "-m", "tuitrain", "watch", "--no-ui", str(run_file))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Run relu: completed" in result.stdout
    modules = imported_modules(result.stderr)
    assert "tuitrain.follow" in modules
    assert torch_modules(modules) == []


WATCH_IN_APP = """
import asyncio, sys
from pathlib import Path
from tuitrain.tui.app import TuitrainApp
from tuitrain.tui.screens.run import RunScreen

async def watch() -> None:
    app = TuitrainApp(runs_dir=Path(sys.argv[1]), watch=Path(sys.argv[2]))
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(1200):
            if isinstance(app.screen, RunScreen) and app.screen.done:
                break
            await pilot.pause(0.05)
        else:
            raise SystemExit("the run screen never finished showing the run")
        await pilot.pause(1.0)  # time for any worker the screens started

asyncio.run(watch())
print("torch" in sys.modules)
"""


@pytest.mark.slow
def test_watching_in_the_app_never_imports_torch(tmp_path: Path, finished_runs: Path) -> None:
    result = python(tmp_path, "-c", WATCH_IN_APP, str(finished_runs.parent), str(finished_runs / "01-relu.json"))
    if result.returncode != 0:
        pytest.fail(f"watching in the app failed: {result.stderr[-2000:]}")
    torch_imported = result.stdout.splitlines()[-1]
    assert torch_imported == "False"
