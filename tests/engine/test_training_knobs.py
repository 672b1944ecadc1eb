"""Optimiser and schedule knobs, the validation split and the training accuracy: the lr per epoch against torch's own
schedulers, a fit's record of them, best-epoch selection, resume mid-schedule, fusing, and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tuitrain.cli import main
from tuitrain.core.control import RunControl
from tuitrain.core.events import BatchLosses, EpochEnded
from tuitrain.core.spec import RunSpec
from tuitrain.presets import load_preset_file
from tuitrain.records import EnvInfo, EpochRecord, RunRecord, parse_record, read_record, record_text
from tuitrain.session import PresetInvocation
from tuitrain.train import loop
from tuitrain.train.cuda_step import EagerStep
from tuitrain.train.data import load_idx_folder
from tuitrain.train.device import TensorData, prepare_model
from tuitrain.train.loop import fit
from tuitrain.train.optim import make_optimizer, set_lr
from tuitrain.train.stacked import fusable, fusion_key


def torch_lrs(spec: RunSpec) -> list[float]:
    """The lr of each epoch as torch's schedulers give it, stepped once per epoch."""
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=spec.lr)
    main_scheduler: torch.optim.lr_scheduler.LRScheduler
    after = spec.epochs - spec.warmup_epochs
    if spec.lr_schedule == "cosine":
        main_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=after)
    elif spec.lr_schedule == "step" and isinstance(spec.lr_step_epochs, int):
        main_scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=spec.lr_step_epochs, gamma=spec.lr_gamma)
    elif spec.lr_schedule == "step":
        assert isinstance(spec.lr_step_epochs, list)
        main_scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, spec.lr_step_epochs, gamma=spec.lr_gamma)
    else:
        main_scheduler = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    scheduler: torch.optim.lr_scheduler.LRScheduler = main_scheduler
    if spec.warmup_epochs:
        w = spec.warmup_epochs
        warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / (w + 1), end_factor=1.0, total_iters=w)
        scheduler = torch.optim.lr_scheduler.SequentialLR(opt, [warm, main_scheduler], milestones=[w])
    lrs = []
    for _ in range(spec.epochs):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"lr_schedule": "step", "lr_step_epochs": 3, "lr_gamma": 0.5},
        {"lr_schedule": "step", "lr_step_epochs": [2, 5, 7], "lr_gamma": 0.1},
        {"lr_schedule": "cosine"},
        {"lr_schedule": "cosine", "warmup_epochs": 3},
        {"lr_schedule": "step", "lr_step_epochs": 2, "warmup_epochs": 2},
        {"warmup_epochs": 4},
    ],
)
def test_lr_per_epoch_is_torchs_schedule(settings: dict) -> None:
    spec = RunSpec(lr=0.1, epochs=10, **settings)
    ours = [spec.lr_at(e) for e in range(1, spec.epochs + 1)]
    assert ours == pytest.approx(torch_lrs(spec), rel=1e-9, abs=1e-12)


def test_warmup_is_linear_up_to_the_peak() -> None:
    spec = RunSpec(lr=0.4, epochs=6, warmup_epochs=3, lr_schedule="cosine")
    assert [spec.lr_at(e) for e in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.3])
    assert spec.lr_at(4) == pytest.approx(0.4)  # the schedule starts at the peak
    assert spec.lr_at(6) == pytest.approx(0.4 * (1 + torch.cos(torch.tensor(torch.pi * 2 / 3)).item()) / 2)


def test_make_optimizer_follows_the_spec() -> None:
    params = [nn.Parameter(torch.zeros(3))]
    sgd = make_optimizer(RunSpec(optimizer="sgd", momentum=0.8, nesterov=True, weight_decay=5e-4), params)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.8, True, 5e-4)
    adamw = make_optimizer(RunSpec(optimizer="adamw", weight_decay=0.05), params)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["weight_decay"] == 0.05
    adam = make_optimizer(RunSpec(), params)
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["weight_decay"] == 0.0
    today = make_optimizer(RunSpec(optimizer="sgd"), params).param_groups[0]  # the old defaults
    assert (today["momentum"], today["nesterov"], today["weight_decay"]) == (0.9, False, 0.0)
    set_lr(sgd, 0.25, on_device=False)
    assert sgd.param_groups[0]["lr"] == 0.25


def test_training_accuracy_counter_equals_a_recount() -> None:
    """The step's on-device count of correct training predictions is what a recount before each step finds."""
    torch.manual_seed(0)
    spec = RunSpec(model="model_a", optimizer="sgd", lr=0.05)
    model = prepare_model(spec, torch.device("cpu")).train()  # Model A: no dropout, no batch norm
    opt = make_optimizer(spec, model.parameters())
    x, y = torch.randn(100, 1, 28, 28), torch.randint(0, 10, (100,))
    correct = torch.zeros((), dtype=torch.long)
    step = EagerStep(model, opt, nn.CrossEntropyLoss(), x, y, correct=correct)
    recount = 0
    for idx in torch.randperm(100, generator=torch.Generator().manual_seed(1)).split(16):
        with torch.no_grad():
            recount += int((model(x[idx]).argmax(1) == y[idx]).sum())
        step(idx)
    assert int(correct) == recount > 0


def _spy_set_lr(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    seen: list[float] = []

    def spy(optimizer, lr, *, on_device):
        set_lr(optimizer, lr, on_device=on_device)
        seen.append(optimizer.param_groups[0]["lr"])

    monkeypatch.setattr(loop, "set_lr", spy)
    return seen


def test_fit_trains_and_records_the_schedule_split_and_accuracies(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = RunSpec(
        model="model_a",
        optimizer="sgd",
        momentum=0.9,
        nesterov=True,
        weight_decay=1e-4,
        lr=0.05,
        lr_schedule="cosine",
        warmup_epochs=1,
        epochs=3,
        batch_size=32,
        subset=512,
        val_split=112,
        device="cpu",
    )
    seen = _spy_set_lr(monkeypatch)
    events: list[EpochEnded] = []
    record = fit(
        spec, lambda e: events.append(e) if isinstance(e, EpochEnded) else None, data=load_idx_folder(mnist_dir)
    )
    assert record.status == "completed"
    want = [spec.lr_at(e) for e in (1, 2, 3)]
    assert [e.lr for e in record.epochs] == want and [e.lr for e in events] == want
    assert seen[-3:] == want  # what the optimizer trained each epoch with
    assert want[0] < want[1] > want[2] > 0
    # 512 synthetic training images: the last 112 validate, 400 train
    assert record.train_size == 400 == spec.train_size() and record.test_size == 128
    assert all(e.val_total == 112 and e.val_loss is not None for e in record.epochs)
    assert all(e.val_accuracy == pytest.approx(100 * (e.val_correct or 0) / 112) for e in record.epochs)
    assert all(e.train_accuracy is not None and 0 <= e.train_accuracy <= 100 for e in record.epochs)
    assert record.epochs[-1].train_accuracy > 50  # the synthetic digits are easy
    assert record.best_epoch_chosen_on == "validation"
    best = max(record.epochs, key=lambda e: e.val_accuracy or 0)
    assert record.best_epoch is best and record.best_accuracy == best.test_accuracy
    again = parse_record(record_text(record))
    assert again.epochs == record.epochs and again.best_epoch_chosen_on == "validation"


def _epoch(n: int, test: float, val: float | None) -> EpochRecord:
    return EpochRecord(
        epoch=n,
        initial_loss=1.0,
        final_loss=1.0,
        mean_loss=1.0,
        test_loss=1.0,
        test_accuracy=test,
        test_correct=int(test),
        test_total=100,
        duration_s=1.0,
        samples_per_s=1.0,
        val_accuracy=val,
        val_correct=None if val is None else int(val),
        val_total=None if val is None else 100,
    )


def test_best_epoch_is_chosen_on_validation_when_there_is_a_split() -> None:
    env = EnvInfo(device="CPU", torch_version="x", threads=1)
    with_split = RunRecord(
        id="a", label="a", spec=RunSpec(val_split=100), env=env,
        epochs=[_epoch(1, 90, 80), _epoch(2, 91, 85), _epoch(3, 93, 84), _epoch(4, 92, 85)],
    )  # fmt: skip
    assert with_split.best_epoch_chosen_on == "validation"
    assert with_split.best_epoch is not None and with_split.best_epoch.epoch == 2  # first of equal bests
    assert with_split.best_accuracy == 91  # its test accuracy, not the best test accuracy (93)
    without = RunRecord(id="b", label="b", spec=RunSpec(), env=env, epochs=[_epoch(1, 90, None), _epoch(2, 93, None)])
    assert without.best_epoch_chosen_on == "test" and without.best_accuracy == 93
    assert '"best_epoch_chosen_on": "test"' in record_text(without)
    assert RunRecord(id="c", label="c", spec=RunSpec(), env=env).best_epoch_chosen_on is None


KNOBS_PRESET = """
name = "knobs"
title = "SGD, cosine, warm-up"

[defaults]
model = "model_a"
optimizer = "sgd"
momentum = 0.9
lr = 0.05
lr_schedule = "cosine"
warmup_epochs = 1
epochs = 3
batch_size = 32
log_every = 4
device = "cpu"
val_split = 64
"""


def test_resume_mid_schedule_continues_the_schedule(mnist_dir: Path, tmp_path: Path) -> None:
    """Stopped in epoch 2 of a warm-up + cosine run, resumed: the lrs and losses of a run never stopped."""
    path = tmp_path / "knobs.toml"
    path.write_text(KNOBS_PRESET)

    def prepare(runs: Path) -> PresetInvocation:
        return PresetInvocation.prepare(load_preset_file(path), runs_dir=runs, overrides={}, data_dir=mnist_dir)

    [expected] = prepare(tmp_path / "a").run(lambda e: None)
    control = RunControl()
    inv = prepare(tmp_path / "b")
    seen = {"n": 0}

    def stop_in_epoch_2(event) -> None:
        if isinstance(event, BatchLosses) and event.epoch == 2:
            seen["n"] += 1
            control.stop_all.set()

    inv.run(stop_in_epoch_2, control)
    run_file = inv.folder / inv.files[0]
    assert read_record(run_file).status == "interrupted" and len(read_record(run_file).epochs) == 1
    [record] = PresetInvocation.resume(run_file, data_dir=mnist_dir).run(lambda e: None)
    assert record.status == "completed"
    saved = read_record(run_file)
    assert (
        [e.lr for e in saved.epochs] == [e.lr for e in expected.epochs] == [expected.spec.lr_at(e) for e in (1, 2, 3)]
    )
    assert saved.batch_losses == expected.batch_losses  # exact on the CPU: the same lr each epoch
    assert [e.val_correct for e in saved.epochs] == [e.val_correct for e in expected.epochs]
    assert [e.train_accuracy for e in saved.epochs] == [e.train_accuracy for e in expected.epochs]


@pytest.mark.parametrize(
    "knob",
    [
        {"optimizer": "adamw"},
        {"weight_decay": 1e-4},
        {"optimizer": "sgd", "momentum": 0.5},
        {"optimizer": "sgd", "nesterov": True},
        {"lr_schedule": "cosine"},
        {"lr_schedule": "step"},
        {"warmup_epochs": 1},
        {"val_split": 100},
    ],
)
def test_runs_with_a_knob_the_stacked_update_lacks_do_not_fuse(knob: dict) -> None:
    plain = RunSpec(model="model_b", device="cuda", optimizer="sgd" if knob.get("optimizer") == "sgd" else "adam")
    assert fusable(plain) and fusion_key(plain) is not None
    spec = RunSpec(model="model_b", device="cuda", **knob)
    assert not fusable(spec) and fusion_key(spec) is None


def test_fused_run_records_its_constant_lr(mnist_dir: Path) -> None:
    from tuitrain.train.fused import FusedRun, fit_fused
    from tuitrain.train.loop import new_record

    device = torch.device("cpu")
    data = TensorData.from_arrays(load_idx_folder(mnist_dir), device)
    runs = []
    for i, lr in enumerate((0.01, 0.003)):
        spec = RunSpec(model="model_a", epochs=2, batch_size=64, lr=lr, device="cpu")
        runs.append(FusedRun(spec=spec, record=new_record(spec, device, run_id=f"r{i}", label=f"r{i}")))
    records = fit_fused(runs, data=data)
    assert [[e.lr for e in r.epochs] for r in records] == [[0.01, 0.01], [0.003, 0.003]]


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('lr_schedule = "linear"', "lr_schedule = 'linear'"),
        ('optimizer = "sgd"\nmomentum = 0\nnesterov = true', "nesterov needs momentum > 0"),
        ("momentum = 1.5", "momentum = 1.5"),
        ("lr_step_epochs = 0", "lr_step_epochs"),
        ("lr_step_epochs = [5, 3]", "increasing"),
        ("subset = 100\nval_split = 100", "val_split = 100: holds out all 100 training images"),
        ("weight_decay = -1", "weight_decay = -1"),
        ("warmup = 2", "unknown setting 'warmup'"),
    ],
)
def test_bad_knobs_in_a_preset_are_one_line_and_exit_2(tmp_path: Path, capsys, toml: str, needle: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(f'name = "p"\ntitle = "P"\n\n[defaults]\nmodel = "model_a"\n{toml}\n')
    code, err = run_cli(capsys, ["--preset", str(path), "--no-ui", "--runs-dir", str(tmp_path / "runs")])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--lr-schedule", "linear"], "--lr-schedule"),
        (["--optimizer", "rmsprop"], "--optimizer"),
        (["--lr-step-epochs", "0"], "--lr-step-epochs"),
        (["--lr-step-epochs", "a,b"], "--lr-step-epochs"),
        (["--momentum", "1"], "--momentum 1"),
        (["--subset", "100", "--val-split", "200"], "val_split = 200: holds out all 100"),
    ],
)
def test_bad_knob_overrides_are_one_line_and_exit_2(
    tmp_path: Path, tiny_preset: Path, capsys, args: list[str], needle: str
) -> None:
    try:
        code, err = run_cli(capsys, ["--preset", str(tiny_preset), "--no-ui", "--runs-dir", str(tmp_path), *args])
    except SystemExit as exc:  # argparse's own errors
        code, err = int(exc.code or 0), capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("usage:") and line.startswith("tuitrain")]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err


def test_knob_overrides_reach_the_runs(tiny_preset: Path) -> None:
    from tuitrain.cli import build_parser, overrides_from

    args = build_parser().parse_args(
        ["--preset", str(tiny_preset), "--optimizer", "adamw", "--weight-decay", "0.01", "--lr-schedule", "step",
         "--lr-step-epochs", "2,4", "--lr-gamma", "0.5", "--warmup-epochs", "1", "--val-split", "64", "--nesterov"]
    )  # fmt: skip
    overrides = overrides_from(args)
    specs = [run.spec for run in load_preset_file(tiny_preset).expand(overrides)]
    assert {(s.optimizer, s.weight_decay, s.lr_schedule, s.lr_gamma, s.warmup_epochs, s.val_split) for s in specs} == {
        ("adamw", 0.01, "step", 0.5, 1, 64)
    }
    assert all(s.lr_step_epochs == [2, 4] and s.nesterov for s in specs)


def scheduled_pair() -> list[RunRecord]:
    """Two fixture runs: one with a warm-up + cosine schedule and a validation split, one at a constant lr."""
    from tests.compare_fixtures import make_record

    sched = make_record(
        "sgd cosine", [90.0, 95.0, 94.0], [(2.3, 0.5, 0.8), (0.5, 0.2, 0.3), (0.2, 0.1, 0.15)],
        optimizer="sgd", lr=0.1, lr_schedule="cosine", warmup_epochs=1, val_split=64,
    )  # fmt: skip
    for e, val in zip(sched.epochs, (88.0, 93.0, 93.5)):
        e.lr, e.train_accuracy = sched.spec.lr_at(e.epoch), 80.0 + e.epoch
        e.val_accuracy, e.val_correct, e.val_total, e.val_loss = val, int(val * 0.64), 64, 0.3
    const = make_record("adam", [91.0, 92.0, 93.0], [(2.3, 0.4, 0.7), (0.4, 0.3, 0.35), (0.3, 0.2, 0.25)])
    for e in const.epochs:
        e.lr = 0.001
    return [sched, const]


def test_report_compare_and_monitor_show_the_lr_and_the_splits_choice(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    from tests.compare_fixtures import write_runs
    from tuitrain.catalog import load_run_file
    from tuitrain.compare import Comparison
    from tuitrain.core.events import RunStarted
    from tuitrain.monitor import SweepMonitor
    from tuitrain.plots import figures
    from tuitrain.tui.screens.compare import epoch_curve

    paths = write_runs(tmp_path / "runs", scheduled_pair())
    assert main(["report", str(tmp_path / "runs"), "--output", str(tmp_path / "r.md")]) == 0
    text = (tmp_path / "r.md").read_text()
    header = "| Epoch | Initial training loss | Final training loss | Test accuracy |"
    assert header + " Training accuracy | Validation accuracy | Learning rate |" in text  # the scheduled run
    assert "| 1 | 2.3000 | 0.5000 | 90.00% | 81.00% | 88.00% | 0.05 |" in text  # warm-up: lr / 2
    assert header + "\n" in text  # the constant-lr run: no lr column
    assert (tmp_path / "r-figures" / "1-lr.png").is_file()
    c = Comparison.from_files([load_run_file(p) for p in paths])
    assert [stem for stem, _, fig in figures(c)] == ["loss", "accuracy", "lr"]
    capsys.readouterr()
    assert main(["compare", "--no-ui", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    chosen = next(line for line in out.splitlines() if "Best chosen on" in line)
    assert chosen.split()[-2:] == ["validation", "test"]
    best = next(line for line in out.splitlines() if "Best test acc" in line)
    assert "94.00%" in best  # epoch 3 has the best validation accuracy; its test accuracy, not epoch 2's 95%
    sched = read_record(paths[0])
    assert epoch_curve(sched, "lr") == ([1.0, 2.0, 3.0], [sched.spec.lr_at(e) for e in (1, 2, 3)])
    monitor = SweepMonitor()
    monitor.apply(
        RunStarted(run_id="r", label="r", run_index=0, run_count=1, spec=sched.spec, device="CPU",
                   train_size=576, test_size=10000, batches_per_epoch=9, start_epoch=1)
    )  # fmt: skip
    for e in sched.epochs:
        monitor.apply(EpochEnded(run_id="r", label="r", run_index=0, epochs=3, **e.event_fields()))
    run = monitor.runs["r"]
    assert run.epoch_figures() == ["test accuracy", "val_accuracy", "train_accuracy", "lr"]
    assert run.epoch_series("val_accuracy") == ([1.0, 2.0, 3.0], [88.0, 93.0, 93.5])
