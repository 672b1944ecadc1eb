"""One training step as a callable `step(idx) -> loss`: eager, or replayed from a CUDA graph.

A step gathers the batch `idx` (row indices on the device) from the in-memory dataset, runs
forward, loss, backward and the optimizer step, and returns the batch's mean loss as a 0-d tensor
on the device (no sync). On a GPU, Model A/B at batch 64 are bound by launching a few dozen small
kernels from Python (about 2 ms a step measured on an H100), not by the GPU's work, so there
`make_step` captures the whole step once into a CUDA graph and replays it with one launch:

- the batch's indices are copied into a static index buffer before each replay; the gather
  (index_select) from the dataset tensors, which stay where they are for the run, is in the graph;
- the optimizer must be capturable (Adam: `capturable=True`, step count on the device; SGD needs
  nothing) and is warmed up on a side stream before capture, as torch's CUDA-graph docs require;
- warm-up really trains, so model and optimizer state are snapshotted first and copied back in
  place afterwards: training starts from exactly the state it would have started from, and the
  graph keeps pointing at the same tensors;
- a batch of another size (the last, partial batch of an epoch) runs eagerly with the same
  optimizer, accumulating into the graph's gradient tensors after zeroing them;
- batch norm's running statistics are buffers updated in place, so the graph updates them on every
  replay; the warm-up's updates are undone with the rest of the state (`TrainingState`);
- dropout draws from the default CUDA generator, which torch's graph capture registers: every replay
  advances its philox offset and draws fresh masks (the eager step's masks differ, not their law);
- bf16 autocast (`precision`) runs inside the graph with the cast cache off (cached casts would be
  freed outside the graph's pool);
- the learning rate is a 0-d tensor on the device (optim.set_lr), read by the captured optimizer step: a
  schedule writes it in place between epochs, and the graph follows without being captured again;
- the training accuracy is counted on the device: each step adds its batch's correct predictions to the
  `correct` counter (in the graph too), which the loop reads back once per epoch.

Any failure while capturing falls back to the eager step (reported through `log`) after putting the
state back, so the fast path can never fail a run. TUITRAIN_CUDA_GRAPHS=0 turns it off (benchmarks
compare both).

Runs side by side in one process (executors.threads, each on its own stream) capture one at a time (torch's
graphs share one capture stream), in the thread-local capture mode: the other runs go on training meanwhile, and
their syncs and allocations do not break this capture. A run with its own dropout generator (`own_dropout_rng`)
captures with it in place of the default one: a graph keeps the generator state it was captured with, and
replays of graphs sharing the default one from two streams would race on its offset.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

import torch
from torch import nn

Step = Callable[[torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

GRAPH_MODELS = frozenset({"model_a", "model_b", "resnet18", "alexnet"})
"""Models whose training step is captured in a CUDA graph (all of them: batch norm and dropout included)."""
WARMUP_STEPS = 3
CAPTURE_LOCK = threading.Lock()
"""One capture at a time in a process: torch.cuda.graph captures on one stream shared by all graphs."""
_this_thread = threading.local()
"""The dropout generator of the run this thread trains (own_dropout_rng), if any."""


@contextlib.contextmanager
def own_dropout_rng(generator: torch.Generator | None) -> Iterator[None]:
    """While in this block, steps captured by this thread draw dropout masks from `generator` (a CUDA generator of
    the run's own, seeded from its seed), not from the process's default one; None: the default one."""
    before = getattr(_this_thread, "generator", None)
    _this_thread.generator = generator
    try:
        yield
    finally:
        _this_thread.generator = before


@contextlib.contextmanager
def _captured_generator(device: torch.device) -> Iterator[None]:
    """The default CUDA generator points at this thread's run's own generator state while capturing (the graph
    registers the state it finds), and back at its own afterwards."""
    own = getattr(_this_thread, "generator", None)
    if own is None:
        yield
        return
    default = torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    saved = default.graphsafe_get_state()
    default.graphsafe_set_state(own)
    try:
        yield
    finally:
        default.graphsafe_set_state(saved)


def graphs_enabled() -> bool:
    """False when TUITRAIN_CUDA_GRAPHS=0 (to compare with the eager step)."""
    return os.environ.get("TUITRAIN_CUDA_GRAPHS", "1").strip() != "0"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The forward pass's arithmetic: bf16 autocast on CUDA for precision "bf16", else nothing. The cast cache is
    off so that the same context can be captured in a CUDA graph."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def wants_graph(model_name: str, device: torch.device) -> bool:
    """Whether a run should try the CUDA-graph step (decided before the optimizer is made: Adam must be
    created capturable for it)."""
    return device.type == "cuda" and model_name in GRAPH_MODELS and graphs_enabled()


class EagerStep:
    """The plain step. `keep_grads`: zero the gradient tensors instead of dropping them, so that a
    CUDA graph captured with them keeps seeing the parameters' `.grad` (used for its partial batches)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        x: torch.Tensor,
        y: torch.Tensor,
        keep_grads: bool = False,
        precision: str = "fp32",
        correct: torch.Tensor | None = None,
    ) -> None:
        self.model, self.optimizer, self.loss_fn, self.x, self.y = model, optimizer, loss_fn, x, y
        self.set_to_none = not keep_grads
        self.precision = precision
        self.correct = correct

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        with autocast(self.x.device, self.precision):
            out = self.model(self.x.index_select(0, idx))  # index_select: less overhead than x[idx]
            target = self.y.index_select(0, idx)
            loss = self.loss_fn(out, target)
        if self.correct is not None:
            self.correct += (out.argmax(1) == target).sum()
        self.optimizer.zero_grad(set_to_none=self.set_to_none)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class GraphStep:
    """Replays a captured step for full batches; any other batch size goes to `eager`."""

    def __init__(
        self, graph: torch.cuda.CUDAGraph, static_idx: torch.Tensor, static_loss: torch.Tensor, eager: EagerStep
    ) -> None:
        self.graph, self.static_idx, self.static_loss, self.eager = graph, static_idx, static_loss, eager
        self.batch_size = int(static_idx.shape[0])

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[0] != self.batch_size:
            return self.eager(idx)
        self.static_idx.copy_(idx)
        self.graph.replay()
        return self.static_loss.clone()  # the next replay overwrites static_loss


class TrainingState:
    """A copy of the parameters, the model's buffers (batch norm's running statistics) and the optimizer state, to
    undo warm-up steps in place (same tensors)."""

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module | None = None) -> None:
        self.optimizer = optimizer
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.values = [p.detach().clone() for p in self.params]
        self.buffers = list(model.buffers()) if model is not None else []
        self.buffer_values = [b.detach().clone() for b in self.buffers]
        self.state = {
            p: {k: v.clone() if torch.is_tensor(v) else v for k, v in optimizer.state[p].items()}
            for p in self.params
            if p in optimizer.state
        }

    @torch.no_grad()
    def restore(self) -> None:
        for p, value in zip(self.params, self.values, strict=True):
            p.copy_(value)
        for b, value in zip(self.buffers, self.buffer_values, strict=True):
            b.copy_(value)
        for p in self.params:
            state = self.optimizer.state.get(p)
            if not state:
                continue
            saved = self.state.get(p)
            for key, value in list(state.items()):
                if saved is not None and key in saved:
                    if torch.is_tensor(value):
                        value.copy_(saved[key])
                    else:
                        state[key] = saved[key]
                elif torch.is_tensor(value):
                    # State made by the warm-up: all zeros is the state before a first step for Adam
                    # (step 0, zero moments) and for SGD's momentum buffer (0.9 * 0 + grad == grad).
                    value.zero_()


def capture_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    warmup: int = WARMUP_STEPS,
    precision: str = "fp32",
    correct: torch.Tensor | None = None,
) -> GraphStep:
    """Warm up, capture one full-batch step into a CUDA graph, and put the training state back (the `correct`
    counter to 0).

    Raises whatever capture raises, with the state already put back and the current stream restored.
    """
    device = x.device
    saved = TrainingState(optimizer, model)
    caller_stream = torch.cuda.current_stream(device)
    static_idx = torch.arange(batch_size, device=device) % x.shape[0]  # valid rows for the warm-up

    def step() -> torch.Tensor:
        with autocast(device, precision):
            out = model(x.index_select(0, static_idx))
            target = y.index_select(0, static_idx)
            loss = loss_fn(out, target)
        if correct is not None:
            correct.add_((out.argmax(1) == target).sum())
        loss.backward()
        optimizer.step()
        return loss.detach()

    side = None
    try:
        side = torch.cuda.Stream(device)
        side.wait_stream(caller_stream)
        with torch.cuda.stream(side):
            for _ in range(warmup):  # cuDNN/cuBLAS set-up and the optimizer's lazy state, outside the graph
                optimizer.zero_grad(set_to_none=True)
                step()
        caller_stream.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # None: backward allocates the gradients from the graph's pool, and every replay writes them afresh
        optimizer.zero_grad(set_to_none=True)
        with CAPTURE_LOCK, _captured_generator(device), torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_loss = step()
    finally:
        torch.cuda.set_stream(caller_stream)  # a failed capture_end leaves the capture stream current
        if side is not None:
            caller_stream.wait_stream(side)  # the warm-up's writes come before the restore's
        saved.restore()
        if correct is not None:
            correct.zero_()
    eager = EagerStep(model, optimizer, loss_fn, x, y, keep_grads=True, precision=precision, correct=correct)
    return GraphStep(graph, static_idx, static_loss, eager)


def make_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    graph: bool = False,
    precision: str = "fp32",
    log: Callable[[str], None] | None = None,
    correct: torch.Tensor | None = None,
) -> Step:
    """The training step for a run: the CUDA-graph step when `graph` (see `wants_graph`) and capture
    works, else the eager step. A failed capture is reported through `log`, never raised. `correct`: a 0-d
    integer tensor on the device that every step adds its correctly predicted training samples to."""
    eager = EagerStep(model, optimizer, loss_fn, x, y, precision=precision, correct=correct)
    if not graph or x.device.type != "cuda" or x.shape[0] < batch_size:
        return eager
    try:
        return capture_step(model, optimizer, loss_fn, x, y, batch_size, precision=precision, correct=correct)
    except Exception as exc:  # noqa: BLE001 - the fast path must never fail a run
        optimizer.zero_grad(set_to_none=True)
        if log is not None:
            log(f"CUDA graph capture failed ({type(exc).__name__}: {str(exc)[:200]}); training with the eager step.")
        return eager
