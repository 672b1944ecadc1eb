"""Preset runs are recorded as scripts' are (tuitrain.keeper): their losses in an append-only series log, the run file
without them and saved throttled, a resume rewinding the log, workers' frames appended by the invoking process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.helpers import SavedTexts
from tuitrain.core import serieslog
from tuitrain.core.control import RunControl
from tuitrain.core.events import BatchLosses, Event
from tuitrain.core.serieslog import SeriesReader, SeriesWriter, decode_chunk, read_series, scan_frames
from tuitrain.core.spec import RunSpec
from tuitrain.follow import RunTracker
from tuitrain.keeper import LocalRunFiles
from tuitrain.presets import load_preset_file
from tuitrain.records import parse_record, read_record, record_text
from tuitrain.session import PresetInvocation
from tuitrain.train import loop
from tuitrain.train.checkpoint import checkpoint_path, load_checkpoint
from tuitrain.train.data import load_idx_folder
from tuitrain.train.loop import RunPlace, fit


def prepare(preset: Path, runs: Path, data: Path, jobs: int = 1, **overrides) -> PresetInvocation:
    return PresetInvocation.prepare(
        load_preset_file(preset), runs_dir=runs, overrides=overrides or None, data_dir=data, jobs=jobs
    )


def streamed(events: list[Event], run_id: str) -> list[float]:
    return [v for e in events if isinstance(e, BatchLosses) and e.run_id == run_id for v in e.losses]


def raw_points(log: Path, name: str = "loss") -> list[int]:
    """Every step of `name` in the log's frames, as appended (rewinds not applied)."""
    data = log.read_bytes()
    frames, _ = scan_frames(data, serieslog.FILE_HEADER.size)
    return [s for p in frames for s in decode_chunk(p).get(name, ([], []))[0].tolist()]


def test_a_preset_runs_file_names_its_series_log_which_holds_every_loss(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path
) -> None:
    events: list[Event] = []
    inv = prepare(tiny_preset, tmp_path / "runs", mnist_dir)
    records = inv.run(events.append)
    assert inv.folder is not None
    for name, record in zip(inv.files, records):
        text = (inv.folder / name).read_text()
        data = json.loads(text)
        assert "batch_losses" not in data  # the losses are in the log only
        assert data["series_file"] == Path(name).with_suffix(".series").name and data["loss_series"] == "loss"
        assert data["steps_logged"] == 2 * 16
        loss = read_series(inv.folder / data["series_file"])["loss"]
        assert loss.steps.tolist() == list(range(2 * 16))
        assert loss.values.tolist() == streamed(events, record.id)  # every loss, as the events gave them
        assert read_record(inv.folder / name).batch_losses == record.batch_losses == loss.values.tolist()
        first = record.epochs[0]
        assert first.initial_loss == loss.values[0] and first.final_loss == loss.values[15]


def spec(**kw) -> RunSpec:
    base = dict(model="model_a", epochs=1, batch_size=32, lr=0.003, log_every=1, device="cpu", seed=3)
    base.update(kw)
    return RunSpec(**base)


def test_the_bytes_written_per_save_do_not_grow_with_the_runs_length(mnist_dir: Path, monkeypatch) -> None:
    """A save every read-back (one step each): a run four times as long writes the same bytes per save."""
    monkeypatch.setattr(loop, "PERSIST_EVERY_S", 0.0)
    data = load_idx_folder(mnist_dir)
    written = {}
    for subset in (128, 512):  # 4 and 16 steps
        files = SavedTexts()
        record = fit(spec(subset=subset), data=data, files=files)
        assert record.status == "completed" and not record.batch_losses  # not kept in memory either
        saves = files.texts[1:-2]  # while training: after the start, before the epoch end and the end
        assert len(saves) >= subset // 32 - 1
        assert len({len(f) for f in files.frames}) == 1  # every frame one step: the same bytes
        written[subset] = max(len(t.encode()) for t in saves) + len(files.frames[-1])
        assert [parse_record(t).steps_logged for t in files.texts[1:]][: subset // 32] == list(
            range(1, subset // 32 + 1)
        )
    # the old engine's saves grew by every loss (~19 bytes a step: 12 more steps, 200+ bytes); digits of a loss and a
    # timestamp may differ by a few
    assert abs(written[512] - written[128]) < 40, written


def test_a_resume_after_more_steps_rewinds_the_log_and_no_step_repeats(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path
) -> None:
    """Trained into epoch 2 after its epoch 1 checkpoint, then stopped: the resume goes on from step 16; the steps
    16.. that the log already had are dropped by readers, the file keeping them (append-only)."""
    expected = prepare(tiny_preset, tmp_path / "a", mnist_dir, epochs=3).run(lambda e: None)

    control = RunControl()
    seen = []

    def stop_in_epoch_2(event: Event) -> None:
        if isinstance(event, BatchLosses) and event.epoch == 2:
            seen.append(event)
            if len(seen) >= 2:
                control.stop_all.set()

    inv = prepare(tiny_preset, tmp_path / "b", mnist_dir, epochs=3)
    inv.run(stop_in_epoch_2, control)
    assert inv.folder is not None
    run_file = inv.folder / inv.files[0]
    log = run_file.with_suffix(".series")
    trained = len(read_series(log)["loss"])
    assert trained > 16 and load_checkpoint(checkpoint_path(run_file))["steps"] == 16

    tailing = SeriesReader(log)  # a watcher that read the log before the resume
    tailing.read_new()
    [record] = PresetInvocation.resume(run_file, data_dir=mnist_dir).run(lambda e: None)
    assert record.status == "completed"
    steps = raw_points(log)
    assert len(steps) == 3 * 16 + (trained - 16)  # the rewound steps are still in the file
    assert steps.index(16, 17) == trained  # the resume's first frame starts at step 16 again
    for series in (read_series(log)["loss"], (tailing.read_new(), tailing.series["loss"])[1]):
        assert series.steps.tolist() == list(range(3 * 16))  # no step twice
        assert series.values.tolist() == expected[0].batch_losses  # the losses of a run never stopped
    assert tailing.rewinds == 1
    assert read_record(run_file).batch_losses == expected[0].batch_losses


def test_a_run_file_of_the_old_engine_resumes_its_losses_moved_into_a_log(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path
) -> None:
    """Losses inline and a version 1 checkpoint (every loss in it): resumed, the checkpoint's losses go into a new
    series log, and the run ends as one never stopped."""
    expected = prepare(tiny_preset, tmp_path / "a", mnist_dir, epochs=3).run(lambda e: None)
    control = RunControl()
    inv = prepare(tiny_preset, tmp_path / "b", mnist_dir, epochs=3)
    inv.run(lambda e: control.stop_all.set() if isinstance(e, BatchLosses) and e.epoch == 2 else None, control)
    assert inv.folder is not None
    run_file = inv.folder / inv.files[0]
    old = read_record(run_file)
    assert old.status == "interrupted" and len(old.batch_losses) > 16
    # as the old engine wrote them: no series log, losses inline; the checkpoint with its 16 losses
    run_file.with_suffix(".series").unlink()
    old.series_file = old.loss_series = None
    run_file.write_text(record_text(old))
    assert "batch_losses" in json.loads(run_file.read_text())
    state = load_checkpoint(checkpoint_path(run_file))
    state["version"] = 1
    state["batch_losses"] = torch.tensor(old.batch_losses[: state.pop("steps")], dtype=torch.float64)
    torch.save(state, checkpoint_path(run_file))

    [record] = PresetInvocation.resume(run_file, data_dir=mnist_dir).run(lambda e: None)
    assert record.status == "completed"
    saved = json.loads(run_file.read_text())
    assert saved["series_file"] == run_file.with_suffix(".series").name and "batch_losses" not in saved
    assert read_series(run_file.with_suffix(".series"))["loss"].steps.tolist() == list(range(3 * 16))
    assert read_record(run_file).batch_losses == expected[0].batch_losses


@pytest.mark.subprocess
def test_worker_processes_send_their_frames_and_the_invoking_process_appends_them(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path, monkeypatch
) -> None:
    appended: list[tuple[str, int]] = []
    real = SeriesWriter.append_frame

    def append_frame(self: SeriesWriter, data: bytes) -> int:
        appended.append((self.path.name, len(data)))
        return real(self, data)

    monkeypatch.setattr(SeriesWriter, "append_frame", append_frame)  # in this (the invoking) process only
    events: list[Event] = []
    inv = prepare(tiny_preset, tmp_path / "runs", mnist_dir, jobs=2)
    assert inv.jobs == 2
    records = inv.run(events.append)
    assert inv.folder is not None
    for name, record in zip(inv.files, records):
        assert record.env.pid != os.getpid()  # trained in a worker process
        log = (inv.folder / name).with_suffix(".series")
        frames = [n for n, _ in appended if n == log.name]
        chunks = [e for e in events if isinstance(e, BatchLosses) and e.run_id == record.id]
        assert len(frames) == len(chunks) > 0  # one message a read-back, as the events
        assert read_series(log)["loss"].values.tolist() == streamed(events, record.id)
        assert record.batch_losses == streamed(events, record.id)  # the invocation's records read the log


def test_watching_an_engine_run_tails_its_log_by_offset(mnist_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "01-run.json"
    tracker = RunTracker(path)
    followed: list[Event] = []
    polls = 0

    class Watched(LocalRunFiles):
        def write(self, text: str) -> None:  # a look after each save of the run file
            nonlocal polls
            super().write(text)
            followed.extend(tracker.poll())
            polls += 1

    engine: list[Event] = []
    fit(
        spec(epochs=2, log_every=4),
        engine.append,
        data=load_idx_folder(mnist_dir),
        files=Watched(path),
        place=RunPlace(run_file=path),
    )
    log = path.with_suffix(".series")
    reader = tracker.reader.series  # type: ignore[attr-defined]
    assert polls >= 4
    assert reader.bytes_read == log.stat().st_size  # each byte of the log read once: tailed, never read again
    assert [v for e in followed if isinstance(e, BatchLosses) for v in e.losses] == streamed(
        engine, parse_record(path.read_text()).id
    )


def test_a_watcher_replays_a_run_whose_log_rewound(mnist_dir: Path, tmp_path: Path) -> None:
    """A run file whose log rewinds (its run resumed from an earlier epoch end): the watcher starts the run over and
    emits each step once, the rewound ones with their new values."""
    path = tmp_path / "01-run.json"
    files = LocalRunFiles(path)
    record = fit(spec(epochs=1, log_every=4), data=load_idx_folder(mnist_dir), files=files)
    tracker = RunTracker(path)
    first = tracker.poll()
    assert len(streamed(first, record.id)) == 16
    files.append(serieslog.frame(serieslog.encode_chunk({"loss": (range(8, 10), [7.0, 7.0])})))
    again = tracker.poll()
    assert streamed(again, record.id) == streamed(first, record.id)[:8] + [7.0, 7.0]  # from the start, once each
    files.close()
