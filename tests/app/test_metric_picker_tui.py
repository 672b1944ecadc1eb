"""The run screen's metric picker, log scale and step range, over a watched wandb-style run with several series
and no accuracy."""

from __future__ import annotations

import math

import pytest
from textual.widgets import OptionList

from tests.helpers import wait_for
from tuitrain import script
from tuitrain.tui.app import TuitrainApp
from tuitrain.tui.screens.dialogs import MetricPicker
from tuitrain.tui.screens.run import RunScreen
from tuitrain.tui.widgets import charts
from tuitrain.tui.widgets.charts import AccuracyChart, LossChart


@pytest.fixture
def regression_run(tmp_path, monkeypatch):
    monkeypatch.setattr(script, "current", None)
    monkeypatch.setattr(script, "READ_BACK_EVERY_S", math.inf)
    monkeypatch.setattr(script, "PERSIST_EVERY_S", math.inf)
    run = script.init(project="regression", name="mlp", dir=tmp_path / "runs")
    step = 0
    for epoch in range(3):
        for _ in range(200):
            spike = 40.0 if step == 333 else 0.0  # one bad batch: the picker's chart must keep it
            run.log({"train/loss": 1.0 / (step + 1) + spike, "lr": 0.1 * 0.99**step, "grad_norm": 2.0}, step=step)
            step += 1
        run.log_epoch(val_loss=0.5 - epoch / 10, r2=0.5 + epoch / 10)
    run.finish()
    return run.path


async def test_the_picker_draws_any_series_with_log_scale_and_step_range(regression_run):
    app = TuitrainApp(runs_dir=regression_run.parent.parent, watch=regression_run)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.done, "the watched run")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        assert screen.monitor.step_metrics() == ["loss", "lr", "grad_norm"]
        assert screen.monitor.epoch_metrics() == ["val_loss", "r2"]  # no accuracy: its figures instead
        epoch_chart = screen.query_one(AccuracyChart)
        await wait_for(pilot, lambda: epoch_chart.border_title == "val_loss per epoch", "the first epoch figure")

        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, MetricPicker), "the picker")
        # the training loss is listed under the name the script logged it as, too
        options = app.screen.query_one(OptionList)
        assert str(options.get_option_at_index(0).prompt) == "per step   loss (train/loss)"
        await pilot.press("down", "enter")  # the second per-step series: lr
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), "back on the run screen")
        chart = screen.query_one(LossChart)
        assert screen.step_metric == "lr" and chart.border_title == "lr"
        await pilot.press("l", "z")
        assert chart.border_title == "lr (log, last 50%)"

        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, MetricPicker), "the picker")
        await pilot.press("end", "enter")  # the last entry: r2 per epoch
        await wait_for(pilot, lambda: screen.epoch_metric == "r2", "r2 picked")
        assert epoch_chart.border_title == "r2 per epoch"


async def test_the_loss_chart_keeps_a_single_spike(regression_run, monkeypatch):
    given = []
    draw_loss = charts.draw_loss
    monkeypatch.setattr(
        charts, "draw_loss", lambda plt, series, **kw: (given.append(series), draw_loss(plt, series, **kw))
    )
    app = TuitrainApp(runs_dir=regression_run.parent.parent, watch=regression_run)
    async with app.run_test(size=(60, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.done, "the watched run")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        screen.smooth = False
        given.clear()
        screen.draw_loss_chart()
        # what plotext was given: fewer points than the 600 steps, the spike at step 333 among them
        ((xs, ys, _),) = given[-1]
        assert len(xs) < 600 and 333 in xs and max(ys) > 40.0 and xs[0] == 0 and xs[-1] == 599


async def test_the_compare_screen_picks_a_metric_and_ranks_by_it(tmp_path, monkeypatch):
    from tuitrain.compare import Comparison
    from tuitrain.tui.compare_app import CompareApp
    from tuitrain.tui.screens.compare import CompareScreen

    monkeypatch.setattr(script, "current", None)
    monkeypatch.setattr(script, "READ_BACK_EVERY_S", math.inf)
    monkeypatch.setattr(script, "PERSIST_EVERY_S", math.inf)
    paths = []
    for lr, vals in ((0.1, [0.9, 0.6]), (0.01, [0.8, 0.3])):
        run = script.init(project="reg", name=f"lr={lr}", config={"lr": lr}, dir=tmp_path / "runs")
        for step in range(100):
            run.log({"train/loss": 1.0 / (step + 1), "lr": lr, "grad_norm": 1.0 + step % 7}, step=step)
            if step % 50 == 49:
                run.log_epoch(val_loss=vals[step // 50], r2=1 - vals[step // 50])
        run.finish()
        paths.append(run.path)
    app = CompareApp(Comparison.from_paths(paths))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.comparison, "the runs")
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        upper = screen.query_one("#compare-loss")
        lower = screen.query_one("#compare-acc")
        assert str(lower.border_title).startswith("val_loss per epoch (lower is better)")
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, MetricPicker), "the picker")
        assert str(app.screen.query_one(OptionList).get_option_at_index(0).prompt) == "per step   loss (train/loss)"
        await pilot.press("down", "down", "enter")  # loss, lr, grad_norm
        await wait_for(pilot, lambda: screen.step_metric == "grad_norm", "grad_norm picked")
        assert str(upper.border_title).startswith("grad_norm (as logged")
        await pilot.press("z")
        assert "last 50%" in str(upper.border_title)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, MetricPicker), "the picker")
        await pilot.press("end", "enter")  # r2 per epoch: the lower chart and the ranking
        await wait_for(pilot, lambda: screen.epoch_metric == "r2", "r2 picked")
        assert str(lower.border_title).startswith("r2 per epoch")
        assert screen.shown().ranking_metric() == "r2"
