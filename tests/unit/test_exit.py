"""core.exit: leaving without the interpreter's teardown keeps what a normal exit does that anyone can see."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.helpers import ROOT


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_exit_process_joins_threads_runs_atexit_and_flushes() -> None:
    out = run(
        """
        import atexit, sys, threading, time
        from tuitrain.core.exit import exit_process
        atexit.register(lambda: print("atexit ran", end=""))
        threading.Thread(target=lambda: (time.sleep(0.3), print("thread done"))).start()
        print("buffered, no newline; ", end="")
        sys.stderr.write("to stderr")
        exit_process(3)
        print("never")
        """
    )
    assert out.returncode == 3
    assert out.stdout == "buffered, no newline; thread done\natexit ran"
    assert out.stderr == "to stderr"


def test_exit_process_statuses_as_system_exit() -> None:
    assert run("from tuitrain.core.exit import exit_process; exit_process(None)").returncode == 0
    text = run("from tuitrain.core.exit import exit_process; exit_process('bad thing')")
    assert text.returncode == 1 and text.stderr.strip() == "bad thing"


def test_under_a_profiler_it_exits_normally() -> None:
    out = run(
        """
        import sys
        from tuitrain.core.exit import exit_process
        sys.setprofile(lambda *a: None)
        try:
            exit_process(4)
        except SystemExit as exc:
            sys.setprofile(None)
            print("SystemExit", exc.code)
        """
    )
    assert out.returncode == 0 and out.stdout.strip() == "SystemExit 4"


def test_the_command_exits_with_main_status() -> None:
    version = subprocess.run([sys.executable, "-m", "tuitrain", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert version.returncode == 0 and version.stdout.startswith("tuitrain ")
    usage = subprocess.run([sys.executable, "-m", "tuitrain", "--bogus"], capture_output=True, text=True, cwd=ROOT)
    assert usage.returncode == 2 and "--bogus" in usage.stderr
    error = subprocess.run(
        [sys.executable, "-m", "tuitrain", "--preset", "no_such_preset", "--no-ui"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert error.returncode == 2 and error.stderr.startswith("tuitrain: error:") and error.stderr.count("\n") == 1
