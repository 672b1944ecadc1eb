"""The wandb-style logging API: a wandb script changed only by `import tuitrain as wandb` writes every metric it
logs into its run files; step semantics as wandb's; what tuitrain does not do is ignored with one warning."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import tuitrain as wandb
from tests.helpers import ROOT
from tuitrain import script
from tuitrain.core.serieslog import read_series
from tuitrain.keeper import TuitrainWarning
from tuitrain.records import read_record


@pytest.fixture(autouse=True)
def fresh_module_state(monkeypatch):
    monkeypatch.setattr(script, "current", None)
    monkeypatch.setattr(script, "_warned", set())
    monkeypatch.setattr(script, "READ_BACK_EVERY_S", math.inf)
    monkeypatch.setattr(script, "PERSIST_EVERY_S", math.inf)


def test_a_wandb_script_writes_every_metric_it_logs(tmp_path: Path) -> None:
    run = wandb.init(
        project="proj",
        name="exp1",
        config={"lr": 0.1, "optim": {"name": "adam", "beta": 0.9}},
        dir=tmp_path,
        group="sweep-1",
        tags=["baseline"],
        notes="first try",
        entity="someone",
    )
    assert wandb.run is run
    assert wandb.config.lr == 0.1 and wandb.config["optim/name"] == "adam"
    with pytest.raises(AttributeError):
        _ = wandb.config.missing
    wandb.config.update({"epochs": 3})
    wandb.config.batch_size = 32
    wandb.define_metric("val/loss", goal="minimize")
    wandb.define_metric("val/acc", summary="max")
    model = torch.nn.Linear(2, 1)
    with pytest.warns(TuitrainWarning, match="watch"):
        wandb.watch(model)
    expected_loss = {}
    for step in range(120):
        loss = torch.tensor(1.0 / (step + 1))
        expected_loss[step] = 1.0 / (step + 1)
        wandb.log({"train/loss": loss, "lr": 0.1 * 0.99**step}, step=step)
        if step % 10 == 0:
            wandb.log({"grad_norm": float(step)}, commit=False)  # into the same step
        if step % 40 == 39:
            wandb.log({"val/loss": 0.5 - step / 1000, "val/acc": 50 + step / 10, "epoch": step // 40}, step=step)
    with pytest.warns(TuitrainWarning, match="below the current step"):
        wandb.log({"late": 1.0}, step=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wandb.log({"late": 1.0}, step=4)  # said once only: no second warning
    with pytest.warns(TuitrainWarning, match="Image"):
        wandb.log({"sample": wandb.Image([[0, 1]])}, step=119)
    wandb.summary["best_val"] = 0.42
    wandb.finish()
    assert wandb.run is None

    record = read_record(run.path)
    assert record.status == "completed" and record.preset == "proj" and record.label == "exp1"
    assert (record.group, record.tags, record.notes) == ("sweep-1", ["baseline"], "first try")
    assert record.config == {"lr": 0.1, "optim/name": "adam", "optim/beta": 0.9, "epochs": 3, "batch_size": 32}
    series = record.series
    assert set(series) == {"train/loss", "lr", "grad_norm", "val/loss", "val/acc", "epoch"}
    assert series["train/loss"].steps.tolist() == list(range(120))
    assert series["train/loss"].values.tolist() == pytest.approx([expected_loss[s] for s in range(120)], rel=1e-6)
    assert series["lr"].values.tolist() == pytest.approx([0.1 * 0.99**s for s in range(120)])
    assert series["grad_norm"].steps.tolist() == list(range(0, 120, 10))
    assert series["grad_norm"].values.tolist() == [float(s) for s in range(0, 120, 10)]
    assert series["val/loss"].steps.tolist() == [39, 79, 119]
    assert record.loss_series == "train/loss" and len(record.batch_losses) == 120
    assert record.metric_goals == {"val/loss": "min", "val/acc": "max"}
    assert record.summary["best_val"] == 0.42 and record.summary["val/acc"] == pytest.approx(61.9)
    assert "late" not in series and "sample" not in series


def test_steps_without_a_step_argument_count_from_zero_and_commit_false_adds_to_the_step(tmp_path: Path) -> None:
    run = script.init(runs_dir=tmp_path)
    run.log({"a": 1.0})
    run.log({"b": 2.0}, commit=False)
    run.log({"c": 3.0})
    run.log({"a": 4.0}, step=10)
    run.log({"b": 5.0}, step=10)
    run.log({"c": 6.0})  # into step 10, then committed
    run.log({"a": 7.0})
    run.finish()
    series = read_series(run.path.with_suffix(".series"))
    assert series["a"].steps.tolist() == [0, 10, 11]
    assert series["b"].steps.tolist() == [1, 10]
    assert series["c"].steps.tolist() == [1, 10]


def test_log_of_a_loss_still_works_beside_named_series(tmp_path: Path) -> None:
    with script.init(label="plain", runs_dir=tmp_path, read_every=4) as run:
        for value in (2.0, torch.tensor(1.0), 0.5):
            run.log(value)
        run.log_epoch(test_accuracy=80.0, test_loss=0.4)
    record = read_record(run.path)
    assert record.batch_losses == [2.0, 1.0, 0.5] and record.loss_series == "loss"
    assert record.epochs[0].mean_loss == pytest.approx(3.5 / 3)


def test_a_non_finite_training_loss_makes_the_run_diverged(tmp_path: Path) -> None:
    with script.init(runs_dir=tmp_path) as run:
        run.log({"train_loss": 1.0, "val_loss": math.nan})  # a NaN held-out loss is not a divergence
        run.log({"train_loss": math.nan})
        run.log({"train_loss": 0.5})
    record = read_record(run.path)
    assert record.status == "diverged" and "step 1" in (record.error or "")


def test_log_epoch_takes_any_figures_without_accuracy(tmp_path: Path) -> None:
    with script.init(runs_dir=tmp_path) as run:
        run.log({"loss": 1.0})
        run.log_epoch(val_loss=0.3, r2=torch.tensor(0.9))
    (epoch,) = read_record(run.path).epochs
    assert epoch.test_accuracy is None and epoch.metrics == {"val_loss": 0.3, "r2": pytest.approx(0.9)}


def test_unsupported_calls_never_raise(tmp_path: Path) -> None:
    run = wandb.init(dir=tmp_path, mode="offline")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = wandb.Artifact("data", type="dataset")
        art.add_file("x.txt")
        run.log_artifact(art)
        wandb.alert(title="t", text="x")
        with wandb.Artifact("m", type="model").new_file("f") as fh:
            fh.write("x")
        sweep_id = wandb.sweep({"method": "grid"})
        wandb.agent(sweep_id, function=lambda: None)
    wandb.finish()
    assert read_record(run.path).status == "completed"


def test_nested_config_is_flattened_and_bad_values_are_refused_at_init(tmp_path: Path) -> None:
    assert script.flatten_config({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {
        "a/b": 1,
        "a/c/d": [1, 2],
        "e": None,
    }
    with pytest.raises(TypeError, match=r"config\['a/b'\] must be"):
        script.init(config={"a": {"b": object()}}, runs_dir=tmp_path)


@pytest.mark.subprocess
def test_a_wandb_script_that_never_calls_finish_ends_completed(tmp_path: Path) -> None:
    """The process's end finishes the run (as wandb's does); an uncaught exception leaves it failed."""
    code = (
        "import sys; sys.path.insert(0, {root!r})\n"
        "import tuitrain as wandb\n"
        "wandb.init(project='p', name='{name}', dir={dir!r})\n"
        "for i in range(5): wandb.log({{'loss': 1.0 / (i + 1)}})\n"
        "{tail}\n"
    )
    for name, tail, status in (("ok", "", "completed"), ("boom", "raise ValueError('boom')", "failed")):
        subprocess.run(
            [sys.executable, "-c", code.format(root=str(ROOT), name=name, dir=str(tmp_path), tail=tail)],
            capture_output=True,
            timeout=120,
        )
        (path,) = tmp_path.glob(f"*/01-{name}.json")
        record = read_record(path)
        assert record.status == status and record.batch_losses == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
