"""Run housekeeping from the command line: `tuitrain trash`, `restore`, `label`, `tag`, `note` (tuitrain.housekeeping).

Each exits 0, or 2 with one line saying what is wrong (then nothing changed).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from tuitrain import format as fmt
from tuitrain.catalog import expand_arguments, load_run_file
from tuitrain.cli import OneLineErrorParser
from tuitrain.core.errors import TuitrainError
from tuitrain.housekeeping import (
    check_label,
    edit_runs,
    parse_tag_changes,
    relabel,
    renote,
    restore_runs,
    retag,
    trash_folder,
    trash_runs,
    trashed_runs,
)


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    return OneLineErrorParser(
        prog=f"tuitrain {prog}", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _runs_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), metavar="DIR", help="the runs folder (default: runs/)"
    )


def _say(text: str) -> None:
    print(fmt.printable(text))


def cmd_trash(argv: Sequence[str]) -> int:
    p = _parser(
        "trash",
        "Move runs to the trash: RUNS_DIR/.trash, with their checkpoints and series logs (the last run of an\n"
        "invocation folder takes the whole folder along). `tuitrain restore` lists the trash and brings runs back.\n"
        "A live run (still training, or its folder held by a training or resuming tuitrain) is refused.\n\n"
        "  tuitrain trash runs/20260101-120000-lr_sweep-ab12cd/03-lr=1.json\n"
        "  tuitrain trash runs/20260101-120000-lr_sweep-ab12cd      every run of an invocation",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_FILE|FOLDER", help="run files, or folders of them")
    _runs_dir_option(p)
    args = p.parse_args(argv)
    trashed = trash_runs(args.runs, args.runs_dir)
    for t in trashed:
        _say(f"Trashed {t.original} ({t.record.label if t.record else '?'}) -> {t.trashed}")
    _say(f"Moved {len(trashed)} run(s) to {trash_folder(args.runs_dir)}; `tuitrain restore RUN` brings one back.")
    return 0


def cmd_restore(argv: Sequence[str]) -> int:
    p = _parser(
        "restore",
        "List the runs in the trash, or put runs back where they were (with their checkpoints and series logs).\n\n"
        "  tuitrain restore                          what the trash holds\n"
        "  tuitrain restore runs/.trash/FOLDER/01-lr=0.01.json   (or the path it had: runs/FOLDER/01-lr=0.01.json)\n"
        "  tuitrain restore runs/.trash/FOLDER       every run trashed from that folder\n"
        "  tuitrain restore --all",
    )
    p.add_argument("runs", nargs="*", metavar="RUN_FILE|FOLDER", help="trashed runs: their path in the trash or before")
    p.add_argument("--all", action="store_true", help="restore everything in the trash")
    _runs_dir_option(p)
    args = p.parse_args(argv)
    if args.all and args.runs:
        raise TuitrainError("restore: give runs or --all, not both.")
    if args.all:
        args.runs = [trash_folder(args.runs_dir)] if trashed_runs(args.runs_dir) else []
        if not args.runs:
            _say(f"The trash ({trash_folder(args.runs_dir)}) is empty.")
            return 0
    if not args.runs:
        listed = trashed_runs(args.runs_dir)
        if not listed:
            _say(f"The trash ({trash_folder(args.runs_dir)}) is empty.")
            return 0
        _say(f"In the trash ({trash_folder(args.runs_dir)}), {len(listed)} run(s):")
        for t in listed:
            what = f"{t.record.label}  {t.record.status}" if t.record else f"unreadable: {t.error}"
            tags = f"  [{' '.join(t.record.tags)}]" if t.record and t.record.tags else ""
            _say(f"  {t.trashed}  {what}{tags}  (was {t.original})")
        return 0
    for t in restore_runs(args.runs, args.runs_dir):
        _say(f"Restored {t.original} ({t.record.label if t.record else '?'})")
    return 0


def cmd_label(argv: Sequence[str]) -> int:
    p = _parser(
        "label",
        "Rename a run's label (the text tables show). Its settings stay as they are; the label it was given is kept\n"
        "in the run file (original_label). A live run is refused.\n\n"
        "  tuitrain label runs/FOLDER/01-lr=0.01.json 'baseline lr'",
    )
    p.add_argument("run", metavar="RUN_FILE")
    p.add_argument("label", metavar="NEW_LABEL")
    args = p.parse_args(argv)
    label = check_label(args.label)
    for run in edit_runs([args.run], lambda record: relabel(record, label)):
        _say(f"{run.path}: label {label!r}" + (f" (was {run.record.original_label!r})" if run.record else ""))
    return 0


TAG_HELP = """\
usage: tuitrain tag RUN_FILE|FOLDER... [+TAG|-TAG]...

Add (+TAG) or remove (-TAG) tags of runs; with no change, print their tags. Tags are kept in the run files,
shown by compare and report, and filter them: tuitrain compare --tag baseline. A live run is refused.

  tuitrain tag runs/FOLDER/01-lr=0.01.json +baseline +mnist
  tuitrain tag runs/FOLDER -mnist
"""


def cmd_tag(argv: Sequence[str]) -> int:
    # by hand, not argparse: -TAG would read as an option
    if any(a in ("-h", "--help") for a in argv):
        print(TAG_HELP, end="")
        return 0
    changes = [a for a in argv if a[:1] in "+-" and not a.startswith("--")]
    runs = [a for a in argv if a not in changes]
    if not runs:
        raise TuitrainError("tag: name the run files to tag (see tuitrain tag --help).")
    add, remove = parse_tag_changes(changes)
    if not changes:  # only look: nothing written, a live run too
        edited = [load_run_file(p, series=False) for p in expand_arguments(runs)]
        for run in edited:
            if run.record is None:
                raise TuitrainError(run.error or f"{run.path}: unreadable.")
    else:
        edited = edit_runs(runs, lambda record: retag(record, add, remove))
    for run in edited:
        tags = " ".join(run.record.tags) if run.record and run.record.tags else "(none)"
        _say(f"{run.path}: tags {tags}")
    return 0


def cmd_note(argv: Sequence[str]) -> int:
    p = _parser(
        "note",
        "Write a note on a run (kept in its run file, shown by compare and report); an empty TEXT removes it.\n"
        "A live run is refused.\n\n"
        "  tuitrain note runs/FOLDER/01-lr=0.01.json 'diverges at epoch 3 without warmup'",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_FILE|FOLDER")
    p.add_argument("text", metavar="TEXT")
    args = p.parse_args(argv)
    for run in edit_runs(args.runs, lambda record: renote(record, args.text)):
        note = run.record.notes if run.record else None
        _say(f"{run.path}: note " + (repr(note) if note else "removed"))
    return 0


COMMANDS = {"trash": cmd_trash, "restore": cmd_restore, "label": cmd_label, "tag": cmd_tag, "note": cmd_note}
