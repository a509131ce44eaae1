"""RED, the feasibility check, the RMLQ helpers and RMLQ's promotion-only rule, by hand."""

import math

import pytest

from mfsched.policy.mfs import MFS, MFSConfig
from mfsched.policy.red import (
    BatchLoad,
    feasibility_prune,
    loose_deadline,
    robust_effective_deadline,
    split_deadlines,
)
from mfsched.policy.rmlq import (
    LevelLayout,
    minimal_link_utilization,
    mlu_thresholds,
    p2d_band,
)
from mfsched.policy.types import BatchInfo, FlowInfo, Priority, RequestInfo, Stage


def test_split_at_largest_gap():
    assert split_deadlines([5, 1, 2, 10, 11]) == ([1, 2, 5], [10, 11])
    assert split_deadlines([3]) == ([3], [])
    # equal gaps: the first one
    assert split_deadlines([1, 2, 3]) == ([1], [2, 3])


def test_red_by_hand():
    # tight {1, 2, 5} (f = 3/5), loose {10, 11}: 0.6 * 1 + 0.4 * 10 = 4.6
    assert robust_effective_deadline([5, 1, 2, 10, 11]) == pytest.approx(4.6)
    # one very tight request among loose peers barely moves the batch (piggyback)
    assert robust_effective_deadline([1, 20, 20, 20, 20]) == pytest.approx(0.2 * 1 + 0.8 * 20)
    assert robust_effective_deadline([7]) == 7
    assert loose_deadline([5, 1, 2, 10, 11]) == 10
    assert loose_deadline([7]) == 7


def test_feasible_batches_are_not_pruned():
    b = BatchLoad(1, [10.0], compute_end_s=2.0, early={0: 1.0}, prunable={7: {0: 1.0}})
    assert feasibility_prune([b], {0: 1.0}, now_s=0.0, budget=5) == []


def test_prunes_the_largest_p2d_load_on_the_bottleneck():
    # port 0 at 1 B/s. Batch 1 (RED first): requests 1 and 2 with 4 and 1 bytes of P2D,
    # deadline 4. All bytes take 5 s > 4: prune request 1 (largest load on port 0) -> 1 s.
    b1 = BatchLoad(1, [4.0, 4.0], compute_end_s=0.0, prunable={1: {0: 4.0}, 2: {0: 1.0}})
    assert feasibility_prune([b1], {0: 1.0}, now_s=0.0, budget=5) == [1]
    # a budget of 0 prunes nothing
    assert feasibility_prune([b1], {0: 1.0}, now_s=0.0, budget=0) == []


def test_prunes_from_a_higher_ranked_batch():
    # batch 1 (ranked first) is fine alone; batch 2 behind it is late on the shared port,
    # and the biggest P2D load on that port belongs to batch 1's request 1
    b1 = BatchLoad(1, [10.0], compute_end_s=0.0, prunable={1: {0: 6.0}})
    b2 = BatchLoad(2, [7.0], compute_end_s=0.0, prunable={2: {0: 2.0}})
    assert feasibility_prune([b1, b2], {0: 1.0}, now_s=0.0, budget=5) == [1]


def test_pruning_stops_when_the_early_part_is_late():
    # compute + early bytes alone miss the deadline: pruning P2D cannot help
    b = BatchLoad(1, [3.0], compute_end_s=2.0, early={0: 2.0}, prunable={1: {0: 1.0}})
    assert feasibility_prune([b], {0: 1.0}, now_s=0.0, budget=5) == []


def test_higher_ranked_p2d_does_not_delay_compute():
    # batch 1's 10 bytes of P2D are ranked above, but they never delay batch 2's compute
    # (MFS serves early stages before P2D): batch 2 is feasible, nothing is pruned
    b1 = BatchLoad(1, [20.0], compute_end_s=0.0, prunable={1: {0: 10.0}})
    b2 = BatchLoad(2, [12.0], compute_end_s=5.0, early={0: 4.0})
    assert feasibility_prune([b1, b2], {0: 1.0}, now_s=0.0, budget=5) == []


def test_layout():
    lay = LevelLayout(8, 4)
    assert lay.p2d_bands == 3 and lay.scavenger == 8
    assert [lay.early(r) for r in (0, 1, 2, 3, 9)] == [1, 2, 3, 4, 4]
    assert [lay.p2d(b) for b in (None, 0, 1, 2, 7)] == [0, 5, 6, 7, 7]
    with pytest.raises(ValueError):
        LevelLayout(2, 1)
    with pytest.raises(ValueError):
        LevelLayout(8, 7)


def test_mlu_formula_and_bands():
    # 3 MB left, 6 ms, 1 GB/s, no load: 0.5
    assert minimal_link_utilization(3e6, 6e-3, 1e9, 0.0) == pytest.approx(0.5)
    # half the link is taken by early stages: twice as urgent
    assert minimal_link_utilization(3e6, 6e-3, 1e9, 0.5) == pytest.approx(1.0)
    assert math.isinf(minimal_link_utilization(1.0, 0.0, 1e9, 0.0))
    q = mlu_thresholds(4.0, 0.5, 3)
    assert q == pytest.approx((0.125, 0.03125))
    # urgent in [0.9, 1]; beyond 1 out of reach: loosest band, never promoted for it
    assert p2d_band(0.95, 0.0, 0.9, 1.0, q) is None
    assert p2d_band(1.0, 0.5, 0.9, 1.0, q) is None  # rho does not block the top level
    assert p2d_band(1.5, 0.0, 0.9, 1.0, q) == 2
    assert [p2d_band(m, 0.0, 0.9, 1.0, q) for m in (0.8, 0.125, 0.1, 0.01)] == [0, 0, 1, 2]
    # rho raises the MLU against what early stages leave: 0.1 / (1 - 0.5) = 0.2 -> band 0
    assert p2d_band(0.1, 0.5, 0.9, 1.0, q) == 0


class _Remaining:
    def __init__(self) -> None:
        self.bytes = 0.0

    def remaining_bytes(self, flow_id: int) -> float:
        return self.bytes

    def rate_bytes_per_s(self, flow_id: int) -> float:
        return 0.0


def test_mfs_never_demotes_a_p2d_flow():
    """MLU 0.95 (urgent: level 0); at the next layer boundary 1% of its bytes remain (MLU
    0.0095, the loosest band's level 7 alone) and it keeps level 0."""
    mfs = MFS(MFSConfig(num_levels=8, pruning=False))
    progress = _Remaining()
    mfs.on_request(RequestInfo(1, 0.0, 1.0, 100), 0.0)
    mfs.on_batch_start(BatchInfo(1, 0, (1,), 4, 0.0, 1e-3), 0.0)
    # 950,000 bytes, 1 s to the deadline, 1 MB/s bottleneck (8e6 b/s): MLU 0.95
    mfs.on_flow_submit(FlowInfo(7, Stage.P2D, 1, (1,), 0, 4, 950_000.0, 950_000.0, 1,
                                ((3, 950_000.0),), 8e6, 1.0, 0.0), 0.0)
    progress.bytes = 950_000.0
    assert mfs.decide(0.0, progress).priorities == {7: Priority(0)}
    assert mfs.layout.p2d(p2d_band(0.0095, 0.0, 0.9, 1.0, mfs.thresholds)) == 7
    progress.bytes = 9_500.0
    mfs.on_layer_start(1, 1, 0.0)
    assert mfs.decide(0.0, progress).priorities == {}
    assert mfs.prio[7] == Priority(0)
