"""The paper's examples, exact timings under every scheduler.

Units: the paper's abstract units are read as milliseconds and megabytes on one bottleneck
link of 1 GB/s (1 MB per ms), so "size 2" takes 2 ms alone.
"""

import pytest

from mfsched.policy import Stage, make_policy

from toy import MB, MS, Toy


def _table1(policy_name: str, **options) -> dict[str, float]:
    """Table 1 (paper §3.2, Fig. 8). One bottleneck link.

    Flow A (request 1): early-stage (a Stage-2 collective) of 2 MB, 9 ms of compute after it,
    TTFT deadline 18 ms. Flow B (requests 2 and 3, one batch): early-stage, 4 MB, 6 ms after,
    deadline 12 ms. Flow C (request 4): its P2D, 3 MB, nothing after (its compute is done),
    deadline 7 ms. All start at t = 0. Returns each request's finish time.
    """
    toy = Toy(make_policy(policy_name, options={k: str(v) for k, v in options.items()}))
    for rid, deadline in [(1, 18), (2, 12), (3, 12), (4, 7)]:
        toy.request(rid, deadline * MS)
    toy.batch(1, [1], layer_compute_s=9 * MS, early_port_bytes={0: 2 * MB})
    toy.batch(2, [2, 3], layer_compute_s=6 * MS, early_port_bytes={0: 4 * MB})
    toy.batch(4, [4], p2d_port_bytes={4: {0: 3 * MB}}, compute_done=True)
    ends = {}
    toy.flow("A", 0, Stage.COLLECTIVE, 1, [1], 2 * MB, then=lambda t: ends.update(A=t + 9 * MS))
    toy.flow("B", 0, Stage.COLLECTIVE, 2, [2, 3], 4 * MB,
             then=lambda t: ends.update(B=t + 6 * MS))
    toy.flow("C", 0, Stage.P2D, 4, [4], 3 * MB, target=1, deadline_s=7 * MS,
             then=lambda t: ends.update(C=t))
    toy.run()
    return ends


DEADLINE = {"A": 18 * MS, "B": 12 * MS, "C": 7 * MS}


def _met(ends):
    return {k: ends[k] <= DEADLINE[k] + 1e-12 for k in ends}


def test_table1_fair_sharing_misses_b():
    ends = _table1("fs")
    # all three share: A done at 6 (+9 = 15); B and C then share: C at 8, B at 9 (+6 = 15)
    assert ends == pytest.approx({"A": 15 * MS, "B": 15 * MS, "C": 8 * MS})
    assert _met(ends) == {"A": True, "B": False, "C": False}


def test_table1_sjf_misses_b():
    ends = _table1("sjf")
    # A [0,2], C [2,5], B [5,9]
    assert ends == pytest.approx({"A": 11 * MS, "B": 15 * MS, "C": 5 * MS})
    assert not _met(ends)["B"]


def test_table1_edf_misses_b():
    ends = _table1("edf")
    # C (explicit deadline) first [0,3]; A and B share the rest: A at 7, B at 9
    assert ends == pytest.approx({"A": 16 * MS, "B": 15 * MS, "C": 3 * MS})
    assert not _met(ends)["B"]


def test_table1_mfs_meets_all_three():
    ends = _table1("mfs")
    # B first (RED 12 < 18), C deferred in a P2D band and promoted to the top level when its
    # MLU reaches 1 (t = 4: 3 MB left, 3 ms to go), then A: B [0,4], C [4,7], A [7,9]
    assert ends == pytest.approx({"A": 18 * MS, "B": 10 * MS, "C": 7 * MS}, abs=2e-6)
    assert all(_met(ends).values())


def test_table1_mfs_needs_its_mechanisms():
    # without MLU promotion C stays deferred: B [0,4], A [4,6], C [6,9] misses its deadline
    no_mlu = _table1("mfs", mlu=False)
    assert no_mlu["C"] == pytest.approx(9 * MS, abs=2e-6)
    # without RED, A and B share the top early level: A ends at 4, C's promotion at 4
    # preempts B, which ends at 9 (+6 = 15): the piggyback-free order is what saves B
    no_red = _table1("mfs", red_tiebreak=False)
    assert no_red["B"] == pytest.approx(15 * MS, abs=2e-6)


def _fig6(policy_name: str) -> float:
    """Fig. 6, ingress contention during layer 1.

    Batch X computes layer 1 from 0 to 1 ms; then its layer-1 collective (1 MB) must arrive
    through ingress port 0 before layer 2 may start. At 1 ms batch Y (another request on
    another unit) starts and fetches 1 MB of reusable KV for its layer 2 (RLI 2) through the
    same ingress. Returns when X's layer 2 starts.
    """
    toy = Toy(make_policy(policy_name))
    toy.request(1, 50 * MS)
    toy.request(2, 50 * MS)
    toy.batch(10, [1], layers=4, layer_compute_s=1 * MS)
    toy.layer(10, 1, 0.0)
    toy.batch(20, [2], t=1 * MS, layers=4, layer_compute_s=1 * MS)
    toy.layer(20, 0, 1 * MS)
    toy.flow("collective", 1 * MS, Stage.COLLECTIVE, 10, [1], 1 * MB, layer=1, target=1)
    toy.flow("reuse", 1 * MS, Stage.KV_REUSE, 20, [2], 1 * MB, layer=2, target=2)
    return toy.run()["collective"]


@pytest.mark.parametrize("name", ["fs", "sjf", "edf"])
def test_fig6_baselines_start_layer2_at_3(name):
    assert _fig6(name) == pytest.approx(3 * MS)


def test_fig6_mfs_starts_layer2_at_2():
    assert _fig6("mfs") == pytest.approx(2 * MS)


def _fig7(policy_name: str) -> float:
    """Fig. 7, egress contention during layer 2.

    A request computes layer 2 from 1 to 2 ms. At 2 ms its KV for layer 2 is ready, so its
    layer-2 P2D flow (1 MB, TTFT deadline 50 ms) and its layer-2 collective (1 MB) leave
    through the same egress port. Layer 2 finishes when the collective has arrived.
    """
    toy = Toy(make_policy(policy_name))
    toy.request(1, 50 * MS)
    toy.batch(10, [1], layers=4, layer_compute_s=1 * MS, p2d_port_bytes={1: {0: 1 * MB}},
              early_port_bytes={0: 1 * MB})
    toy.layer(10, 2, 1 * MS)
    toy.flow("collective", 2 * MS, Stage.COLLECTIVE, 10, [1], 1 * MB, layer=2, target=2)
    toy.flow("p2d", 2 * MS, Stage.P2D, 10, [1], 1 * MB, layer=2, target=4, deadline_s=50 * MS)
    return toy.run()["collective"]


@pytest.mark.parametrize("name", ["fs", "sjf", "edf"])
def test_fig7_baselines_finish_layer2_at_4(name):
    assert _fig7(name) == pytest.approx(4 * MS)


def test_fig7_mfs_finishes_layer2_at_3():
    assert _fig7("mfs") == pytest.approx(3 * MS)
