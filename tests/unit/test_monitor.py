"""SweepMonitor and downsampling: the state the run screen draws from, fed by engine events."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np

from tuitrain.core.events import (
    BatchLosses,
    EpochEnded,
    LogMessage,
    RunFinished,
    RunStarted,
    RunWaiting,
)
from tuitrain.core.spec import RunSpec
from tuitrain.monitor import SweepMonitor, downsample, ema_alpha


def started(run_id="r1", index=0, batches=10, epochs=2):
    return RunStarted(
        run_id=run_id,
        label=f"run {run_id}",
        run_index=index,
        run_count=2,
        spec=RunSpec(epochs=epochs),
        device="CPU (2 threads)",
        train_size=batches * 64,
        test_size=100,
        batches_per_epoch=batches,
        start_epoch=1,
    )


def losses(run_id, epoch, first_step, values, batch, elapsed=1.0):
    return BatchLosses(
        run_id=run_id,
        epoch=epoch,
        first_step=first_step,
        losses=tuple(values),
        batch=batch,
        batches_per_epoch=10,
        samples_done=batch * 64,
        train_size=640,
        samples_per_s=640.0,
        elapsed_s=elapsed,
    )


def epoch_end(run_id, epoch, acc):
    return EpochEnded(
        run_id=run_id,
        label=f"run {run_id}",
        run_index=0,
        epoch=epoch,
        initial_loss=2.0,
        final_loss=1.0,
        mean_loss=1.5,
        test_loss=1.1,
        test_accuracy=acc,
        test_correct=int(acc),
        test_total=100,
        duration_s=1.0,
        samples_per_s=640.0,
        epochs=2,
    )


def test_monitor_follows_a_run_through_its_events():
    m = SweepMonitor()
    m.apply(LogMessage("Data: MNIST from somewhere"))
    assert m.last_log == "Data: MNIST from somewhere" and m.current is None
    m.apply(started())
    m.apply(losses("r1", 1, 0, [2.0, 1.0, 3.0, 2.0, 2.0], batch=5, elapsed=1.0))
    run = m.current
    assert run.losses == [2.0, 1.0, 3.0, 2.0, 2.0]
    assert list(run.steps()) == [0, 1, 2, 3, 4]
    assert run.smoothed[0] == 2.0 and len(run.smoothed) == 5
    a = ema_alpha(10)
    assert run.smoothed[1] == 2.0 + a * (1.0 - 2.0)
    assert (run.epoch, run.batch, run.steps_done, run.steps_total) == (1, 5, 5, 20)
    assert run.eta_s == 1.0 / 5 * 15  # rate so far times the steps left
    m.apply(losses("r1", 1, 5, [1.0] * 5, batch=10))
    m.apply(epoch_end("r1", 1, 80.0))
    assert [e.test_accuracy for e in run.epochs] == [80.0]
    m.apply(RunFinished(run_id="r1", label="run r1", run_index=0, status="interrupted", best_accuracy=80.0))
    assert run.status == "interrupted" and run.eta_s is None and m.finished == [run]
    m.apply(started("r2", index=1))
    assert m.current.run_id == "r2" and list(m.runs) == ["r1", "r2"]
    assert m.apply(losses("unknown", 1, 0, [1.0], batch=1)) is None


def test_non_finite_loss_is_shown_not_smeared_into_the_ema():
    m = SweepMonitor()
    m.apply(started())
    m.apply(losses("r1", 1, 0, [2.0, float("nan"), 1.0], batch=3))
    s = m.current.smoothed
    assert s[0] == 2.0 and s[1] != s[1] and s[2] == 1.0


def test_ema_alpha_scales_with_epoch_length_within_bounds():
    assert ema_alpha(1) == 0.3 and ema_alpha(100000) == 0.02
    assert ema_alpha(32) > ema_alpha(938)


def test_downsample_keeps_each_columns_lowest_and_highest_and_the_first_and_last_points():
    x = np.arange(10)
    y = np.array([5.0, 1.0, 3.0, 9.0, 2.0, 4.0, 0.0, 8.0, 6.0, 7.0])
    xs, ys = downsample(x, y, 4)  # 2 columns of x: [0, 4.5) and [4.5, 9]
    assert xs == [0.0, 1.0, 3.0, 6.0, 7.0, 9.0] and ys == [5.0, 1.0, 9.0, 0.0, 8.0, 7.0]
    assert downsample(x, y, 20) == (list(map(float, x)), list(map(float, y)))
    big_x, big_y = downsample(np.arange(10_001), np.ones(10_001), 150)
    assert len(big_x) <= 152 and big_x[0] == 0 and big_x[-1] == 10_000 and set(big_y) == {1.0}


def test_downsample_keeps_a_single_spike_among_a_million_points():
    rng = np.random.default_rng(0)
    y = 1.0 + 0.01 * rng.standard_normal(1_000_000)
    y[777_777] = 50.0  # one bad batch
    y[123_456] = -3.0
    xs, ys = downsample(np.arange(len(y)), y, 160)
    assert 50.0 in ys and xs[ys.index(50.0)] == 777_777
    assert -3.0 in ys
    assert len(xs) <= 162 and xs[0] == 0 and xs[-1] == 999_999


def test_downsample_leaves_nan_out():
    xs, ys = downsample(np.arange(100), np.r_[np.ones(50), np.full(50, np.nan)], 10)
    assert not any(math.isnan(v) for v in ys) and xs[-1] == 49


def finished(run_id, index=0):
    return RunFinished(run_id=run_id, label=f"run {run_id}", run_index=index, status="completed")


def test_runs_at_once_keep_the_highlight_until_it_ends_then_it_moves_to_a_live_run():
    m = SweepMonitor()
    m.apply(RunWaiting(run_id="r3", label="run r3", run_index=2, run_count=3, reason="waiting for a free core"))
    for run_id, index in (("r1", 0), ("r2", 1)):
        m.apply(started(run_id, index))
    assert m.current.run_id == "r1"  # a run starting beside the highlighted one leaves the highlight
    assert [r.run_id for r in m.live] == ["r1", "r2"] and [w.run_id for w in m.queued] == ["r3"]
    m.apply(losses("r2", 1, 0, [2.0], batch=1))
    m.apply(losses("r1", 1, 0, [1.0], batch=1))
    assert m.runs["r1"].losses == [1.0] and m.runs["r2"].losses == [2.0]
    assert m.highlight_next().run_id == "r2" and m.highlight_next().run_id == "r1"
    assert m.highlight_next(-1).run_id == "r2"
    m.apply(finished("r2", 1))
    assert m.current.run_id == "r1" and [r.run_id for r in m.live] == ["r1"]
    m.apply(started("r3", 2))
    assert not m.waiting and m.current.run_id == "r1"
    m.apply(finished("r1", 0))
    assert m.current.run_id == "r3"
    m.apply(finished("r3", 2))
    assert m.current.run_id == "r3" and not m.live  # the last one stays shown
    assert m.highlight_next().run_id == "r3"


def test_a_waiting_run_stopped_before_it_started_is_no_longer_waiting():
    m = SweepMonitor()
    m.apply(RunWaiting(run_id="r2", label="run r2", run_index=1, run_count=2, reason="waiting for a worker"))
    assert m.apply(RunFinished(run_id="r2", label="run r2", run_index=1, status="interrupted")) is None
    assert not m.waiting and not m.runs


def test_a_cpu_run_names_the_threads_it_trains_with_now():
    monitor = SweepMonitor()
    monitor.apply(started("r1"))
    run = monitor.runs["r1"]
    monitor.apply(losses("r1", 1, 0, [2.3], 1))  # 0: not said (a watcher)
    assert run.device == "CPU (2 threads)"
    monitor.apply(dataclasses.replace(losses("r1", 1, 1, [2.2], 2), threads=1))  # another run took a core
    assert run.device == "CPU (1 thread)"
    monitor.apply(dataclasses.replace(losses("r1", 1, 2, [2.1], 3), threads=2))
    assert run.device == "CPU (2 threads)"


def test_labels_and_log_lines_are_kept_as_the_cli_prints_them():
    """Control characters shown escaped on the run screen too (they came from files anyone can write)."""
    m = SweepMonitor()
    m.apply(dataclasses.replace(started(), label="evil\x1b[31mRED\nsecond"))
    m.apply(RunWaiting(run_id="r2", label="w\x07", run_index=1, run_count=2, reason="waiting for a worker"))
    m.apply(LogMessage("Data: MNIST from /tmp/\x1b[2J"))
    assert m.current.label == "evil\\x1b[31mRED\\nsecond"
    assert m.queued[0].label == "w\\x07"
    assert m.last_log == "Data: MNIST from /tmp/\\x1b[2J"


def test_a_script_run_of_unknown_length_shows_only_what_its_record_says(tmp_path):
    """A script run that gave neither epochs= nor batches_per_epoch=, with epochs of uneven numbers of logged
    points (as Lightning's are): no 'Epoch k/N' with k > N, no batch count of the default spec (938), no ETA, no
    train size in the heading, and each epoch's points where the script closed it."""
    from tuitrain import script
    from tuitrain.follow import RunTracker
    from tuitrain.headless import HeadlessPrinter
    from tuitrain.tui.widgets.progress import ProgressPanel

    run = script.init(label="uneven", runs_dir=tmp_path)
    tracker = RunTracker(run.path)
    monitor = SweepMonitor()
    events = []
    shown = []
    for epoch, points in enumerate((5, 3, 4), start=1):
        for i in range(points):
            run.log({"loss": 1.0 / (epoch + i)})
        run.log_epoch(val_loss=0.5 / epoch)
        for event in tracker.poll():
            events.append(event)
            state = monitor.apply(event)
            if state is not None:
                shown.append((state.epoch, ProgressPanel.run_details(state, paused=False).plain))
    run.finish()
    for event in tracker.poll():
        events.append(event)
        monitor.apply(event)
    state = monitor.runs[run.id]
    shown.append((state.epoch, ProgressPanel.run_details(state, paused=False).plain))
    assert shown
    for epoch, text in shown:
        assert f"Epoch {epoch}  " in text  # epochs= not given: no '/N'
        assert "938" not in text
        assert "ETA –" in text
    assert state.eta_s is None
    per_epoch = [sum(len(e.losses) for e in events if isinstance(e, BatchLosses) and e.epoch == k) for k in (1, 2, 3)]
    assert per_epoch == [5, 3, 4]
    assert [e.epoch for e in events if isinstance(e, EpochEnded)] == [1, 2, 3]
    printer = HeadlessPrinter(io.StringIO(), watching=True)
    for event in events:
        printer(event)
    lines = printer.out.getvalue().splitlines()
    assert not any(" train / " in line or "938" in line for line in lines)


def test_a_run_without_a_known_batch_size_shows_its_steps_per_second():
    """A script or a TensorBoard log that does not say its batch size: its throughput is in steps, not samples made
    up from a default batch size; the run screen's lines say so."""
    from tuitrain.tui.widgets.progress import ProgressPanel, run_line

    monitor = SweepMonitor()
    monitor.apply(dataclasses.replace(started(), device="", batches_per_epoch=0, epochs_known=False))
    monitor.apply(dataclasses.replace(losses("r1", 1, 0, [1.0, 0.9], 2), samples_per_s=12.5, batch_size_known=False))
    run = monitor.runs["r1"]
    assert run.speed_text == "12.5 steps/s"
    line = run_line(run, 8, paused=False, highlighted=True).plain
    assert "12.5 steps/s" in line and "samples/s" not in line
    details = ProgressPanel.run_details(run, paused=False).plain
    assert "12.5 steps/s" in details and "Device" not in details and "ETA –" in details
    monitor.apply(losses("r1", 1, 2, [0.8], 3))
    assert run.speed_text == "640 samples/s"


def test_a_log_without_epochs_shows_its_steps_not_an_epoch():
    from tuitrain.tui.widgets.progress import ProgressPanel, run_line

    monitor = SweepMonitor()
    monitor.apply(dataclasses.replace(started(), has_epochs=False, batches_per_epoch=0, epochs_known=False))
    monitor.apply(dataclasses.replace(losses("r1", 1, 0, [1.0], 1200), batch_size_known=False))
    run = monitor.runs["r1"]
    assert "Step 1,200" in run_line(run, 8, paused=False, highlighted=False).plain
    progress = ProgressPanel.run_details(run, paused=False).plain.splitlines()[1]
    assert progress.startswith("Step 1,200  ") and "Epoch" not in progress and "batch" not in progress


def test_a_script_run_that_logs_every_few_steps_has_its_losses_at_their_steps(tmp_path):
    """A framework logs every n steps (Hugging Face's default: its global steps 4, 8, 12, …): the loss chart puts
    each point at the step it was logged at, not at its index; an engine run (one loss per step) keeps 0, 1, 2, …"""
    from tuitrain import script
    from tuitrain.follow import RunTracker

    run = script.init(label="every 4", runs_dir=tmp_path)
    tracker = RunTracker(run.path)
    monitor = SweepMonitor()
    for step in range(4, 44, 4):
        run.log({"train/loss": 1.0 / step}, step=step)
        if step == 20:
            for event in tracker.poll():  # the chart is drawn while the run logs, too
                monitor.apply(event)
    run.finish()
    for event in tracker.poll():
        monitor.apply(event)
    steps, values = monitor.runs[run.id].step_series("loss", smoothed=False)
    assert steps.tolist() == list(range(4, 44, 4))
    assert values.tolist() == [1.0 / s for s in range(4, 44, 4)]

    engine = SweepMonitor()
    engine.apply(started())
    engine.apply(losses("r1", 1, 0, [1.0, 0.9, 0.8], batch=3))
    engine.apply(losses("r1", 1, 3, [0.7], batch=4))
    assert engine.runs["r1"].step_series("loss", smoothed=False)[0].tolist() == [0, 1, 2, 3]
