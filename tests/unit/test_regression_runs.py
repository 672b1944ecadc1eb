"""Runs with no accuracy at all (a regression script): ranked by the metric they define, in compare, its exports,
the report and watch; `--metric` ranks by any logged metric."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tuitrain import script
from tuitrain.catalog import load_run_arguments
from tuitrain.cli import main
from tuitrain.compare import Comparison
from tuitrain.follow import Follower


@pytest.fixture(autouse=True)
def no_timed_saves(monkeypatch):
    monkeypatch.setattr(script, "current", None)
    monkeypatch.setattr(script, "READ_BACK_EVERY_S", math.inf)
    monkeypatch.setattr(script, "PERSIST_EVERY_S", math.inf)


def regression_run(runs: Path, label: str, lr: float, val_losses: list[float]) -> Path:
    """A regression script: MSE per step, val_loss and r2 per epoch, no accuracy."""
    run = script.init(project="regression", name=label, config={"lr": lr, "model": "mlp"}, dir=runs)
    run.define_metric("val_loss", goal="min")
    step = 0
    for val in val_losses:
        for _ in range(20):
            run.log({"train/mse": 1.0 / (step + 1) + val, "lr": lr}, step=step)
            step += 1
        run.log_epoch(val_loss=val, r2=1 - val)
    run.finish()
    return run.path


def three_runs(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    regression_run(runs, "lr=0.1", 0.1, [0.9, 0.7, 0.6])
    regression_run(runs, "lr=0.01", 0.01, [0.8, 0.4, 0.25])  # the best: lowest val_loss
    regression_run(runs, "lr=1", 1.0, [1.5, 1.4, 1.6])
    return runs


def test_a_regression_run_is_ranked_by_val_loss_lower_is_better(tmp_path: Path) -> None:
    runs = three_runs(tmp_path)
    c = Comparison.from_files(load_run_arguments([str(runs)], runs))
    assert c.ranking_metric() == "val_loss" and c.goal("val_loss") == "min"
    assert [r.label for r, _ in c.ranked()] == ["lr=0.01", "lr=0.1", "lr=1"]
    rows = {row[0]: row[1:] for row in c.table_rows()}
    assert "Best test acc" not in rows
    best_row = rows["Best val_loss (lower is better)"]
    assert sorted(best_row) == sorted(["0.6", "0.25", "1.4"])
    (note,) = [n for n in c.observations() if n.startswith("Best by val_loss")]
    assert "lr=0.01 with 0.25" in note and "worst: lr=1" in note


def test_compare_no_ui_and_exports_of_runs_without_accuracy(tmp_path: Path, capsys) -> None:
    runs = three_runs(tmp_path)
    assert main(["compare", "--no-ui", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "Best by val_loss (lower is better): lr=0.01" in out and "nan" not in out.lower()
    assert main(["compare", "--format", "json", str(runs)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["runs"]


def test_metric_ranks_by_any_logged_metric_with_its_goal(tmp_path: Path, capsys) -> None:
    runs = three_runs(tmp_path)
    c = Comparison.from_files(load_run_arguments([str(runs)], runs), metric="r2")
    assert c.goal("r2") == "min"  # not defined: lower is better for what is not an accuracy
    c = Comparison.from_files(load_run_arguments([str(runs)], runs), metric="train/mse")
    assert [r.label for r, _ in c.ranked()][0] == "lr=0.01"
    assert main(["compare", "--no-ui", "--metric", "lr", str(runs)]) == 0
    assert "Best by lr (lower is better): lr=0.01" in capsys.readouterr().out
    assert main(["compare", "--no-ui", "--metric", "nope", str(runs)]) == 2
    assert "--metric nope: no compared run logged it" in capsys.readouterr().err


def test_report_of_runs_without_accuracy(tmp_path: Path) -> None:
    runs = three_runs(tmp_path)
    output = tmp_path / "report.md"
    assert main(["report", str(runs), "--output", str(output)]) == 0
    text = output.read_text(encoding="utf-8")
    assert "val_loss" in text and "lr=0.01" in text


def test_watch_of_a_run_without_accuracy_prints_its_figures(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    path = regression_run(runs, "lr=0.01", 0.01, [0.8, 0.4])
    follower = Follower(path)
    events = follower.poll()
    epochs = [e for e in events if type(e).__name__ == "EpochEnded"]
    assert [e.metrics["val_loss"] for e in epochs] == [0.8, 0.4] and epochs[0].test_accuracy is None
    losses = [v for e in events if type(e).__name__ == "BatchLosses" for v in e.losses]
    assert len(losses) == 40 and follower.done


def test_metric_ranks_preset_runs_by_their_epoch_figures(tmp_path: Path) -> None:
    from tests.compare_fixtures import normal_pair, write_runs

    paths = write_runs(tmp_path / "runs", normal_pair())
    by_loss = Comparison.from_paths(paths, metric="test_loss")
    by_accuracy = Comparison.from_paths(paths, metric="test_accuracy")
    assert by_loss.goal("test_loss") == "min" and by_accuracy.goal("test_accuracy") == "max"
    losses = {r.label: min(e.test_loss for e in r.record.epochs) for r in by_loss.runs}
    assert [r.label for r, _ in by_loss.ranked()] == sorted(losses, key=losses.get)
    best = {r.label: r.best_accuracy for r in by_accuracy.runs}
    assert [r.label for r, _ in by_accuracy.ranked()] == sorted(best, key=best.get, reverse=True)


def test_a_tie_by_the_metric_names_no_best_or_worst_and_a_diverged_run_is_not_ranked(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for label, lr in (("lr=0.1", 0.1), ("lr=0.01", 0.01), ("lr=0.001", 0.001)):
        regression_run(runs, label, lr, [0.5, 0.3])
    c = Comparison.from_files(load_run_arguments([str(runs)], runs))
    (note,) = [n for n in c.observations() if "by val_loss" in n]
    assert note.startswith("No clear best by val_loss: ") and note.endswith(" all have 0.3."), note
    tied = note.removeprefix("No clear best by val_loss: ").removesuffix(" all have 0.3.")
    assert sorted(tied.replace(" and ", ", ").split(", ")) == ["lr=0.001", "lr=0.01", "lr=0.1"], note

    # a diverged run whose finite figures would be the worst (or the best) is not ranked either way
    nan_run = script.init(project="regression", name="nan", config={"lr": 1.0, "model": "mlp"}, dir=runs)
    nan_run.log({"train/mse": float("nan")}, step=0)
    nan_run.log_epoch(val_loss=0.01)
    nan_run.finish()
    c = Comparison.from_files(load_run_arguments([str(runs)], runs))
    assert [r.status for r in c.runs].count("diverged") == 1
    (note,) = [n for n in c.observations() if "by val_loss" in n]
    assert note.startswith("No clear best by val_loss: ") and note.endswith(" all have 0.3."), note
    assert "nan" not in note and "worst" not in note, note
