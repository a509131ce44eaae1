"""Shared fixtures: small clusters that run in well under a second."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
TRACES = SHARED / "traces"


@pytest.fixture
def small_testbed_cfg():
    from mfsched.experiments.config import SimConfig

    return SimConfig(requests=60, warmup=20, tail=10)


def pytest_collection_modifyitems(items) -> None:
    """The root + namespace tests run one after another on one xdist worker (``--dist
    loadgroup`` in pyproject.toml): each builds a fabric and starts daemons, and the
    simulator-vs-testbed agreement test is only as faithful as the machine is quiet."""
    for item in items:
        if item.get_closest_marker("netns") is not None:
            item.add_marker(pytest.mark.xdist_group("netns"))


def shared_trace(name: str) -> Path:
    path = TRACES / name
    if not path.is_file():
        pytest.skip(f"shared trace {path} is not available in this checkout layout")
    return path
