"""`tuitrain compare`: saved runs side by side, in the app or printed/exported with --no-ui."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tuitrain.catalog import load_run_arguments, refuse_nothing_readable, tagged_runs, unreadable_exit_code
from tuitrain.compare import DEFAULT_THRESHOLD, FORMATS, Comparison
from tuitrain.core.atomic import atomic_write_text
from tuitrain.core.errors import TuitrainError

DESCRIPTION = """\
Compare saved runs: hyperparameters that differ, accuracy, loss, speed of convergence, a per-epoch
table, a sweep grid and observations drawn from the numbers.

  tuitrain compare                          the runs of the latest preset invocation, in the app
  tuitrain compare runs/2024*-lr_sweep-*    a folder (or glob, or files)
  tuitrain compare --no-ui --baseline 1     print it, with deltas against run 1
  tuitrain compare --tag baseline           every run under runs/ tagged baseline (tuitrain tag RUN +baseline)
  tuitrain compare --format csv --output lr.csv
  tuitrain compare --no-ui RUNS --plots figs/   also write the figures (PNG and SVG; needs tuitrain[plots])
"""


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage, got {text!r}") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 100, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tuitrain compare", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("paths", nargs="*", metavar="RUN_FILE|DIR|GLOB", help="run files, folders of them, or glob patterns")
    p.add_argument("--no-ui", action="store_true", help="print the comparison instead of opening the app")
    p.add_argument("--format", choices=FORMATS, default=None, help="output format (default text; implies --no-ui)")
    p.add_argument("--output", type=Path, metavar="FILE", help="write the comparison to FILE (implies --no-ui)")
    p.add_argument(
        "--plots",
        type=Path,
        metavar="DIR",
        help="write figures (loss, accuracy, sweep grid) as PNG and SVG into DIR (implies --no-ui; needs "
        "tuitrain[plots])",
    )
    p.add_argument("--log-loss", action="store_true", help="with --plots: the training loss on a log scale")
    p.add_argument("--all-params", action="store_true", help="show every hyperparameter, not only those that differ")
    p.add_argument("--baseline", metavar="LABEL|N", help="pin a run (label or 1-based index): others show deltas")
    p.add_argument(
        "--threshold",
        type=_threshold,
        default=DEFAULT_THRESHOLD,
        metavar="PCT",
        help=f"accuracy for the 'first epoch reaching' row (default {DEFAULT_THRESHOLD:g})",
    )
    p.add_argument(
        "--metric",
        metavar="NAME",
        help="rank the runs by this metric (any series or per-epoch figure they logged; lower or higher is better as "
        "the runs define it, else higher for accuracies, lower for the rest); default: test accuracy, or for runs "
        "without one a metric they define a goal for, or a held-out loss",
    )
    p.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        metavar="DIR",
        help="where to look for the latest invocation when no path is given (default: runs/)",
    )
    p.add_argument(
        "--tag",
        action="append",
        metavar="TAG",
        help="only runs tagged TAG (repeat: every tag); with no path, any run under --runs-dir (tuitrain tag)",
    )
    return p


def cmd_compare(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.tag:
        files = tagged_runs(args.paths, args.runs_dir, args.tag, "compare")
    else:
        files = load_run_arguments(args.paths, args.runs_dir)
    if not files:
        raise TuitrainError(
            f"nothing to compare: {args.runs_dir} holds no runs of a preset; pass run files or folders."
        )
    refuse_nothing_readable(files, "compare")
    comparison = Comparison.from_files(files, threshold=args.threshold, all_params=args.all_params, metric=args.metric)
    if args.metric is not None and comparison.runs and not comparison.ranked():
        known = sorted({n for r in comparison.runs for n in [*r.record.series, *comparison.extra_metrics()]})
        raise TuitrainError(
            f"--metric {args.metric}: no compared run logged it"
            + (f"; they logged: {', '.join(known)}." if known else ".")
        )
    if args.baseline is not None:
        comparison.baseline = comparison.find_run(args.baseline).index
    if args.plots is not None:
        write_plots(comparison, args.plots, args.log_loss)
    if args.no_ui or args.format or args.output or args.plots is not None:
        return export(comparison, args.format or "text", args.output)
    return open_app(comparison)


def export(comparison: Comparison, form: str, output: Path | None) -> int:
    text = comparison.render(form)
    if output is None:
        sys.stdout.write(text)
    else:
        compared = {f.path.resolve() for f in [*(r.file for r in comparison.runs), *comparison.unreadable]}
        if output.resolve() in compared:
            raise TuitrainError(f"{output}: is one of the compared run files; choose another --output.")
        try:
            atomic_write_text(output, text)
        except OSError as exc:
            raise TuitrainError(f"{output}: cannot write ({exc.strerror or exc}).") from None
        print(f"Wrote {output} ({form}).", file=sys.stderr)
    return unreadable_exit_code([*(r.file for r in comparison.runs), *comparison.unreadable])


def write_plots(comparison: Comparison, folder: Path, log_loss: bool) -> None:
    from tuitrain.plots import write_figures

    written = write_figures(comparison, folder, log_loss=log_loss)
    names = ", ".join(sorted({p.stem for p in written})) or "none (no epochs to draw)"
    print(f"Wrote figures to {folder}: {names} (PNG and SVG).", file=sys.stderr)


def open_app(comparison: Comparison) -> int:
    try:
        from tuitrain.tui.compare_app import CompareApp
    except ImportError as exc:
        raise TuitrainError(f"the app is not available ({exc}); use --no-ui.") from None
    app = CompareApp(comparison)
    app.run()
    return app.return_code or 0
