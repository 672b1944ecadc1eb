"""Labels from run files anyone can write are shown with their control characters escaped, everywhere."""

from __future__ import annotations

import io
from pathlib import Path

from tests.compare_fixtures import make_record
from tuitrain import format as fmt
from tuitrain.cli import main
from tuitrain.core.events import LogMessage, RunFinished, RunStarted
from tuitrain.core.spec import RunSpec
from tuitrain.headless import HeadlessPrinter
from tuitrain.records import write_record

NASTY = "clear\x1b[2J\nnew line\rback\x07\x9b"
SHOWN = "clear\\x1b[2J\\nnew line\\rback\\x07\\x9b"


def no_control(text: str, allowed: str = "\n") -> bool:
    return not any((ord(c) < 32 or 0x7F <= ord(c) <= 0x9F) and c not in allowed for c in text)


def test_printable_escapes_control_characters() -> None:
    assert fmt.printable(NASTY) == SHOWN
    assert fmt.printable("two\nlines\tand tab", keep="\n\t") == "two\nlines\tand tab"
    assert fmt.printable("lr=0.1 — ü") == "lr=0.1 — ü"


def test_summary_and_tables_escape_labels() -> None:
    record = make_record(NASTY, [90.0], [(2.0, 1.0, 1.5)])
    text = fmt.summary([record])
    assert SHOWN in text and no_control(text)
    table = fmt.text_table(("Run",), [(NASTY,)])
    assert SHOWN in table and no_control(table)


def test_headless_lines_escape_labels() -> None:
    out = io.StringIO()
    printer = HeadlessPrinter(out)
    printer(
        RunStarted(
            run_id="r",
            label=NASTY,
            run_index=0,
            run_count=1,
            spec=RunSpec(),
            device="CPU",
            train_size=10,
            test_size=10,
            batches_per_epoch=1,
            start_epoch=1,
        )
    )
    printer(LogMessage(f"Resuming {NASTY}"))
    printer(RunFinished(run_id="r", label=NASTY, run_index=0, status="completed", best_accuracy=None, error=None))
    text = out.getvalue()
    assert text.count(SHOWN) == 2 and no_control(text)


def test_compare_text_escapes_labels(tmp_path: Path, capsys) -> None:
    for i, label in enumerate((NASTY, "plain")):
        write_record(make_record(label, [90.0 + i], [(2.0, 1.0, 1.5)], preset="p\x1b]0;x\x07"), tmp_path / f"{i}.json")
    assert main(["compare", "--no-ui", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert SHOWN in out and no_control(out)
