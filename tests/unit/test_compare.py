"""Comparing saved runs headless: the table, observations, grid, exports and unreadable files."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import timedelta
from pathlib import Path

import pytest

from tests.compare_fixtures import (
    chance_run,
    diverged_run,
    grid_runs,
    interrupted_run,
    make_record,
    normal_pair,
    write_runs,
)
from tuitrain.catalog import load_run_arguments
from tuitrain.cli import main
from tuitrain.compare import Comparison, loss_curve
from tuitrain.core.errors import TuitrainError
from tuitrain.records import SCHEMA_VERSION


def compare(tmp_path: Path, records, **options) -> Comparison:
    return Comparison.from_paths(write_runs(tmp_path / "runs", records), **options)


def row(comparison: Comparison, name: str) -> list[str]:
    return next(r[1:] for r in comparison.table_rows() if r[0] == name)


def test_table_shows_differing_params_and_figures(tmp_path: Path) -> None:
    c = compare(tmp_path, normal_pair())
    assert c.shown_params() == ["activation"]
    assert row(c, "activation") == ["relu", "tanh"]
    assert row(c, "Final test acc") == ["98.20%", "98.60%"]
    assert row(c, "Best at epoch") == ["3", "3"]
    assert row(c, "Final train loss") == ["0.0500", "0.0400"]
    assert row(c, "First epoch ≥ 97%") == ["2", "1"]
    assert row(c, "Training time") == ["1m30s", "2m30s"]
    assert row(c, "Status") == ["completed", "completed"]
    c.all_params = True
    assert {"model", "lr", "batch_size", "seed", "data_source"} <= set(c.shown_params())
    assert row(c, "lr") == ["0.001", "0.001"]


def test_threshold_changes_the_epoch_row(tmp_path: Path) -> None:
    c = compare(tmp_path, normal_pair(), threshold=98.5)
    assert row(c, "First epoch ≥ 98.5%") == ["never", "3"]


def test_baseline_adds_deltas(tmp_path: Path) -> None:
    c = compare(tmp_path, normal_pair())
    c.baseline = c.find_run("relu").index
    assert c.header() == ["", "relu (baseline)", "tanh"]
    assert row(c, "Best test acc") == ["98.20%", "98.60% (+0.40)"]
    assert row(c, "Final train loss") == ["0.0500", "0.0400 (-0.0100)"]
    assert row(c, "First epoch ≥ 97%") == ["2", "1 (-1)"]
    assert c.find_run("2").label == "tanh"
    with pytest.raises(TuitrainError, match="matches no run"):
        c.find_run("gelu")
    with pytest.raises(TuitrainError, match="numbered from 1"):
        c.find_run("3")


def test_epoch_table_is_initial_to_final_loss_and_accuracy(tmp_path: Path) -> None:
    c = compare(tmp_path, [normal_pair()[0], interrupted_run()])
    assert c.epoch_header() == ["Epoch", "relu: loss", "acc", "sigmoid: loss", "acc"]
    rows = c.epoch_table_rows()
    assert rows[0] == ["1", "2.3000 → 0.3000", "96.00%", "2.3000 → 0.6000", "91.00%"]
    assert rows[2] == ["3", "0.1000 → 0.0500", "98.20%", "–", "–"]


def test_observations_best_and_faster(tmp_path: Path) -> None:
    notes = compare(tmp_path, normal_pair()).observations()
    assert "Best: tanh with 98.60% best test accuracy (epoch 3), 0.40 points above the next, relu (98.20%)." in notes
    assert "Fastest to 97% test accuracy: tanh at epoch 1; relu at epoch 2." in notes
    assert (
        "After epoch 1: tanh 97.20%, relu 96.00%; tanh converges faster than relu (1.20 points ahead or more)." in notes
    )
    assert "Training time: relu took 1m30s, tanh 2m30s (1.7×)." in notes  # equal epochs: no busy-machine caveat
    assert not any("stuck" in n or "diverged" in n or "fell" in n or "rose" in n for n in notes)


def test_a_difference_within_noise_is_no_winner(tmp_path: Path) -> None:
    a = make_record("a", [98.00], [(2.3, 0.1, 0.2)], seed=1)
    b = make_record("b", [98.05], [(2.3, 0.1, 0.2)], seed=2)
    notes = compare(tmp_path, [a, b]).observations()
    assert any(n.startswith("No clear best: b (98.05%) and a (98.00%) differ by 0.05 points") for n in notes)
    assert not any(n.startswith("Best:") for n in notes)


def test_a_tie_names_no_lowest_and_zero_deltas_have_no_sign(tmp_path: Path) -> None:
    # three runs the same to the last digit, but for training time a few tenths of a second apart
    runs = [
        make_record(name, [98.00], [(2.3, 0.1, 0.2)], seed=seed, seconds_per_epoch=seconds)
        for name, seed, seconds in (("a", 1, 30.0), ("b", 2, 30.3), ("c", 3, 29.8))
    ]
    c = compare(tmp_path, runs)
    notes = c.observations()
    assert any(n.startswith("No clear best: a (98.00%) and b (98.00%) differ by 0.00 points") for n in notes)
    assert not any(n.startswith("Lowest") for n in notes)
    c.baseline = 1
    assert row(c, "Best test acc") == ["98.00%", "98.00% (0.00)", "98.00% (0.00)"]
    assert row(c, "Final train loss") == ["0.1000", "0.1000 (0.0000)", "0.1000 (0.0000)"]
    assert row(c, "Training time") == ["30s", "30s (0s)", "30s (0s)"]
    # times that differ only below what is shown are no finding: not 'a took 0s, b 0s (2.0×)'
    quick = [
        make_record(name, [98.0], [(2.3, 0.1, 0.2)], seed=i, seconds_per_epoch=0.1 * i)
        for i, name in ((1, "a"), (2, "b"))
    ]
    assert not any(n.startswith("Training time") for n in compare(tmp_path / "quick", quick).observations())
    # a lowest that is beyond noise is still named
    runs.append(make_record("d", [90.0], [(2.3, 0.1, 0.2)], seed=4))
    notes = compare(tmp_path / "d", runs).observations()
    assert "Lowest: d with 90.00%, 8.00 points below a." in notes


def test_observations_chance_diverged_interrupted(tmp_path: Path) -> None:
    c = compare(tmp_path, [*normal_pair(), chance_run(), diverged_run(), interrupted_run()])
    notes = c.observations()
    assert any(
        n.startswith("lr=0.1 is stuck at chance level: best test accuracy 11.35% (chance 10%") and "2.3031" in n
        for n in notes
    )
    assert "lr=5 diverged: non-finite loss (nan) at epoch 2, batch 5; 1 epoch completed before it." in notes
    assert "sigmoid was interrupted after 1/3 epochs; its figures cover only those." in notes
    # only the healthy runs are said to be stuck; the healthy best is still the best
    assert sum("stuck" in n for n in notes) == 1
    assert any(n.startswith("Best: tanh") for n in notes)
    # the diverged run's NaN last loss is shown as such, never crashes the table
    assert row(c, "Final train loss")[3] == "nan"
    assert row(c, "Status")[3:] == ["diverged", "interrupted"]


def test_instability_claims(tmp_path: Path) -> None:
    wobbly = make_record("wobbly", [97.0, 98.5, 96.0], [(2.3, 0.2, 0.3), (0.2, 0.1, 0.12), (0.1, 0.4, 0.35)])
    steady = make_record("steady", [97.0, 98.0, 98.1], [(2.3, 0.2, 0.3), (0.2, 0.1, 0.12), (0.1, 0.09, 0.1)])
    notes = compare(tmp_path, [wobbly, steady]).observations()
    assert "wobbly: test accuracy fell from 98.50% (epoch 2) to 96.00% (epoch 3)." in notes
    assert "wobbly: mean training loss rose from 0.1200 (epoch 2) to 0.3500 (epoch 3)." in notes
    assert not any(n.startswith("steady:") for n in notes)


def test_grid_of_two_hyperparameters(tmp_path: Path) -> None:
    c = compare(tmp_path, grid_runs())
    grid = c.grid()
    assert (grid.row_param, grid.col_param) == ("activation", "lr")
    header, rows = grid.table()
    assert header == ["activation \\ lr", "0.001", "0.01"]
    assert rows == [["relu", "98.40%", "97.90%"], ["tanh", "98.80%", "97.10%"]]
    assert compare(tmp_path / "pair", normal_pair()).grid() is None  # one hyperparameter differs


def test_runs_of_different_presets_and_devices_compare(tmp_path: Path) -> None:
    a = make_record("run", [98.0], [(2.3, 0.1, 0.2)], preset="p1", invocation="i1")
    b = make_record("run", [97.0], [(2.3, 0.1, 0.2)], preset="p2", invocation="i2", device="NVIDIA H100")
    c = compare(tmp_path, [a, b])
    assert [r.label for r in c.runs] == ["run (p1)", "run (p2)"]
    assert row(c, "Device") == ["CPU", "NVIDIA H100"]
    assert any("different devices" in n for n in c.observations())


def test_loss_curve_is_downsampled_and_skips_nan() -> None:
    r = diverged_run()
    xs, ys = loss_curve(r, points=4)
    assert len(xs) <= 4 + 2 and all(math.isfinite(y) for y in ys)  # 2 columns: lowest and highest, first and last
    assert r.spec.batches_per_epoch() == 10
    assert xs[0] == pytest.approx(0.1)  # the first step drawn, 10 steps per epoch


# ---- unreadable files --------------------------------------------------------------------------


def unreadable_files(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    good = write_runs(folder, normal_pair())[0]
    text = good.read_text()
    files = {
        "truncated.json": text[: len(text) // 2],
        "invalid.json": text.replace('"lr": 0.001', '"lr": -1'),
        "newer.json": text.replace(f'"schema_version": {SCHEMA_VERSION}', '"schema_version": 99'),
        "notarun.json": json.dumps({"hello": "world"}),
    }
    for name, content in files.items():
        (folder / name).write_text(content)
    return {name: content for name, content in files.items()}


def test_unreadable_files_are_listed_with_reasons(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    contents = unreadable_files(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    c = Comparison.from_files(load_run_arguments([str(folder)], tmp_path))
    assert [r.label for r in c.runs] == ["relu", "tanh"]
    reasons = {f.path.name: f.error for f in c.unreadable}
    assert set(reasons) == set(contents)
    assert "not valid JSON" in reasons["truncated.json"]
    assert "invalid run record: spec.lr" in reasons["invalid.json"]
    assert "newer tuitrain (schema_version 99" in reasons["newer.json"]
    assert "not a tuitrain run record" in reasons["notarun.json"]
    text = c.render("text")
    assert "Unreadable" in text and "newer.json: written by a newer tuitrain" in text
    # never writes to a run file
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_missing_file_and_empty_pattern_are_unreadable(tmp_path: Path) -> None:
    files = load_run_arguments([str(tmp_path / "gone.json"), str(tmp_path / "none*.json")], tmp_path)
    assert [f.status for f in files] == ["unreadable", "unreadable"]
    assert "cannot read" in files[0].error
    assert "holds no run file" in files[1].error


# ---- exports, parsed back ----------------------------------------------------------------------


@pytest.fixture
def mixed(tmp_path: Path) -> Comparison:
    paths = write_runs(tmp_path / "runs", [*normal_pair(), chance_run(), diverged_run()])
    (tmp_path / "runs" / "broken.json").write_text("{")
    c = Comparison.from_paths([*paths, tmp_path / "runs" / "broken.json"])
    c.baseline = 1
    return c


def test_csv_export_parses_back(mixed: Comparison) -> None:
    rows = list(csv.DictReader(io.StringIO(mixed.render("csv"))))
    assert [r["label"] for r in rows] == ["relu", "tanh", "lr=0.1", "lr=5", ""]
    assert rows[1]["activation"] == "tanh" and rows[2]["lr"] == "0.1"
    assert float(rows[1]["best_accuracy"]) == 98.6
    assert float(rows[1]["delta_best_accuracy"]) == pytest.approx(0.4)
    assert rows[0]["delta_best_accuracy"] == ""  # the baseline itself
    assert rows[1]["epoch_reaching_97"] == "1" and rows[2]["epoch_reaching_97"] == ""
    assert rows[3]["final_loss"] == ""  # NaN is not a number to export
    assert rows[4]["status"] == "unreadable" and "not valid JSON" in rows[4]["reason"]


def test_json_export_parses_back(mixed: Comparison) -> None:
    data = json.loads(mixed.render("json"))
    assert data["baseline"] == "relu" and data["threshold"] == 97.0
    assert data["differing_params"] == ["activation", "lr"]
    tanh = data["runs"][1]
    assert tanh["best_accuracy"] == 98.6 and tanh["best_epoch"] == 3
    assert tanh["delta_vs_baseline"]["best_accuracy"] == pytest.approx(0.4)
    assert [e["test_accuracy"] for e in tanh["epochs"]] == [97.2, 98.0, 98.6]
    assert data["runs"][3]["status"] == "diverged" and data["runs"][3]["final_loss"] is None
    assert any("stuck at chance" in n for n in data["observations"])
    assert data["unreadable"][0]["path"].endswith("broken.json")


def markdown_rows(text: str, heading: str) -> list[list[str]]:
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if not set(ln) <= set("|-")]


def test_markdown_export_parses_back(tmp_path: Path) -> None:
    c = compare(tmp_path, grid_runs())
    text = c.render("markdown")
    runs = markdown_rows(text, "Runs")
    assert runs[0] == ["", "relu lr=0.01", "relu lr=0.001", "tanh lr=0.01", "tanh lr=0.001"]
    assert ["Best test acc", "97.90%", "98.40%", "97.10%", "98.80%"] in runs
    assert markdown_rows(text, "Best test accuracy by activation × lr") == [
        ["activation \\ lr", "0.001", "0.01"],
        ["relu", "98.40%", "97.90%"],
        ["tanh", "98.80%", "97.10%"],
    ]
    epochs = markdown_rows(text, "Per epoch")
    assert epochs[1][:3] == ["1", "2.3000 → 0.2000", "96.90%"]


# ---- the command line --------------------------------------------------------------------------


def test_cli_no_argument_compares_latest_invocation(tmp_path: Path, capsys) -> None:
    runs_dir = tmp_path / "runs"
    write_runs(runs_dir / "old", normal_pair())
    newer = [
        make_record(r.label, [50.0], [(2.3, 1.0, 1.5)], invocation="inv-2", lr=lr)
        for r, lr in zip(normal_pair(), (0.1, 0.01))
    ]
    for r in newer:
        r.started_at = r.started_at.replace(year=2026)
    write_runs(runs_dir / "new", newer)
    assert main(["compare", "--no-ui", "--runs-dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "Comparing 2 run(s)" in out and "50.00%" in out and "98.60%" not in out


def test_cli_output_file_and_baseline(tmp_path: Path, capsys) -> None:
    paths = write_runs(tmp_path / "runs", normal_pair())
    out = tmp_path / "cmp.json"
    assert (
        main(["compare", str(tmp_path / "runs"), "--format", "json", "--output", str(out), "--baseline", "tanh"]) == 0
    )
    assert json.loads(out.read_text())["baseline"] == "tanh"
    assert main(["compare", str(paths[0]), "--no-ui", "--output", str(paths[0])]) == 2
    assert "is one of the compared run files" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "runs"), "--no-ui", "--baseline", "nope"]) == 2
    assert main(["compare", "--no-ui", "--runs-dir", str(tmp_path / "empty")]) == 2


def test_cli_threshold_and_all_params(tmp_path: Path, capsys) -> None:
    write_runs(tmp_path / "runs", normal_pair())
    assert main(["compare", str(tmp_path / "runs"), "--no-ui", "--threshold", "98.5", "--all-params"]) == 0
    out = capsys.readouterr().out
    assert "First epoch ≥ 98.5%" in out and "batch_size" in out
    with pytest.raises(SystemExit):
        main(["compare", "--threshold", "150"])


# ---- training time and divergence, as the records tell them ----------------------------------------


def test_training_time_leaves_out_pauses_and_downtime(tmp_path: Path) -> None:
    # A paused for 25 s, B resumed after 2m30s of downtime: their wall-clock spans say nothing of training
    paused = make_record("paused", [97.0, 98.0], [(2.3, 0.2, 0.3), (0.2, 0.1, 0.12)], seconds_per_epoch=0.5, seed=1)
    paused.ended_at = paused.started_at + timedelta(seconds=26)
    resumed = make_record("resumed", [97.1, 98.1], [(2.3, 0.2, 0.3), (0.2, 0.1, 0.12)], seconds_per_epoch=4.0, seed=2)
    resumed.ended_at = resumed.started_at + timedelta(minutes=2, seconds=37)
    resumed.resumed_at = [resumed.started_at + timedelta(minutes=2, seconds=33)]
    quick = make_record("quick", [97.2, 98.2], [(2.3, 0.2, 0.3), (0.2, 0.1, 0.12)], seconds_per_epoch=4.0, seed=3)
    c = compare(tmp_path, [paused, resumed, quick])
    assert row(c, "Training time") == ["1s", "8s", "8s"]
    notes = c.observations()
    assert "Training time: paused took 1s, resumed 8s (8.0×)." in notes
    data = json.loads(c.render("json"))
    assert [r["time_s"] for r in data["runs"]] == [1.0, 8.0, 8.0]


def test_a_run_that_continued_after_diverging_counts_the_epochs_before_it(tmp_path: Path) -> None:
    error = "non-finite loss (nan) at epoch 1, batch 6; training continued (on_divergence = continue)"
    kept_on = make_record(
        "kept on",
        [10.0, 9.8],
        [(2.3, 2.31, 2.32), (2.30, 2.302, 2.3035)],
        status="diverged",
        error=error,
        on_divergence="continue",
        lr=5.0,
    )
    kept_on.batch_losses[5] = float("nan")  # epoch 1, batch 6
    late = make_record(
        "late",
        [90.0, 95.0, 96.0],
        [(2.3, 0.5, 0.6), (0.5, 0.3, 0.4), (0.3, 0.2, 0.25)],
        status="diverged",
        error="non-finite loss (inf) at epoch 3, batch 2; training continued",
        on_divergence="continue",
        lr=1.0,
    )
    late.batch_losses[21] = float("inf")  # epoch 3, batch 2
    notes = compare(tmp_path, [kept_on, late]).observations()
    assert (
        f"kept on diverged: {error}; no epoch completed before it, and its figures for epochs 1–2 come after it."
        in notes
    )
    assert any(
        n.startswith("late diverged:")
        and n.endswith("; 2 epochs completed before it, and its figures for epoch 3 come after it.")
        for n in notes
    )


def test_non_finite_figures_never_reach_the_output(tmp_path: Path) -> None:
    paths = write_runs(tmp_path / "runs", [*normal_pair(), diverged_run()])
    data = json.loads(paths[0].read_text())
    data["epochs"][0]["test_accuracy"] = "NaN"  # made by hand: no tuitrain writes it
    (tmp_path / "runs" / "nan-accuracy.json").write_text(json.dumps(data))
    diverged = json.loads(paths[2].read_text())
    diverged["epochs"][0]["test_loss"] = "Infinity"
    paths[2].write_text(json.dumps(diverged))
    c = Comparison.from_files(load_run_arguments([str(tmp_path / "runs")], tmp_path))
    assert "epochs.0.test_accuracy: Input should be a finite number" in c.unreadable[0].error
    text = c.render("text")
    assert "nan%" not in text and "±nan" not in text
    strict = json.loads(c.render("json"), parse_constant=lambda name: pytest.fail(f"not JSON: {name}"))
    lr5 = next(r for r in strict["runs"] if r["label"] == "lr=5")
    assert lr5["final_loss"] is None and lr5["epochs"][0]["test_loss"] is None


def test_compare_smooths_the_loss_as_the_run_screen_does() -> None:
    from tuitrain.core.events import BatchLosses, RunStarted
    from tuitrain.monitor import SweepMonitor

    # 15 losses, the last one NaN; 200 batches per epoch: the run screen's weight of a new loss is 0.1
    r = make_record(
        "lr=5",
        [40.0],
        [(2.3, 1.9, 2.0)],
        status="diverged",
        subset=12800,
        extra_losses=[1.8, 3.0, 9.0, 80.0, float("nan")],
    )
    monitor = SweepMonitor()
    run = monitor.apply(
        RunStarted(
            run_id=r.id,
            label=r.label,
            run_index=0,
            run_count=1,
            spec=r.spec,
            device="CPU",
            train_size=12800,
            test_size=100,
            batches_per_epoch=200,
            start_epoch=1,
        )
    )
    for start, end in ((0, 7), (7, 15)):  # arriving in two read-backs changes nothing
        monitor.apply(
            BatchLosses(
                run_id=r.id,
                epoch=1,
                first_step=start,
                losses=tuple(r.batch_losses[start:end]),
                batch=7,
                batches_per_epoch=10,
                samples_done=0,
                train_size=640,
                samples_per_s=0.0,
                elapsed_s=1.0,
            )
        )
    xs, ys = loss_curve(r, points=100)  # one point per finite loss
    assert ys == pytest.approx(run.smoothed[:-1]) and math.isnan(run.smoothed[-1])
    assert xs == pytest.approx([(i + 1) / 200 for i in range(14)])


def test_a_run_chosen_on_validation_is_not_called_best_test_accuracy(tmp_path: Path) -> None:
    """With a validation split the best epoch is chosen on validation: its test accuracy is not the best one."""
    relu, tanh = normal_pair()
    for record, val in ((relu, [97.9, 97.0, 96.0]), (tanh, [97.0, 98.9, 98.1])):
        record.epochs = [e.model_copy(update={"val_accuracy": v}) for e, v in zip(record.epochs, val)]
    notes = compare(tmp_path, [relu, tanh]).observations()
    assert (
        "Best: tanh with 98.00% test accuracy at its best validation epoch (epoch 2), 2.00 points above the next, "
        "relu (96.00%)." in notes
    )


def test_headless_end_line_says_what_chose_the_best_epoch() -> None:
    import io

    from tuitrain.core.events import RunFinished
    from tuitrain.headless import HeadlessPrinter

    out = io.StringIO()
    printer = HeadlessPrinter(out)
    printer(RunFinished("r", "B", 0, "completed", best_accuracy=98.0, best_on_validation=True))
    printer(RunFinished("s", "C", 1, "completed", best_accuracy=97.0))
    text = out.getvalue()
    assert "test accuracy 98.00% at the best validation epoch" in text
    assert "best test accuracy 97.00%" in text


def test_a_script_runs_loss_curve_places_its_points_by_its_epochs(tmp_path: Path) -> None:
    """A script that logs every 4 steps, 10 points an epoch: its points end each epoch at 1, 2, … (not at the
    default spec's 938 batches an epoch), and the epoch in progress goes on at the last one's pace."""
    from tuitrain import script
    from tuitrain.records import read_record

    run = script.init(label="every 4", runs_dir=tmp_path)
    step = 0
    for epoch in range(2):
        for _ in range(10):
            step += 4
            run.log({"train/loss": 1.0 / step}, step=step)
        run.log_epoch(val_loss=0.5 - epoch / 10)
    for _ in range(5):
        step += 4
        run.log({"train/loss": 1.0 / step}, step=step)
    run.finish()
    xs, _ = loss_curve(read_record(run.path), points=1000)
    assert len(xs) == 25
    assert xs[9] == pytest.approx(1.0) and xs[19] == pytest.approx(2.0) and xs[24] == pytest.approx(2.5)
    assert xs[0] == pytest.approx(0.1)
