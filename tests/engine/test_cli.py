"""The headless CLI: output shape, files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuitrain.cli import main
from tuitrain.records import read_record

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.subprocess
def test_headless_run_prints_and_saves(mnist_dir: Path, tiny_preset: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TUITRAIN_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuitrain",
            "--preset",
            str(tiny_preset),
            "--no-ui",
            "--data-dir",
            str(mnist_dir),
            "--runs-dir",
            str(runs),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Train Epoch: 1 [128/512 (25%)]\tLoss: " in out
    assert "Test set: Average loss: " in out and "/128 (" in out
    assert "Epoch  Initial loss  Final loss  Test accuracy" in out
    assert "\x1b" not in out and "\r" not in out  # no control characters on a pipe
    files = sorted(runs.rglob("*.json"))
    assert len(files) == 2
    assert all(read_record(f).status == "completed" for f in files)
    assert f"Run files: {files[0].parent}" in out


def test_exit_codes(mnist_dir: Path, tiny_preset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["--preset", str(tiny_preset), "--no-ui", "--data-dir", str(mnist_dir), "--runs-dir", str(tmp_path / "r")]
    assert main(base + ["--epochs", "1"]) == 0
    assert main(["--preset", "no_such_preset", "--no-ui"]) == 2
    assert "unknown preset 'no_such_preset'" in capsys.readouterr().err
    assert main(["--no-ui"]) == 2
    assert main(base + ["--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(base + ["--epochs", "0"])
    assert info.value.code == 2


def test_diverged_run_exits_1(mnist_dir: Path, tiny_preset: Path, tmp_path: Path, monkeypatch) -> None:
    import torch

    from tuitrain.train import loop

    class NanAfterTenBatches(torch.nn.CrossEntropyLoss):
        calls = 0

        def forward(self, input, target):
            NanAfterTenBatches.calls += 1
            loss = super().forward(input, target)
            return loss * float("nan") if NanAfterTenBatches.calls > 10 else loss

    monkeypatch.setattr(loop.nn, "CrossEntropyLoss", NanAfterTenBatches)
    runs = tmp_path / "r"
    code = main(["--preset", str(tiny_preset), "--no-ui", "--data-dir", str(mnist_dir), "--runs-dir", str(runs)])
    statuses = [read_record(p).status for p in sorted(runs.rglob("*.json"))]
    assert statuses == ["diverged", "diverged"]  # the sweep went on to the second run
    assert code == 1


def test_schema_command(capsys: pytest.CaptureFixture) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "RunRecord"


def test_lr_override_replaces_the_sweep(mnist_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs = tmp_path / "runs"
    code = main(
        [
            "--preset",
            "lr_sweep",
            "--no-ui",
            "--lr",
            "0.05",
            "--subset",
            "64",
            "--epochs",
            "1",
            "--test-subset",
            "32",
            "--device",
            "cpu",
            "--data-dir",
            str(mnist_dir),
            "--runs-dir",
            str(runs),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].endswith("— 1 run(s); --lr 0.05 replaces the sweep over lr")
    [path] = sorted(runs.rglob("*.json"))
    record = read_record(path)
    assert (path.name, record.label, record.spec.lr) == ("01-lr=0.05.json", "lr=0.05", 0.05)


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--batch-size", "100000", "--batch-size 100000: must be at most 65536."),
        ("--lr", "11", "--lr 11: must be at most 10."),
        ("--epochs", "10001", "--epochs 10001: must be at most 10000."),
    ],
)
def test_out_of_range_option_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture, option: str, value: str, message: str
) -> None:
    assert main(["--preset", "smoke", "--no-ui", option, value, "--runs-dir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == f"tuitrain: error: {message}\n"
    assert not (tmp_path / "r").exists()


def test_files_follow_the_umask_and_keep_their_mode(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import stat

    saved = os.umask(0o027)
    try:
        runs = tmp_path / "runs"
        assert (
            main(
                [
                    "--preset",
                    str(tiny_preset),
                    "--no-ui",
                    "--epochs",
                    "1",
                    "--data-dir",
                    str(mnist_dir),
                    "--runs-dir",
                    str(runs),
                ]
            )
            == 0
        )
        [folder] = runs.iterdir()
        written = sorted(p.name for p in folder.iterdir())
        assert any(n.endswith(".ckpt.pt") for n in written) and "invocation.plan" in written
        assert {n: stat.S_IMODE((folder / n).stat().st_mode) for n in written} == {n: 0o640 for n in written}
        table = tmp_path / "table.txt"
        table.write_text("old")
        table.chmod(0o644)
        assert main(["compare", str(folder), "--output", str(table)]) == 0
        assert stat.S_IMODE(table.stat().st_mode) == 0o644 and "Comparing 2 run(s)" in table.read_text()
    finally:
        os.umask(saved)


def test_nothing_to_compare_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (
        [str(empty)],
        [str(empty / "*.json")],
        ["--runs-dir", str(empty)],
        [str(empty), str(tmp_path / "nope*")],
    ):
        assert main(["compare", "--no-ui", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("tuitrain: error: nothing to compare: ") and err.count("\n") == 1, err


def test_compare_and_report_share_one_rule_of_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Nothing readable: 2 (one line); written with some files unreadable: 1; all readable: 0 (the README's rule)."""
    pytest.importorskip("matplotlib")
    from tests.compare_fixtures import normal_pair, write_runs

    bad, mixed, good = tmp_path / "bad", tmp_path / "mixed", tmp_path / "good"
    write_runs(good, normal_pair())
    write_runs(mixed, normal_pair()[:1])
    for folder in (bad, mixed):
        folder.mkdir(exist_ok=True)
        for i in range(4):
            (folder / f"empty-{i}.json").write_text("")
    for folder, code in ((bad, 2), (mixed, 1), (good, 0)):
        assert main(["compare", "--no-ui", str(folder)]) == code, folder
        assert main(["report", str(folder), "--output", str(tmp_path / f"{folder.name}.md")]) == code, folder
        err = capsys.readouterr().err
        if code == 2:
            lines = err.splitlines()
            assert len(lines) == 2 and lines[0].startswith("tuitrain: error: nothing to compare: "), err
            assert lines[1].startswith("tuitrain: error: nothing to report: ") and lines[0].count("empty-") == 4


def test_watch_takes_runs_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.compare_fixtures import make_record
    from tuitrain.records import write_record

    runs = tmp_path / "elsewhere"
    (runs / "20250102-100000-fixture-abcdef").mkdir(parents=True)
    write_record(
        make_record("only", [91.0], [(2.0, 1.0, 1.5)]), runs / "20250102-100000-fixture-abcdef" / "01-only.json"
    )
    assert main(["watch", "--no-ui", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "Run only: completed, best test accuracy 91.00%" in out
    # the watcher reads the file another process wrote: it saves nothing
    assert f"Reading {runs / '20250102-100000-fixture-abcdef' / '01-only.json'}" in out and "Saving to" not in out


def test_watch_of_files_that_nothing_writes_and_cannot_be_read_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.compare_fixtures import make_record
    from tuitrain.records import write_record

    empty = tmp_path / "x.json"
    empty.write_text("")  # `: > x.json`: no process writes it, no lock file beside it
    assert main(["watch", "--no-ui", str(empty)]) == 2
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"Cannot read x.json (no process writes it): {empty}: not valid JSON (Expecting value at line 1)."
    ]
    # a folder says which of its files cannot be read, rather than hiding them
    folder = tmp_path / "20250102-100000-fixture-abcdef"
    folder.mkdir()
    write_record(make_record("only", [91.0], [(2.0, 1.0, 1.5)]), folder / "01-only.json")
    (folder / "02-broken.json").write_text("{")
    assert main(["watch", "--no-ui", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "Run only: completed" in out and "Cannot read 02-broken.json (no process writes it)" in out


def presets_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> Path:
    """The presets folder of the test (NAME.toml per file), each preset estimated at a second."""
    from tuitrain import session

    folder = tmp_path / "presets"
    folder.mkdir()
    for name, text in files.items():
        (folder / f"{name}.toml").write_text(text, encoding="utf-8")
    monkeypatch.setenv("TUITRAIN_PRESETS_DIR", str(folder))
    monkeypatch.setattr(session, "estimated_seconds", lambda specs, **kw: 1.0)
    return folder


def test_list_presets_marks_a_preset_named_unlike_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    presets_folder(tmp_path, monkeypatch, {"quick": 'name = "fast"\ntitle = "Quick one"\n'})
    assert main(["--list-presets"]) == 0
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.startswith("quick ")]
    assert "INVALID" in line and "name = 'fast' differs from the file name" in " ".join(out.split())
    assert main(["--preset", "fast", "--no-ui"]) == 2
    assert "quick.toml says name = 'fast'" in capsys.readouterr().err


def test_list_presets_fits_the_terminal_with_an_invalid_presets_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The reason lists every known setting (~190 columns): wrapped under the table, not a row that long."""
    bad = 'name = "bad"\ntitle = "Bad"\n[defaults]\nnonsense = 5\n'
    folder = presets_folder(
        tmp_path, monkeypatch, {"bad": bad, "long": f'name = "long"\ntitle = "{"A long title " * 10}"\n'}
    )
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["--list-presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines if str(folder) not in line) < 80, lines  # a path is never broken
    [row] = [line for line in lines if line.startswith("bad ")]
    assert row.endswith("INVALID (why: below)")
    [long_row] = [line for line in lines if line.startswith("long ")]
    assert long_row.endswith("…") and len(long_row) == 79
    below = " ".join(" ".join(lines[lines.index(row) :]).split())
    assert f"bad: {folder / 'bad.toml'}:4: unknown setting 'nonsense'. Known: activation," in below
    assert below.endswith("warmup_epochs, weight_decay.")


def test_list_presets_times_nothing_while_another_run_holds_the_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from tuitrain.core.cores import CoreLease

    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "quick.toml").write_text('name = "quick"\ntitle = "Quick one"\n[defaults]\ndevice = "cpu"\n')
    monkeypatch.setenv("TUITRAIN_PRESETS_DIR", str(folder))
    with CoreLease(label="a run training") as training:
        assert training.acquire()
        assert main(["--list-presets"]) == 0
    out, err = capsys.readouterr()
    [line] = [line for line in out.splitlines() if line.startswith("quick ")]
    assert line.split()[3] == "–"  # no estimate rather than one of a shared machine
    assert "–: not timed yet" in err


def test_a_bad_preset_is_refused_before_the_app_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """`tuitrain --preset nosuch` (the app) is one line and exit 2, as with --no-ui, not an app with a dialog."""
    from tuitrain.tui.app import TuitrainApp

    def started(self: TuitrainApp) -> None:
        raise AssertionError("the app started")

    monkeypatch.setattr(TuitrainApp, "run", started)
    assert main(["--preset", "nosuch", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tuitrain: error: unknown preset 'nosuch'.") and len(err.splitlines()) == 1
    assert main(["--preset", str(tmp_path / "missing.toml")]) == 2
    assert capsys.readouterr().err == f"tuitrain: error: {tmp_path / 'missing.toml'}: no such preset file.\n"
