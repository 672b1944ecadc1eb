"""Helpers shared by the tests, imported one way: `from tests.helpers import ...`."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tuitrain.train.data import FILES, encode_idx


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: class k lights up a 7x7 block at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = divmod(int(k), 4)
        images[i, 2 + r * 8 : 9 + r * 8, 1 + c * 7 : 7 + c * 7] = 230
    return images, labels


def write_mnist_dir(folder: Path, n_train: int = 512, n_test: int = 128, gz: bool = True, layout: str = "flat") -> Path:
    """Write the four IDX files of a small synthetic MNIST into `folder` (flat or MNIST/raw/)."""
    target = folder / "MNIST" / "raw" if layout == "raw" else folder
    target.mkdir(parents=True, exist_ok=True)
    tr_x, tr_y = synthetic_digits(n_train, 1)
    te_x, te_y = synthetic_digits(n_test, 2)
    arrays = {"train_images": tr_x, "train_labels": tr_y, "test_images": te_x, "test_labels": te_y}
    for key, base in FILES.items():
        data = encode_idx(arrays[key])
        if gz:
            (target / (base + ".gz")).write_bytes(gzip.compress(data))
        else:
            (target / base).write_bytes(data)
    return folder


ROOT = Path(__file__).resolve().parents[1]


async def wait_for(pilot, condition: Callable[[], bool], what: str, timeout: float = 180.0) -> None:
    """Let the app run until `condition()` holds (generous timeout: CI machines are slow and shared)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def error_dialog_shown(app) -> bool:
    """Whether the app shows its error dialog with the message in it: a pushed screen composes later, and on a
    loaded machine a test can see the screen before its widgets."""
    from tuitrain.tui.screens.dialogs import ErrorScreen

    return isinstance(app.screen, ErrorScreen) and bool(app.screen.query("#error-message"))


def lease_paused(run_id: str) -> bool:
    """Whether the core lease of run `run_id` says that it is paused, which its loop writes once it waits at a batch
    boundary (tuitrain.core.cores; the registry is in the test's cache folder, also for worker processes)."""
    from tuitrain.core.cache import cache_dir
    from tuitrain.core.cores import Holder

    holders = [Holder.read(p) for p in (cache_dir() / "cores").glob("*.json")]
    return any(h is not None and h.label == run_id and h.paused for h in holders)


def start_headless(
    preset: Path, mnist_dir: Path, runs: Path, tmp_path: Path, *extra: str, stderr=subprocess.DEVNULL
) -> subprocess.Popen:
    """`tuitrain --preset PRESET --no-ui --jobs 1` on the synthetic data, in a subprocess (another process training),
    one run at a time (`extra` may ask for more jobs)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TUITRAIN_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuitrain",
            "--preset",
            str(preset),
            "--no-ui",
            "--data-dir",
            str(mnist_dir),
            "--runs-dir",
            str(runs),
            "--jobs",
            "1",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=env,
    )


class SavedTexts:
    """A run's files kept in memory (keeper.RunFiles): each run file text in `texts` as written, in order, and each
    series log frame in `frames`."""

    series_name = "run.series"

    def __init__(self, texts: list[str] | None = None) -> None:
        self.texts: list[str] = texts if texts is not None else []
        self.frames: list[bytes] = []

    def append(self, frame: bytes) -> None:
        self.frames.append(frame)

    def write(self, text: str) -> None:
        self.texts.append(text)

    def close(self) -> None:
        pass
