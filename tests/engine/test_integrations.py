"""The Lightning logger and the Hugging Face Trainer callback, with the real frameworks on a CPU: tiny models built
in code, seconds each; runs that complete, fail and are interrupted; only the main process records."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import ROOT
from tuitrain.catalog import run_paths
from tuitrain.records import RunRecord, read_record

pytestmark = pytest.mark.slow  # the frameworks' imports alone take seconds


def only_record(runs_dir: Path) -> RunRecord:
    paths = [p for p in run_paths(runs_dir) if p.suffix == ".json"]
    assert len(paths) == 1, paths
    return read_record(paths[0])


# --- Lightning ------------------------------------------------------------------------------------------------

L = pytest.importorskip("lightning")


def data(samples: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 8, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


class Tiny(L.LightningModule):
    def __init__(self, lr: float = 0.1, raise_at: int | None = None, interrupt_at: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Linear(8, 2)

    def training_step(self, batch, batch_idx):
        if self.hparams.raise_at is not None and self.global_step >= self.hparams.raise_at:
            raise RuntimeError("boom in training_step")
        if self.hparams.interrupt_at is not None and self.global_step >= self.hparams.interrupt_at:
            raise KeyboardInterrupt
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def fit(model: Tiny, loggers: list, epochs: int = 2, **trainer_args) -> None:
    trainer = L.Trainer(
        max_epochs=epochs,
        **trainer_args,
        logger=loggers,
        log_every_n_steps=1,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data(64, 1), batch_size=16), DataLoader(data(32, 2), batch_size=32))


def test_lightning_run_is_recorded_and_its_tensorboard_log_reads_the_same(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tuitrain.integrations.lightning import TuitrainLogger
    from tuitrain.tblogs import read_log_folder

    logger = TuitrainLogger(runs_dir=str(tmp_path / "runs"), label="tiny", config={"note": "x"})
    fit(Tiny(lr=0.1), [logger, L.pytorch.loggers.TensorBoardLogger(str(tmp_path / "tb"))])

    record = only_record(tmp_path / "runs")
    assert (record.status, record.label, record.preset) == ("completed", "tiny", "lightning")
    assert record.config is not None and record.config["lr"] == 0.1 and record.config["note"] == "x"
    assert record.loss_series == "train_loss"
    loss = record.series["train_loss"]
    assert loss.steps.tolist() == list(range(8))  # 4 batches x 2 epochs, logged every step
    assert [len(e.metrics) and "val_loss" in e.metrics for e in record.epochs] == [True, True]
    assert record.spec.epochs == 2
    # from the trainer: its max_epochs planned, its dataloader's batch size (not said to the logger)
    assert record.script is not None and (record.script.epochs, record.script.batch_size) == (2, 16)
    assert logger.version == record.id and logger.name == "lightning"

    tensorboard = read_log_folder(next(p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*")))
    assert tensorboard.series["train_loss"].steps.tolist() == loss.steps.tolist()
    assert tensorboard.series["train_loss"].values.tolist() == pytest.approx(loss.values.tolist(), rel=1e-6)
    assert tensorboard.series["val_loss"].values.tolist() == pytest.approx(
        record.series["val_loss"].values.tolist(), rel=1e-6
    )
    assert tensorboard.config["lr"] == 0.1


def test_lightning_run_to_max_steps_plans_no_epochs_and_counts_accumulated_batches(tmp_path: Path) -> None:
    from tuitrain.integrations.lightning import TuitrainLogger

    fit(Tiny(), [TuitrainLogger(runs_dir=str(tmp_path))], epochs=-1, max_steps=6, accumulate_grad_batches=2)
    record = only_record(tmp_path)
    assert record.status == "completed" and record.script is not None
    assert record.script.epochs is None  # trained to max_steps: no epoch count was planned
    assert record.script.batch_size == 32  # a step (an optimizer step) is 2 batches of 16
    assert len(record.epochs) == 3 and record.spec.epochs == 3  # 2 optimizer steps an epoch


def test_lightning_hyperparameters_are_in_the_run_file_at_once(tmp_path: Path) -> None:
    """The run starts (its file written) before Lightning hands over the hyperparameters: a watcher that looks in
    between shows them only if they are written at once, not at the next save seconds later."""
    from tuitrain.integrations.lightning import TuitrainLogger

    logger = TuitrainLogger(runs_dir=str(tmp_path))
    assert logger.version  # the run starts: Lightning asks for its version before fit's start (checkpoint folder)
    assert only_record(tmp_path).config == {}
    logger.log_hyperparams({"lr": 0.5})
    assert only_record(tmp_path).config == {"lr": 0.5}
    logger.finalize("success")


def test_lightning_run_that_raises_is_failed_with_the_error(tmp_path: Path) -> None:
    from tuitrain.integrations.lightning import TuitrainLogger

    with pytest.raises(RuntimeError, match="boom"):
        fit(Tiny(raise_at=5), [TuitrainLogger(runs_dir=str(tmp_path))])
    record = only_record(tmp_path)
    assert record.status == "failed"
    assert record.error == "RuntimeError: boom in training_step"
    assert record.traceback is not None and "training_step" in record.traceback
    assert record.series["train_loss"].steps.tolist() == [0, 1, 2, 3, 4]


def test_lightning_run_stopped_by_ctrl_c_is_interrupted(tmp_path: Path) -> None:
    from tuitrain.integrations.lightning import TuitrainLogger

    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning's graceful shutdown after Ctrl-C exits
            fit(Tiny(interrupt_at=3), [TuitrainLogger(runs_dir=str(tmp_path))])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores Ctrl-C from then on: not in this test process
    record = only_record(tmp_path)
    assert (record.status, record.error) == ("interrupted", "stopped by Ctrl-C")
    assert record.series["train_loss"].steps.tolist() == [0, 1, 2]


def test_lightning_save_after_every_log_writes_the_run_file_at_most_every_few_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning calls save() after every log_metrics; a run file written (and fsynced) each time made a tiny
    model train 4x slower than with Lightning's CSVLogger."""
    import tuitrain.keeper
    from tuitrain.integrations.lightning import TuitrainLogger

    logger = TuitrainLogger(runs_dir=str(tmp_path))
    logger.log_metrics({"train_loss": 1.0}, step=0)
    writes: list[Path] = []
    monkeypatch.setattr(tuitrain.keeper.LocalRunFiles, "write", lambda files, text: writes.append(files.path))
    for step in range(1, 200):
        logger.log_metrics({"train_loss": 1.0}, step=step)
        logger.save()
    assert len(writes) <= 1
    logger.finalize("success")


def test_the_older_pytorch_lightning_trainer_takes_the_logger(tmp_path: Path) -> None:
    pl = pytest.importorskip("pytorch_lightning")
    from tuitrain.integrations.lightning import TuitrainLogger

    class PlTiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(8, 2)

        def training_step(self, batch, batch_idx):
            loss = nn.functional.cross_entropy(self.net(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(
        max_epochs=2,
        logger=TuitrainLogger(runs_dir=str(tmp_path)),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(PlTiny(), DataLoader(data(64, 1), batch_size=16))
    record = only_record(tmp_path)
    assert (record.status, len(record.series["train_loss"]), len(record.epochs)) == ("completed", 8, 2)


def test_lightning_logger_records_nothing_off_rank_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    from tuitrain.integrations.lightning import TuitrainLogger

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = TuitrainLogger(runs_dir=str(tmp_path / "runs"))
    logger.log_hyperparams({"lr": 1.0})
    logger.log_metrics({"train_loss": 1.0}, step=0)
    logger.finalize("success")
    assert not (tmp_path / "runs").exists()


# --- Hugging Face Trainer --------------------------------------------------------------------------------------

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")


class Tokens(torch.utils.data.Dataset):
    def __init__(self, samples: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 20, (samples, 8), generator=g)
        self.labels = (self.ids == 3).any(dim=1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class RaiseAt(transformers.TrainerCallback):
    def __init__(self, step: int, error: BaseException) -> None:
        self.step, self.error = step, error

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise self.error


def trainer(tmp_path: Path, callbacks: list, epochs: int = 2, **training_args):
    config = transformers.BertConfig(
        vocab_size=20,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=8,
        num_labels=2,
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=epochs,
        learning_rate=1e-3,
        per_device_train_batch_size=8,
        eval_strategy="epoch",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        **training_args,
    )
    torch.manual_seed(0)
    return transformers.Trainer(
        model=transformers.BertForSequenceClassification(config),
        args=args,
        train_dataset=Tokens(32, 1),
        eval_dataset=Tokens(16, 2),
        callbacks=callbacks,
    )


def test_trainer_run_is_recorded_under_hugging_faces_names(tmp_path: Path) -> None:
    from tuitrain.integrations.transformers import TuitrainCallback

    trainer(tmp_path, [TuitrainCallback(runs_dir=str(tmp_path / "runs"), label="bert")]).train()
    record = only_record(tmp_path / "runs")
    assert (record.status, record.label, record.preset) == ("completed", "bert", "transformers")
    assert record.loss_series == "train/loss"
    assert record.series["train/loss"].steps.tolist() == list(range(1, 9))  # 4 steps x 2 epochs, at global steps
    assert {"train/learning_rate", "train/epoch", "eval/loss"} <= set(record.series)
    assert [sorted(e.metrics) for e in record.epochs] == [["eval/loss"], ["eval/loss"]]
    assert record.epochs[1].metrics["eval/loss"] == record.series["eval/loss"].values[-1]
    assert record.config is not None
    assert record.config["learning_rate"] == 1e-3 and record.config["hidden_size"] == 8
    assert record.summary["train_runtime"] > 0 and "train_loss" in record.summary
    assert record.spec.epochs == 2 and record.spec.batch_size == 8
    assert record.script is not None and record.script.batch_size == 8


def test_trainer_run_counts_the_samples_of_an_accumulated_step(tmp_path: Path) -> None:
    from tuitrain.integrations.transformers import TuitrainCallback

    callback = TuitrainCallback(runs_dir=str(tmp_path / "runs"))
    trainer(tmp_path, [callback], epochs=1, gradient_accumulation_steps=2).train()
    record = only_record(tmp_path / "runs")
    assert record.script is not None and (record.script.batch_size, record.spec.batch_size) == (16, 16)
    assert record.series["train/loss"].steps.tolist() == [1, 2]  # 4 batches of 8: 2 optimizer steps


def test_trainer_run_ended_by_an_exception_is_failed_not_running(tmp_path: Path) -> None:
    """Hugging Face calls no callback when training raises: a later training in the process ends it failed (and the
    logging API ends it at the process's exit: the subprocess test below)."""
    from tuitrain.integrations.transformers import TuitrainCallback

    with pytest.raises(RuntimeError, match="boom"):
        trainer(tmp_path, [TuitrainCallback(runs_dir=str(tmp_path / "a")), RaiseAt(3, RuntimeError("boom"))]).train()
    assert only_record(tmp_path / "a").status == "running"  # nothing told it yet
    trainer(tmp_path, [TuitrainCallback(runs_dir=str(tmp_path / "b"))], epochs=1).train()
    failed = only_record(tmp_path / "a")
    assert failed.status == "failed" and "before on_train_end" in (failed.error or "")
    assert only_record(tmp_path / "b").status == "completed"


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("error", "status"), [("RuntimeError('boom')", "failed"), ("KeyboardInterrupt()", "interrupted")]
)
def test_trainer_script_that_dies_ends_its_run(tmp_path: Path, error: str, status: str) -> None:
    code = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from tests.engine.test_integrations import RaiseAt, trainer
from tuitrain.integrations.transformers import TuitrainCallback
tmp = Path(sys.argv[1])
trainer(tmp, [TuitrainCallback(runs_dir=str(tmp / "runs")), RaiseAt(2, {error})]).train()
"""
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert result.returncode != 0
    record = only_record(tmp_path / "runs")
    assert record.status == status, result.stderr[-2000:]


def test_trainer_callback_records_nothing_off_the_main_process(tmp_path: Path) -> None:
    from tuitrain.integrations.transformers import TuitrainCallback

    callback = TuitrainCallback(runs_dir=str(tmp_path / "runs"))
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    state = transformers.TrainerState(is_world_process_zero=False)
    control = transformers.TrainerControl()
    callback.on_train_begin(args, state, control)
    callback.on_log(args, state, control, logs={"loss": 1.0})
    callback.on_train_end(args, state, control)
    assert not (tmp_path / "runs").exists()


# --- without the frameworks -------------------------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("module", "package", "extra"),
    [("lightning", "lightning", "lightning"), ("transformers", "transformers", "transformers")],
)
def test_an_integration_without_its_framework_names_the_extra(module: str, package: str, extra: str) -> None:
    code = (
        f"import sys; sys.modules[{package!r}] = None\n"
        f"try:\n    import tuitrain.integrations.{module}\nexcept ImportError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"pip install 'tuitrain[{extra}]'" in result.stdout


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("example", "args", "series"),
    [
        ("lightning_example.py", ["--epochs", "1", "--samples", "256"], "train_loss"),
        ("transformers_example.py", ["--epochs", "1", "--samples", "256"], "train/loss"),
    ],
)
def test_the_examples_run_and_record_a_completed_run(tmp_path: Path, example: str, args: list, series: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example), "--runs-dir", str(tmp_path / "runs"), *args]
        + (["--output-dir", str(tmp_path / "out")] if example.startswith("transformers") else []),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = only_record(tmp_path / "runs")
    assert record.status == "completed" and record.loss_series == series and len(record.epochs) == 1
