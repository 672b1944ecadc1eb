"""The headless printer's lines: as always with one run at a time; tagged with the run's label while runs train at
once, so that their interleaved lines can be told apart."""

from __future__ import annotations

import io
import re

from tests.app.scripted import interleaved, run_events, waiting
from tuitrain.headless import HeadlessPrinter


def relu(**kw):
    return run_events(0, 3, "lr=0.01", [91.5], epochs=1, batches_done=0, finished=True, scale=1.0, **kw)


def tanh(**kw):
    return run_events(1, 3, "lr=0.1", [89.0], epochs=1, batches_done=0, finished=True, scale=1.2, **kw)


def printed(events, **kw) -> list[str]:
    out = io.StringIO()
    printer = HeadlessPrinter(out, **kw)
    for event in events:
        printer(event)
    return out.getvalue().splitlines()


def test_one_run_at_a_time_prints_untagged_lines():
    lines = printed([*relu(), *tanh()])
    assert not any(line.startswith("[") for line in lines)
    header = "=== Run 1/3: lr=0.01 — model_a/relu, adam lr 0.003, batch 32, 1 epochs, 640 train / 200 test on CPU"
    assert f"{header} (2 threads)" in lines
    assert lines[2].startswith("Train Epoch: 1 [160/640 (25%)]\tLoss: ")
    assert "Run lr=0.01: completed, best test accuracy 91.50%" in lines
    assert any(line.startswith("Test set: Average loss: ") and "[epoch 1/1 in 10s]" in line for line in lines)


def test_runs_at_once_tag_each_line_with_their_label():
    lines = printed([waiting(2, 3, "lr=1"), *interleaved(relu(), tanh())], parallel=lambda: True)
    assert lines[0] == "[lr=1] Run 3/3: waiting for a free core"
    headers = [line for line in lines if line.startswith("=== ")]
    assert [h.split(" — ")[0] for h in headers] == ["=== Run 1/3: lr=0.01", "=== Run 2/3: lr=0.1"]
    about_runs = [line for line in lines[1:] if line and not line.startswith("=== ")]
    assert about_runs and all(line.startswith(("[lr=0.01] ", "[lr=0.1] ")) for line in about_runs)
    # interleaved as the runs went, each run's lines in its own order
    tags = [line.split("] ")[0] for line in about_runs]
    assert tags[:4] == ["[lr=0.01", "[lr=0.1", "[lr=0.01", "[lr=0.1"]
    assert "[lr=0.01] Run completed, best test accuracy 91.50%" in lines
    assert "[lr=0.1] Run completed, best test accuracy 89.00%" in lines
    train = [line for line in about_runs if line.startswith("[lr=0.1] Train Epoch: 1 [")]
    assert [line.split(" [")[1].split(" ")[0] for line in train] == ["160/640", "320/640", "480/640", "640/640"]


def test_a_run_starting_while_another_runs_turns_tagging_on():
    """A watched invocation (`tuitrain watch --no-ui`): nothing says beforehand that its runs train at once."""
    lines = printed(interleaved(relu(), tanh()))
    first_train = next(i for i, line in enumerate(lines) if "Train Epoch" in line)
    second_header = next(i for i, line in enumerate(lines) if line.startswith("=== Run 2/3"))
    assert first_train > second_header  # the interleaving starts at once: every train line is tagged
    assert all(line.startswith("[") for line in lines if "Train Epoch" in line or "Test set" in line)
    assert "[lr=0.01] Run completed, best test accuracy 91.50%" in lines


def test_whether_runs_train_at_once_is_asked_when_the_first_run_starts_or_waits():
    """--jobs auto is planned again once the data is loaded: two at once for full MNIST may be one for a small set."""
    plan = {"jobs": 2}
    out = io.StringIO()
    printer = HeadlessPrinter(out, parallel=lambda: plan["jobs"] > 1)
    plan["jobs"] = 1  # planned again with the data's real size, before any run
    for event in [waiting(0, 3, "lr=0.01"), *relu(), *tanh()]:
        printer(event)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Run 1/3: lr=0.01 waiting for a free core"  # a core another tuitrain holds
    assert not any(line.startswith("[") for line in lines)


def test_a_script_run_with_dozens_of_settings_gets_a_heading_of_readable_length():
    from dataclasses import replace

    from tuitrain.core.events import RunStarted

    config = {f"setting_{i}": i for i in range(40)}
    started, *rest = relu()
    assert isinstance(started, RunStarted)
    (heading,) = [line for line in printed([replace(started, config=config, epochs_known=False)]) if line]
    assert len(heading) < 160, heading
    assert heading.startswith("=== Run 1/3: lr=0.01 — setting_0=0, setting_1=1, ")
    shown = len(re.findall(r"setting_\d+=", heading))
    assert f"… ({40 - shown} more)" in heading
