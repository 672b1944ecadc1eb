"""Leaving the process without the interpreter's teardown.

With torch imported, Python's own finalisation (freeing thousands of modules and objects, torch's atexit and
allocator teardown, the CUDA context) takes about 0.5-2 s on the dev CPU (benchmarks/phases.py: "teardown") and
comes after everything the user waits for. `exit_process` does what matters of a normal exit, in its order, then
leaves at once: other non-daemon threads are joined, the atexit handlers run (multiprocessing's, Ray's, coverage's),
stdout and stderr are flushed; only the freeing of memory that the operating system reclaims anyway is skipped.
Under a profiler or tracer (python -m cProfile, a debugger) it exits normally, so that they can report.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn


def exit_status(code: object) -> int:
    """The process status that `raise SystemExit(code)` gives (None: 0; an int: itself; else 1, the code printed)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_process(code: object) -> NoReturn:
    """Exit with `code` as SystemExit would, skipping the interpreter's teardown (see the module's docstring)."""
    if sys.getprofile() is not None or sys.gettrace() is not None:
        raise SystemExit(code)
    status = exit_status(code)
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not current and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken pipe: nothing more can be written there
            stream.flush()
    os._exit(status)
