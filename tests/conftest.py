"""Shared fixtures: small clusters that run in well under a second."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
TRACES = SHARED / "traces"


@pytest.fixture
def small_testbed_cfg():
    from mfsched.experiments.config import SimConfig

    return SimConfig(requests=60, warmup=20, tail=10)


@pytest.fixture(autouse=True)
def _one_namespace_test_at_a_time(request, tmp_path_factory):
    """The root + namespace tests run one after another, also under ``pytest -n``: each builds
    a fabric and starts daemons, and the simulator-vs-testbed agreement test is only as faithful
    as the machine is quiet. A file lock shared by this run's xdist workers (in the run's
    temporary directory, so other runs are not held up) serialises them; the other worker keeps
    running the rest of the suite. Tests marked ``quiet`` (they bound a response time, e.g. how
    fast a signal stops a run) take the same lock, so they never run beside a fabric or the
    two-engine vLLM test.

    (xdist's ``--dist loadgroup`` with an ``xdist_group`` mark did this before, but with
    pytest 9.2 it no longer groups anything: xdist marks the group in ``item._nodeid``, which
    pytest 9.2's node ids do not read, and two namespace tests ran at once.)"""
    if (request.node.get_closest_marker("netns") is None
            and request.node.get_closest_marker("quiet") is None) \
            or os.environ.get("PYTEST_XDIST_WORKER") is None:
        yield
        return
    lock = tmp_path_factory.getbasetemp().parent / "namespace-tests.lock"
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def shared_trace(name: str) -> Path:
    path = TRACES / name
    if not path.is_file():
        pytest.skip(f"shared trace {path} is not available in this checkout layout")
    return path
