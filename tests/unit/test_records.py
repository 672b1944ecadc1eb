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
    # a number from 0 to 100, or null (a run that measures no accuracy, version 4 on)
    accuracy = epoch["test_accuracy"]["anyOf"]
    assert {"type": "number", "minimum": 0, "maximum": 100} in accuracy and {"type": "null"} in accuracy
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


FIXTURES = Path(__file__).parent.parent / "fixtures" / "records"


@pytest.mark.parametrize("name", ["v3_script.json", "v3_preset_diverged.json"])
def test_files_of_version_3_migrate_with_their_losses_inline(name: str) -> None:
    """Files written by the previous format (fixtures written by it) read as version 4, every figure kept."""
    original = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    assert original["schema_version"] == 3
    record = read_record(FIXTURES / name)
    assert record.schema_version == SCHEMA_VERSION == 5
    assert record.series_file is None
    assert len(record.batch_losses) == len(original["batch_losses"])
    assert [e.test_accuracy for e in record.epochs] == [e["test_accuracy"] for e in original["epochs"]]
    assert record.epochs[-1].metrics == original["epochs"][-1]["metrics"]
    assert record.config == original["config"]


def test_a_record_with_a_series_log_keeps_its_losses_there_only(tmp_path: Path) -> None:
    from tuitrain.core.serieslog import SeriesWriter

    rec = sample_record()
    rec.series_file, rec.loss_series = "r.series", "loss"
    writer = SeriesWriter(tmp_path / "r.series")
    writer.append({"loss": ([0, 1], [2.5, 1.5]), "lr": ([0, 1], [0.1, 0.05])})
    writer.close()
    write_record(rec, tmp_path / "r.json")
    assert "batch_losses" not in json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    back = read_record(tmp_path / "r.json")
    assert back.batch_losses == [2.5, 1.5]
    assert back.series["lr"].values.tolist() == [0.1, 0.05]
    assert read_record(tmp_path / "r.json", series=False).batch_losses == []


def test_a_record_whose_series_log_is_not_written_yet_reads_empty(tmp_path: Path) -> None:
    rec = sample_record()
    rec.series_file, rec.loss_series = "r.series", "loss"
    write_record(rec, tmp_path / "r.json")
    back = read_record(tmp_path / "r.json")
    assert back.batch_losses == [] and back.series == {}


def test_the_schema_documents_the_series_log_framing() -> None:
    from tuitrain.core.serieslog import LOG_FORMAT_VERSION

    log = record_schema()["x-series-log"]
    assert log["format_version"] == LOG_FORMAT_VERSION
    assert "length (u32 LE) | crc (u32 LE) | payload[length]" in log["framing"] and ".series" in log["file"]
