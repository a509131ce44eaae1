"""Shared fixtures: small clusters that run in well under a second."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
TRACES = SHARED / "traces"

# A script that starts the tests in the background (``cmd &`` without job control) starts them
# with Ctrl-C ignored, and every process they start inherits that, so the tests of what Ctrl-C
# does would fail. They test what a terminal's Ctrl-C does: the default handler is put back
# (a handled signal is reset to the default at exec, so the processes they start get it too).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def small_testbed_cfg():
    from mfsched.experiments.config import SimConfig

    return SimConfig(requests=60, warmup=20, tail=10)


@contextlib.contextmanager
def _flock(path: Path, how: int):
    with open(path, "a") as f:
        fcntl.flock(f, how)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def _one_namespace_test_at_a_time(request, tmp_path_factory):
    """The root + namespace tests run one after another, also under ``pytest -n``: each builds
    a fabric and starts daemons. A file lock shared by this run's xdist workers (in the run's
    temporary directory, so other runs are not held up) serialises them; the other worker keeps
    running the rest of the suite. Tests marked ``quiet`` (they bound a response time, e.g. how
    fast a signal stops a run) take the same lock, so they never run beside a fabric or the
    two-engine vLLM test.

    Tests marked ``alone`` (the simulator-vs-testbed agreement test, which is only as faithful
    as the machine is quiet: its error grows with the load) run with no other test at all: every
    test holds a second lock shared, an ``alone`` test holds it exclusively. (Beside the rest of
    the suite, at load 3 on 2 cores, MFS's Stage-2 CCT error reached 35.8% against its 35%
    bound; alone it stays within.) Locks are taken in one order, the namespace lock first.

    (xdist's ``--dist loadgroup`` with an ``xdist_group`` mark did this before, but with
    pytest 9.2 it no longer groups anything: xdist marks the group in ``item._nodeid``, which
    pytest 9.2's node ids do not read, and two namespace tests ran at once.)"""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        yield
        return
    marked = request.node.get_closest_marker
    alone = marked("alone") is not None
    base = tmp_path_factory.getbasetemp().parent
    with contextlib.ExitStack() as held:
        if alone or marked("netns") is not None or marked("quiet") is not None:
            held.enter_context(_flock(base / "namespace-tests.lock", fcntl.LOCK_EX))
        held.enter_context(_flock(base / "machine.lock",
                                  fcntl.LOCK_EX if alone else fcntl.LOCK_SH))
        yield


def shared_trace(name: str) -> Path:
    path = TRACES / name
    if not path.is_file():
        pytest.skip(f"shared trace {path} is not available in this checkout layout")
    return path
