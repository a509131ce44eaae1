"""The shared policy driver's bookkeeping and the coordinator's path into MFS, by hand."""

import pytest

from mfsched.policy import BatchInfo, FlowInfo, Priority, RequestInfo, Stage, make_policy
from mfsched.policy.base import Policy
from mfsched.policy.driver import PolicyDriver, UnknownBatch
from mfsched.policy.types import Decision, GlobalOrder


class Recorder(Policy):
    """Answers scripted decisions and logs what it was told."""

    def __init__(self) -> None:
        super().__init__()
        self.told: list = []
        self.answer = Decision()

    def __getattribute__(self, name):
        if name.startswith("on_"):
            return lambda *args: self.told.append((name, *args[:-1]))
        return super().__getattribute__(name)

    def decide(self, now_s, progress):
        self.told.append(("decide", now_s))
        return self.answer


class Sink:
    def __init__(self) -> None:
        self.applied: list = []

    def apply_priority(self, fid, prio):
        self.applied.append(("prio", fid, prio))

    def apply_rate_cap(self, fid, cap):
        self.applied.append(("cap", fid, cap))

    def apply_pruned(self, rids):
        self.applied.append(("pruned", rids))

    def set_wake(self, wake_s):
        self.applied.append(("wake", wake_s))


def _flow(fid, batch=1, rids=(1,), stage=Stage.P2D):
    return FlowInfo(fid, stage, batch, rids, 0, 4, 10.0, 10.0, 1, ((0, 10.0),), 8e9, 1.0, 0.0)


def _driver():
    p, sink = Recorder(), Sink()
    d = PolicyDriver(p, sink)
    d.add_request(RequestInfo(1, 0.0, 1.0, 10), 0.0)
    d.add_request(RequestInfo(2, 0.0, 1.0, 10), 0.0)
    d.start_batch(BatchInfo(1, 0, (1, 2), 4, 0.0, 1e-3), 0.0)
    return d, p, sink


def test_requests_are_forgotten_when_their_flows_completed():
    d, p, _ = _driver()
    d.submit(_flow(7), 0.0)
    d.submit(_flow(8, rids=(1, 2), stage=Stage.COLLECTIVE), 0.0)
    d.finish_request(1, 0.1)
    d.finish_request(2, 0.1)
    assert ("on_request_done", 1) not in p.told and ("on_request_done", 2) not in p.told
    d.complete(8, 0.2)  # request 2 has no flow left; request 1 still has flow 7
    assert ("on_request_done", 2) in p.told and ("on_request_done", 1) not in p.told
    assert d.has_request(1) and not d.has_request(2)
    d.complete(7, 0.3)
    assert p.told[-1] == ("on_request_done", 1)
    d.add_request(RequestInfo(1, 0.0, 1.0, 10), 0.4)  # a known id again: a new request
    assert not d.add_request(RequestInfo(1, 0.0, 1.0, 10), 0.4)  # ... told once


def test_a_batch_departs_at_the_decision_after_its_compute_and_flows_ended():
    d, p, _ = _driver()
    d.compute_done(1, 0.1)
    d.submit(_flow(7), 0.1)  # the compute end may be reported before the last flows
    d.decide(0.1)
    assert ("on_batch_end", 1) not in p.told
    d.layer_start(1, 3, 0.15)  # after the compute end: ignored
    assert ("on_layer_start", 1, 3) not in p.told
    d.complete(7, 0.2)
    assert ("on_batch_end", 1) not in p.told and d.has_batch(1)
    d.decide(0.2)
    assert p.told[-2:] == [("on_batch_end", 1), ("decide", 0.2)]
    with pytest.raises(UnknownBatch):
        d.submit(_flow(9), 0.3)
    assert 9 not in d.flows and ("on_flow_submit", _flow(9)) not in p.told


def test_every_decision_field_is_applied_to_live_flows_only():
    d, p, sink = _driver()
    d.submit(_flow(7), 0.0)
    p.answer = Decision(priorities={7: Priority(2, 1), 99: Priority(0)},
                        rate_caps={7: 5.0, 99: 1.0}, pruned=frozenset({2}), wake_s=0.5)
    d.decide(0.0)
    assert sink.applied == [("prio", 7, Priority(2, 1)), ("cap", 7, 5.0),
                            ("pruned", frozenset({2})), ("wake", 0.5)]
    p.answer = Decision(priorities={7: Priority(1)})
    d.decide(0.1)
    assert sink.applied[-1] == ("wake", None) and d.priority(7) == Priority(1)
    live = d.complete(7, 0.2)
    assert (live.first, live.last) == (Priority(2, 1), Priority(1))
    assert d.ever_pruned == {2} and d.pruned == frozenset({2})


def test_mfs_takes_ranks_and_pruned_requests_from_a_coordinator():
    mfs = make_policy("mfs")
    d = PolicyDriver(mfs, Sink(), progress=type("P", (), {
        "remaining_bytes": lambda self, f: 10.0, "rate_bytes_per_s": lambda self, f: 0.0})())
    d.global_order(GlobalOrder(), 0.0)  # a coordinator owns the inter-request stage
    for rid, deadline in ((1, 0.001), (2, 5.0)):
        d.add_request(RequestInfo(rid, 0.0, deadline, 10), 0.0)
    # batch 1's P2D (request 1) cannot make 1 ms: MFS alone would prune it; under a
    # coordinator it waits for the coordinator's word
    d.start_batch(BatchInfo(1, 0, (1,), 4, 0.0, 1e-3, {1: {0: 1e9}}, {}, {0: 8e9}), 0.0)
    d.start_batch(BatchInfo(2, 0, (2,), 4, 0.0, 1e-3, {2: {0: 1.0}}, {}, {0: 8e9}), 0.0)
    d.submit(FlowInfo(10, Stage.KV_REUSE, 2, (2,), 0, 0, 10.0, 10.0, 1, ((0, 10.0),), 8e9,
                      None, 0.0), 0.0)
    d.submit(_flow(11, batch=1, rids=(1,)), 0.0)
    dec = d.decide(0.0)
    assert dec.pruned is None and dec.priorities[11].level < 8
    # local RED: batch 1 (deadline 1 ms) first
    assert dec.priorities[10].rank == mfs.book.rank(2) > mfs.book.rank(1)
    d.global_order(GlobalOrder({1: 1, 2: 0}, frozenset({1})), 0.001)
    dec = d.decide(0.001)
    assert dec.pruned == frozenset({1})
    assert dec.priorities == {10: Priority(dec.priorities[10].level, 0), 11: Priority(8)}
