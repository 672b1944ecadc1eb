"""Local worker processes: each trains runs in `python -m tuitrain.train.worker FD`, on this machine."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO

from tuitrain.core.tasks import WorkerMessage
from tuitrain.executors.scheduler import STOP_WAIT_S, read_messages


class LocalWorker:
    """A worker process on this machine, in its own session, talking over a socket pair."""

    def __init__(self) -> None:
        parent_end, child_end = socket.socketpair()
        # the worker's own output (a Python error, a library warning): kept out of the terminal, read if it dies
        self.log: IO[bytes] = tempfile.TemporaryFile(prefix="tuitrain-worker-")  # noqa: SIM115 - closed in close()
        env = dict(os.environ)
        # the worker imports this same tuitrain, installed or not
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tuitrain.train.worker", str(child_end.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=self.log,
                pass_fds=(child_end.fileno(),),
                start_new_session=True,  # the terminal's Ctrl-C and hang-up reach the invoking process only
                env=env,
            )
        finally:
            child_end.close()
        self.conn = Connection(parent_end.detach())

    def send(self, message: object) -> None:
        self.conn.send(message)

    def messages(self) -> tuple[list[WorkerMessage], bool]:
        return read_messages(self.conn)

    def handle(self) -> object:
        return self.conn

    def exit_reason(self) -> str | None:
        code = self.proc.poll()
        if code is None:
            return None
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        reason = f"worker process (pid {self.proc.pid}) {how}"
        last = self.last_words()
        return f"{reason}: {last}" if last else reason

    def last_words(self) -> str:
        """The last line the worker wrote to stderr (a Python error, say), if any."""
        try:
            self.log.seek(0)
            lines = [line.strip() for line in self.log.read().decode("utf-8", "replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1][:200] if lines else ""

    def close(self, *, now: bool = False) -> None:
        if self.conn.closed:
            if now and self.proc.poll() is None:  # closing again, now at once: a second stop signal came
                self.proc.kill()
                self.proc.wait()
            return
        with contextlib.suppress(OSError):
            self.conn.send(None)
        deadline = time.monotonic() + (0 if now else STOP_WAIT_S)
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.conn.close()
        self.log.close()
