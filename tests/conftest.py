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


def shared_trace(name: str) -> Path:
    path = TRACES / name
    if not path.is_file():
        pytest.skip(f"shared trace {path} is not available in this checkout layout")
    return path
