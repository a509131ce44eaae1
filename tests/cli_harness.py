"""Run the real ``mfsched`` entry point (:func:`mfsched.cli.main`) in this process, with a wall-
clock bound, and check the CLI contract on its outcome. In-process because the fuzz tests run
hundreds of commands and a fresh interpreter costs seconds of imports each; the signal tests
run real subprocesses instead.

The contract (issue 14): exit 0 with valid JSON on stdout, or exit 2 with exactly one line on
stderr (``mfsched: error: ...``) and no traceback, within the time bound. A run that hangs
raises :class:`Hang`; any other exception escapes from ``main`` and fails the test with its
traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import sys
from dataclasses import dataclass


class Hang(BaseException):
    """The command ran past its wall-clock bound (a BaseException: nothing in mfsched may
    catch it)."""


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    def check(self) -> list[dict] | None:
        """Assert the CLI contract; the JSON rows of a successful ``--json`` run."""
        assert "Traceback" not in self.err, self.err
        if self.code == 0:
            return json.loads(self.out)
        assert self.code == 2, f"exit {self.code}: {self.err[-2000:]}"
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, f"{len(lines)} lines on stderr: {self.err[-2000:]}"
        assert lines[0].startswith("mfsched: error: "), lines[0]
        return None


def run_cli(*args: str, timeout_s: float = 120.0) -> Outcome:
    """``mfsched ARGS`` through :func:`mfsched.cli.main`; raises :class:`Hang` past
    ``timeout_s`` of wall time."""
    from mfsched import cli

    def hang(signum, frame):
        raise Hang(f"mfsched {' '.join(args)} ran longer than {timeout_s:g} s")

    out, err = io.StringIO(), io.StringIO()
    old_alarm = signal.signal(signal.SIGALRM, hang)
    old_term = signal.getsignal(signal.SIGTERM)
    old_argv = sys.argv
    sys.argv = ["mfsched", *args]
    code = 0
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGTERM, old_term)
        sys.argv = old_argv
    return Outcome(code, out.getvalue(), err.getvalue())
