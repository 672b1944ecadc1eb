"""Runs of one architecture trained as one batched program (torch.func), the arithmetic part of fused runs.

`StackedRuns` holds R runs that share a model architecture and differ in learning rate and seed: each run's model is
built exactly as `fit` builds it alone (`torch.manual_seed(seed)`, then `prepare_model`), so each starts from its own
initial weights, and the R parameter sets are stacked along a new first dimension (`torch.func.stack_module_state`).
One step trains every run on its own batch: `vmap` over (parameters, batch) of `functional_call` on a weightless copy
of the model, autograd of the sum of the runs' losses (each run's parameters get its own loss's gradient), then one
optimizer update over the stacks with the runs'
learning rates and step counts as tensors of shape (R,). The update is torch's Adam (and SGD with momentum 0.9)
written out over the stacks, the same arithmetic as torch.optim's single-tensor implementation, so a run's losses
match the run trained alone up to float rounding (a convolution over stacked weights runs as one grouped
convolution, summing in another order).

What vmap cannot batch is not fused (`fusable`): batch norm updates its running statistics in place, which functorch
refuses under vmap, and dropout would draw one mask stream for all runs rather than each run's own; ResNet18 and
AlexNet, and custom models (whose forward may do anything), train as today. Runs leave a stack at batch boundaries
(`keep`): the others go on with their tensors unchanged. On a GPU the step can be captured as one CUDA graph
(`capture`), as cuda_step does for a single run.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from tuitrain.core.spec import RunSpec
from tuitrain.train.device import prepare_model
from tuitrain.train.evaluation import EvalCounts, Evaluation

FUSABLE_MODELS = frozenset({"model_a", "model_b"})
"""Models made only of layers that vmap batches exactly: convolutions, linear layers, pooling, activations."""
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which make_optimizer keeps
SGD_MOMENTUM = 0.9  # as make_optimizer
WARMUP_STEPS = 3


def fusable(spec: RunSpec) -> bool:
    """Whether a run can train in a fused group: a built-in model without batch norm or dropout, in fp32, with the
    optimiser settings the stacked update writes out (Adam, or SGD with momentum 0.9; no weight decay), a constant
    learning rate and no validation split. A run with another knob trains alone rather than fused wrongly."""
    return (
        spec.model in FUSABLE_MODELS
        and spec.precision == "fp32"
        and spec.optimizer in ("adam", "sgd")
        and spec.weight_decay == 0
        and (spec.optimizer == "adam" or (spec.momentum == SGD_MOMENTUM and not spec.nesterov))
        and spec.lr_schedule == "constant"
        and spec.warmup_epochs == 0
        and spec.val_split == 0
    )


def fusion_key(spec: RunSpec) -> tuple | None:
    """Runs with equal keys can train as one fused group (they differ only in lr, seed, epochs, log_every and what
    they do on divergence); None: this run cannot fuse."""
    if not fusable(spec):
        return None
    return (
        spec.model,
        spec.activation,
        spec.optimizer,
        spec.batch_size,
        spec.dataset,
        spec.subset,
        spec.test_subset,
        spec.limit_train_batches,
        spec.device,
        spec.precision,
    )


class StackedRuns:
    """R runs' parameters and optimizer state as stacks; `step(idx)` trains each run on its own rows of the data."""

    def __init__(self, specs: list[RunSpec], device: torch.device) -> None:
        assert specs and len({fusion_key(s) for s in specs}) == 1 and fusion_key(specs[0]) is not None
        self.specs, self.device = list(specs), device
        self.models: list[nn.Module] = []
        for spec in specs:  # exactly as fit does for the run alone: the same seed gives the same initial weights
            torch.manual_seed(spec.seed)
            self.models.append(prepare_model(spec, device))
        params, buffers = stack_module_state(self.models)
        self.params = {k: v.detach().requires_grad_() for k, v in params.items()}  # leaves, updated in place
        self.buffers = {k: v.detach() for k, v in buffers.items()}
        self.adam = specs[0].optimizer == "adam"
        zeros = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.moment1 = zeros  # Adam's exp_avg, or SGD's momentum buffer
        self.moment2 = {k: torch.zeros_like(v) for k, v in self.params.items()} if self.adam else {}
        self.steps = torch.zeros(len(specs), device=device)
        self.lr = torch.tensor([s.lr for s in specs], device=device, dtype=torch.float32)
        base = copy.deepcopy(self.models[0]).to("meta")  # the architecture only: its tensors come from the stacks

        def logits_of(params, buffers, x):
            return functional_call(base, (params, buffers), (x,))

        self._forward = vmap(logits_of)
        self._logits = vmap(logits_of, in_dims=(0, 0, None))
        self._graph: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.specs)

    # --- training --------------------------------------------------------------------------------

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Train each run r on rows idx[r] of (x, y); returns the R batch losses (on the device, no sync)."""
        if self._graph is not None and idx.shape == self._graph_shape:
            return self._graph(idx)
        return self._step(x, y, idx)

    def _step(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        runs, batch = idx.shape
        flat = idx.reshape(-1)
        xb = x.index_select(0, flat).view(runs, batch, *x.shape[1:])
        yb = y.index_select(0, flat).view(runs, batch)
        out = self._forward(self.params, self.buffers, xb)  # (R, B, 10)
        per_sample = nn.functional.cross_entropy(out.flatten(0, 1), yb.flatten(), reduction="none")
        losses = per_sample.view(runs, batch).mean(1)
        # the sum's gradient for run r's parameters is run r's own loss's: the runs share no tensor. Autograd rather
        # than torch.func.grad, which imports torch._dynamo (about 1 s on a CPU, several on a GPU machine)
        grads = torch.autograd.grad(losses.sum(), list(self.params.values()))
        self._update(dict(zip(self.params, grads, strict=True)))
        return losses.detach()

    @torch.no_grad()
    def _update(self, grads: dict[str, torch.Tensor]) -> None:
        """One optimizer step over the stacks: torch.optim's single-tensor Adam (or SGD with momentum), per run."""
        self.steps += 1
        keys = list(self.params)
        params = [self.params[k] for k in keys]
        g = [grads[k] for k in keys]
        m1 = [self.moment1[k] for k in keys]

        def per_run(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:  # (R,) -> (R, 1, 1, ...)
            return t.view(-1, *([1] * (like.dim() - 1)))

        if not self.adam:
            torch._foreach_mul_(m1, SGD_MOMENTUM)
            torch._foreach_add_(m1, g)
            for p, m in zip(params, m1, strict=True):
                p.sub_(m * per_run(self.lr, p))
            return
        beta1, beta2 = ADAM_BETAS
        m2 = [self.moment2[k] for k in keys]
        torch._foreach_lerp_(m1, g, 1 - beta1)
        torch._foreach_mul_(m2, beta2)
        torch._foreach_addcmul_(m2, g, g, 1 - beta2)
        step_size = self.lr / (1 - torch.pow(beta1, self.steps))
        bias2_sqrt = torch.sqrt(1 - torch.pow(beta2, self.steps))
        for p, m, v in zip(params, m1, m2, strict=True):
            denom = (v.sqrt() / per_run(bias2_sqrt, v)).add_(ADAM_EPS)
            p.sub_(m / denom * per_run(step_size, p))

    # --- evaluation ------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, batch: int) -> list[Evaluation]:
        """Each run's mean test loss, correct count, total and confusion matrix on (x, y); one read-back at the end."""
        counts = EvalCounts(len(self), x.device)
        for start in range(0, x.shape[0], batch):
            counts.add(self._logits(self.params, self.buffers, x[start : start + batch]), y[start : start + batch])
        return counts.read_back(int(x.shape[0]))

    # --- members ---------------------------------------------------------------------------------

    def keep(self, positions: list[int]) -> None:
        """Keep only the runs at `positions` (in that order): the others leave; the kept ones' tensors are unchanged."""
        index = torch.tensor(positions, device=self.device, dtype=torch.long)

        def pick(stacks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.detach().index_select(0, index) for k, v in stacks.items()}

        self.params = {k: v.requires_grad_() for k, v in pick(self.params).items()}
        self.buffers = pick(self.buffers)
        self.moment1, self.moment2 = pick(self.moment1), pick(self.moment2)
        self.steps, self.lr = self.steps.index_select(0, index), self.lr.index_select(0, index)
        self.specs = [self.specs[i] for i in positions]
        self.models = [self.models[i] for i in positions]
        self._graph = None  # it points at the old stacks: capture again if wanted

    @torch.no_grad()
    def unstack(self, position: int) -> tuple[nn.Module, dict[str, Any]]:
        """Run `position` as a model of its own holding copies of its stacked tensors, and its optimizer's state dict
        as torch.optim's Adam (or SGD) of make_optimizer gives it: what its checkpoint saves, so that `fit` resumes it
        alone. The state dict is built rather than taken from an optimizer: making a torch.optim optimizer imports
        torch._dynamo (about 1 s on a CPU), which fused training otherwise never needs. The group's implementation
        flags (fused, foreach, capturable) are torch's defaults: a resumed run keeps its own (load_optimizer_state)."""
        model = self.models[position]
        for name, p in model.named_parameters():
            p.copy_(self.params[name][position])
        for name, b in model.named_buffers():
            b.copy_(self.buffers[name][position])
        spec = self.specs[position]
        cls = torch.optim.Adam if self.adam else torch.optim.SGD
        group: dict[str, Any] = {
            name: param.default
            for name, param in inspect.signature(cls.__init__).parameters.items()
            if name not in ("self", "params")
        }
        group["lr"] = spec.lr
        if not self.adam:
            group["momentum"] = SGD_MOMENTUM
        names = [name for name, _ in model.named_parameters()]
        group["params"] = list(range(len(names)))
        state: dict[int, dict[str, torch.Tensor]] = {}
        step = float(self.steps[position].item())
        if step > 0:
            for i, name in enumerate(names):
                if self.adam:
                    state[i] = {
                        "step": torch.tensor(step, dtype=torch.float32),
                        "exp_avg": self.moment1[name][position].clone(),
                        "exp_avg_sq": self.moment2[name][position].clone(),
                    }
                else:
                    state[i] = {"momentum_buffer": self.moment1[name][position].clone()}
        return model, {"state": state, "param_groups": [group]}

    # --- CUDA graph ------------------------------------------------------------------------------

    def capture(self, x: torch.Tensor, y: torch.Tensor, batch: int) -> None:
        """Capture the full-batch step into one CUDA graph (replayed by `step` for batches of that shape). Warm-up
        steps run first on a side stream, and the state is put back after them and after the capture: training
        starts from exactly the state it had. Raises what capture raises, with the state put back."""
        device = x.device
        runs = len(self)
        saved = [{k: v.clone() for k, v in d.items()} for d in (self.params, self.moment1, self.moment2)]
        saved_steps = self.steps.clone()
        static_idx = (torch.arange(runs * batch, device=device) % x.shape[0]).view(runs, batch)
        caller = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        try:
            side.wait_stream(caller)
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):
                    self._step(x, y, static_idx)
            caller.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_loss = self._step(x, y, static_idx)
        finally:
            torch.cuda.set_stream(caller)
            caller.wait_stream(side)
            with torch.no_grad():
                for d, before in zip((self.params, self.moment1, self.moment2), saved, strict=True):
                    for k, v in d.items():
                        v.copy_(before[k])
                self.steps.copy_(saved_steps)

        def replay(idx: torch.Tensor) -> torch.Tensor:
            static_idx.copy_(idx)
            graph.replay()
            return static_loss.clone()

        self._graph, self._graph_shape = replay, static_idx.shape
