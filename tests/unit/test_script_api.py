"""The logging API in this process: chunked read-back (no sync per logged loss), the record it writes, version 1
files migrating to version 2, and script runs beside preset runs in compare and in the epoch table text."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from tests.compare_fixtures import make_record, write_runs
from tests.unit.test_layers import heavy_modules_after
from tuitrain import format as fmt
from tuitrain import script
from tuitrain.compare import Comparison
from tuitrain.records import SCHEMA_VERSION, parse_record, read_record


class CountingTensor(torch.Tensor):
    """A tensor that stands for one on a GPU (not in host memory) and counts the calls that read its value back to
    the host (each one a sync on a GPU)."""

    reads = 0

    @property
    def is_cpu(self):
        return False

    def item(self):
        CountingTensor.reads += 1
        return super().item()

    def tolist(self):
        CountingTensor.reads += 1
        return super().tolist()

    def __float__(self):
        CountingTensor.reads += 1
        return super().__float__()


def counting(value: float) -> CountingTensor:
    return torch.tensor(value).as_subclass(CountingTensor)


@pytest.fixture
def no_timed_read_back(monkeypatch):
    """Read-backs only every read_every calls: a slow machine must not add timed ones."""
    monkeypatch.setattr(script, "READ_BACK_EVERY_S", math.inf)
    monkeypatch.setattr(script, "PERSIST_EVERY_S", math.inf)
    CountingTensor.reads = 0


def test_log_reads_tensors_back_in_chunks_not_per_call(tmp_path, no_timed_read_back):
    run = script.init(label="chunks", runs_dir=tmp_path, read_every=50)
    losses = [1.0 / (i + 1) for i in range(230)]
    for i, value in enumerate(losses):
        run.log(counting(value))
        if i == 48:
            assert CountingTensor.reads == 0  # nothing read back yet: no sync per call
    assert CountingTensor.reads == 4  # 230 losses, one read-back per 50
    run.finish()
    assert CountingTensor.reads == 5  # the last 30 at the end, in one go
    record = read_record(run.path)
    assert record.batch_losses == pytest.approx(losses)
    assert record.status == "completed"


def test_a_host_tensor_is_read_when_logged(tmp_path, no_timed_read_back):
    """No device to wait for: the value logged is the value kept, even if the tensor changes in place later."""
    run = script.init(label="host", runs_dir=tmp_path, read_every=50)
    running = torch.zeros(())
    for value in (3.0, 2.0, 1.0):
        running.fill_(value)
        run.log({"running": running})
    run.finish()
    assert read_record(run.path).series["running"].values.tolist() == [3.0, 2.0, 1.0]


def test_floats_tensors_and_a_run_without_with(tmp_path, no_timed_read_back):
    run = script.init(label="mixed", config={"lr": 0.1, "layers": [2, 3]}, runs_dir=tmp_path, read_every=3)
    for value in (2.0, torch.tensor(1.5), 1.0, torch.tensor(0.5)):
        run.log(value)
    run.log_epoch(test_accuracy=torch.tensor(55.5), test_loss=0.7, momentum=0.9)
    run.finish(status="failed", error="diverged by hand")
    record = read_record(run.path)
    assert record.batch_losses == [2.0, 1.5, 1.0, 0.5]
    (epoch,) = record.epochs
    assert (epoch.initial_loss, epoch.final_loss, epoch.mean_loss) == (2.0, 0.5, 1.25)
    assert epoch.test_accuracy == 55.5 and epoch.metrics == {"momentum": 0.9}
    assert record.status == "failed" and record.error == "diverged by hand"
    assert record.config == {"lr": 0.1, "layers": [2, 3]} and record.spec.lr == 0.1
    assert record.spec.epochs == 1  # open-ended: what it trained
    with pytest.raises(RuntimeError, match="after the run finished"):
        run.log(1.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda run: run.log_epoch(test_accuracy=50.0, extra=torch.ones(3)), "extra must be a scalar"),
        (lambda run: run.log_epoch(test_accuracy=50.0, name="text"), "name must be a number"),
    ],
)
def test_log_epoch_refuses_what_is_not_a_scalar(tmp_path, call, message):
    with pytest.raises(TypeError, match=message), script.init(runs_dir=tmp_path) as run:
        call(run)
    assert read_record(run.path).status == "failed"


def test_config_must_be_json_scalars(tmp_path):
    with pytest.raises(TypeError, match=r"config\['model'\] must be"):
        script.init(config={"model": object()}, runs_dir=tmp_path)


def test_nested_config_is_flattened_into_slash_keys(tmp_path):
    config = {"optim": {"lr": 0.1, "betas": (0.9, 0.99)}, "model": {"hidden": 64, "act": {"name": "relu"}}, "bs": 32}
    run = script.init(label="nested", config=config, runs_dir=tmp_path)
    run.finish()
    assert read_record(run.path).config == {
        "optim/lr": 0.1,
        "optim/betas": [0.9, 0.99],
        "model/hidden": 64,
        "model/act/name": "relu",
        "bs": 32,
    }
    with pytest.raises(TypeError, match=r"config\['optim/lr'\] must be"):
        script.init(config={"optim": {"lr": object()}}, runs_dir=tmp_path)
    with pytest.raises(ValueError, match="'a/b' twice"):
        script.init(config={"a/b": 1, "a": {"b": 2}}, runs_dir=tmp_path)


@pytest.mark.subprocess
def test_import_tuitrain_stays_light(tmp_path):
    """`import tuitrain` and the API itself import neither torch nor textual (torch is the script's to import)."""
    assert heavy_modules_after(tmp_path, "import tuitrain\ntuitrain.init") == []


def test_version_1_file_loads_as_version_2(tmp_path):
    run = script.init(label="old", config={"lr": 0.1}, runs_dir=tmp_path)
    run.log(1.0)
    run.log_epoch(test_accuracy=50.0, test_loss=0.5, lr=0.1)
    run.finish()
    data = json.loads(run.path.read_text())
    data["schema_version"] = 1  # as tuitrain 0.1 wrote it: none of what version 2 added
    for key in ("config", "script"):
        del data[key]
    del data["epochs"][0]["metrics"]
    record = parse_record(json.dumps(data))
    assert record.schema_version == SCHEMA_VERSION == 5
    assert record.config is None and record.script is None and record.epochs[0].metrics == {}
    assert record.epochs[0].test_accuracy == 50.0


def script_record(tmp_path: Path, lr: float, hidden: int):
    run = script.init(label=f"mlp lr={lr}", config={"model": "mlp", "lr": lr, "hidden": hidden}, runs_dir=tmp_path)
    for value in (2.0, 1.0, 0.5):
        run.log(value)
    run.log_epoch(test_accuracy=91.0, test_loss=0.3, test_total=10000, lr=lr / 2)
    run.finish()
    return read_record(run.path)


def test_compare_mixes_script_runs_and_preset_runs(tmp_path):
    preset_runs = [make_record("model_a", [96.0], [(2.3, 0.3, 0.5)], lr=0.001)]
    scripts = [script_record(tmp_path / "s", 0.01, 64), script_record(tmp_path / "s", 0.01, 128)]
    paths = write_runs(tmp_path / "mixed", [*preset_runs, *scripts])
    comparison = Comparison.from_paths(paths)
    # model and lr differ; hidden only scripts have; activation (a spec field no script sets) is not a difference
    assert comparison.differing_params() == ["model", "lr", "hidden"]
    rows = {row[0]: row[1:] for row in comparison.table_rows()}
    assert rows["model"] == ["model_a", "mlp", "mlp"]
    assert rows["hidden"] == ["–", "64", "128"]
    assert rows["Final lr"] == ["–", "0.005", "0.005"]
    assert rows["Final test acc"][1:] == ["91.00%", "91.00%"]


def test_summary_line_of_a_script_run_shows_its_config(tmp_path):
    record = script_record(tmp_path, 0.01, 64)
    assert fmt.spec_summary(record.spec, record.config) == "model=mlp, lr=0.01, hidden=64"


def nan_run(tmp_path: Path, label: str, finish: bool = True):
    run = script.init(label=label, config={"lr": 0.01}, runs_dir=tmp_path)
    run.log(2.0)
    run.log(float("nan"))
    run.log(torch.tensor(float("inf")))
    run.log_epoch(test_accuracy=99.0, test_total=10000)
    if finish:
        run.finish()
    return run


def test_nan_losses_from_a_script_end_the_run_diverged(tmp_path):
    record = read_record(nan_run(tmp_path, "nan").path)
    assert record.status == "diverged"
    assert record.error == "non-finite training loss (loss) at step 1"
    with nan_run(tmp_path, "with") as run:  # the context manager's own finish says the same
        pass
    assert read_record(run.path).status == "diverged"
    failed = nan_run(tmp_path, "failed", finish=False)
    failed.finish("failed", "RuntimeError: boom")  # a failure stays a failure
    assert read_record(failed.path).status == "failed"


def test_compare_flags_a_script_run_with_nan_losses_and_never_ranks_it_best(tmp_path):
    good = script_record(tmp_path / "s", 0.01, 64)
    bad = read_record(nan_run(tmp_path / "s", "nan").path)
    old = bad.model_copy(update={"status": "completed", "error": None, "label": "old nan"})  # written before the fix
    paths = write_runs(tmp_path / "mixed", [good, bad, old])
    for record in (good, bad):  # their series logs beside the copies of their run files
        assert record.series_file is not None
        [series] = (tmp_path / "s").rglob(record.series_file)
        shutil.copy(series, tmp_path / "mixed" / record.series_file)
    comparison = Comparison.from_paths(paths)
    assert [r.status for r in comparison.runs] == ["completed", "diverged", "diverged"]
    notes = "\n".join(comparison.observations())
    assert "nan diverged: non-finite training loss (loss) at step 1" in notes
    assert "old nan diverged: non-finite loss; no epoch completed before it" in notes
    assert "Best:" not in notes and "No clear best" not in notes  # one finite run: nothing to rank it against


def test_epoch_throughput_counts_steps_and_needs_a_batch_size(tmp_path, no_timed_read_back):
    """A loss logged every 5th step still counts every step; without a batch size no samples/s is made up."""
    unknown = script.init(label="unknown", runs_dir=tmp_path / "a")
    for step in range(0, 100, 5):
        unknown.log({"loss": 1.0}, step=step)
    unknown.log_epoch(val_loss=1.0)
    unknown.finish()
    assert read_record(unknown.path).epochs[0].samples_per_s == 0.0

    known = script.init(label="known", runs_dir=tmp_path / "b", batch_size=32)
    for step in range(0, 100, 5):
        known.log({"loss": 1.0}, step=step)
    known.log_epoch(val_loss=1.0)
    for step in range(100, 300, 5):
        known.log({"loss": 1.0}, step=step)
    known.log_epoch(val_loss=1.0)
    known.finish()
    first, second = read_record(known.path).epochs
    assert first.samples_per_s * first.duration_s == pytest.approx(95 * 32)  # step 95 still open (wandb)
    assert second.samples_per_s * second.duration_s == pytest.approx(200 * 32)
