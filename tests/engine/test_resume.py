"""Resume: epoch-end checkpoints, and continuing a run or a whole invocation gives the same losses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, start_headless
from tuitrain.cli import main
from tuitrain.core.control import RunControl
from tuitrain.core.errors import RecordError, TuitrainError
from tuitrain.core.events import BatchLosses, EpochEnded
from tuitrain.presets import load_preset_file
from tuitrain.records import RunRecord, read_record, write_record
from tuitrain.session import LOCK_FILE, PLAN_FILE, PresetInvocation
from tuitrain.train.checkpoint import checkpoint_path, load_checkpoint


def stop_in_epoch(control: RunControl, epoch: int, after_chunks: int = 1):
    """A sink that sets stop_all once `after_chunks` loss chunks of `epoch` have arrived."""
    seen = {"n": 0}

    def sink(event) -> None:
        if isinstance(event, BatchLosses) and event.epoch == epoch:
            seen["n"] += 1
            if seen["n"] >= after_chunks:
                control.stop_all.set()

    return sink


def prepare(preset: Path, runs: Path, data: Path, **overrides) -> PresetInvocation:
    return PresetInvocation.prepare(load_preset_file(preset), runs_dir=runs, overrides=overrides, data_dir=data)


def test_checkpoint_written_each_epoch_and_loaded_safely(mnist_dir: Path, tiny_preset: Path, tmp_path: Path) -> None:
    inv = prepare(tiny_preset, tmp_path / "runs", mnist_dir)
    inv.run(lambda e: None)
    run_file = inv.folder / inv.files[0]
    record = read_record(run_file)
    assert record.checkpoint == checkpoint_path(run_file).name == run_file.stem + ".ckpt.pt"
    state = load_checkpoint(checkpoint_path(run_file), record.id)
    assert state["epoch"] == 2
    assert state["steps"] == len(record.batch_losses) == 32  # the step count: the losses are in the series log
    assert (inv.folder / PLAN_FILE).is_file()
    assert not list(inv.folder.glob(".*.tmp"))
    with pytest.raises(RecordError, match="not of"):
        load_checkpoint(checkpoint_path(run_file), "another-run")
    checkpoint_path(run_file).write_bytes(b"garbage")
    with pytest.raises(RecordError, match="damaged checkpoint"):
        load_checkpoint(checkpoint_path(run_file))


@pytest.mark.slow
def test_resume_run_equals_uninterrupted(mnist_dir: Path, tiny_preset: Path, tmp_path: Path) -> None:
    """Stopped in epoch 2 of 3, resumed: the same batch losses and test figures as a run never stopped."""
    whole = prepare(tiny_preset, tmp_path / "a", mnist_dir, epochs=3)
    expected = whole.run(lambda e: None)

    control = RunControl()
    inv = prepare(tiny_preset, tmp_path / "b", mnist_dir, epochs=3)
    inv.run(stop_in_epoch(control, epoch=2), control)
    run_file = inv.folder / inv.files[0]
    stopped = read_record(run_file)
    assert stopped.status == "interrupted"
    assert len(stopped.epochs) == 1
    assert len(stopped.batch_losses) > 16  # partial epoch 2 was saved too
    assert inv.not_started() == [whole.runs[1].label]

    resumed = PresetInvocation.resume(run_file, data_dir=mnist_dir)
    epochs_seen = []
    [record] = resumed.run(lambda e: epochs_seen.append(e.epoch) if isinstance(e, EpochEnded) else None)
    assert epochs_seen == [2, 3]
    assert record.status == "completed"
    saved = read_record(run_file)
    assert saved.batch_losses == expected[0].batch_losses  # exact, on the CPU
    assert [e.test_correct for e in saved.epochs] == [e.test_correct for e in expected[0].epochs]
    assert [e.test_loss for e in saved.epochs] == [e.test_loss for e in expected[0].epochs]
    assert len(saved.resumed_at) == 1 and saved.id == stopped.id


@pytest.mark.slow
def test_resume_folder_continues_and_starts_remaining(mnist_dir: Path, tiny_preset: Path, tmp_path: Path) -> None:
    whole = prepare(tiny_preset, tmp_path / "a", mnist_dir)
    expected = whole.run(lambda e: None)

    control = RunControl()
    inv = prepare(tiny_preset, tmp_path / "b", mnist_dir)
    inv.run(stop_in_epoch(control, epoch=1), control)  # before any checkpoint: restarts from scratch
    assert not (inv.folder / inv.files[1]).exists()

    code = main(["--resume", str(inv.folder), "--data-dir", str(mnist_dir)])
    assert code == 0
    for name, want in zip(inv.files, expected):
        got = read_record(inv.folder / name)
        assert got.status == "completed"
        assert got.batch_losses == want.batch_losses
    # nothing left to resume now
    with pytest.raises(TuitrainError, match="nothing to resume"):
        PresetInvocation.resume(inv.folder)
    with pytest.raises(TuitrainError, match="completed; only interrupted or crashed"):
        PresetInvocation.resume(inv.folder / inv.files[0])


@pytest.mark.slow
def test_resume_with_dropout_restores_rng(mnist_dir: Path, tmp_path: Path) -> None:
    """AlexNet uses dropout: the global RNG must come back from the checkpoint for equal losses."""
    preset = tmp_path / "alex.toml"
    preset.write_text(
        'name = "alex"\ntitle = "t"\n[defaults]\nmodel = "alexnet"\nepochs = 2\nbatch_size = 16\nsubset = 32\n'
        'test_subset = 16\nlog_every = 1\ndevice = "cpu"\n'
    )
    expected = prepare(preset, tmp_path / "a", mnist_dir).run(lambda e: None)
    control = RunControl()
    inv = prepare(preset, tmp_path / "b", mnist_dir)
    inv.run(stop_in_epoch(control, epoch=2), control)
    run_file = inv.folder / inv.files[0]
    assert read_record(run_file).status == "interrupted"
    [record] = PresetInvocation.resume(run_file, data_dir=mnist_dir).run(lambda e: None)
    assert record.batch_losses == expected[0].batch_losses


def test_resume_crashed_run_with_lagging_record(mnist_dir: Path, tiny_preset: Path, tmp_path: Path) -> None:
    """Killed after the checkpoint of epoch 2 was written but before the run file was: the checkpoint wins."""
    whole = prepare(tiny_preset, tmp_path / "a", mnist_dir)
    expected = whole.run(lambda e: None)
    run_file = whole.folder / whole.files[0]
    crashed = read_record(run_file)
    crashed.status = "running"
    crashed.env.pid = 2**22 + 12345  # no such process
    crashed.epochs = crashed.epochs[:1]
    crashed.batch_losses = crashed.batch_losses[:20]
    crashed.ended_at = None
    write_record(crashed, run_file)
    [record] = PresetInvocation.resume(run_file, data_dir=mnist_dir).run(lambda e: None)
    assert record.status == "completed"
    assert record.batch_losses == expected[0].batch_losses
    assert len(record.epochs) == 2


def crashed_now(run_file: Path) -> RunRecord:
    """The saved record made to look like its process died while it trained (running, a pid that is gone)."""
    record = read_record(run_file)
    record.status, record.ended_at = "running", None
    record.env.pid = 2**22 + 12345  # no such process
    return record


def test_resume_from_a_checkpoint_an_epoch_behind_the_run_file(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path
) -> None:
    """Killed while epoch 2's checkpoint was written in the background, after the run file had been saved with
    epoch 2: the resume continues from the checkpoint that reached the disk (epoch 1's) and ends as a run never
    stopped."""
    expected = prepare(tiny_preset, tmp_path / "a", mnist_dir, epochs=3).run(lambda e: None)

    control = RunControl()
    inv = prepare(tiny_preset, tmp_path / "b", mnist_dir, epochs=3)
    inv.run(stop_in_epoch(control, epoch=2), control)
    run_file = inv.folder / inv.files[0]
    epoch_1_checkpoint = checkpoint_path(run_file).read_bytes()
    control = RunControl()
    PresetInvocation.resume(run_file, data_dir=mnist_dir).run(stop_in_epoch(control, epoch=3), control)
    crashed = crashed_now(run_file)
    assert len(crashed.epochs) == 2 and load_checkpoint(checkpoint_path(run_file), crashed.id)["epoch"] == 2
    checkpoint_path(run_file).write_bytes(epoch_1_checkpoint)  # epoch 2's never reached the disk
    write_record(crashed, run_file)

    epochs_seen = []
    [record] = PresetInvocation.resume(run_file, data_dir=mnist_dir).run(
        lambda e: epochs_seen.append(e.epoch) if isinstance(e, EpochEnded) else None
    )
    assert epochs_seen == [2, 3]
    saved = read_record(run_file)
    assert saved.status == record.status == "completed"
    assert [e.epoch for e in saved.epochs] == [1, 2, 3]
    assert saved.batch_losses == expected[0].batch_losses  # exact, on the CPU
    assert [e.test_correct for e in saved.epochs] == [e.test_correct for e in expected[0].epochs]
    assert load_checkpoint(checkpoint_path(run_file), saved.id)["epoch"] == 3


def test_resume_before_the_first_checkpoint_reached_the_disk_starts_over(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path
) -> None:
    """Killed while the first checkpoint was written, after the run file had been saved with epoch 1: the run file
    names no checkpoint yet, so nothing checkpointed is lost and the run starts over (no --restart-missing)."""
    expected = prepare(tiny_preset, tmp_path / "a", mnist_dir).run(lambda e: None)
    control = RunControl()
    inv = prepare(tiny_preset, tmp_path / "b", mnist_dir)
    inv.run(stop_in_epoch(control, epoch=2), control)
    run_file = inv.folder / inv.files[0]
    crashed = crashed_now(run_file)
    assert len(crashed.epochs) == 1 and crashed.checkpoint == checkpoint_path(run_file).name
    crashed.checkpoint = None
    checkpoint_path(run_file).unlink()
    write_record(crashed, run_file)

    resumed = PresetInvocation.resume(run_file, data_dir=mnist_dir)
    assert resumed.resuming[0][1] is None and resumed.restarting == []
    [record] = resumed.run(lambda e: None)
    assert record.status == "completed" and record.restarts == []
    assert read_record(run_file).batch_losses == expected[0].batch_losses


def test_resume_refuses_running_and_bad_targets(mnist_dir: Path, tiny_preset: Path, tmp_path: Path, capsys) -> None:
    inv = prepare(tiny_preset, tmp_path / "runs", mnist_dir)
    inv.run(lambda e: None)
    run_file = inv.folder / inv.files[0]
    live = read_record(run_file)
    live.status = "running"  # written by this (live) process
    write_record(live, run_file)
    with pytest.raises(TuitrainError, match="still running"):
        PresetInvocation.resume(run_file)
    assert main(["--resume", str(tmp_path / "nope.json")]) == 2
    assert "no such run file or folder" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path)]) == 2
    assert "not an invocation folder" in capsys.readouterr().err
    assert main(["--resume", str(run_file), "--epochs", "5"]) == 2
    assert "saved settings" in capsys.readouterr().err
    # an interrupted run whose checkpoint vanished cannot continue from its epoch
    live.status = "interrupted"
    write_record(live, run_file)
    checkpoint_path(run_file).unlink()
    with pytest.raises(RecordError, match="checkpoint missing"):
        PresetInvocation.resume(run_file)


def test_weights_only_load_refuses_arbitrary_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt.pt"
    torch.save({"version": 1, "payload": object.__new__(RunControl)}, path)
    with pytest.raises(RecordError, match="damaged checkpoint"):
        load_checkpoint(path)


def resume_process(folder: Path, mnist_dir: Path, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TUITRAIN_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.Popen(
        [sys.executable, "-m", "tuitrain", "--resume", str(folder), "--data-dir", str(mnist_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_until(condition, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def lock_holder(folder: Path) -> str:
    try:
        return (folder / LOCK_FILE).read_text()
    except OSError:
        return ""


def test_two_resumes_of_one_folder_train_it_once(mnist_dir: Path, tiny_preset: Path, tmp_path: Path) -> None:
    """Started together, both would see "not running" in the run files: the folder lock lets only one in."""
    control = RunControl()
    inv = prepare(tiny_preset, tmp_path / "runs", mnist_dir, epochs=60)
    inv.run(stop_in_epoch(control, epoch=1), control)
    folder = inv.folder
    first, second = resume_process(folder, mnist_dir, tmp_path), resume_process(folder, mnist_dir, tmp_path)
    try:
        wait_until(lambda: first.poll() is not None or second.poll() is not None, "one resume to give way")
        loser, winner = (first, second) if first.poll() is not None else (second, first)
        err = loser.stderr.read()
        assert loser.returncode == 2
        assert err == (
            f"tuitrain: error: {folder}: another tuitrain (pid {winner.pid} on {socket.gethostname()}) is "
            "training or resuming these runs; wait for it to end or stop it.\n"
        )
        assert winner.poll() is None  # still training
        wait_until(lambda: lock_holder(folder).startswith(f"pid {winner.pid} "), "the winner's pid in the lock file")
        with pytest.raises(TuitrainError, match=f"another tuitrain \\(pid {winner.pid} "):
            PresetInvocation.resume(folder)
        wait_until(lambda: len(read_record(folder / inv.files[0]).resumed_at) == 1, "the winner to resume the run")
        winner.send_signal(signal.SIGTERM)
        assert winner.wait(timeout=120) == 143
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
    record = read_record(folder / inv.files[0])
    assert record.status == "interrupted" and len(record.resumed_at) == 1  # resumed once, by one process


def test_a_training_preset_holds_its_folder(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = tmp_path / "runs"
    proc = start_headless(tiny_preset, mnist_dir, runs, tmp_path, "--epochs", "200")
    try:
        wait_until(
            lambda: runs.is_dir() and any(lock_holder(f).startswith(f"pid {proc.pid} ") for f in runs.iterdir()),
            "the training process's lock",
        )
        [folder] = list(runs.iterdir())
        wait_until(lambda: (folder / PLAN_FILE).is_file(), "the plan")
        assert main(["--resume", str(folder), "--data-dir", str(mnist_dir)]) == 2
        assert f"another tuitrain (pid {proc.pid} on" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_restart_missing_trains_an_unresumable_run_again_and_the_others_go_on(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path, capsys: pytest.CaptureFixture, damage: str
) -> None:
    control = RunControl()
    inv = prepare(tiny_preset, tmp_path / "runs", mnist_dir, epochs=3)
    inv.run(stop_in_epoch(control, epoch=2), control)  # run 1 has epoch 1 and its checkpoint; run 2 never started
    run_file = inv.folder / inv.files[0]
    ckpt = checkpoint_path(run_file)
    if damage == "missing":
        ckpt.unlink()
    else:
        ckpt.write_bytes(ckpt.read_bytes()[:100])
    assert main(["--resume", str(inv.folder), "--data-dir", str(mnist_dir)]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "or add --restart-missing: activation=relu is then trained again from epoch 1" in err
        and "the other runs go on." in err
    )
    assert not (inv.folder / inv.files[1]).exists()  # nothing started

    assert main(["--resume", str(inv.folder), "--data-dir", str(mnist_dir), "--restart-missing"]) == 0
    out = capsys.readouterr().out
    assert "0 run(s) to continue, 1 to start, 0 already ended, 1 to train again from epoch 1" in out
    restarted, other = (read_record(inv.folder / name) for name in inv.files)
    assert (restarted.status, other.status) == ("completed", "completed")
    assert [e.epoch for e in restarted.epochs] == [1, 2, 3]
    [restart] = restarted.restarts
    assert restart.epochs_discarded == 1 and ("checkpoint missing" in restart.reason or "damaged" in restart.reason)
    assert len(restarted.batch_losses) == len(other.batch_losses)  # the discarded epoch's losses are gone
    assert main(["--restart-missing"]) == 2
    assert "--restart-missing goes with --resume" in capsys.readouterr().err
