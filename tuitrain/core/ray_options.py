"""What `--executor ray` asks for: where and with what each run trains on a Ray cluster. Neither torch nor Ray:
the command line and the app build it, tuitrain.executors.ray uses it."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

ADDRESS_ENV = "TUITRAIN_RAY_ADDRESS"
"""The cluster to join when --ray-address is not given (unset: an embedded local cluster for the invocation)."""


@dataclass(frozen=True)
class RayOptions:
    """Where and with what each run trains on Ray."""

    address: str | None = None
    """A running cluster to join ("HOST:PORT", or "auto"); None: TUITRAIN_RAY_ADDRESS, else start an embedded one
    for the invocation."""
    cpus_per_run: float | None = None
    """CPUs Ray reserves for each run (its torch threads follow it); None: the preset's key, else 1."""
    gpus_per_run: float | None = None
    """GPUs Ray reserves for each run (fractions share one GPU); None: the preset's key, else 0 (on the CPU)."""

    @property
    def cpus(self) -> float:
        return 1.0 if self.cpus_per_run is None else self.cpus_per_run

    @property
    def gpus(self) -> float:
        return self.gpus_per_run or 0.0

    @property
    def cluster_address(self) -> str | None:
        return self.address or os.environ.get(ADDRESS_ENV) or None


def with_resources(options: RayOptions, cpus_per_run: float | None, gpus_per_run: float | None) -> RayOptions:
    """`options` with these resources where it has none (a preset's keys under the command line's options)."""
    return replace(
        options,
        cpus_per_run=options.cpus_per_run if options.cpus_per_run is not None else cpus_per_run,
        gpus_per_run=options.gpus_per_run if options.gpus_per_run is not None else gpus_per_run,
    )
