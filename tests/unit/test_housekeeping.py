"""Run housekeeping from the command line: trash and restore (with companions), label, tag and note runs, refusing
live ones; compare/report --tag, and tags and notes shown. Runs built here, no training."""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.compare_fixtures import make_record, normal_pair, write_runs
from tuitrain.catalog import PLAN_FILE, load_run_file, scan_runs
from tuitrain.cli import main
from tuitrain.compare import Comparison
from tuitrain.core.errors import TuitrainError
from tuitrain.core.folder_lock import LOCK_FILE
from tuitrain.core.serieslog import SeriesWriter
from tuitrain.records import EnvInfo, read_record, write_record
from tuitrain.report import build_report, to_markdown

INVOCATION = "20260101-120000-fixture-abc123"


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """runs/ with one invocation folder of two runs, each with a checkpoint and one with a series log, its plan
    and lock file; and a second invocation of one run."""
    runs = tmp_path / "runs"
    relu, tanh = write_runs(runs / INVOCATION, normal_pair())
    for path in (relu, tanh):
        path.with_name(path.stem + ".ckpt.pt").write_bytes(b"checkpoint of " + path.name.encode())
    record = read_record(relu)
    record.series_file, record.loss_series = relu.stem + ".series", "loss"
    write_record(record, relu)
    writer = SeriesWriter(relu.with_name(record.series_file))
    writer.append({"loss": ([0, 1], [2.3, 0.3])})
    writer.close()
    (runs / INVOCATION / PLAN_FILE).write_text("{}", encoding="utf-8")
    (runs / INVOCATION / LOCK_FILE).write_text("pid 1 on elsewhere\n", encoding="utf-8")
    write_runs(runs / "20260102-000000-other-def456", [make_record("sigmoid", [95.0], [(2.3, 0.4, 0.6)])])
    return runs


def test_trash_and_restore_round_trip_moves_companions(runs: Path, capsys) -> None:
    before = files_under(runs)
    folder = runs / INVOCATION
    assert main(["trash", str(folder / "01-relu.json"), "--runs-dir", str(runs)]) == 0
    assert "Trashed" in capsys.readouterr().out
    trash = runs / ".trash" / INVOCATION
    assert sorted(p.name for p in trash.iterdir()) == ["01-relu.ckpt.pt", "01-relu.json", "01-relu.series"]
    assert sorted(p.name for p in folder.iterdir()) == ["02-tanh.ckpt.pt", "02-tanh.json", PLAN_FILE, LOCK_FILE]
    # the listings leave the trash out
    assert {f.path.name for f in scan_runs(runs, series=False)} == {"02-tanh.json", "01-sigmoid.json"}

    # the last run of the folder takes the folder along: nothing half left for resume or compare
    assert main(["trash", str(folder / "02-tanh.json"), "--runs-dir", str(runs)]) == 0
    assert not folder.exists()
    assert {p.name for p in trash.iterdir()} >= {PLAN_FILE, LOCK_FILE, "02-tanh.json", "02-tanh.ckpt.pt"}
    capsys.readouterr()

    assert main(["restore", "--runs-dir", str(runs)]) == 0
    listing = capsys.readouterr().out
    assert "2 run(s)" in listing and "relu" in listing and "tanh" in listing

    # by the path it had, then by its folder in the trash
    assert main(["restore", str(folder / "02-tanh.json"), "--runs-dir", str(runs)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["02-tanh.ckpt.pt", "02-tanh.json", PLAN_FILE, LOCK_FILE]
    assert main(["restore", str(trash), "--runs-dir", str(runs)]) == 0
    assert files_under(runs) == before  # every byte back where it was, the trash gone
    assert "Restored" in capsys.readouterr().out


def test_restore_never_overwrites_and_unknown_runs_are_one_line(runs: Path, capsys) -> None:
    path = runs / INVOCATION / "01-relu.json"
    assert main(["trash", str(path), "--runs-dir", str(runs)]) == 0
    path.write_text("a new file in its place", encoding="utf-8")
    capsys.readouterr()
    assert main(["restore", str(path), "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not overwritten" in err
    assert path.read_text(encoding="utf-8") == "a new file in its place"
    assert (runs / ".trash" / INVOCATION / "01-relu.json").is_file()
    assert main(["restore", str(runs / "nothing.json"), "--runs-dir", str(runs)]) == 2
    assert "not in the trash" in capsys.readouterr().err
    assert main(["trash", str(runs / "missing.json"), "--runs-dir", str(runs)]) == 2


def test_a_run_outside_the_runs_folder_is_refused(runs: Path, tmp_path: Path, capsys) -> None:
    (elsewhere,) = write_runs(tmp_path / "elsewhere", [make_record("x", [90.0], [(1.0, 0.5, 0.7)])])
    assert main(["trash", str(elsewhere), "--runs-dir", str(runs)]) == 2
    assert "not under the runs folder" in capsys.readouterr().err
    assert elsewhere.is_file()


def live_record(tmp_path: Path) -> Path:
    """A run file whose training process is this one, on this host: live."""
    record = make_record("live", [90.0], [(1.0, 0.5, 0.7)], status="running")
    record.env = EnvInfo(device="CPU", torch_version="2.0", threads=1, host=socket.gethostname(), pid=os.getpid())
    record.started_at = record.heartbeat_at = datetime.now(timezone.utc)
    folder = tmp_path / "runs" / "20260103-000000-live-aaaaaa"
    folder.mkdir(parents=True)
    write_record(record, folder / "01-live.json")
    return folder / "01-live.json"


def test_a_live_run_is_neither_trashed_nor_edited(runs: Path, tmp_path: Path, capsys) -> None:
    path = live_record(tmp_path)
    before = files_under(runs)
    # with another run: all or nothing
    assert main(["trash", str(runs / INVOCATION / "01-relu.json"), str(path), "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is live" in err and f"pid {os.getpid()}" in err
    assert files_under(runs) == before
    for command in (["tag", str(path), "+x"], ["note", str(path), "hi"], ["label", str(path), "new"]):
        assert main(command) == 2
        assert "is live" in capsys.readouterr().err
    assert files_under(runs) == before


def test_a_folder_held_by_a_training_tuitrain_is_live(runs: Path, capsys) -> None:
    """Its runs may have ended, but the process holding the folder's lock still writes there (more runs, the plan)."""
    folder = runs / INVOCATION
    before = files_under(runs)
    with open(folder / LOCK_FILE, "r+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: refused as another process would be
        assert main(["trash", str(folder), "--runs-dir", str(runs)]) == 2
        assert "another tuitrain (pid 1 on elsewhere)" in capsys.readouterr().err
        assert main(["tag", str(folder / "01-relu.json"), "+x"]) == 2
        assert files_under(runs) == before
    assert main(["tag", str(folder / "01-relu.json"), "+x"]) == 0  # once let go


def test_tag_note_and_label_change_only_themselves(runs: Path, capsys) -> None:
    path = runs / INVOCATION / "01-relu.json"
    before = json.loads(path.read_text(encoding="utf-8"))
    assert main(["tag", str(path), "+baseline", "+mnist"]) == 0
    assert main(["tag", str(path), "-mnist", "+fast"]) == 0
    assert main(["note", str(path), "  the reference run "]) == 0
    assert main(["label", str(path), "relu (reference)"]) == 0
    assert main(["label", str(path), "relu again"]) == 0
    out = capsys.readouterr().out
    assert "tags baseline fast" in out and "(was 'relu')" in out
    after = json.loads(path.read_text(encoding="utf-8"))
    changed = {k for k in after if after.get(k) != before.get(k)}
    assert changed == {"tags", "notes", "label", "original_label"}  # settings, figures, heartbeat untouched
    assert after["tags"] == ["baseline", "fast"]
    assert after["notes"] == "the reference run"
    assert (after["label"], after["original_label"]) == ("relu again", "relu")
    assert not list(path.parent.glob(".*.tmp"))
    assert main(["note", str(path), ""]) == 0
    assert read_record(path).notes is None


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["tag", "+x"], "name the run files"),
        (["tag", "RUN", "+two words"], "one word"),
        (["label", "RUN", "  "], "cannot be empty"),
        (["label", "RUN", "a\nb"], "one line"),
    ],
)
def test_bad_edits_are_one_line_and_exit_2(runs: Path, argv: list[str], says: str, capsys) -> None:
    path = runs / INVOCATION / "01-relu.json"
    before = path.read_bytes()
    assert main([str(path) if a == "RUN" else a for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err
    assert path.read_bytes() == before


def test_compare_tag_filters_and_shows_tags_and_notes(runs: Path, capsys) -> None:
    relu = runs / INVOCATION / "01-relu.json"
    sigmoid = runs / "20260102-000000-other-def456" / "01-sigmoid.json"
    assert main(["tag", str(relu), str(sigmoid), "+baseline"]) == 0
    assert main(["note", str(relu), "the reference run"]) == 0
    capsys.readouterr()
    # no path: every run under --runs-dir tagged so, across invocations
    assert main(["compare", "--no-ui", "--tag", "baseline", "--runs-dir", str(runs), "--format", "json"]) == 0
    compared = json.loads(capsys.readouterr().out)["runs"]
    assert sorted(r["label"] for r in compared) == ["relu", "sigmoid"]
    assert {r["label"]: (r["tags"], r["notes"]) for r in compared}["relu"] == (["baseline"], "the reference run")
    assert main(["compare", "--no-ui", str(runs / INVOCATION), "--tag", "baseline"]) == 0
    text = capsys.readouterr().out
    assert "Comparing 1 run(s)" in text
    assert (
        re.search(r"\n  tags +baseline\n", text) and "Tags and notes\n\n  - relu [baseline]: the reference run" in text
    )
    assert main(["compare", "--no-ui", "--tag", "baseline", "--tag", "nope", "--runs-dir", str(runs)]) == 2
    assert "tagged baseline and nope" in capsys.readouterr().err


def test_report_shows_tags_and_notes(runs: Path, tmp_path: Path) -> None:
    relu = runs / INVOCATION / "01-relu.json"
    assert main(["tag", str(relu), "+baseline"]) == 0
    assert main(["note", str(relu), "the reference run"]) == 0
    report = build_report([load_run_file(p) for p in sorted((runs / INVOCATION).glob("*.json"))], with_figures=False)
    text = to_markdown(report, tmp_path / "figures", tmp_path)
    assert "## Tags and notes\n\n- relu [baseline]: the reference run\n" in text
    comparison = Comparison.from_paths(sorted((runs / INVOCATION).glob("*.json")))
    assert comparison.annotation_rows() == [["tags", "baseline", "–"], ["note", "the reference run", "–"]]


def test_resuming_a_folder_leaves_its_trashed_runs_out(runs: Path, capsys) -> None:
    """A run trashed from an invocation folder is not trained again from scratch by `tuitrain --resume FOLDER`: the
    other run has ended, so there is nothing to resume; restored, the run is as it was."""
    from tuitrain.session import InvocationPlan, PlannedRun, PresetInvocation, release_folder

    folder = runs / INVOCATION
    plan = InvocationPlan(
        preset="fixture",
        title="fixture",
        invocation=INVOCATION,
        runs=[
            PlannedRun(label=read_record(p).label, spec=read_record(p).spec, file=p.name)
            for p in sorted(folder.glob("*.json"))
        ],
    )
    (folder / PLAN_FILE).write_text(plan.model_dump_json(), encoding="utf-8")
    (folder / LOCK_FILE).unlink()
    with pytest.raises(TuitrainError, match="every run has already ended"):
        PresetInvocation.resume(folder)
    assert main(["trash", str(folder / "02-tanh.json"), "--runs-dir", str(runs)]) == 0
    with pytest.raises(TuitrainError, match="every run has already ended"):
        PresetInvocation.resume(folder)
    (runs / ".trash" / INVOCATION / "02-tanh.json").unlink()  # deleted for good: planned, never started
    (runs / ".trash" / INVOCATION / "02-tanh.ckpt.pt").unlink()
    resumed = PresetInvocation.resume(folder)
    release_folder(folder)  # the resume holds the folder until it trains: let go, nothing trains here
    assert resumed.not_started() == ["tanh"]


def test_tag_without_changes_prints_the_tags_and_writes_nothing(runs: Path, capsys) -> None:
    folder = runs / INVOCATION
    assert main(["tag", str(folder / "01-relu.json"), "+baseline"]) == 0
    before = files_under(runs)
    capsys.readouterr()
    assert main(["tag", str(folder)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{folder / '01-relu.json'}: tags baseline", f"{folder / '02-tanh.json'}: tags (none)"]
    assert files_under(runs) == before
    assert main(["tag"]) == 2
    assert main(["tag", "--help"]) == 0
