"""The optimizer of a run: Adam, AdamW or SGD with the fastest implementation this torch has, its learning rate set
per epoch (as a device tensor for a captured step), and its state restored from a checkpoint with this run's own
implementation flags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tuitrain.core.spec import RunSpec


def make_optimizer(spec: RunSpec, params, *, capturable: bool = False) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (momentum, Nesterov, weight decay as the spec says) with the fused kernel (one kernel for
    all parameters) where this torch has one for the device, else the foreach implementation. `capturable`: Adam
    keeps its step count on the device, so that its step can be captured in a CUDA graph (SGD has no such state);
    `set_lr` then gives it a device tensor for its learning rate."""
    params = list(params)
    cls: Callable[..., torch.optim.Optimizer]  # Adam and SGD take different keywords
    kwargs: dict[str, Any] = {"weight_decay": spec.weight_decay}
    if spec.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if spec.optimizer == "adam" else torch.optim.AdamW
        if capturable:
            kwargs["capturable"] = True
    else:
        cls = torch.optim.SGD
        kwargs.update(momentum=spec.momentum, nesterov=spec.nesterov)
    try:
        optimizer = cls(params, lr=spec.lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # older torch, or no fused kernel for this device
        optimizer = cls(params, lr=spec.lr, foreach=True, **kwargs)
    # the warm-up before capture and the partial last batch run it uncaptured on purpose: no warning
    optimizer._warned_capturable_if_run_uncaptured = capturable
    return optimizer


def set_lr(optimizer: torch.optim.Optimizer, lr: float, *, on_device: bool) -> None:
    """Train with `lr` from now on. `on_device` (a step captured in a CUDA graph): the lr is a 0-d tensor on the
    parameters' device, written in place, so that the graph, which reads that tensor, follows the schedule without
    being captured again; otherwise a plain float."""
    for group in optimizer.param_groups:
        if not on_device:
            group["lr"] = float(lr)
            continue
        current, device = group["lr"], group["params"][0].device
        if torch.is_tensor(current) and current.device == device and current.dtype == torch.float32:
            current.fill_(lr)  # a kernel with the value as its argument: no sync
        else:
            group["lr"] = torch.tensor(float(lr), dtype=torch.float32, device=device)


IMPLEMENTATION_FLAGS = ("capturable", "fused", "foreach")


def load_optimizer_state(optimizer: torch.optim.Optimizer, load: Callable[[], None]) -> None:
    """Run `load()` (which calls optimizer.load_state_dict) but keep this run's implementation flags.

    load_state_dict takes every group setting from the checkpoint, so a run saved on the CPU and resumed
    on a GPU (or the other way) would get the other device's fused/capturable choice; the step counts
    then go where this run's flags want them (on the device when capturable or fused, else on the CPU).
    """
    flags = [{k: g[k] for k in IMPLEMENTATION_FLAGS if k in g} for g in optimizer.param_groups]
    load()
    for group, kept in zip(optimizer.param_groups, flags):
        group.update(kept)
        on_device = group.get("capturable") or group.get("fused")
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if torch.is_tensor(step):
                want = p.device if on_device else torch.device("cpu")
                if step.device != want:
                    optimizer.state[p]["step"] = step.to(device=want, dtype=torch.float32)
