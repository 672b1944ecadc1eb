"""A text capture of the run screen with its GPU panel, training for real on this machine's GPU (Pilot, headless).

Usage: python benchmarks/gpu_panel_capture.py DATA_DIR OUT_DIR [cuda|cpu]
Starts resnet_vs_alexnet (subset 20000, 1 epoch) through the app as `tuitrain --preset` does, waits until the GPU
panel has shown a few readings and the first epoch ended, then writes run_screen.svg and run_screen.txt to OUT_DIR
and prints the text.
"""

from __future__ import annotations

import asyncio
import html
import re
import sys
import tempfile
import time
from pathlib import Path

from tuitrain.tui.app import TuitrainApp
from tuitrain.tui.screens.run import RunScreen
from tuitrain.tui.widgets.gpu_panel import GpuPanel


def svg_text(svg: str) -> str:
    """The characters of a Textual SVG screenshot, row by row, placed by their x (enough for a report)."""
    spans = [
        (float(m.group(2)), float(m.group(1)), float(m.group(3)), html.unescape(m.group(4)))
        for m in re.finditer(r'<text[^>]*x="([\d.]+)" y="([\d.]+)" textLength="([\d.]+)"[^>]*>(.*?)</text>', svg)
    ]
    widths = sorted(length / len(text) for _, _, length, text in spans if text)
    char_w = widths[len(widths) // 2] if widths else 1.0
    rows: dict[float, list[str]] = {}
    for y, x, _, text in spans:
        row = rows.setdefault(y, [])
        col = round(x / char_w)
        row.extend(" " * (col + len(text) - len(row)))
        row[col : col + len(text)] = text
    return "\n".join("".join(chars).rstrip() for _, chars in sorted(rows.items()))


async def main(data_dir: Path, out: Path) -> None:
    runs = Path(tempfile.mkdtemp())
    device = sys.argv[3] if len(sys.argv) > 3 else "cuda"
    overrides = {"subset": 20000 if device == "cuda" else 640, "test_subset": 2000, "epochs": 1, "device": device}
    app = TuitrainApp(preset="resnet_vs_alexnet", runs_dir=runs, data_dir=data_dir, overrides=overrides)
    async with app.run_test(size=(100, 32)) as pilot:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            await pilot.pause(0.5)
            screen = app.screen
            if isinstance(screen, RunScreen) and any(r.epochs for r in screen.monitor.runs.values()):
                break
        await pilot.pause(1.5)
        svg = app.export_screenshot()
        panel = app.screen.query_one(GpuPanel) if isinstance(app.screen, RunScreen) else None
        print("GPU panel:", panel.display if panel else None, str(panel.render()) if panel else "")
        if isinstance(app.screen, RunScreen):
            app.screen.source.stop()
        (out / "run_screen.svg").write_text(svg)
        text = svg_text(svg)
        (out / "run_screen.txt").write_text(text)
        print(text)
        deadline = time.monotonic() + 30
        while isinstance(app.screen, RunScreen) and not app.screen.done and time.monotonic() < deadline:
            await pilot.pause(0.5)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
