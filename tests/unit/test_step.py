"""The training-step module on the CPU: the eager step, the undoing of warm-up steps that the CUDA-graph
step relies on, and keeping an optimizer's implementation flags across a checkpoint. The graph itself
is tested in test_cuda.py (GPU only)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tuitrain.core.spec import RunSpec
from tuitrain.train.cuda_step import EagerStep, TrainingState, make_step, wants_graph
from tuitrain.train.device import prepare_model
from tuitrain.train.optim import load_optimizer_state, make_optimizer


def _setup(optimizer: str):
    torch.manual_seed(3)
    spec = RunSpec(model="model_b", optimizer=optimizer, lr=0.01, device="cpu")
    model = prepare_model(spec, torch.device("cpu"))
    x, y = torch.randn(200, 1, 28, 28), torch.randint(0, 10, (200,))
    return model, make_optimizer(spec, model.parameters()), x, y


def _batches(seed: int, count: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(200, generator=gen)[:32] for _ in range(count)]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("trained_before", [0, 2])
def test_undoing_warm_up_steps_trains_as_if_they_never_happened(optimizer: str, trained_before: int) -> None:
    """What the graph step does around its warm-up: snapshot, train a few throwaway steps, restore in place;
    from a fresh optimizer (state created by the warm-up) and from a resumed one (state already there)."""
    model, opt, x, y = _setup(optimizer)
    loss_fn = nn.CrossEntropyLoss()
    for idx in _batches(1, trained_before):
        EagerStep(model, opt, loss_fn, x, y)(idx)
    ref_model, ref_opt = copy.deepcopy((model, opt))

    saved = TrainingState(opt)
    tensors_before = {id(p) for p in model.parameters()}
    for idx in _batches(2, 3):  # the warm-up: really changes weights and optimizer state
        EagerStep(model, opt, loss_fn, x, y)(idx)
    assert not torch.equal(next(model.parameters()), next(ref_model.parameters()))
    state_tensors = [id(v) for s in opt.state.values() for v in s.values()]
    saved.restore()
    assert {id(p) for p in model.parameters()} == tensors_before  # restored in place: a graph keeps its pointers
    assert [id(v) for s in opt.state.values() for v in s.values()] == state_tensors

    batches = _batches(3, 5)
    # keep_grads as the graph step's partial batches use it; the reference drops them as fit always did
    got = [EagerStep(model, opt, loss_fn, x, y, keep_grads=True)(idx).item() for idx in batches]
    want = [EagerStep(ref_model, ref_opt, loss_fn, x, y)(idx).item() for idx in batches]
    assert got == want
    for p, q in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(p, q)


def test_make_step_is_the_eager_step_on_the_cpu() -> None:
    model, opt, x, y = _setup("adam")
    step = make_step(model, opt, nn.CrossEntropyLoss(), x, y, 32, graph=True)
    assert isinstance(step, EagerStep)
    loss = step(torch.arange(32))
    assert loss.shape == () and not loss.requires_grad


def test_graph_step_for_every_model_on_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert wants_graph("model_a", cuda) and wants_graph("model_b", cuda)
    assert not wants_graph("model_a", cpu)
    assert wants_graph("resnet18", cuda) and wants_graph("alexnet", cuda)  # batch norm and dropout captured too
    monkeypatch.setenv("TUITRAIN_CUDA_GRAPHS", "0")
    assert not wants_graph("model_a", cuda)


def test_loading_a_checkpoint_keeps_this_runs_optimizer_implementation() -> None:
    """A checkpoint written by another implementation (e.g. on another device) brings its flags along;
    the run keeps its own, and the step counts go where its implementation wants them."""
    spec = RunSpec(optimizer="adam", lr=0.01)
    other = torch.optim.Adam([nn.Parameter(torch.ones(3))], lr=0.01, foreach=True)
    other.param_groups[0]["params"][0].grad = torch.ones(3)
    other.step()
    saved = other.state_dict()
    assert saved["param_groups"][0]["fused"] in (None, False)

    params = [nn.Parameter(torch.ones(3))]
    optimizer = make_optimizer(spec, params)
    assert optimizer.param_groups[0]["fused"] is True
    load_optimizer_state(optimizer, lambda: optimizer.load_state_dict(saved))
    group = optimizer.param_groups[0]
    assert group["fused"] is True and group["foreach"] is None
    assert optimizer.state[params[0]]["step"].item() == 1
    params[0].grad = torch.ones(3)
    optimizer.step()
    assert optimizer.state[params[0]]["step"].item() == 2


def test_undoing_warm_up_steps_puts_batch_norms_running_statistics_back() -> None:
    """ResNet18's batch norm updates its running statistics at every training step; the warm-up's updates are
    undone in place like the weights, so evaluation after capture sees the statistics of real steps only."""
    torch.manual_seed(3)
    spec = RunSpec(model="resnet18", device="cpu")
    model = prepare_model(spec, torch.device("cpu")).train()
    opt = make_optimizer(spec, model.parameters())
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    before = [b.clone() for b in model.buffers()]
    buffer_ids = [id(b) for b in model.buffers()]
    saved = TrainingState(opt, model)
    EagerStep(model, opt, nn.CrossEntropyLoss(), x, y)(torch.arange(16))
    assert not all(torch.equal(a, b) for a, b in zip(model.buffers(), before))
    saved.restore()
    assert [id(b) for b in model.buffers()] == buffer_ids
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), before))
