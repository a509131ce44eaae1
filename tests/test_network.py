"""The fluid network alone: hand-computed finish times through replay()."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mfsched.policy.types import Priority
from mfsched.sim.allocation import allocate_rows
from mfsched.sim.network import FluidNetwork
from mfsched.sim.replay import ReplayFlow, replay

NS3REF = Path(__file__).resolve().parents[2] / "shared" / "tools" / "ns3ref"


def test_dumbbell_fair_by_hand():
    # 1.25e9 B/s link; f0 20 MB from 0, f1 5 MB from 2 ms (the ns3ref 'a' scenario)
    cap = [1.25e9]
    out = replay(cap, [ReplayFlow("f0", (0,), 20e6, 0.0), ReplayFlow("f1", (0,), 5e6, 0.002)])
    assert out["f1"] == pytest.approx(0.010)  # 2 ms + 5 MB at 0.625 GB/s
    assert out["f0"] == pytest.approx(0.020)


def test_priority_change_mid_flow():
    # two 10 MB flows at 1e6 B/s share; at 4 s f1 is promoted and gets the whole link
    out = replay([1e6], [ReplayFlow("f0", (0,), 10e6, 0.0, level=3),
                         ReplayFlow("f1", (0,), 10e6, 0.0, level=3, level_changes=((4.0, 1),))])
    # by 4 s each has 2 MB; f1 needs 8 MB more alone: 12 s; f0 then 8 MB: 20 s
    assert out["f1"] == pytest.approx(12.0)
    assert out["f0"] == pytest.approx(20.0)


def test_bytes_delivered_and_completion_order():
    net = FluidNetwork(np.array([10.0, 10.0]))
    net.add(1, np.array([0]), np.ones(1), 10.0, Priority(0))
    net.add(2, np.array([0, 1]), np.ones(2), 30.0, Priority(0))
    assert net.reallocate() == pytest.approx(2.0)  # both at 5 B/s; flow 1 ends at 2 s
    net.advance(2.0)
    assert net.pop_completed() == [1]
    assert net.reallocate() == pytest.approx(4.0)  # flow 2: 20 B left at 10 B/s
    net.advance(4.0)
    assert net.pop_completed() == [2]
    assert net.delivered_bytes == 40.0


def test_missing_priority_is_an_error():
    net = FluidNetwork(np.array([1.0]))
    net.add(1, np.array([0]), np.ones(1), 1.0)
    with pytest.raises(RuntimeError, match="no priority"):
        net.reallocate()


@pytest.mark.skipif(not (NS3REF / "fluid_fct.py").exists(), reason="needs ../shared/tools/ns3ref")
@pytest.mark.parametrize("scenario", sorted(p.name for p in (NS3REF / "scenarios").glob("*.json"))
                         if (NS3REF / "scenarios").exists() else [])
def test_matches_independent_fluid_reference(scenario):
    """Our network model gives the ns3ref fluid model's FCTs on every ns3ref scenario."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from ns3_check import fluid_fcts_ours

    path = NS3REF / "scenarios" / scenario
    theirs = json.loads(subprocess.run([sys.executable, str(NS3REF / "fluid_fct.py"), str(path)],
                                       capture_output=True, text=True, check=True).stdout)
    ours = fluid_fcts_ours(path)
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert ours[k] == pytest.approx(theirs[k], rel=1e-6, abs=1e-9)


def test_contention_free_reference_ignores_other_flows():
    net = FluidNetwork(np.array([10.0]), contention_free=True)
    net.add(1, np.array([0]), np.ones(1), 20.0, Priority(0))
    net.add(2, np.array([0]), np.array([2.0]), 20.0, Priority(5))  # a 2-member group
    net.reallocate()
    assert net.rate_bytes_per_s(1) == 10.0 and net.rate_bytes_per_s(2) == 5.0


def _random_paced_network(rng, n_links: int, n_flows: int, cap_scale: float):
    """Paced (capped) flows at the top level and uncapped ones below, on random paths."""
    cap = rng.uniform(5.0, 20.0, n_links)
    net = FluidNetwork(cap)
    for f in range(n_flows):
        k = int(rng.integers(1, 4))
        links = rng.choice(n_links, k, replace=False)
        net.add(f, links, rng.uniform(0.5, 2.0, k), float(rng.uniform(1.0, 50.0)),
                share=float(rng.integers(1, 3)))
        if f % 3:
            net.set_priority(f, Priority(0))
            net.set_rate_cap(f, float(rng.uniform(0.01, 1.0) * cap_scale))
        else:
            net.set_priority(f, Priority(1 + int(rng.integers(0, 3))))
    return net


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("cap_scale", [0.5, 3.0])
def test_paced_flows_reserved_agree_with_full_filling(seed, cap_scale):
    """With capped flows above every uncapped one, the network gives the capped flows their
    caps and fills the rest on what is left, unless caps overbook a link (then the full
    progressive filling runs). Both agree with the full filling of every flow to rounding,
    also after caps change and flows leave (the reserved loads are kept exactly)."""
    from mfsched.sim.network import _reserve

    rng = np.random.default_rng(seed)
    net = _random_paced_network(rng, 12, 40, cap_scale)
    for step in range(4):
        net.reallocate()
        fast = np.array([net.rate_bytes_per_s(f) for f in net._ids])
        n = len(net)
        full = np.zeros(n)
        ints, floats = np.asarray(net._ints), np.asarray(net._floats)
        # rows of the network's arrays (network.py's table; compiled, its names are C's)
        allocate_rows(net.capacity_bytes_per_s, np.asarray(net._links),
                      np.asarray(net._weights), ints[0], ints[1], floats[3], floats[4], n, full)
        assert fast == pytest.approx(full, rel=1e-9, abs=1e-12)
        assert (net.link_loads() <= net.capacity_bytes_per_s * (1 + 1e-9)).all()
        # change some caps, lift one, remove a few flows
        for f in list(net._ids)[step::5]:
            if net.priority(f).level == 0:
                net.set_rate_cap(f, None if f % 7 == 0 else float(rng.uniform(0.01, 1.0)
                                                                   * cap_scale))
                if f % 7 == 0:
                    net.set_priority(f, Priority(4))
        for f in list(net._ids)[::9]:
            net._remove_at(net._pos[f])
    expect = np.zeros(len(net.capacity_bytes_per_s), dtype=np.int64)
    for i in range(len(net)):
        c = net._floats[3, i]
        if c < float("inf"):
            _reserve(expect, net.capacity_bytes_per_s, net._links, net._weights, net._ints, i,
                     c, 1)
    # exact: no drift from adds and removals
    assert (np.asarray(net._reserved) == expect).all()
