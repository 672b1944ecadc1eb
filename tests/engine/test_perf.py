"""The fast paths of the engine compute the same thing as the plain PyTorch loop (on the CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tuitrain.core.errors import TuitrainError
from tuitrain.core.spec import RunSpec
from tuitrain.train.data import load_idx_folder
from tuitrain.train.device import TensorData, prepare_model, select_device
from tuitrain.train.loop import eval_batch, evaluate, fit
from tuitrain.train.models import build_model
from tuitrain.train.optim import make_optimizer


@pytest.mark.parametrize("name", ["model_a", "model_b"])
def test_channels_last_model_is_the_same_function(name: str) -> None:
    spec = RunSpec(model=name, activation="tanh", device="cpu")
    torch.manual_seed(5)
    plain = build_model(name, "tanh")
    torch.manual_seed(5)
    fast = prepare_model(spec, torch.device("cpu"))
    x = torch.randn(7, 1, 28, 28)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)


def test_fit_matches_the_plain_training_loop(mnist_dir: Path) -> None:
    """Same seed, same shuffled order, same model and Adam: the engine's batch losses are the plain loop's."""
    arrays = load_idx_folder(mnist_dir)
    data = TensorData.from_arrays(arrays, torch.device("cpu"))
    spec = RunSpec(model="model_b", epochs=2, batch_size=48, lr=0.002, log_every=3, device="cpu", seed=11)
    record = fit(spec, data=data)

    torch.manual_seed(spec.seed)
    order = torch.Generator().manual_seed(spec.seed)
    model = build_model(spec.model, spec.activation)
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.lr)
    expected = []
    for _epoch in range(spec.epochs):
        perm = torch.randperm(data.train_x.shape[0], generator=order)
        for idx in perm.split(spec.batch_size):  # the last batch is smaller (512 = 10 * 48 + 32)
            loss = nn.functional.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            expected.append(loss.item())
    assert len(record.batch_losses) == len(expected) == 2 * 11
    assert record.batch_losses == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_evaluate_covers_every_image_in_uneven_batches() -> None:
    torch.manual_seed(0)
    model = prepare_model(RunSpec(model="model_a", device="cpu"), torch.device("cpu"))
    n = eval_batch(torch.device("cpu")) * 2 + 37
    x, y = torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))
    loss, correct, total = evaluate(model, x, y)
    with torch.no_grad():
        out = model.eval()(x)
    assert total == n
    assert correct == int((out.argmax(1) == y).sum())
    assert loss == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-5)
    assert model.training is False  # evaluate restores the mode it found


def test_optimizer_falls_back_when_no_fused_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = RunSpec(optimizer="adam", lr=0.01)
    params = [nn.Parameter(torch.ones(3))]
    assert make_optimizer(spec, params).defaults["fused"] is True  # this torch has fused CPU Adam

    real_adam = torch.optim.Adam

    def adam_without_fused(params, **kwargs):
        if kwargs.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real_adam(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", adam_without_fused)
    optimizer = make_optimizer(spec, iter(params))  # a generator: consumed only once
    assert optimizer.defaults["foreach"] is True and not optimizer.defaults["fused"]
    assert len(optimizer.param_groups[0]["params"]) == 1
    params[0].grad = torch.ones(3)
    optimizer.step()
    assert torch.all(params[0] < 1)


def test_sgd_uses_momentum() -> None:
    optimizer = make_optimizer(RunSpec(optimizer="sgd", lr=0.1), [nn.Parameter(torch.ones(2))])
    assert optimizer.defaults["momentum"] == 0.9


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(TuitrainError, match="no CUDA device"):
        select_device("cuda")


def test_cpu_threads_setting_applies_to_the_run_and_is_restored(mnist_dir: Path, monkeypatch) -> None:
    before = torch.get_num_threads()
    spec = RunSpec(model="model_a", epochs=1, batch_size=64, device="cpu", limit_train_batches=2)
    monkeypatch.setenv("TUITRAIN_CPU_THREADS", "1")
    record = fit(spec, data=load_idx_folder(mnist_dir))
    assert record.status == "completed"
    assert record.env.threads == 1
    assert torch.get_num_threads() == before
    monkeypatch.delenv("TUITRAIN_CPU_THREADS")
    assert fit(spec, data=load_idx_folder(mnist_dir)).env.threads == before


def test_estimate_calibrates_once_and_scales_with_the_run() -> None:
    from tuitrain.train import estimate

    spec = RunSpec(model="model_a", epochs=2, device="cpu")
    first = estimate.throughput(spec)
    assert first["train_samples_per_s"] > 0 and first["eval_samples_per_s"] > 0
    assert estimate.throughput(spec, calibrate=False) == first  # cached, not measured again
    two = estimate.run_seconds(spec)
    assert estimate.run_seconds(spec.model_copy(update={"epochs": 4})) == pytest.approx(2 * two)
    assert estimate.run_seconds(spec.model_copy(update={"subset": 6000, "test_subset": 1000})) < two / 5
    assert estimate.preset_seconds([spec, spec]) == pytest.approx(2 * two + estimate.SETUP_S)
    assert estimate.throughput(spec.model_copy(update={"model": "model_b"}), calibrate=False) is None


def test_no_calibration_while_other_runs_hold_the_cores() -> None:
    from tuitrain.core.cores import CoreLease
    from tuitrain.train import estimate

    spec = RunSpec(model="model_a", epochs=2, device="cpu")
    with CoreLease(label="a run training") as training:
        assert training.acquire()
        assert estimate.throughput(spec) is None  # it would time a shared machine
    assert estimate.throughput(spec, calibrate=False) is None  # and nothing was kept
    assert estimate.throughput(spec) is not None  # alone again: measured


def test_calibration_leaves_the_cores_that_other_programs_keep_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuitrain.core import cores
    from tuitrain.train import estimate

    busy = [1]  # another program keeps one of the two cores busy
    monkeypatch.setattr(cores.OtherWork, "busy_cores", lambda self, **_: busy[0])
    monkeypatch.setattr(cores, "machine_cores", lambda: 2)
    monkeypatch.setattr(estimate, "machine_cores", lambda: 2)
    timed_with = []
    measure = estimate.measure
    monkeypatch.setattr(estimate, "measure", lambda *a: timed_with.append(torch.get_num_threads()) or measure(*a))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert estimate.planned_device(torch.device("cpu")) == "CPU (1 thread)"  # as a run would train now
        spec = RunSpec(model="model_a", epochs=2, device="cpu")
        assert estimate.throughput(spec) is not None and timed_with == [1]
        busy[0] = 0
        assert estimate.throughput(spec, calibrate=False) is None  # filed under one thread, not two
        busy[0] = 2  # every core busy: what it times is not kept
        other = spec.model_copy(update={"model": "model_b"})
        assert estimate.throughput(other) is None and estimate.throughput(other, calibrate=False) is None
    finally:
        torch.set_num_threads(before)


def test_a_completed_run_refines_the_figures_with_its_own(
    mnist_dir: Path, tiny_preset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tuitrain.presets import load_preset_file
    from tuitrain.session import PresetInvocation
    from tuitrain.train import estimate

    # the tiny preset's epochs are far too short to count: let them, to see the session hand its runs over
    monkeypatch.setattr(estimate, "MIN_EPOCH_SAMPLES", 1)
    monkeypatch.setattr(estimate, "MIN_EPOCH_TRAIN_S", 0.0)
    monkeypatch.setattr(estimate, "MIN_EVAL_SAMPLES", 1)
    inv = PresetInvocation.prepare(load_preset_file(tiny_preset), runs_dir=tmp_path / "runs", data_dir=mnist_dir)
    assert all(estimate.throughput(r.spec, calibrate=False) is None for r in inv.runs)
    records = inv.run(lambda e: None)
    for run, record in zip(inv.runs, records):
        learned = estimate.throughput(run.spec, calibrate=False)
        assert learned is not None and learned["source"] == f"run {record.id}"
        measured = sorted(e.samples_per_s for e in record.epochs)
        assert measured[0] <= learned["train_samples_per_s"] <= measured[-1]


def measured_run(
    train_size: int,
    samples_per_s: float,
    *,
    epochs: int = 2,
    threads: int = 2,
    test_total: int = 10_000,
    eval_s: float = 1.0,
):
    """A completed run record as the loop writes it, with chosen throughput figures."""
    from tuitrain.records import EnvInfo, EpochRecord, RunRecord

    spec = RunSpec(model="model_a", epochs=epochs, device="cpu")
    return RunRecord(
        id=f"run-{train_size}-{samples_per_s:g}",
        label="a",
        status="completed",
        spec=spec,
        train_size=train_size,
        env=EnvInfo(device="CPU", device_type="cpu", torch_version=torch.__version__, threads=threads),
        epochs=[
            EpochRecord(
                epoch=n,
                initial_loss=2.0,
                final_loss=1.0,
                mean_loss=1.5,
                test_loss=1.0,
                test_accuracy=90.0,
                test_correct=test_total * 9 // 10,
                test_total=test_total,
                duration_s=train_size / samples_per_s + eval_s,
                samples_per_s=samples_per_s,
                eval_s=eval_s,
            )
            for n in range(1, epochs + 1)
        ],
    )


def test_run_figures_are_combined_weighted_and_tiny_runs_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuitrain.train import estimate

    monkeypatch.setenv("TUITRAIN_CPU_THREADS", "2")
    spec = RunSpec(model="model_a", epochs=3, device="cpu")
    estimate.learn_from_run(measured_run(60_000, 1_000.0))  # two full epochs at 1000 samples/s
    first = estimate.throughput(spec, calibrate=False)
    assert first["train_samples_per_s"] == pytest.approx(1_000.0) and first["eval_samples_per_s"] == pytest.approx(
        10_000.0
    )
    full = estimate.run_seconds(spec, calibrate=False)
    # a --subset 1 --epochs 1 run times the loop's fixed costs: it changes nothing
    estimate.learn_from_run(measured_run(1, 0.5, epochs=1, test_total=1, eval_s=0.01))
    assert estimate.run_seconds(spec, calibrate=False) == pytest.approx(full)
    # 2,000 images on a busy machine (4x slower): weighed against 120,000 samples, it moves the figure a little
    estimate.learn_from_run(measured_run(2_000, 250.0, epochs=1))
    moved = estimate.run_seconds(spec, calibrate=False)
    assert full < moved < 1.1 * full
    # as many samples as before at another speed: the figure lands between, weighted by samples
    estimate.learn_from_run(measured_run(60_000, 2_000.0))
    rate = estimate.throughput(spec, calibrate=False)["train_samples_per_s"]
    assert 1_000.0 < rate < 2_000.0


def test_figures_are_filed_under_the_threads_the_runs_use(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuitrain.session import device_label
    from tuitrain.train import estimate

    spec = RunSpec(model="model_a", epochs=1, device="cpu")
    estimate.learn_from_run(measured_run(60_000, 700.0, threads=1))  # trained with TUITRAIN_CPU_THREADS=1
    monkeypatch.setenv("TUITRAIN_CPU_THREADS", "1")
    assert device_label("cpu") == "CPU (1 thread)"  # what --list-presets says it estimates for
    assert estimate.throughput(spec, calibrate=False)["train_samples_per_s"] == pytest.approx(700.0)
    monkeypatch.setenv("TUITRAIN_CPU_THREADS", "3")
    assert device_label("cpu") == "CPU (3 threads)"
    assert estimate.throughput(spec, calibrate=False) is None  # not the 1-thread figure
    monkeypatch.delenv("TUITRAIN_CPU_THREADS")
    assert device_label("cpu") == f"CPU ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''})"


def test_epochs_that_trained_with_other_threads_do_not_refine_the_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuitrain.train import estimate

    monkeypatch.setenv("TUITRAIN_CPU_THREADS", "2")
    spec = RunSpec(model="model_a", epochs=2, device="cpu")
    shared = measured_run(60_000, 500.0, threads=2)
    for epoch in shared.epochs:
        epoch.threads = [2, 1]  # another tuitrain started mid-epoch: not a 2-thread figure
    estimate.learn_from_run(shared)
    assert estimate.throughput(spec, calibrate=False) is None
    alone = measured_run(60_000, 1_000.0, threads=2)
    for epoch in alone.epochs:
        epoch.threads = [2]
    estimate.learn_from_run(alone)
    assert estimate.throughput(spec, calibrate=False)["train_samples_per_s"] == pytest.approx(1_000.0)
