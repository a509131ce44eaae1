"""Real ``mfsched`` subprocesses for the interrupt tests, with a post-mortem when one hangs.

:func:`start` runs ``python -m mfsched ...`` with Python's fault handler on
(``PYTHONFAULTHANDLER``: it changes nothing unless the process gets a fatal signal).
:func:`finish` waits for the process; past the bound it sends SIGABRT to the process and
every descendant, so each prints the stack of every thread to the shared stderr, and fails
the test with that text: a hang seen only in CI then says where it hung.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def start(*args: str, session: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen([sys.executable, "-m", "mfsched", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=session,
                            env=env)


def children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(x) for x in text.split()}


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def finish(proc: subprocess.Popen, timeout_s: float) -> tuple[str, str]:
    """(stdout, stderr) once ``proc`` has exited and closed its pipes; past ``timeout_s`` the
    test fails with the stacks of the process tree."""
    try:
        return proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        tree = _descendants(proc.pid)
        _signal_all(tree, signal.SIGABRT)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            _signal_all(tree, signal.SIGKILL)
            _, err = proc.communicate()
        pytest.fail(f"still running after {timeout_s} s (process tree {tree}, exit "
                    f"{proc.returncode}); its stderr with every thread's stack:\n{err[-20000:]}")


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in reversed(pids):  # the leaves first
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
