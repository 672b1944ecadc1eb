"""The append-only series log: framing, torn tails, tailing by offset, append cost, versions."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest

from tuitrain.core.errors import RecordError
from tuitrain.core.serieslog import (
    FILE_HEADER,
    LOG_FORMAT_VERSION,
    MAGIC,
    SeriesReader,
    SeriesWriter,
    read_series,
)


def chunk(first: int, n: int) -> dict[str, tuple[list[int], list[float]]]:
    steps = list(range(first, first + n))
    return {"train/loss": (steps, [1.0 / (s + 1) for s in steps]), "lr": (steps, [0.1] * n)}


def write_log(path: Path, chunks: int, per_chunk: int = 5) -> list[int]:
    """Chunks of steps; the file size after each."""
    writer = SeriesWriter(path)
    sizes = []
    for i in range(chunks):
        writer.append(chunk(i * per_chunk, per_chunk))
        sizes.append(path.stat().st_size)
    writer.close()
    return sizes


def test_round_trip_keeps_every_point_in_order(tmp_path: Path) -> None:
    path = tmp_path / "r.series"
    write_log(path, 4)
    series = read_series(path)
    assert series["train/loss"].steps.tolist() == list(range(20))
    assert series["train/loss"].values.tolist() == [1.0 / (s + 1) for s in range(20)]
    assert series["lr"].values.tolist() == [0.1] * 20


def test_non_finite_values_survive(tmp_path: Path) -> None:
    path = tmp_path / "r.series"
    writer = SeriesWriter(path)
    writer.append({"loss": ([0, 1, 2], [math.nan, math.inf, -math.inf])})
    writer.close()
    values = read_series(path)["loss"].values
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf


def test_a_torn_tail_at_every_byte_of_the_last_record_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "r.series"
    sizes = write_log(path, 3)
    whole = path.read_bytes()
    torn = tmp_path / "torn.series"
    for cut in range(sizes[1], sizes[2]):  # every prefix of the last frame, header bytes included
        torn.write_bytes(whole[:cut])
        series = read_series(torn)
        assert series["train/loss"].steps.tolist() == list(range(10)), cut


def test_a_damaged_last_record_is_ignored_at_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "r.series"
    sizes = write_log(path, 3)
    whole = bytearray(path.read_bytes())
    torn = tmp_path / "torn.series"
    for at in range(sizes[1], sizes[2]):  # a flipped byte anywhere in the last frame: its checksum fails
        damaged = bytearray(whole)
        damaged[at] ^= 0xFF
        torn.write_bytes(bytes(damaged))
        assert read_series(torn)["train/loss"].steps.tolist() == list(range(10)), at


def test_a_reopened_log_cuts_the_torn_tail_and_what_follows_is_read(tmp_path: Path) -> None:
    path = tmp_path / "r.series"
    sizes = write_log(path, 2)
    with open(path, "ab") as fh:
        fh.write(b"\x30\x00\x00\x00garbage")  # a frame cut short by kill -9
    writer = SeriesWriter(path)
    assert path.stat().st_size == sizes[-1]
    writer.append(chunk(10, 5))
    writer.close()
    assert read_series(path)["train/loss"].steps.tolist() == list(range(15))


def test_the_reader_tails_by_offset_reading_only_appended_bytes(tmp_path: Path) -> None:
    path = tmp_path / "r.series"
    writer = SeriesWriter(path)
    writer.append(chunk(0, 1000))
    reader = SeriesReader(path)
    assert reader.read_new()
    first = reader.bytes_read
    assert first == path.stat().st_size
    assert not reader.read_new()  # nothing new: nothing read
    assert reader.bytes_read == first
    added = writer.append(chunk(1000, 3))
    assert reader.read_new()
    assert reader.bytes_read == first + added
    assert reader.series["train/loss"].steps.tolist() == list(range(1003))
    writer.close()


def test_the_reader_waits_for_a_torn_frame_to_complete(tmp_path: Path) -> None:
    path = tmp_path / "r.series"
    sizes = write_log(path, 2)
    whole = path.read_bytes()
    path.write_bytes(whole[: sizes[1] - 3])
    reader = SeriesReader(path)
    reader.read_new()
    assert len(reader.series["lr"]) == 5
    path.write_bytes(whole)  # the writer finished the frame
    assert reader.read_new()
    assert len(reader.series["lr"]) == 10


def test_append_cost_is_independent_of_the_run_length(tmp_path: Path) -> None:
    path = tmp_path / "r.series"
    writer = SeriesWriter(path)
    early = writer.append(chunk(10, 50))
    for i in range(2000):  # 100,000 steps in
        writer.append(chunk(60 + 50 * i, 50))
    before = path.read_bytes()
    late = writer.append(chunk(10_000_000, 50))
    writer.close()
    assert late == early
    after = path.read_bytes()
    assert after[: len(before)] == before  # nothing written is rewritten
    assert len(after) == len(before) + late


def test_a_newer_log_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.series"
    path.write_bytes(FILE_HEADER.pack(MAGIC, LOG_FORMAT_VERSION + 1))
    with pytest.raises(RecordError, match="newer tuitrain"):
        read_series(path)
    path.write_bytes(b"not a log at all")
    with pytest.raises(RecordError, match="not a tuitrain series log"):
        read_series(path)


def test_a_garbage_length_is_not_read_as_a_frame(tmp_path: Path) -> None:
    path = tmp_path / "r.series"
    write_log(path, 1)
    with open(path, "ab") as fh:
        fh.write(struct.pack("<II", 0xFFFFFFF0, 0) + b"x" * 100)
    assert len(read_series(path)["lr"]) == 5


def test_steps_and_values_are_numpy_arrays(tmp_path: Path) -> None:
    path = tmp_path / "r.series"
    write_log(path, 1)
    s = read_series(path)["lr"]
    assert s.steps.dtype == np.int64 and s.values.dtype == np.float64


def test_a_frame_at_or_below_a_series_last_step_rewinds_that_series(tmp_path: Path) -> None:
    """A run resumed from step 5 after logging to 19: readers drop the loss points from 5 on (the file keeps them),
    other series stay; read at once or tailed across the rewind, the same points."""
    path = tmp_path / "r.series"
    writer = SeriesWriter(path)
    writer.append(chunk(0, 10))
    tailing = SeriesReader(path)
    tailing.read_new()
    writer.append(chunk(10, 10))
    tailing.read_new()
    writer.append({"train/loss": ([5, 6, 7], [9.0, 8.0, 7.0])})
    size = path.stat().st_size
    for reader in (tailing, SeriesReader(path)):
        assert reader.read_new()
        loss = reader.series["train/loss"]
        assert loss.steps.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
        assert loss.values.tolist() == [1.0 / (s + 1) for s in range(5)] + [9.0, 8.0, 7.0]
        assert reader.series["lr"].steps.tolist() == list(range(20))
        assert reader.rewinds == 1
    writer.append({"train/loss": ([0], [5.0])})  # trained again from the start
    assert tailing.read_new() and tailing.series["train/loss"].steps.tolist() == [0]
    assert tailing.rewinds == 2 and tailing.bytes_read == path.stat().st_size > size  # still tailing by offset
    writer.close()


def test_an_epochs_mean_loss_with_both_infinities_is_nan() -> None:
    from tuitrain.keeper import EpochLosses

    losses = EpochLosses()
    losses.add([1.0, math.inf])
    losses.add([-math.inf, 2.0])
    assert losses.first == 1.0 and losses.last == 2.0 and math.isnan(losses.mean)
    losses.add([math.inf, -math.inf])  # in one chunk: fsum would raise
    assert math.isnan(losses.mean)
