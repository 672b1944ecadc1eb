"""The optimizer of a run: Adam or SGD with the fastest implementation this torch has, and its state restored from
a checkpoint with this run's own implementation flags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tuitrain.core.spec import RunSpec


def make_optimizer(spec: RunSpec, params, *, capturable: bool = False) -> torch.optim.Optimizer:
    """Adam or SGD with the fused kernel (one kernel for all parameters) where this torch has one for
    the device, else the foreach implementation. `capturable`: Adam keeps its step count on the device,
    so that its step can be captured in a CUDA graph (SGD has no such state)."""
    params = list(params)
    cls: Callable[..., torch.optim.Optimizer]  # Adam and SGD take different keywords
    kwargs: dict[str, Any]
    if spec.optimizer == "adam":
        cls, kwargs = torch.optim.Adam, ({"capturable": True} if capturable else {})
    else:
        cls, kwargs = torch.optim.SGD, {"momentum": 0.9}
    try:
        optimizer = cls(params, lr=spec.lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # older torch, or no fused kernel for this device
        optimizer = cls(params, lr=spec.lr, foreach=True, **kwargs)
    # the warm-up before capture and the partial last batch run it uncaptured on purpose: no warning
    optimizer._warned_capturable_if_run_uncaptured = capturable
    return optimizer


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
