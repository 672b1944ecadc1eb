"""Property-based: random and mutated preset files and run files only ever raise the documented errors."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuitrain import records
from tuitrain.catalog import load_run_file
from tuitrain.core.errors import PresetError, RecordError
from tuitrain.core.spec import RunSpec
from tuitrain.presets import load_preset_file
from tuitrain.records import EnvInfo, EpochRecord, RunRecord, parse_record, read_record

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

VALID_PRESET = """name = "p"
title = "A preset"
description = "d"

[defaults]
model = "model_a"
epochs = 2
batch_size = 32
lr = 0.003
device = "cpu"

[grid]
activation = ["relu", "tanh"]

[[runs]]
label = "one"
seed = 1
"""


def valid_record_text() -> str:
    record = RunRecord(
        id="r1",
        label="lr=0.1",
        spec=RunSpec(model="model_a"),
        env=EnvInfo(device="CPU", torch_version="2", threads=2),
        batch_losses=[2.3, 1.2, float("nan")],
        epochs=[
            EpochRecord(
                epoch=1,
                initial_loss=2.3,
                final_loss=1.2,
                mean_loss=1.5,
                test_loss=1.1,
                test_accuracy=60.0,
                test_correct=6,
                test_total=10,
                duration_s=1.0,
                samples_per_s=5.0,
            )
        ],
    )
    return record.model_dump_json(indent=1)


VALID_RECORD = valid_record_text()


def mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    """Apply (position, delete count, insertion) edits."""
    for pos, delete, insert in edits:
        pos = pos % (len(text) + 1)
        text = text[:pos] + insert + text[pos + delete :]
    return text


edits = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 8), st.text(max_size=8)), min_size=1, max_size=6)
toml_scalars = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats().map(repr),
    st.text(max_size=10).map(json.dumps),
    st.sampled_from(["true", "false", "[]", "[1, 2]", "{}", '"relu"', "inf"]),
)
keys = st.sampled_from(
    [
        "model",
        "activation",
        "optimizer",
        "lr",
        "batch_size",
        "epochs",
        "seed",
        "subset",
        "device",
        "log_every",
        "on_divergence",
        "label",
        "colour",
        "name",
        "title",
    ]
)


def load_preset_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.toml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))  # lone surrogates too: a decode error
        try:
            load_preset_file(path)
        except PresetError as exc:
            assert str(exc).startswith(str(path)), exc  # says where
            assert "\n" not in str(exc)


def test_valid_fixtures_are_valid() -> None:
    load_preset_text(VALID_PRESET)
    parse_record(VALID_RECORD)


@PROPS
@given(st.text(max_size=300))
def test_random_text_as_preset(text: str) -> None:
    load_preset_text(text)


@PROPS
@given(edits)
def test_mutated_preset(changes) -> None:
    load_preset_text(mutate(VALID_PRESET, changes))


@PROPS
@given(st.lists(st.tuples(st.sampled_from(["defaults", "grid", "runs"]), keys, toml_scalars), max_size=6))
def test_preset_with_random_settings(settings_) -> None:
    text = VALID_PRESET
    for section, key, value in settings_:
        if section == "grid":
            value = f"[{value}]"
        text += f"\n[{'[runs]' if section == 'runs' else section}]\n{key} = {value}\n"
    load_preset_text(text)


def parse_only_record_errors(text: str) -> None:
    try:
        parse_record(text, "f.json")
    except RecordError as exc:
        assert str(exc).startswith("f.json: ") and "\n" not in str(exc)


@PROPS
@given(st.text(max_size=300))
def test_random_text_as_record(text: str) -> None:
    parse_only_record_errors(text)


@PROPS
@given(edits)
def test_mutated_record(changes) -> None:
    parse_only_record_errors(mutate(VALID_RECORD, changes))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@PROPS
@given(
    st.sampled_from(
        [
            "schema_version",
            "id",
            "status",
            "label",
            "spec",
            "env",
            "batch_losses",
            "epochs",
            "started_at",
            "heartbeat_at",
            "resumed_at",
            "checkpoint",
            "extra",
        ]
    ),
    json_values,
)
def test_record_with_a_field_replaced(field: str, value) -> None:
    data = json.loads(VALID_RECORD)
    data[field] = value
    parse_only_record_errors(json.dumps(data))


def test_a_field_name_with_a_newline_stays_on_one_line() -> None:
    data = json.loads(VALID_RECORD)
    data["spec"] = {"\n": None}  # found by test_record_with_a_field_replaced
    parse_only_record_errors(json.dumps(data))


@PROPS
@given(st.binary(max_size=200))
def test_random_bytes_as_run_file(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.json"
        path.write_bytes(blob)
        run_file = load_run_file(path)  # never raises
        assert (run_file.record is None) == (run_file.status == "unreadable")
        with pytest.raises(RecordError) if run_file.record is None else _nothing():
            read_record(path)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_pathological_inputs() -> None:
    parse_only_record_errors("[" * 100_000)  # recursion
    parse_only_record_errors('{"schema_version": 1, "id": ' + "9" * 5000 + "}")  # int too long to convert
    parse_only_record_errors('{"schema_version": true}')
    load_preset_text("a = " + "[" * 100_000)
    load_preset_text("a = " + "9" * 5000)
    load_preset_text('name="p"\ntitle="t"\n[grid]\n' + "".join(f"seed{i} = [1]\n" for i in range(3)))


# --- schema evolution --------------------------------------------------------------------------


def version_1(text: str) -> str:
    """The record as a version 1 file (version 2 only added optional fields)."""
    return json.dumps({**json.loads(text), "schema_version": 1})


def test_older_version_is_migrated_through_the_chain(monkeypatch) -> None:
    """Pretend the current format is v3 (renamed 'label' to 'name' and back, say): a v1 file is migrated on read
    by the real v1 -> v2 step, then this one."""
    calls = []

    def v2_to_v3(data):
        calls.append(data["schema_version"])
        data["label"] = data["label"] + " (migrated)"
        data["schema_version"] = 3
        return data

    monkeypatch.setattr(records, "SCHEMA_VERSION", 3)
    monkeypatch.setitem(records.MIGRATIONS, 2, v2_to_v3)
    record = parse_record(version_1(VALID_RECORD))
    assert calls == [2]
    assert record.label == "lr=0.1 (migrated)"


def test_version_without_migration_refused(monkeypatch) -> None:
    monkeypatch.setattr(records, "SCHEMA_VERSION", 3)
    monkeypatch.setitem(records.MIGRATIONS, 2, lambda d: {**d, "schema_version": 3})
    monkeypatch.delitem(records.MIGRATIONS, 1)
    with pytest.raises(RecordError, match="schema_version 1 is too old"):
        parse_record(version_1(VALID_RECORD), "old.json")


def test_newer_version_refused_naming_it() -> None:
    data = json.loads(VALID_RECORD)
    data["schema_version"] = records.SCHEMA_VERSION + 1
    with pytest.raises(RecordError) as info:
        parse_record(json.dumps(data), "new.json")
    message = str(info.value)
    assert f"schema_version {records.SCHEMA_VERSION + 1}" in message
    assert "Upgrade tuitrain" in message and message.startswith("new.json: ")
