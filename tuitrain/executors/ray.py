"""Training a preset's runs on a Ray cluster (`--executor ray`, the optional extra tuitrain[ray]).

Ray is only another way to start the scheduler's workers (tuitrain.executors.scheduler): each slot is a Ray actor
that trains runs with tuitrain.train.worker's `train_task` and streams its messages back while it trains; this (the
driver) process still schedules the runs and writes every run file and checkpoint,
so the cluster needs no shared filesystem.
A `RayWorker` looks to the scheduler like a local worker: its handle is one end of a socket pair, fed by a thread
that pulls the actor's stream, so the scheduler waits on local and Ray workers alike. The data goes into the
object store once. Ray itself is imported only here, and only when asked for.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from tuitrain.core.control import RunControl
from tuitrain.core.errors import TuitrainError
from tuitrain.core.tasks import ControlState, RunTask, WorkerMessage, WorkerReady
from tuitrain.executors.scheduler import STOP_WAIT_S, read_messages
from tuitrain.train.data import MnistArrays

ADDRESS_ENV = "TUITRAIN_RAY_ADDRESS"
"""The cluster to join when --ray-address is not given (unset: an embedded local cluster for the invocation)."""
NODE_IP_ENV = "TUITRAIN_RAY_NODE_IP"
"""The address of this machine's Ray node (the embedded cluster's, and the driver's); unset: Ray's choice."""
INSTALL_HINT = '--executor ray needs Ray, which is not installed: pip install "tuitrain[ray]"'
WORKER_LOG = "tuitrain.log"
"""Beside the run files: what the Ray workers printed (their output never reaches the terminal)."""
CONNECT_TIMEOUT_S = 5.0
"""How long the head node's port may take to answer before the cluster is called unreachable."""
WAITING_AFTER_S = 1.0
"""A run whose actor has no place on the cluster after this long is shown as waiting for room on the cluster."""
COALESCE_S = 0.05
"""A trainer sends what piled up in this long as one stream item: far fewer round trips than one per event."""
STOP_SIGNAL_NAMES = ("SIGINT", "SIGTERM", "SIGHUP")
TOKEN_HINT = (
    "a cluster with token authentication needs RAY_AUTH_MODE=token and the head node's token here: copy its "
    "~/.ray/auth_token (`ray get-auth-token` on the head prints it), or set RAY_AUTH_TOKEN"
)
NO_TOKEN_HINT = f"no authentication token on this machine: {TOKEN_HINT}"
"""Why joining failed when Ray found no authentication token (its own message runs to 500 characters)."""


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


def import_ray() -> Any:
    """The ray module, or a TuitrainError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise TuitrainError(INSTALL_HINT) from None
    return ray


def cluster_capacity(nodes: list[dict], options: RayOptions) -> int:
    """How many runs the alive nodes can hold at once with `options`' resources per run."""
    total = 0
    for node in nodes:
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        fits = [math.floor(resources.get("CPU", 0) / options.cpus + 1e-9)] if options.cpus else []
        if options.gpus:
            fits.append(math.floor(resources.get("GPU", 0) / options.gpus + 1e-9))
        total += min(fits) if fits else 1
    return total


def plan_ray_jobs(requested: int | str, runs: int, capacity: int) -> int:
    """Runs in flight: `requested` (at most one per run; more than the cluster holds wait for a worker), or for
    "auto": as many as the cluster's resources hold at once."""
    if requested != "auto":
        return max(1, min(int(requested), runs))
    return max(1, min(runs, capacity))


def first_line(exc: BaseException) -> str:
    """A Ray error in one line: its type and the first sentence that says something."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = next((line for line in lines if not line.startswith(("Traceback", "File ", "ray::"))), "")
    return f"{type(exc).__name__}: {text}"[:300]


@contextlib.contextmanager
def output_to_devnull() -> Iterator[None]:
    """ray.init hands sys.stdout and sys.stderr's file descriptors to the processes it starts; in the app they are
    Textual's capture objects, which have none. Meanwhile both are /dev/null: nothing Ray prints while starting
    reaches the terminal (or the app's screen)."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield


@contextlib.contextmanager
def signal_handlers_kept() -> Iterator[None]:
    """ray.init installs its own handlers (SIGTERM exits at once): put this process's back afterwards, so that a
    stop signal still stops the runs cleanly."""
    signals = [getattr(signal, name) for name in STOP_SIGNAL_NAMES if hasattr(signal, name)]
    main = threading.current_thread() is threading.main_thread()
    before = {s: signal.getsignal(s) for s in signals} if main else {}
    try:
        yield
    finally:
        for sig, handler in before.items():
            if handler is not None:
                signal.signal(sig, handler)


class RayCluster:
    """This process's connection to a Ray cluster (embedded or joined) for one invocation."""

    def __init__(self, options: RayOptions) -> None:
        self.options = options
        self.ray = import_ray()
        self.started_s = 0.0
        """How long connecting (or starting the embedded cluster) took."""
        self.arrays_ref: Any = None
        self.workers_made = 0

    def connect(self) -> None:
        """Join the cluster (or start the embedded one); TuitrainError (one line) when it cannot be reached or
        cannot hold one run."""
        ray, address = self.ray, self.options.cluster_address
        node_ip = os.environ.get(NODE_IP_ENV) or None
        kwargs: dict[str, Any] = dict(
            address=address,
            log_to_driver=False,  # the workers' output goes to the log beside the run files, never the terminal
            logging_level=logging.ERROR,
            configure_logging=True,
            include_dashboard=False if address is None else None,
        )
        if node_ip:
            kwargs["_node_ip_address"] = node_ip
        where = self.describe()
        start = time.monotonic()
        try:
            if address is not None:
                check_reachable(address)
            with signal_handlers_kept(), output_to_devnull():
                ray.init(**{k: v for k, v in kwargs.items() if v is not None})
        except TuitrainError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to connect is one line for the user
            self.shutdown()
            verb = "join" if address is not None else "start"
            raise TuitrainError(f"--executor ray: cannot {verb} {where}: {self.why_not(exc)}") from None
        self.started_s = time.monotonic() - start
        self.check_room()

    def why_not(self, exc: BaseException) -> str:
        """Why ray.init failed, in one line."""
        if isinstance(exc, getattr(self.ray.exceptions, "AuthenticationError", ())):
            return NO_TOKEN_HINT
        if isinstance(exc, ConnectionError) and self.options.cluster_address:
            # its port answered (check_reachable): a missing or wrong token is what Ray then reports this way
            return f"{first_line(exc)} (its port answers; {TOKEN_HINT})"
        return first_line(exc)

    def describe(self) -> str:
        address = self.options.cluster_address
        return f"the Ray cluster at {address}" if address else "an embedded Ray cluster"

    def starting(self) -> str:
        """What connect is about to do: 'joining the Ray cluster at HOST:PORT' or 'starting an embedded Ray
        cluster'."""
        return ("joining " if self.options.cluster_address else "starting ") + self.describe()

    def summary(self) -> str:
        """'2 node(s), 2 CPU(s), 0 GPU(s), joined in 1.2 s; 1 CPU(s) and 0 GPU(s) per run' ('started in' for an
        embedded cluster that this process started, 'joined' when ray.init found one running on this machine)."""
        have = self.ray.cluster_resources()
        driver = getattr(getattr(self.ray, "_private", None), "worker", None)  # Ray's own module: no public API
        started = getattr(getattr(driver, "_global_node", None), "head", False)  # for "did I start the cluster"
        return (
            f"{len(self.nodes())} node(s), {have.get('CPU', 0):g} CPU(s), {have.get('GPU', 0):g} GPU(s), "
            f"{'started' if started else 'joined'} in {self.started_s:.1f} s; {self.options.cpus:g} CPU(s) and "
            f"{self.options.gpus:g} GPU(s) per run"
        )

    def nodes(self) -> list[dict]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def check_room(self) -> None:
        if cluster_capacity(self.nodes(), self.options) == 0:
            have = self.ray.cluster_resources()
            self.shutdown()
            raise TuitrainError(
                f"--executor ray: no node of the cluster can hold one run (cpus_per_run = {self.options.cpus:g}"
                f", gpus_per_run = {self.options.gpus:g}; the cluster has {have.get('CPU', 0):g} CPU(s) and "
                f"{have.get('GPU', 0):g} GPU(s)). Lower cpus_per_run / gpus_per_run, or add nodes."
            )

    def capacity(self) -> int:
        return cluster_capacity(self.nodes(), self.options)

    def put_data(self, arrays: MnistArrays) -> None:
        """The data, into the object store once: every trainer reads it from there."""
        self.arrays_ref = self.ray.put(arrays)

    def worker(self, folder: Callable[[], Path | None], waiting: Callable[[], None]) -> RayWorker:
        """A new slot's worker (its actor waits for room on the cluster); `folder`: where its output is logged;
        `waiting`: called once if the actor finds no room (a run then waits for a worker). A slot within the
        cluster's capacity has room: its actor only takes a while to start, which is not waiting for room."""
        has_room = self.workers_made < self.capacity()
        self.workers_made += 1
        return RayWorker(self, folder, waiting if not has_room else lambda: None)

    def shutdown(self) -> None:
        """Leave the cluster (an embedded one stops)."""
        with contextlib.suppress(Exception), signal_handlers_kept():
            self.ray.shutdown()


def check_reachable(address: str) -> None:
    """A TCP connection to the cluster's HOST:PORT, or a TuitrainError: ray.init would retry an unreachable
    address for minutes, logging to the terminal."""
    if address == "auto" or "://" in address:
        return  # found from this machine's Ray session / a Ray client address: ray.init says what is wrong
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise TuitrainError(f"--ray-address {address!r}: expected HOST:PORT (the head node's address and port).")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise TuitrainError(
            f"--executor ray: cannot reach the Ray cluster at {address} ({exc.strerror or exc}). Is its head node "
            "running (ray start --head)?"
        ) from None


# --- driver side -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerOutput:
    """Lines the trainer's process printed (stdout and stderr), for the log beside the run files."""

    lines: list[str]


@dataclass(frozen=True)
class TrainerPlace:
    """Where a trainer actor lives."""

    node_id: str
    host: str
    pid: int


@dataclass
class RayWorker:
    """A slot's Ray actor, seen by the scheduler as a Worker: messages arrive on a local socket, written by a
    thread that pulls the actor's stream."""

    cluster: RayCluster
    folder: Callable[[], Path | None]
    waiting: Callable[[], None]
    tasks: queue.Queue[RunTask | None] = field(default_factory=queue.Queue)
    reason: str | None = None
    place: TrainerPlace | None = None

    def __post_init__(self) -> None:
        options = self.cluster.options
        self.actor = (
            trainer_class(self.cluster.ray)
            .options(num_cpus=options.cpus, num_gpus=options.gpus)
            .remote(self.cluster.arrays_ref, options.cpus)
        )
        self.place_ref = self.actor.where.remote()
        ours, theirs = socket.socketpair()
        self.conn = Connection(ours.detach())
        self.feed = Connection(theirs.detach())
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self.pull, name="tuitrain-ray-stream", daemon=True)
        self.thread.start()

    # --- the Worker protocol ---

    def send(self, message: object) -> None:
        if isinstance(message, RunTask) or message is None:
            self.tasks.put(message)
        elif isinstance(message, ControlState):
            self.actor.control.remote(message)
        # MnistArrays: the actor has the data from the object store already

    def messages(self) -> tuple[list[WorkerMessage], bool]:
        return read_messages(self.conn)

    def handle(self) -> object:
        return self.conn

    def exit_reason(self) -> str | None:
        return self.reason

    def close(self, *, now: bool = False) -> None:
        if self.conn.closed and not now:
            return
        self.closing.set()
        self.tasks.put(None)
        if not now:  # the actor ends its stream once its task is done
            self.thread.join(STOP_WAIT_S)
        with contextlib.suppress(Exception):  # already dead, or the cluster gone: nothing more to free
            self.cluster.ray.kill(self.actor, no_restart=True)
        self.thread.join(STOP_WAIT_S)
        if not self.conn.closed:
            self.conn.close()

    # --- the stream ---

    def pull(self) -> None:
        """Run each task on the actor and copy its stream to the socket; on a Ray error, note the reason and close
        the socket (the scheduler then saves the run as crashed)."""
        ray = self.cluster.ray
        try:
            if not self.wait_for_room():
                return
            # ready only once placed: the scheduler hands runs to ready slots, so none waits behind a busy node
            self.feed.send(WorkerReady(self.place.pid, self.place.host))  # type: ignore[union-attr]
            while (task := self.tasks.get()) is not None:
                for ref in self.actor.train.remote(task):
                    for message in ray.get(ref):
                        if isinstance(message, WorkerOutput):
                            self.log(message.lines)
                        else:
                            self.feed.send(message)
        except OSError:  # the driver closed its end: nothing more to say
            pass
        except Exception as exc:  # noqa: BLE001 - the actor or its node died: the run's reason
            place = self.place
            where = f" on node {place.node_id[:12]} ({place.host}, pid {place.pid})" if place else ""
            self.reason = f"Ray worker{where} is gone: {first_line(exc)}"
        finally:
            self.feed.close()

    def wait_for_room(self) -> bool:
        """Until the actor has its place on the cluster (True), or the worker is closed meanwhile (False)."""
        ray = self.cluster.ray
        told = False
        while not ray.wait([self.place_ref], timeout=WAITING_AFTER_S)[0]:
            if self.closing.is_set():
                return False
            if not told:
                self.waiting()
                told = True
        self.place = ray.get(self.place_ref)
        return True

    def log(self, lines: list[str]) -> None:
        folder = self.folder()
        if folder is None or not lines:
            return
        place = self.place
        prefix = f"[ray {place.host} node {place.node_id[:12]} pid {place.pid}] " if place else "[ray] "
        with contextlib.suppress(OSError), open(folder / WORKER_LOG, "a", encoding="utf-8") as log:
            log.writelines(prefix + line + "\n" for line in lines)


# --- worker side -------------------------------------------------------------------------------------------


class OutputCapture:
    """This process's stdout and stderr (file descriptors 1 and 2, so C libraries' output too), read into lines."""

    def __init__(self) -> None:
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self.read, args=(read_end,), name="tuitrain-output", daemon=True).start()

    def read(self, fd: int) -> None:
        with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as pipe:
            for line in pipe:
                self.lines.put(line.rstrip("\n"))

    def take(self) -> list[str]:
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.lines.get_nowait())
        return out


class RunTrainer:
    """The Ray actor of one slot: trains the runs it is given, one at a time, streaming lists of messages."""

    def __init__(self, arrays: MnistArrays, cpus: float) -> None:
        from tuitrain.train.worker import TensorCache

        # Ray has allotted this actor its CPUs: train with that many threads, not a share of the node's cores
        os.environ.setdefault("TUITRAIN_CPU_THREADS", str(max(1, math.floor(cpus))))
        self.output = OutputCapture()
        # the object store's arrays are read-only (torch warns about wrapping those): one private copy per actor
        self.arrays = replace(
            arrays,
            train_images=arrays.train_images.copy(),
            train_labels=arrays.train_labels.copy(),
            test_images=arrays.test_images.copy(),
            test_labels=arrays.test_labels.copy(),
        )
        self.tensors = TensorCache()
        self.controls: dict[int, RunControl] = {}
        import ray

        self.node_id = ray.get_runtime_context().get_node_id()

    def where(self) -> TrainerPlace:
        return TrainerPlace(self.node_id, socket.gethostname(), os.getpid())

    def control(self, change: ControlState) -> None:
        from tuitrain.train.worker import apply_control

        if change.index in self.controls:
            apply_control(self.controls[change.index], change)

    def train(self, task: RunTask) -> Iterator[list[WorkerMessage | WorkerOutput]]:
        from tuitrain.train.worker import train_task

        done = object()
        inbox: queue.Queue[Any] = queue.Queue()
        control = self.controls[task.index] = RunControl()

        def work() -> None:
            try:
                train_task(task, self.arrays, inbox.put, control, self.tensors, env={"node_id": self.node_id})
            finally:
                inbox.put(done)

        threading.Thread(target=work, name="tuitrain-train", daemon=True).start()
        finished = False
        try:
            while not finished:
                batch: list[Any] = []
                with contextlib.suppress(queue.Empty):
                    batch.append(inbox.get(timeout=0.5))
                    deadline = time.monotonic() + COALESCE_S
                    while (left := deadline - time.monotonic()) > 0:
                        batch.append(inbox.get(timeout=left))
                finished = any(m is done for m in batch)
                lines = self.output.take()
                out: list[Any] = [WorkerOutput(lines)] if lines else []
                out += [m for m in batch if m is not done]
                if out:
                    yield out
        finally:
            self.controls.pop(task.index, None)


_trainer_classes: dict[int, Any] = {}


def trainer_class(ray: Any) -> Any:
    """RunTrainer as a Ray actor class: threaded, so that `control` reaches it while `train` streams."""
    key = id(ray)
    if key not in _trainer_classes:
        _trainer_classes[key] = ray.remote(max_concurrency=4, max_restarts=0)(RunTrainer)
    return _trainer_classes[key]
