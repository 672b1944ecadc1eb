"""The test confusion matrix the engine counts at each evaluation (tuitrain/train/evaluation.py): a recount of the
model's own predictions, read back from the device once per evaluation, kept in the record and carried by
EpochEnded, for runs trained alone and fused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import tuitrain.train.loop as loop
from tuitrain.core.events import EpochEnded
from tuitrain.core.spec import RunSpec
from tuitrain.records import read_record, write_record
from tuitrain.train.data import load_idx_folder
from tuitrain.train.device import TensorData, prepare_model
from tuitrain.train.fused import fit_fused
from tuitrain.train.loop import evaluate, evaluate_classes, fit
from tuitrain.train.stacked import StackedRuns

READ_BACKS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")
"""Tensor methods that bring a value to the host (a sync on a GPU)."""


def data_on_cpu(mnist_dir: Path) -> TensorData:
    return TensorData.from_arrays(load_idx_folder(mnist_dir), torch.device("cpu"))


def trained_model(data: TensorData, seed: int = 0) -> torch.nn.Module:
    """model_a after a few Adam steps: its predictions spread over several classes (a fresh one picks one or two)."""
    torch.manual_seed(seed)
    model = prepare_model(RunSpec(model="model_a", device="cpu"), torch.device("cpu"))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for start in range(0, 256, 32):
        loss = torch.nn.functional.cross_entropy(
            model(data.train_x[start : start + 32]), data.train_y[start : start + 32]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def recount(predicted: torch.Tensor, target: torch.Tensor, classes: int = 10) -> list[list[int]]:
    return [[int(((target == t) & (predicted == p)).sum()) for p in range(classes)] for t in range(classes)]


def count_read_backs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every call of a tensor method that reads a value back to the host, from now on."""
    calls: list[str] = []
    for name in READ_BACKS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def test_matrix_is_a_recount_of_the_models_predictions_over_uneven_batches(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = data_on_cpu(mnist_dir)
    model = trained_model(data)
    monkeypatch.setitem(loop.EVAL_BATCH, "cpu", 50)  # 128 test images: batches of 50, 50 and 28
    result = evaluate_classes(model, data.test_x, data.test_y)
    with torch.no_grad():
        out = model.eval()(data.test_x)
    expected = recount(out.argmax(1), data.test_y)
    assert result.confusion == expected
    assert len({p for row in expected for p, n in enumerate(row) if n}) > 2  # not a model that predicts one class
    assert result.total == 128 and sum(map(sum, result.confusion)) == 128
    assert result.correct == sum(expected[i][i] for i in range(10)) == int((out.argmax(1) == data.test_y).sum())
    assert result.loss == pytest.approx(torch.nn.functional.cross_entropy(out, data.test_y).item(), rel=1e-5)
    assert evaluate(model, data.test_x, data.test_y) == (result.loss, result.correct, result.total)


def test_an_evaluation_reads_back_once_whatever_its_batches(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = data_on_cpu(mnist_dir)
    model = trained_model(data)
    monkeypatch.setitem(loop.EVAL_BATCH, "cpu", 16)  # 8 batches
    calls = count_read_backs(monkeypatch)
    evaluate_classes(model, data.test_x, data.test_y)
    assert calls == ["tolist"]


def test_fit_keeps_each_epochs_matrix_in_the_record_its_file_and_its_event(mnist_dir: Path, tmp_path: Path) -> None:
    data = data_on_cpu(mnist_dir)
    ended: list[EpochEnded] = []
    spec = RunSpec(model="model_a", epochs=2, batch_size=32, lr=0.003, log_every=4, device="cpu")
    record = fit(spec, lambda e: ended.append(e) if isinstance(e, EpochEnded) else None, data=data)
    per_class = torch.bincount(data.test_y, minlength=10).tolist()
    assert len(record.epochs) == len(ended) == 2
    for epoch, event in zip(record.epochs, ended, strict=True):
        matrix = epoch.confusion
        assert matrix is not None and len(matrix) == 10 and all(len(row) == 10 for row in matrix)
        assert [sum(row) for row in matrix] == per_class  # each test image counted once, in its true class's row
        assert sum(matrix[i][i] for i in range(10)) == epoch.test_correct
        assert event.confusion == tuple(tuple(row) for row in matrix)
    write_record(record, tmp_path / "run.json")
    assert [e.confusion for e in read_record(tmp_path / "run.json").epochs] == [e.confusion for e in record.epochs]


def test_fused_runs_count_each_runs_matrix_in_one_read_back(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = data_on_cpu(mnist_dir)
    specs = [
        RunSpec(model="model_b", lr=lr, seed=seed, epochs=1, batch_size=64, log_every=1, device="cpu")
        for lr, seed in ((0.01, 0), (0.003, 1))
    ]
    stack = StackedRuns(specs, torch.device("cpu"))
    with torch.no_grad():
        logits = stack._logits(stack.params, stack.buffers, data.test_x)  # (runs, images, classes)
    calls = count_read_backs(monkeypatch)
    results = stack.evaluate(data.test_x, data.test_y, batch=50)
    assert calls == ["tolist"]
    monkeypatch.undo()
    for run, result in enumerate(results):
        assert result.confusion == recount(logits[run].argmax(-1), data.test_y)
        assert result.correct == int((logits[run].argmax(-1) == data.test_y).sum())
    assert results[0].confusion != results[1].confusion  # each run its own

    from tests.engine.test_fused import fused_run

    records = fit_fused([fused_run(s, i, 2) for i, s in enumerate(specs)], data=data)
    for record in records:
        epoch = record.epochs[-1]
        assert epoch.confusion is not None and sum(map(sum, epoch.confusion)) == epoch.test_total == 128
        assert sum(epoch.confusion[i][i] for i in range(10)) == epoch.test_correct
