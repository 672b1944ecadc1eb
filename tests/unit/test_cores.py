"""The core lease registry (tuitrain.core.cores): who is admitted, how the cores are split, dead and foreign
holders, several processes, and a registry that cannot be written. Every registry is under tmp_path."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tuitrain.core import cores
from tuitrain.core.cores import CoreLease, cpu_lease, forced_cpu_threads, shares
from tuitrain.core.errors import TuitrainError
from tuitrain.core.events import RunWaiting
from tuitrain.headless import HeadlessPrinter

HOLDER = """
import sys
from pathlib import Path
from tuitrain.core.cores import CoreLease

lease = CoreLease(registry=Path(sys.argv[1]), cores=int(sys.argv[2]), label="child", other_work=False)
lease.acquire()
print("held", lease.seq, lease.threads(), flush=True)
for line in sys.stdin:
    print(lease.refresh(), flush=True)
"""
"""A process that holds a lease: prints `held SEQ THREADS` once admitted, then its share for every line read."""


MEASURED_BUSY_CORES = cores.OtherWork.busy_cores
"""The real measure (the conftest replaces it for the other tests)."""


def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until `condition()` holds (a generous deadline: it fails only when it never does)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def holder_files(registry: Path) -> list[str]:
    return sorted(p.name for p in registry.glob("*.json"))


def start_holder(registry: Path, cores_: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(registry), str(cores_)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def ask(proc: subprocess.Popen[str]) -> int:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("share\n")
    proc.stdin.flush()
    return int(proc.stdout.readline())


def acquire_in_thread(lease: CoreLease) -> tuple[threading.Thread, threading.Event, list[str]]:
    """Acquire `lease` on a thread; returns it, an event set once it waits, and the reasons it was given."""
    waiting, reasons = threading.Event(), []

    def on_wait(reason: str) -> None:
        reasons.append(reason)
        waiting.set()

    thread = threading.Thread(target=lease.acquire, kwargs={"on_wait": on_wait}, daemon=True)
    thread.start()
    return thread, waiting, reasons


def test_the_cores_are_split_evenly_with_the_remainder_to_the_oldest() -> None:
    assert shares(2, 1) == [2]
    assert shares(2, 2) == [1, 1]
    assert shares(2, 3) == [1, 1]  # the third waits
    assert shares(5, 3) == [2, 2, 1]
    assert shares(16, 3) == [6, 5, 5]
    assert shares(4, 0) == []
    for cores_ in range(1, 9):
        for holders in range(1, 12):
            assert sum(shares(cores_, holders)) == cores_


def test_a_second_holder_halves_the_first_share_until_it_leaves(tmp_path: Path) -> None:
    registry = tmp_path / "cores"
    with CoreLease(registry=registry, cores=2, label="a") as first:
        assert first.acquire()
        assert first.threads() == 2
        second = CoreLease(registry=registry, cores=2, label="b")
        assert second.acquire()
        assert second.threads() == 1
        until(lambda: first.threads() == 1, "the first holder to give up a core")  # seen by the cheap check
        second.release()
        until(lambda: first.threads() == 2, "the first holder to take its core back")
    assert holder_files(registry) == []
    first.release()  # idempotent


def test_a_paused_holder_lends_its_cores_and_keeps_its_place(tmp_path: Path) -> None:
    registry = tmp_path / "cores"
    first, second = CoreLease(registry=registry, cores=2, label="a"), CoreLease(registry=registry, cores=2, label="b")
    assert first.acquire() and second.acquire()
    until(lambda: first.threads() == 1 and second.threads() == 1, "an even split")
    third = CoreLease(registry=registry, cores=2, label="c")
    third_thread, third_waits, _reasons = acquire_in_thread(third)
    assert third_waits.wait(30)

    first.set_paused(True)
    until(lambda: second.threads() == 2, "the training holder to take the paused one's core")
    time.sleep(cores.WAIT_POLL_S * 3)
    assert third_thread.is_alive()  # a pause lends cores to the admitted; it frees no place in the queue

    first.set_paused(False)
    assert first.threads() == 1  # at once: going on, it trains with its share
    until(lambda: second.threads() == 1, "the other holder to give the core back")
    first.release()
    third_thread.join(30)
    assert not third_thread.is_alive() and third.threads() == 1
    second.release()
    third.release()
    assert holder_files(registry) == []


def test_acquiring_only_when_alone(tmp_path: Path) -> None:
    registry = tmp_path / "cores"
    first, second = CoreLease(registry=registry, cores=2), CoreLease(registry=registry, cores=2)
    assert first.acquire_if_alone() and first.threads() == 2
    assert not second.acquire_if_alone()  # another holds a core: nothing registered
    assert len(holder_files(registry)) == 1 and not second.held
    first.release()
    assert second.acquire_if_alone() and second.threads() == 2
    second.release()
    assert holder_files(registry) == []


def test_cores_kept_busy_by_other_work_are_left_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    busy = [1]
    monkeypatch.setattr(cores.OtherWork, "busy_cores", lambda self, **_: busy[0])
    lease = CoreLease(registry=tmp_path / "cores", cores=2)
    assert lease.acquire()
    assert lease.refresh() == 1  # alone in the registry, but another program keeps a core busy
    busy[0] = 0
    assert lease.refresh() == 2
    busy[0] = 3
    assert lease.refresh() == 1  # never none
    lease.release()


def test_a_busy_process_counts_as_other_work_and_this_ones_own_work_does_not() -> None:
    if not Path("/proc/stat").is_file():
        pytest.skip("no /proc/stat here")
    work = cores.OtherWork()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # the interpreter started and spins
        assert MEASURED_BUSY_CORES(cores.OtherWork(), fresh=True) >= 1  # measured on the spot
        time.sleep(cores.LOAD_WINDOW_S)
        assert MEASURED_BUSY_CORES(work) >= 1
    finally:
        spinner.kill()
        spinner.wait()
    quiet = cores.OtherWork()
    time.sleep(cores.LOAD_WINDOW_S + 0.2)
    MEASURED_BUSY_CORES(quiet)  # whatever else the machine runs meanwhile
    own = cores.OtherWork()
    deadline = time.monotonic() + cores.LOAD_WINDOW_S + 0.2
    while time.monotonic() < deadline:  # this process keeps a core busy itself
        pass
    MEASURED_BUSY_CORES(own)
    assert own.busy < quiet.busy + 0.6  # its own work is not other work


def test_a_first_lease_starts_with_the_cores_other_work_leaves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not Path("/proc/stat").is_file():
        pytest.skip("no /proc/stat here")
    monkeypatch.setattr(cores.OtherWork, "busy_cores", MEASURED_BUSY_CORES)
    cores.other_work_here.cache_clear()  # as in a fresh process: nothing measured yet
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    lease = CoreLease(registry=tmp_path / "cores", cores=2)
    try:
        time.sleep(0.3)  # the interpreter started and spins
        assert lease.acquire()
        assert lease.threads() == 1  # at once, not after a first window at the full share
    finally:
        spinner.kill()
        spinner.wait()
        lease.release()
        cores.other_work_here.cache_clear()


def test_admission_is_first_come_first_served(tmp_path: Path) -> None:
    registry = tmp_path / "cores"
    first = CoreLease(registry=registry, cores=1, label="a")
    assert first.acquire()
    second, third = CoreLease(registry=registry, cores=1), CoreLease(registry=registry, cores=1)
    second_thread, second_waits, second_reasons = acquire_in_thread(second)
    assert second_waits.wait(30)
    third_thread, third_waits, third_reasons = acquire_in_thread(third)
    assert third_waits.wait(30)
    assert second_reasons == ["waiting for a free core (1 run holds the only core)"]
    assert third_reasons == ["waiting for a free core (1 run holds the only core; 1 waiting before this one)"]

    first.release()
    second_thread.join(30)
    assert not second_thread.is_alive() and second.threads() == 1
    assert third_thread.is_alive()  # still behind the second
    second.release()
    third_thread.join(30)
    assert not third_thread.is_alive() and third.threads() == 1
    third.release()
    assert holder_files(registry) == []


@pytest.mark.parametrize(
    ("first_label", "reason"),
    [
        ("a run", "waiting for a free core (2 runs hold the 2 cores)"),
        # an app timing a model for its estimates holds a core for a second or so: named as such, not as a run
        # (issue 26: "an idle app seemed to hold cores")
        ("calibration", "waiting for a free core (1 run and a calibration for an estimate hold the 2 cores)"),
    ],
)
def test_the_reason_names_the_cores_held(tmp_path: Path, first_label: str, reason: str) -> None:
    registry = tmp_path / "cores"
    held = [CoreLease(registry=registry, cores=2, label=first_label), CoreLease(registry=registry, cores=2)]
    for lease in held:
        assert lease.acquire()
    stop = threading.Event()
    reasons: list[str] = []
    late = CoreLease(registry=registry, cores=2)
    assert not late.acquire(should_stop=stop.is_set, on_wait=lambda r: (reasons.append(r), stop.set()))
    assert reasons == [reason]
    for lease in held:
        lease.release()


def test_stopping_while_waiting_gives_up_the_place(tmp_path: Path) -> None:
    registry = tmp_path / "cores"
    with CoreLease(registry=registry, cores=1) as first:
        first.acquire()
        stop = threading.Event()
        waiting = CoreLease(registry=registry, cores=1)
        assert waiting.acquire(should_stop=stop.is_set, on_wait=lambda _reason: stop.set()) is False
        assert not waiting.held
        assert holder_files(registry) == [first.name]


@pytest.mark.subprocess
def test_a_killed_holder_expires(tmp_path: Path) -> None:
    registry = tmp_path / "cores"
    child = start_holder(registry, 1)
    assert child.stdout is not None
    assert child.stdout.readline().split()[0] == "held"
    child.kill()
    child.wait()
    assert len(holder_files(registry)) == 1  # left behind by kill -9

    deadline = time.monotonic() + 60
    lease = CoreLease(registry=registry, cores=1)
    assert lease.acquire(should_stop=lambda: time.monotonic() > deadline)
    assert holder_files(registry) == [lease.name]
    lease.release()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc for process start times")
def test_a_reused_pid_expires_and_other_hosts_do_not_count(tmp_path: Path) -> None:
    registry = tmp_path / "cores"
    registry.mkdir()
    host = os.uname().nodename
    stat = cores._proc_stat(os.getpid())
    assert stat is not None
    # this process's pid, but a process started at another time: the holder that had the pid is gone
    reused = {"host": host, "pid": os.getpid(), "start": stat[1] + 1, "seq": 1, "label": "gone"}
    (registry / "reused.json").write_text(json.dumps(reused))
    # a home folder shared over NFS: another machine's runs use its cores, not these
    elsewhere = {"host": host + "-elsewhere", "pid": 1, "start": None, "seq": 2, "label": "other machine"}
    (registry / "elsewhere.json").write_text(json.dumps(elsewhere))
    (registry / "junk.json").write_text("not a holder")

    with CoreLease(registry=registry, cores=2) as lease:
        assert lease.acquire()
        assert lease.threads() == 2
        assert sorted(holder_files(registry)) == sorted(["elsewhere.json", "junk.json", lease.name])


@pytest.mark.subprocess
def test_separate_processes_agree_on_order_and_shares(tmp_path: Path) -> None:
    registry = tmp_path / "cores"
    children = [start_holder(registry, 3) for _ in range(2)]  # registering at the same time
    try:
        held = []
        for child in children:
            assert child.stdout is not None
            word, seq, _threads = child.stdout.readline().split()
            held.append(int(seq))
        assert word == "held" and sorted(held) == [1, 2]
        by_seq = dict(zip(held, children))
        assert [ask(by_seq[1]), ask(by_seq[2])] == [2, 1]  # 3 cores: the remainder to the older

        with CoreLease(registry=registry, cores=3) as third:
            assert third.acquire()
            assert third.threads() == 1
            assert [ask(by_seq[1]), ask(by_seq[2])] == [1, 1]
        assert [ask(by_seq[1]), ask(by_seq[2])] == [2, 1]
    finally:
        for child in children:
            child.kill()
            child.wait()


def test_an_unwritable_registry_means_no_lease_said_once(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    logs: list[str] = []
    for _ in range(2):
        lease = CoreLease(registry=blocker / "cores", cores=2)
        assert lease.acquire(log=logs.append) is True
        assert not lease.held
        assert lease.threads() == 2  # as if alone: torch's default (fit caps the share at it)
        lease.release()
    assert len(logs) == 1
    assert "Cannot share the CPU cores" in logs[0] and str(blocker / "cores") in logs[0]


def test_a_registry_removed_under_a_holder_takes_it_back(tmp_path: Path) -> None:
    registry = tmp_path / "cores"
    with CoreLease(registry=registry, cores=2) as lease:
        assert lease.acquire()
        (registry / lease.name).unlink()  # say, a cleaned cache folder
        assert lease.refresh() == 2
        assert holder_files(registry) == [lease.name]


def test_a_lease_for_cpu_runs_unless_the_threads_are_forced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lease = cpu_lease("cpu", label="run-01")
    assert lease is not None and lease.registry == tmp_path / "cache" / "cores"  # conftest's TUITRAIN_CACHE_DIR
    assert lease.cores == cores.machine_cores() == len(os.sched_getaffinity(0))
    assert cpu_lease("cuda") is None
    monkeypatch.setenv("TUITRAIN_CPU_THREADS", "1")
    assert forced_cpu_threads() == 1
    assert cpu_lease("cpu") is None
    monkeypatch.setenv("TUITRAIN_CPU_THREADS", "two")
    with pytest.raises(TuitrainError, match="TUITRAIN_CPU_THREADS='two'"):
        cpu_lease("cpu")


def test_headless_prints_a_waiting_run() -> None:
    out = io.StringIO()
    reason = "waiting for a free core (2 runs hold the 2 cores)"
    HeadlessPrinter(out)(RunWaiting(run_id="x-01", label="relu", run_index=0, run_count=2, reason=reason))
    assert out.getvalue() == f"Run 1/2: relu {reason}\n"
