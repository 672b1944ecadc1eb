"""Run records: round trip, JSON Schema, atomic writes, version checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.schema_check import schema_errors
from tuitrain.core.atomic import atomic_write_text
from tuitrain.core.errors import RecordError
from tuitrain.core.spec import RunSpec
from tuitrain.records import (
    NON_FINITE,
    SCHEMA_VERSION,
    EnvInfo,
    EpochRecord,
    RunRecord,
    parse_record,
    read_record,
    record_schema,
    write_record,
)


def sample_record() -> RunRecord:
    return RunRecord(
        id="r1",
        label="lr=0.01",
        preset="lr_sweep",
        invocation="inv",
        spec=RunSpec(model="model_b", lr=0.01),
        env=EnvInfo(device="CPU", torch_version="2.x", threads=2),
        batch_losses=[2.3, 1.1, 0.5],
        epochs=[
            EpochRecord(
                epoch=1,
                initial_loss=2.3,
                final_loss=0.5,
                mean_loss=1.3,
                test_loss=0.4,
                test_accuracy=91.5,
                test_correct=915,
                test_total=1000,
                duration_s=1.0,
                samples_per_s=100.0,
            )
        ],
    )


def test_round_trip(tmp_path: Path) -> None:
    rec = sample_record()
    path = tmp_path / "r.json"
    write_record(rec, path)
    back = read_record(path)
    assert back.model_dump(exclude={"heartbeat_at"}) == rec.model_dump(exclude={"heartbeat_at"})
    assert back.best_accuracy == 91.5


def test_public_field_names() -> None:
    data = json.loads(sample_record().model_dump_json())
    for key in (
        "schema_version",
        "id",
        "status",
        "preset",
        "label",
        "spec",
        "env",
        "started_at",
        "ended_at",
        "batch_losses",
        "epochs",
    ):
        assert key in data
    for key in ("model", "activation", "optimizer", "lr", "batch_size", "epochs", "seed", "dataset", "data_source"):
        assert key in data["spec"]
    for key in ("device", "torch_version", "host", "threads"):
        assert key in data["env"]
    for key in (
        "epoch",
        "initial_loss",
        "final_loss",
        "mean_loss",
        "test_loss",
        "test_accuracy",
        "test_correct",
        "test_total",
        "duration_s",
        "samples_per_s",
    ):
        assert key in data["epochs"][0]
    schema = record_schema()
    assert schema["properties"]["status"]["enum"] == [
        "running",
        "completed",
        "interrupted",
        "diverged",
        "failed",
        "crashed",
    ]
    assert "description" in schema["properties"]["batch_losses"]  # field docstrings reach the schema


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.json"
    atomic_write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # the temp file is cleaned up


def test_newer_version_refused_with_version(tmp_path: Path) -> None:
    data = json.loads(sample_record().model_dump_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(RecordError, match=f"newer tuitrain \\(schema_version {SCHEMA_VERSION + 1}"):
        parse_record(json.dumps(data))


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "not valid JSON"),
        ('{\n"id": "unterminated', r"not valid JSON \(Unterminated string starting at line 2\)\.$"),
        ('{"a": "\x01"}', r"not valid JSON \(Invalid control character at line 1\)\.$"),
        ("[]", "not a tuitrain run record"),
        ('{"a": 1}', "no integer 'schema_version'"),
        ('{"schema_version": 1, "id": "x"}', "invalid run record"),
    ],
)
def test_unreadable(text: str, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        parse_record(text, "f.json")


def diverged_record() -> RunRecord:
    rec = sample_record()
    rec.status = "diverged"
    rec.batch_losses += [float("nan"), float("inf"), float("-inf")]
    rec.epochs[0].final_loss = float("nan")
    rec.epochs[0].test_loss = float("inf")
    return rec


def test_schema_describes_diverged_files(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_record(diverged_record(), path)
    data = json.loads(path.read_text())
    assert data["batch_losses"][-3:] == ["NaN", "Infinity", "-Infinity"]
    schema = record_schema()
    assert schema_errors(data, schema) == []
    loss = {"anyOf": [{"type": "number"}, {"enum": list(NON_FINITE)}]}
    assert schema["properties"]["batch_losses"]["items"] == loss
    epoch = schema["$defs"]["EpochRecord"]["properties"]
    assert all(
        epoch[name]["anyOf"] == loss["anyOf"] for name in ("initial_loss", "final_loss", "mean_loss", "test_loss")
    )
    assert (epoch["test_accuracy"]["type"], epoch["test_accuracy"]["minimum"], epoch["test_accuracy"]["maximum"]) == (
        "number",
        0,
        100,
    )
    # and the schema still refuses what no tuitrain writes
    data["batch_losses"].append("nan")
    data["epochs"][0]["test_accuracy"] = "NaN"
    assert len(schema_errors(data, schema)) == 2


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("test_accuracy", "NaN", "finite number"),
        ("test_accuracy", "Infinity", "finite number"),
        ("test_accuracy", 100.5, "less than or equal to 100"),
        ("test_accuracy", -1, "greater than or equal to 0"),
        ("duration_s", "Infinity", "finite number"),
        ("samples_per_s", "NaN", "finite number"),
    ],
)
def test_non_finite_figures_are_refused(field: str, value: object, message: str) -> None:
    data = json.loads(sample_record().model_dump_json())
    data["epochs"][0][field] = value
    with pytest.raises(RecordError, match=f"f.json: invalid run record: epochs.0.{field}: .*{message}"):
        parse_record(json.dumps(data), "f.json")
