"""A machine's CPU cores, shared by every run that tuitrain trains on it: a lease registry in the user's cache.

Each run that trains on the CPU holds a lease: one small file in <cache folder>/cores/ naming its host, its
process (pid and start time) and its place in the queue. The first `cores` holders on a host are admitted and
split the cores evenly, the remainder to the oldest (a paused run keeps its place but gives its cores to the
others until it goes on); later ones wait for a free core. A holder asks for its
share at its batch boundaries (`CoreLease.threads`, cheap) and trains with that many threads, so when a second
tuitrain starts the first gives up half of its share within a batch, and takes it back when the other ends. The
share is capped by the cores that other programs keep busy (OtherWork, from /proc/stat), so that torch's threads
do not fight them.
Registering and expiring take an flock on the registry's lock file, so that two processes registering at once
agree on the order. A holder whose process is gone (a crash, kill -9) is removed by the next full scan; holders
on other hosts (a cache folder on NFS) are left alone and not counted.

Torch-free: the engine and its worker processes both use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tuitrain.core.atomic import atomic_write_text
from tuitrain.core.cache import cache_dir
from tuitrain.core.errors import TuitrainError

FORCED_THREADS_VARIABLE = "TUITRAIN_CPU_THREADS"
LOCK_FILE = "lock"
"""In the registry folder: flocked around registering and scanning."""
WAIT_POLL_S = 0.5
"""A waiting holder looks at the registry this often."""
CHECK_EVERY_S = 0.25
"""threads() looks at the registry folder's mtime at most this often (it is asked at every batch)."""
RESCAN_EVERY_S = 2.0
"""threads() reads every holder and expires dead ones this often, changed mtime or not (coarse or cached
mtimes, as on NFS, can miss a change)."""

CALIBRATION_LABEL = "calibration"
"""The label of the lease that timing a model for an estimate holds (a second or so; the app's home screen
estimates its presets when shown)."""

LOAD_WINDOW_S = 1.0
"""The CPU time of other work on the machine is measured over windows at least this long."""
QUICK_WINDOW_S = 0.3
"""A window measured on the spot (busy_cores(fresh=True)): long enough for the kernel's 10 ms ticks."""

_holder_numbers = itertools.count(1)
"""Per-process numbers of leases: one process may hold several."""
_told_no_registry: set[Path] = set()
"""Registry folders this process has already said it cannot use."""


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or taskset's limit, not the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def forced_cpu_threads() -> int | None:
    """TUITRAIN_CPU_THREADS as a thread count, None when unset; TuitrainError when it is not a whole number."""
    value = os.environ.get(FORCED_THREADS_VARIABLE, "").strip()
    if not value:
        return None
    try:
        return max(1, int(value))
    except ValueError:
        raise TuitrainError(f"{FORCED_THREADS_VARIABLE}={value!r}: expected a whole number of threads.") from None


class CoreShare(Protocol):
    """A run's share of the cores as the training loop uses it (a CoreLease)."""

    def threads(self) -> int:
        """How many threads to train with now; asked at every batch boundary."""

    def set_paused(self, paused: bool) -> None:
        """The run pauses (True) or goes on (False): while it is paused, its cores go to the other runs."""


def cpu_lease(device_type: str, *, label: str = "") -> CoreLease | None:
    """The lease a run on `device_type` ("cpu" or "cuda") trains under, not yet acquired; None when it needs
    none: on a GPU, or with TUITRAIN_CPU_THREADS forcing the thread count."""
    if device_type != "cpu" or forced_cpu_threads() is not None:
        return None
    return CoreLease(label=label)


@contextlib.contextmanager
def cpu_share(
    device_type: str,
    *,
    label: str,
    should_stop: Callable[[], bool],
    on_wait: Callable[[str], None],
    log: Callable[[str], None],
) -> Iterator[CoreShare | None]:
    """For the length of the block, the run's share of the cores for fit's `cores`: its lease, acquired first
    (waiting for a free core) and released after. None when the run needs no lease (cpu_lease), or was stopped
    while it waited: fit then records it as interrupted at once."""
    lease = cpu_lease(device_type, label=label)
    try:
        if lease is not None and not lease.acquire(should_stop=should_stop, on_wait=on_wait, log=log):
            lease = None
        yield lease
    finally:
        if lease is not None:
            lease.release()


def shares(cores: int, holders: int) -> list[int]:
    """The thread counts of the admitted holders that train (none paused), oldest first: `cores` split evenly
    among the first min(holders, cores), the remainder one each to the oldest."""
    admitted = min(holders, cores)
    if admitted <= 0:
        return []
    base, extra = divmod(cores, admitted)
    return [base + (1 if i < extra else 0) for i in range(admitted)]


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and start time (clock ticks after boot) from /proc; None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, start: int | None) -> bool:
    """Whether a holder's process still runs: the pid exists and is no zombie, and (where /proc tells) it started
    when the holder's did, so that a pid reused by another process does not keep a dead holder's lease."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's process by that pid; the start time below tells
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc (macOS), or it ended just now (the next scan sees that)
    state, started = stat
    return state not in ("Z", "X") and (start is None or started == start)


@dataclass(frozen=True)
class Holder:
    """One lease as its file in the registry says."""

    name: str
    """Its file's name."""
    host: str
    pid: int
    start: int | None
    """Its process's start time (/proc/<pid>/stat), None where unknown."""
    seq: int
    """Its place in the queue on its host: admitted in this order."""
    label: str
    paused: bool = False
    """Its run is paused: admitted, it keeps its place, and its cores go to the other admitted holders."""

    @classmethod
    def read(cls, path: Path) -> Holder | None:
        """The holder a file describes; None when it is gone or not a holder's file."""
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            start = entry.get("start")
            return cls(
                name=path.name,
                host=str(entry["host"]),
                pid=int(entry["pid"]),
                start=None if start is None else int(start),
                seq=int(entry["seq"]),
                label=str(entry.get("label", "")),
                paused=entry.get("paused") is True,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # released meanwhile, or not ours
            return None


class OtherWork:
    """How many of this process's cores other work keeps busy: the kernel's busy time of those cores (/proc/stat)
    less this process's own CPU time, over the last window of at least LOAD_WINDOW_S. Other tuitrain runs count too
    (their leases already keep the shares within the cores, so the two agree). Zero where the kernel does not say."""

    def __init__(self) -> None:
        self.cpus = _affinity()
        self.ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.busy = 0.0
        """Cores busy with other work over the last window."""
        self.measured = False
        """A window has been measured (until then `busy` is a guess: none)."""
        self.last = self._sample()

    def busy_cores(self, *, fresh: bool = False) -> int:
        """Cores that other work kept busy over the last window, rounded (half a core counts as busy: torch's
        threads that wait on each other lose far more than their share of the core they share). `fresh`: when
        the last window ended long ago, measure a short one now (QUICK_WINDOW_S) rather than average since then."""
        if fresh and self.last is not None and (not self.measured or time.monotonic() - self.last[0] >= LOAD_WINDOW_S):
            self.last = self._sample()
            time.sleep(QUICK_WINDOW_S)
            self._take_window(0.0)
        else:
            self._take_window(LOAD_WINDOW_S)
        return math.floor(self.busy + 0.5)

    def _take_window(self, at_least_s: float) -> None:
        """Close the window (and start the next) if it is at least this long."""
        if self.last is None or time.monotonic() - self.last[0] < at_least_s:
            return
        sample = self._sample()
        if sample is not None:
            (t0, busy0, own0), (t1, busy1, own1) = self.last, sample
            self.busy, self.last = max(0.0, ((busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-6)), sample
            self.measured = True

    def _sample(self) -> tuple[float, float, float] | None:
        """(now, busy seconds of this process's cores since boot, this process's CPU seconds); None without /proc."""
        try:
            with open("/proc/stat", encoding="ascii") as fh:
                lines = fh.read().splitlines()
        except OSError:
            return None
        busy = 0
        for line in lines:
            name, _, rest = line.partition(" ")
            if not name.startswith("cpu") or not name[3:].isdigit() or (self.cpus and int(name[3:]) not in self.cpus):
                continue
            # user nice system idle iowait irq softirq steal: all but idle and iowait are busy
            fields = [int(v) for v in rest.split()[:8]]
            busy += sum(fields) - fields[3] - fields[4]
        own = os.times()
        return time.monotonic(), busy / self.ticks, own.user + own.system


@functools.cache
def other_work_here() -> OtherWork:
    """One measure per process: a run that starts after another already knows what else the machine runs."""
    return OtherWork()


def free_threads(most: int) -> int:
    """At most `most` threads, fewer by the cores that other work keeps busy now (at least 1)."""
    return max(1, min(most, machine_cores() - other_work_here().busy_cores(fresh=True)))


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:
        return set()


class CoreLease:
    """One run's share of this machine's CPU cores: `acquire()`, then `threads()` at every batch, then `release()`.

    As a context manager it releases on leaving (acquire it inside). Without a usable registry folder (say a
    read-only home) acquire() gives no lease: threads() then returns every core and the run trains as if alone.
    """

    def __init__(
        self, *, registry: Path | None = None, cores: int | None = None, label: str = "", other_work: bool = True
    ) -> None:
        self.registry = Path(registry) if registry is not None else cache_dir() / "cores"
        self.cores = max(1, cores if cores is not None else machine_cores())
        self.label = label
        self.host = os.uname().nodename
        self.pid = os.getpid()
        self.name = f"{self.host}-{self.pid}-{next(_holder_numbers)}.json"
        self.seq: int | None = None
        """Place in the queue, once registered."""
        self.held = False
        """Registered in the registry (acquired or waiting), not yet released."""
        self.position = 0
        """Holders on this host ahead of this one, as last read."""
        self.holders = 0
        """Holders on this host, admitted or waiting, as last read."""
        self.calibrations = 0
        """Admitted holders on this host that time a model for an estimate, as last read."""
        self.paused = False
        """This holder's run is paused (its file says so while held)."""
        self._share = self.cores
        """The lease's split of the cores."""
        self._threads = self.cores
        """What threads() says: the split, less the cores that other work keeps busy."""
        self.other_work = other_work_here() if other_work else None
        self._checked = self._scanned = 0.0
        self._mtime: int | None = None

    def __enter__(self) -> CoreLease:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    # --- taking and giving back --------------------------------------------------------------

    def acquire(
        self,
        *,
        should_stop: Callable[[], bool] = lambda: False,
        on_wait: Callable[[str], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> bool:
        """Register, then wait until admitted (first come, first served): True once admitted. While waiting,
        `on_wait(reason)` is called once; when `should_stop()` turns true meanwhile, the lease is given up and
        the answer is False. A registry that cannot be written: True at once, without a lease (`log` says so,
        once per process and folder)."""
        if self.held:
            return True
        told = False
        try:
            self._register()
            while True:
                if self.position < self.cores:
                    self._look_at_other_work()
                    return True
                if should_stop():
                    self.release()
                    return False
                if on_wait is not None and not told:
                    on_wait(self.waiting_reason())
                    told = True
                time.sleep(WAIT_POLL_S)
                self._refresh(expire=True)
        except OSError as exc:
            self.release()
            self._say_no_registry(exc, log)
            return True
        except BaseException:  # a Ctrl-C while waiting: out of the queue
            self.release()
            raise

    def acquire_if_alone(self, *, log: Callable[[str], None] | None = None) -> bool:
        """Register only if no other run on this host holds or waits for a core: True then (held, every core its
        share), False with nothing held otherwise. A registry that cannot be written: True, without a lease."""
        if self.held:
            return self.holders == 1
        try:
            self._register()
        except OSError as exc:
            self.release()
            self._say_no_registry(exc, log)
            return True
        if self.holders > 1:
            self.release()
            return False
        return True

    def release(self) -> None:
        """Leave the registry (idempotent). A forked child holding a copy of its parent's lease leaves it alone."""
        if not self.held or os.getpid() != self.pid:
            return
        self.held = False
        with contextlib.suppress(OSError):
            (self.registry / self.name).unlink()

    def waiting_reason(self) -> str:
        """'waiting for a free core (2 runs hold the 2 cores)'; a calibration among the holders is named as one:
        it ends within seconds, while a run holds its core until it ends."""
        admitted = min(self.holders, self.cores)
        ahead = self.position - admitted
        runs = admitted - self.calibrations
        held = [f"{runs} runs" if runs != 1 else "1 run"] if runs else []
        if self.calibrations:
            held.append(
                "a calibration for an estimate"
                if self.calibrations == 1
                else f"{self.calibrations} calibrations for estimates"
            )
        verb = "hold" if admitted != 1 else "holds"
        cores = f"the {self.cores} cores" if self.cores != 1 else "the only core"
        queue = f"; {ahead} waiting before this one" if ahead > 0 else ""
        return f"waiting for a free core ({' and '.join(held)} {verb} {cores}{queue})"

    # --- the share -----------------------------------------------------------------------------

    def threads(self) -> int:
        """This holder's share of the cores now, less the cores that other work keeps busy (at least 1); every core
        when no lease is held. Cheap enough for every batch: the registry is looked at only every CHECK_EVERY_S, and
        read when it changed."""
        if not self.held:
            return self.cores
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY_S:
            return self._threads
        self._checked = now
        try:
            if now - self._scanned >= RESCAN_EVERY_S:
                self._refresh(expire=True)
            elif self._folder_mtime() != self._mtime:
                self._refresh(expire=False)
        except OSError:
            pass  # the registry went away or read-only mid-run: keep the last share
        self._threads = self._limited()
        return self._threads

    def set_paused(self, paused: bool) -> None:
        """Say in the registry that the run pauses or goes on. Paused, its cores go to the other admitted holders at
        their next batches; going on, it trains with its share again at once (the others give theirs back within
        CHECK_EVERY_S)."""
        if paused == self.paused:
            return
        self.paused = paused
        if not self.held:
            return
        with contextlib.suppress(OSError):  # a registry gone read-only: the others go on with the last shares
            with self._locked():
                self._write_own()
            self._refresh(expire=False)

    def _look_at_other_work(self) -> None:
        """On this process's first lease, measure the other work now (QUICK_WINDOW_S) rather than train for a first
        window with a share that other programs may be crowding."""
        if self.other_work is not None and not self.other_work.measured:
            self.other_work.busy_cores(fresh=True)
            self._threads = self._limited()

    def _limited(self) -> int:
        """The share, less the cores that other work keeps busy (at least 1)."""
        busy = self.other_work.busy_cores() if self.other_work is not None else 0
        return max(1, min(self._share, self.cores - busy))

    def refresh(self) -> int:
        """Read the registry now (expiring dead holders) and return the share."""
        if self.held:
            with contextlib.suppress(OSError):
                self._refresh(expire=True)
        return self.threads()

    # --- the registry --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.registry.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.registry / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # and with it the lock

    def _register(self) -> None:
        self.pid = os.getpid()
        with self._locked():
            mtime = self._folder_mtime()
            holders = self._scan(expire=True)
            self.seq = max((h.seq for h in holders), default=0) + 1
            self._write_own()
            self.held = True
            self._take_in(holders + [self._own()], mtime)

    def _refresh(self, *, expire: bool) -> None:
        """Read the holders (expiring dead ones) and work out this one's place and share."""
        now = time.monotonic()
        with self._locked():
            mtime = self._folder_mtime()  # before reading: a change during the scan is seen next time
            holders = self._scan(expire=expire)
            if self.held and all(h.name != self.name for h in holders):
                self._write_own()  # removed from under it (a cleaned cache folder): back, in its old place
                holders = sorted(holders + [self._own()], key=lambda h: (h.seq, h.name))
        if expire:
            self._scanned = now
        self._checked = now
        self._take_in(holders, mtime)

    def _take_in(self, holders: list[Holder], mtime: int | None) -> None:
        names = [h.name for h in holders]
        self.position = names.index(self.name) if self.name in names else len(names)
        self.holders = len(holders)
        self.calibrations = sum(h.label == CALIBRATION_LABEL for h in holders[: self.cores])
        training = [h.name for h in holders[: self.cores] if not h.paused]
        split = shares(self.cores, len(training))
        if self.name in training:
            self._share = split[training.index(self.name)]
        elif self.position < self.cores:  # paused: the share it trains with on going on, before the next read
            self._share = shares(self.cores, len(training) + 1)[-1]
        else:
            self._share = 1  # a run already training goes on
        self._threads = self._limited()
        self._mtime = mtime

    def _scan(self, *, expire: bool) -> list[Holder]:
        """This host's holders in queue order; with `expire`, the files of dead ones removed first."""
        found = []
        for path in self.registry.glob("*.json"):
            holder = Holder.read(path)
            if holder is None or holder.host != self.host:
                continue
            if expire and holder.name != self.name and not _alive(holder.pid, holder.start):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            found.append(holder)
        return sorted(found, key=lambda h: (h.seq, h.name))

    def _own(self) -> Holder:
        assert self.seq is not None
        stat = _proc_stat(self.pid)
        return Holder(self.name, self.host, self.pid, stat[1] if stat else None, self.seq, self.label, self.paused)

    def _write_own(self) -> None:
        own = self._own()
        entry = {"host": own.host, "pid": own.pid, "start": own.start, "seq": own.seq, "label": own.label}
        if own.paused:
            entry["paused"] = True
        atomic_write_text(self.registry / self.name, json.dumps(entry))

    def _folder_mtime(self) -> int | None:
        try:
            return os.stat(self.registry).st_mtime_ns
        except OSError:
            return None

    def _say_no_registry(self, exc: OSError, log: Callable[[str], None] | None) -> None:
        if log is None or self.registry in _told_no_registry:
            return
        _told_no_registry.add(self.registry)
        log(
            f"Cannot share the CPU cores with other tuitrain runs: {self.registry} is not writable "
            f"({exc.strerror or exc}); training with torch's default threads."
        )
