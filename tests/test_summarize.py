"""The headline metrics (mfsched.metrics.summarize) against hand-computed numbers."""

import math

import pytest

from mfsched.metrics import summarize
from mfsched.records import BatchRecord, CollectiveRecord, RequestRecord, RunRecords


def _req(rid, arrival, slo, ttft, p2d_deadline, p2d_done, *, evaluated=True, inst=0,
         tokens=(100, 0, 0), pruned=False):
    inp, local, remote = tokens
    first = arrival + ttft
    return RequestRecord(rid, arrival, inp, inp - local - remote, local, remote, inst, inst, -1,
                         slo, arrival + slo, p2d_deadline, arrival, first - 0.2, p2d_done,
                         first, ttft, ttft <= slo, pruned, evaluated)


def _records() -> RunRecords:
    requests = [
        _req(0, 0.0, 9.0, 0.1, 5.0, 0.05, evaluated=False, inst=0),  # warm-up: only shares
        _req(1, 1.0, 2.0, 1.5, 2.8, 2.3, inst=0, tokens=(100, 20, 30)),
        _req(2, 2.0, 1.0, 1.2, 2.9, 3.1, inst=1, tokens=(50, 0, 0), pruned=True),
        _req(3, 3.0, 4.0, 0.5, 6.5, 3.3, inst=1, tokens=(50, 50, 0)),
    ]
    # the evaluated window is [first evaluated arrival, last evaluated first token] = [1, 3.5]
    collectives = [
        CollectiveRecord(1, 0, 0, "dispatch", 1.0, 1.1),  # (batch 1, layer 0): 0.1 + 0.05
        CollectiveRecord(1, 0, 0, "combine", 1.2, 1.25),
        CollectiveRecord(1, 0, 1, "dispatch", 1.3, 1.5),  # (1, 1): 0.2
        CollectiveRecord(2, 1, 0, "dispatch", 0.5, 0.9),  # before the window: left out
        CollectiveRecord(2, 1, 1, "dispatch", 3.4, 3.6),  # ends after it: left out
        CollectiveRecord(3, 0, 0, "dispatch", 2.0, 2.1),  # (3, 0): 0.1
        CollectiveRecord(3, 0, 1, "combine", 3.5, 3.5),  # on the boundary: in, 0 s
    ]
    batches = [BatchRecord(b, inst, 1, 10, 0.0, 1.0, 0.1, 0.0)
               for b, inst in ((1, 0), (2, 0), (3, 1))]
    return RunRecords(requests, collectives, batches, None)


def test_summary_by_hand():
    s = summarize(_records(), instances=3)
    assert s.requests_evaluated == 3
    assert s.slo_attainment == pytest.approx(2 / 3)  # request 2: 1.2 s > 1 s
    assert s.ttft_mean_s == pytest.approx((1.5 + 1.2 + 0.5) / 3)
    assert s.ttft_p50_s == pytest.approx(1.2)
    assert s.ttft_p99_s == pytest.approx(1.2 + 0.98 * (1.5 - 1.2))  # linear interpolation
    # per (batch, layer) summed inside [1, 3.5]: 0.15, 0.2, 0.1 and 0.0
    assert s.stage2_cct_mean_s == pytest.approx((0.15 + 0.2 + 0.1 + 0.0) / 4)
    # (P2D deadline - last P2D byte) / SLO: 0.5/2, -0.2/1, 3.2/4
    assert s.p2d_earliness_mean == pytest.approx((0.25 - 0.2 + 0.8) / 3)
    assert s.pruned_fraction == pytest.approx(1 / 3)
    # cached tokens / prompt tokens of the evaluated requests: (20 + 30 + 0 + 50) / 200
    assert s.prefix_reuse == pytest.approx(0.5)
    # all requests (warm-up included) and all batches, over 3 instances
    assert s.instance_request_share == pytest.approx((0.5, 0.5, 0.0))
    assert s.instance_batch_share == pytest.approx((2 / 3, 1 / 3, 0.0))


def test_instances_default_to_what_the_records_show():
    assert len(summarize(_records()).instance_request_share) == 2


def test_no_collective_in_the_window_counts_zero():
    r = _records()
    r.collectives = [c for c in r.collectives if c.batch_id == 2]
    assert summarize(r).stage2_cct_mean_s == 0.0


def test_no_evaluated_request():
    r = _records()
    r.requests = [x._replace(evaluated=False) for x in r.requests]
    s = summarize(r, instances=2)
    assert s.requests_evaluated == 0
    assert all(math.isnan(v) for v in (s.slo_attainment, s.ttft_mean_s, s.stage2_cct_mean_s,
                                       s.p2d_earliness_mean, s.prefix_reuse))
    assert s.instance_request_share == (0.5, 0.5)
