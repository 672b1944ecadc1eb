"""TensorBoard event files read as they are: the framing and both checksums, simple and tensor scalars,
hyperparameters, a torn tail, a file that grows while it is read; TensorBoard log folders as runs."""

from __future__ import annotations

import io
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard", reason="the tests write event files with torch's SummaryWriter")
pytest.importorskip("google_crc32c", reason="tuitrain[tensorboard]")

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from tests.helpers import ROOT  # noqa: E402
from tuitrain.catalog import load_run_arguments  # noqa: E402
from tuitrain.core.events import BatchLosses, RunFinished, RunStarted  # noqa: E402
from tuitrain.core.tfevents import EventFileError, EventFileReader, masked_crc32c  # noqa: E402
from tuitrain.follow import Follower  # noqa: E402
from tuitrain.tblogs import TensorBoardRunReader, log_folders, loss_tag, read_log_folder  # noqa: E402


def event_file(folder: Path) -> Path:
    (path,) = folder.glob("events.out.tfevents.*")
    return path


def framed(event: event_pb2.Event) -> bytes:
    """One TFRecord record, framed as TensorFlow frames it."""
    data = event.SerializeToString()
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def scalar_event(step: int, tag: str, value: float) -> event_pb2.Event:
    return event_pb2.Event(
        wall_time=1.0e9 + step, step=step, summary=summary_pb2.Summary(value=[{"tag": tag, "simple_value": value}])
    )


def test_crc32c_and_its_mask_match_the_known_values() -> None:
    import google_crc32c

    assert google_crc32c.value(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720)
    # TFRecord's mask of it: rotate right 15, add 0xa282ead8 (tensorflow/core/lib/hash/crc32c.h)
    assert masked_crc32c(b"123456789") == ((0xE3069283 >> 15 | 0xE3069283 << 17) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc32c(b"") == 0xA282EAD8


def test_scalars_written_by_summary_writer_are_read_as_written(tmp_path: Path) -> None:
    writer = SummaryWriter(str(tmp_path))
    for step in range(0, 300, 3):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    writer.add_scalar("val/acc", 0.75, 299)
    writer.add_scalar("tensor_form", -2.5, 7, new_style=True)
    writer.add_histogram("weights", np.arange(10.0), 0)
    writer.add_text("note", "not a scalar", 0)
    writer.close()

    points, restarted = EventFileReader(event_file(tmp_path)).read_new()
    assert not restarted
    assert sorted(points) == ["tensor_form", "train/loss", "val/acc"]
    assert points["train/loss"].steps == list(range(0, 300, 3))
    assert points["train/loss"].values == pytest.approx([1.0 / (s + 1) for s in range(0, 300, 3)], rel=1e-6)
    assert (points["val/acc"].steps, points["val/acc"].values) == ([299], [0.75])
    assert (points["tensor_form"].steps, points["tensor_form"].values) == ([7], [-2.5])


def test_tensor_scalars_of_every_numeric_form(tmp_path: Path) -> None:
    """TF2 writes a scalar as a 0-d tensor, in its typed field or as raw content, with the scalars plugin's metadata
    on a tag's first value only; one-element 1-d tensors count, longer tensors and other plugins' do not."""
    scalar_meta = summary_pb2.SummaryMetadata(plugin_data={"plugin_name": "scalars"})
    other_meta = summary_pb2.SummaryMetadata(plugin_data={"plugin_name": "custom"})
    one = tensor_shape_pb2.TensorShapeProto(dim=[{"size": 1}])
    tensors = [
        ("f", tensor_pb2.TensorProto(dtype=1, float_val=[1.5]), scalar_meta),
        ("f", tensor_pb2.TensorProto(dtype=1, float_val=[2.5]), None),
        ("d", tensor_pb2.TensorProto(dtype=2, double_val=[math.pi]), None),
        ("i", tensor_pb2.TensorProto(dtype=9, int64_val=[-7]), None),
        ("c", tensor_pb2.TensorProto(dtype=2, tensor_content=struct.pack("<d", 0.125), tensor_shape=one), None),
        ("h", tensor_pb2.TensorProto(dtype=19, half_val=[struct.unpack("<H", struct.pack("<e", 0.5))[0]]), None),
        ("vector", tensor_pb2.TensorProto(dtype=1, float_val=[1.0, 2.0]), None),
        ("custom", tensor_pb2.TensorProto(dtype=1, float_val=[9.0]), other_meta),
        ("custom", tensor_pb2.TensorProto(dtype=1, float_val=[9.0]), None),
    ]
    path = tmp_path / "events.out.tfevents.1.host.1.0"
    with open(path, "wb") as fh:
        for step, (tag, tensor, meta) in enumerate(tensors):
            value = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
            if meta is not None:
                value.metadata.CopyFrom(meta)
            fh.write(framed(event_pb2.Event(wall_time=1.0, step=step, summary=summary_pb2.Summary(value=[value]))))
    points, _ = EventFileReader(path).read_new()
    assert {tag: (p.steps, p.values) for tag, p in points.items()} == {
        "f": ([0, 1], [1.5, 2.5]),
        "d": ([2], [math.pi]),
        "i": ([3], [-7.0]),
        "c": ([4], [0.125]),
        "h": ([5], [0.5]),
    }


def test_hyperparameters_from_the_hparams_plugin(tmp_path: Path) -> None:
    writer = SummaryWriter(str(tmp_path))
    writer.add_hparams({"lr": 0.1, "optimizer": "sgd", "layers": 3}, {"hparam/acc": 0.5}, run_name=".")
    writer.add_scalar("loss", 1.0, 0)
    writer.close()
    record = read_log_folder(tmp_path)
    assert record.config == {"lr": 0.1, "optimizer": "sgd", "layers": 3.0}
    assert record.summary["loss"] == 1.0


def test_a_torn_tail_is_left_unread_until_completed(tmp_path: Path) -> None:
    whole = b"".join(framed(scalar_event(step, "loss", float(step))) for step in range(5))
    last = len(framed(scalar_event(4, "loss", 4.0)))
    path = tmp_path / "events.out.tfevents.1.host.1.0"
    reader = EventFileReader(path)
    for cut in (1, 8, 12, last - 4, last - 1):  # inside the header, the data, the data's checksum
        path.write_bytes(whole[: len(whole) - last + cut])
        reader = EventFileReader(path)
        points, _ = reader.read_new()
        assert points["loss"].steps == [0, 1, 2, 3], cut
        assert reader.offset == len(whole) - last
    with open(path, "ab") as fh:  # the writer completes the record
        fh.write(whole[len(whole) - last + cut :])
    points, restarted = reader.read_new()
    assert not restarted
    assert points["loss"].steps == [4]


@pytest.mark.parametrize("where", ["length", "length checksum", "data", "data checksum"])
def test_damage_in_the_middle_fails_one_of_the_two_checksums(tmp_path: Path, where: str) -> None:
    records = [framed(scalar_event(step, "loss", float(step))) for step in range(3)]
    middle = bytearray(records[1])
    offset = {"length": 0, "length checksum": 9, "data": 14, "data checksum": len(middle) - 2}[where]
    middle[offset] ^= 0x40
    path = tmp_path / "events.out.tfevents.1.host.1.0"
    path.write_bytes(records[0] + bytes(middle) + records[2])
    message = "record length" if where.startswith("length") else "data checksum"
    with pytest.raises(EventFileError, match=message):
        EventFileReader(path).read_new()


def test_a_growing_file_is_read_by_offset_only_what_was_appended(tmp_path: Path) -> None:
    writer = SummaryWriter(str(tmp_path))
    reader: EventFileReader | None = None
    seen: list[int] = []
    for block in range(4):
        for step in range(block * 100, block * 100 + 100):
            writer.add_scalar("train/loss", float(step), step)
        writer.flush()
        if reader is None:
            reader = EventFileReader(event_file(tmp_path))
        before = reader.bytes_read
        points, _ = reader.read_new()
        seen += points["train/loss"].steps
        assert reader.bytes_read - before == reader.path.stat().st_size - (before if block else 0)
    writer.close()
    assert seen == list(range(400))


def test_a_replaced_file_is_read_again_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "events.out.tfevents.1.host.1.0"
    path.write_bytes(b"".join(framed(scalar_event(s, "loss", 1.0)) for s in range(5)))
    reader = TensorBoardRunReader(tmp_path)
    first = reader.read()
    assert first is not None and first.series["loss"].steps.tolist() == [0, 1, 2, 3, 4]
    path.write_bytes(framed(scalar_event(0, "loss", 2.0)))  # shorter: a new file in its place
    again = reader.read()
    assert again is not None and again.series["loss"].values.tolist() == [2.0]


def test_loss_tags_of_the_usual_frameworks() -> None:
    assert loss_tag(["train/learning_rate", "train/loss", "eval/loss"]) == "train/loss"  # Hugging Face
    assert loss_tag(["epoch", "val_loss", "train_loss_step", "train_loss_epoch"]) == "train_loss_step"  # Lightning
    assert loss_tag(["Loss/validation", "Loss/Train"]) == "Loss/Train"
    assert loss_tag(["val_loss", "accuracy"]) is None


def write_log_in_another_process(folder: Path, steps: int) -> None:
    code = (
        "import sys\nfrom torch.utils.tensorboard import SummaryWriter\n"
        "w = SummaryWriter(sys.argv[1])\n"
        "for s in range(int(sys.argv[2])): w.add_scalar('train/loss', 1.0 / (s + 1), s)\n"
        "w.close()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(folder), str(steps)], check=True, timeout=120)


@pytest.mark.subprocess
def test_log_folders_compare_as_runs_and_a_finished_writer_is_completed(tmp_path: Path) -> None:
    write_log_in_another_process(tmp_path / "logs" / "a", 50)
    write_log_in_another_process(tmp_path / "logs" / "b", 80)
    assert [p.name for p in log_folders(tmp_path / "logs")] == ["a", "b"]
    files = load_run_arguments([str(tmp_path / "logs")], tmp_path)
    assert [(f.record.label, f.status, len(f.record.batch_losses)) for f in files if f.record] == [
        ("logs/a", "completed", 50),
        ("logs/b", "completed", 80),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "tuitrain", "compare", "--no-ui", str(tmp_path / "logs")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "logs/a" in result.stdout and "logs/b" in result.stdout
    assert "0.0200" in result.stdout and "0.0125" in result.stdout  # final train losses 1/50, 1/80
    assert "Across seeds" not in result.stdout  # two logs that say nothing of their settings are not repeats
    # a log has no epochs, and no test accuracy by epoch: no rows that it cannot fill
    assert "test acc" not in result.stdout and "First epoch" not in result.stdout
    (epochs,) = [line.split() for line in result.stdout.splitlines() if line.strip().startswith("Epochs ")]
    assert epochs == ["Epochs", "–", "–"]


def test_a_live_writer_is_watched_as_it_appends(tmp_path: Path) -> None:
    writer = SummaryWriter(str(tmp_path / "run"))
    writer.add_scalar("train/loss", 1.0, 0)
    writer.flush()
    follower = Follower(tmp_path)
    assert follower.tensorboard
    events = follower.poll()
    assert [type(e) for e in events] == [RunStarted, BatchLosses]
    assert follower.poll() == []
    for step in range(1, 4):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    writer.flush()
    events = follower.poll()
    losses = [x for e in events if isinstance(e, BatchLosses) for x in e.losses]
    assert losses == pytest.approx([0.5, 1 / 3, 0.25])
    assert not follower.done  # its writer (this process) is alive
    writer.close()


@pytest.mark.subprocess
def test_watching_a_finished_log_ends_with_the_run(tmp_path: Path) -> None:
    write_log_in_another_process(tmp_path / "run", 20)
    follower = Follower(tmp_path / "run")
    events = follower.poll()
    assert isinstance(events[-1], RunFinished) and events[-1].status == "completed"
    assert follower.done


def test_without_the_extra_the_command_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "events.out.tfevents.1.host.1.0").write_bytes(framed(scalar_event(0, "loss", 1.0)))
    monkeypatch.setitem(sys.modules, "google_crc32c", None)  # as if not installed
    from tuitrain.cli import main

    assert main(["compare", "--no-ui", str(tmp_path)]) == 2
    assert main(["watch", "--no-ui", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert (
        err
        == [
            "tuitrain: error: reading TensorBoard event files needs the google-crc32c package: "
            "pip install 'tuitrain[tensorboard]'"
        ]
        * 2
    )


def test_a_log_is_watched_for_what_it_says_only(tmp_path: Path) -> None:
    """A log holds steps, values and their times: no epochs, batch size, dataset sizes or device to show."""
    from tuitrain.headless import HeadlessPrinter

    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "events.out.tfevents.1000000000.otherhost.123.0"
    path.write_bytes(b"".join(framed(scalar_event(step, "train/loss", 1.0 / (step + 1))) for step in range(10)))
    os.utime(path, (1.0e9 + 9, 1.0e9 + 9))  # written on another host, long ago: a run that ended
    events = Follower(folder).poll()
    started = next(e for e in events if isinstance(e, RunStarted))
    assert (started.epochs_known, started.train_size, started.test_size, started.batches_per_epoch) == (
        False,
        0,
        0,
        0,
    )
    assert (started.device, started.has_epochs) == ("", False)
    batches = [e for e in events if isinstance(e, BatchLosses)]
    # steps 0..9 logged over 9 s (their wall times): 10 steps, their rate in steps per second (no batch size)
    assert [(b.batch, b.samples_per_s, b.batch_size_known) for b in batches] == [(10, 10 / 9, False)]
    out = io.StringIO()
    printer = HeadlessPrinter(out, watching=True)
    for event in events:
        printer(event)
    lines = out.getvalue().splitlines()
    assert f"=== Run 1/1: {tmp_path.name}/run" in lines  # no settings, epochs, sizes or device: the log says none
    assert "Step 10\tLoss: 0.100000\t1.1 steps/s" in lines  # by step: a log's steps are in no epoch
