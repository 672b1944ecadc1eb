"""Where a preset's wall time goes, from the process's start to its exit, in phases.

    python benchmarks/phases.py [--device cpu|cuda|both] [--data-dir DIR] [--repeat 1] -- PRESET_ARGS...
    e.g. python benchmarks/phases.py --data-dir /data/mnist -- --preset lr_sweep --epochs 1 --subset 6000

For each device (default: the CPU, and CUDA when present) it starts a fresh `python` that runs the headless CLI
(`tuitrain PRESET_ARGS --no-ui --device D --jobs 1`: every run in that one process, so each phase is seen) with the
engine's functions wrapped in timers, and prints a table of phases in seconds:

  interpreter      from the parent's spawn to the child's first line (the interpreter and site start-up)
  imports          import torch and the modules the CLI loads before training (tuitrain.session, the loop)
  data read        finding and parsing the MNIST files (resolve_mnist)
  data to device   the arrays as normalised tensors on the device (TensorData.from_arrays)
  model build      building the model and its optimizer (prepare_model), each run
  warm-up/autotune CUDA: the step's warm-up before capture (cuDNN autotuning happens in it); CPU: the eager step
  graph capture    CUDA: capturing the training step into a CUDA graph (fused runs: with their warm-up steps)
  epochs           the batch loops (training), less what is listed below
  evaluation       the test-set evaluation at each epoch end
  record writes    run files and series log appends (the record-keeper)
  checkpoint       checkpoint state copies and waiting for their writes
  other            the rest of the child's time (CLI, planning, the summary, what is not wrapped)
  teardown         from the child's last atexit handler to its exit seen by the parent
  wall             from spawn to exit

Times are exclusive (a nested phase's time is not counted in its caller's), so the rows add up to the wall. On CUDA
each wrapped phase synchronises the device at its ends, so that queued work is charged to the phase that queued
it. Lazy imports made while training are charged to the phase that made them; the table says how many modules were
imported after the imports phase and whether torch._dynamo was among them. It is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPAWNED_AT = time.time()  # the child's first line (before any import of ours)

ROOT = Path(__file__).resolve().parent.parent
PHASES = (
    "interpreter",
    "imports",
    "data read",
    "data to device",
    "model build",
    "warm-up/autotune",
    "graph capture",
    "epochs",
    "evaluation",
    "record writes",
    "checkpoint",
    "other",
    "teardown",
)

# (module, attribute, phase): the engine's functions timed in the child; a name the engine no longer has is
# reported ("not wrapped") and its time goes to the phase that calls it.
WRAPPED = (
    ("tuitrain.session", "resolve_mnist", "data read"),
    ("tuitrain.train.loop", "TensorData.from_arrays", "data to device"),
    ("tuitrain.train.loop", "prepare_model", "model build"),
    ("tuitrain.train.loop", "make_optimizer", "model build"),
    ("tuitrain.train.loop", "make_step", "warm-up/autotune"),
    ("tuitrain.train.loop", "FitLoop.run_epoch", "epochs"),
    ("tuitrain.train.loop", "evaluate_classes", "evaluation"),  # evaluate() calls it too
    ("tuitrain.keeper", "RecordKeeper.save", "record writes"),
    ("tuitrain.keeper", "LocalRunFiles.append", "record writes"),
    ("tuitrain.train.loop", "checkpoint_state", "checkpoint"),
    ("tuitrain.train.loop", "FitLoop.checkpoint_written", "checkpoint"),
    ("tuitrain.train.fused", "FusedFit.build", "model build"),
    ("tuitrain.train.fused", "FusedFit.advance", "epochs"),
    ("tuitrain.train.fused", "checkpoint_state", "checkpoint"),
    ("tuitrain.train.stacked", "StackedRuns.capture", "graph capture"),
    ("tuitrain.train.stacked", "StackedRuns.evaluate", "evaluation"),
)


class Clock:
    """Exclusive time per phase: entering a phase pauses the one it is called from."""

    def __init__(self, start: float) -> None:
        self.seconds: dict[str, float] = {}
        self.stack = ["other"]
        self.mark = start
        self.sync = lambda: None

    def charge(self, now: float) -> None:
        top = self.stack[-1]
        self.seconds[top] = self.seconds.get(top, 0.0) + now - self.mark
        self.mark = now

    def enter(self, phase: str) -> None:
        self.sync()
        self.charge(time.time())
        self.stack.append(phase)

    def leave(self) -> None:
        self.sync()
        self.charge(time.time())
        self.stack.pop()

    def wrap(self, phase: str, fn):
        def timed(*args, **kwargs):
            self.enter(phase)
            try:
                return fn(*args, **kwargs)
            finally:
                self.leave()

        return timed


def wrap_engine(clock: Clock) -> list[str]:
    """Wrap the WRAPPED functions; returns the names not found."""
    import importlib

    missing = []
    for module_name, dotted, phase in WRAPPED:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            missing.append(f"{module_name}.{dotted}")
            continue
        owner_name, _, attr = dotted.rpartition(".")
        owner = getattr(module, owner_name, None) if owner_name else module
        raw = owner.__dict__.get(attr) if owner is not None else None
        if raw is None:
            missing.append(f"{module_name}.{dotted}")
            continue
        if isinstance(raw, classmethod):
            setattr(owner, attr, classmethod(clock.wrap(phase, raw.__func__)))
        elif isinstance(raw, staticmethod):
            setattr(owner, attr, staticmethod(clock.wrap(phase, raw.__func__)))
        else:
            setattr(owner, attr, clock.wrap(phase, raw))
    return missing


def wrap_capture(clock: Clock) -> None:
    """On CUDA: the step's warm-up ends where its CUDA graph is made; from there on it is the capture."""
    import torch

    from tuitrain.train import cuda_step

    real = cuda_step.capture_step

    class TimedGraph(torch.cuda.CUDAGraph):
        def __new__(cls, *args, **kwargs):
            clock.leave()
            clock.enter("graph capture")
            return super().__new__(cls, *args, **kwargs)

    def capture_step(*args, **kwargs):
        torch.cuda.CUDAGraph, saved = TimedGraph, torch.cuda.CUDAGraph  # type: ignore[misc]
        depth = len(clock.stack)
        try:
            return real(*args, **kwargs)
        finally:
            torch.cuda.CUDAGraph = saved  # type: ignore[misc]
            if len(clock.stack) == depth and clock.stack[-1] == "graph capture":
                clock.leave()
                clock.enter("warm-up/autotune")  # what make_step's wrapper leaves

    cuda_step.capture_step = capture_step


def child(out: Path, device: str, jobs: str, cli_args: list[str]) -> int:
    clock = Clock(SPAWNED_AT)
    clock.stack = ["imports"]
    modules_before = 0

    def report() -> None:  # registered first: runs last, after the CLI's own exit handlers
        clock.charge(time.time())
        out.write_text(
            json.dumps(
                {
                    "seconds": clock.seconds,
                    "spawned_at": SPAWNED_AT,
                    "exited_at": time.time(),
                    "missing": missing,
                    "late_modules": len(sys.modules) - modules_before,
                    "dynamo": "torch._dynamo" in sys.modules,
                }
            )
        )

    atexit.register(report)
    missing: list[str] = []
    import torch

    import tuitrain.cli
    import tuitrain.headless
    import tuitrain.session
    import tuitrain.train.loop  # noqa: F401 - the imports the CLI makes before training, timed as "imports"

    modules_before = len(sys.modules)
    if device == "cuda":
        clock.sync = torch.cuda.synchronize
        torch.zeros(1, device="cuda")  # the CUDA context, part of start-up
        torch.cuda.synchronize()
    clock.charge(time.time())
    clock.stack = ["other"]
    missing = wrap_engine(clock)
    if device == "cuda":
        wrap_capture(clock)
    # as `python -m tuitrain` runs, its way of exiting included
    sys.argv = ["tuitrain", *cli_args, "--no-ui", "--device", device, "--jobs", jobs]
    runpy.run_module("tuitrain", run_name="__main__", alter_sys=True)
    return 0


def measure(device: str, jobs: str, cli_args: list[str], data_dir: str | None, log: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="phases-") as tmp:
        out = Path(tmp) / "phases.json"
        args = [*cli_args, "--runs-dir", str(Path(tmp) / "runs")]
        if data_dir:
            args += ["--data-dir", data_dir]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        start = time.time()
        with log.open("w") as fh:
            rc = subprocess.call(
                [sys.executable, __file__, "--child", str(out), device, jobs, "--", *args],
                stdout=fh,
                stderr=fh,
                env=env,
            )
        end = time.time()
        if rc not in (0, 1) or not out.exists():  # 1: a run did not complete (e.g. lr 0.1 diverging): still timed
            raise SystemExit(f"{device}: the child failed (exit {rc}); see {log}:\n{log.read_text()[-2000:]}")
        result = json.loads(out.read_text())
    seconds = dict(result["seconds"])
    seconds["interpreter"] = result["spawned_at"] - start
    seconds["teardown"] = end - result["exited_at"]
    result["seconds"], result["wall"], result["rc"] = seconds, end - start, rc
    return result


def table(results: dict[str, list[dict]]) -> str:
    devices = list(results)
    header = f"{'phase':<18}" + "".join(f"{d:>10}" for d in devices)
    lines = [header, "-" * len(header)]

    def median(values: list[float]) -> float:
        values = sorted(values)
        return values[len(values) // 2]

    for phase in PHASES:
        cells = [median([r["seconds"].get(phase, 0.0) for r in results[d]]) for d in devices]
        lines.append(f"{phase:<18}" + "".join(f"{c:>10.2f}" for c in cells))
    lines.append("-" * len(header))
    lines.append(f"{'wall':<18}" + "".join(f"{median([r['wall'] for r in results[d]]):>10.2f}" for d in devices))
    for d in devices:
        last = results[d][-1]
        lines.append(
            f"{d}: {last['late_modules']} modules imported after the imports phase; "
            f"torch._dynamo {'imported' if last['dynamo'] else 'not imported'}"
            + (f"; not wrapped: {', '.join(last['missing'])}" if last["missing"] else "")
        )
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, out, device, jobs, _dashes, *cli_args = sys.argv
        sys.path.insert(0, str(ROOT))
        return child(Path(out), device, jobs, cli_args)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "both"], default="both", help="both: CPU, and CUDA if any")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--jobs",
        default="1",
        help="1 (default: every run in one process, all phases seen) or auto (fused runs on CUDA)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="fresh processes per device; the table shows medians")
    parser.add_argument("--logs", type=Path, default=None, help="folder for the children's output (default: temp)")
    parser.add_argument("cli_args", nargs="*", help="after --: the preset's arguments, e.g. --preset lr_sweep")
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if args.device == "both" else [args.device]
    if "cuda" in devices:
        probe = "import torch; print(torch.cuda.is_available())"
        if subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() != "True":
            if args.device == "cuda":
                raise SystemExit("--device cuda: no CUDA device here")
            devices.remove("cuda")
    logs = args.logs or Path(tempfile.mkdtemp(prefix="phases-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for device in devices:
        for i in range(args.repeat):
            results.setdefault(device, []).append(
                measure(device, args.jobs, args.cli_args, args.data_dir, logs / f"{device}-{i}.log")
            )
    print(
        f"phases of: tuitrain {' '.join(args.cli_args)} --no-ui --jobs {args.jobs} (seconds; medians of {args.repeat})"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
