"""Prefix caches (LRU, holder index) and the KV-aware router."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mfsched.workload.cache import PrefixCaches
from mfsched.workload.requests import Request
from mfsched.workload.router import Router, lockstep_tokens


def req(blocks, tokens=None, bt=16):
    return Request(0, 0.0, tokens or len(blocks) * bt, 1, tuple(blocks), bt)


def test_hits_are_leading_blocks_only():
    c = PrefixCaches(3, capacity_blocks=10)
    c.touch(0, [1, 2, 3])
    c.touch(1, [1, 2])
    c.touch(2, [2, 3])  # holds later blocks but not the first: no hit
    assert c.hits([1, 2, 3, 4]) == {0: 3, 1: 2}
    assert c.hits([9]) == {}


def test_lru_eviction_updates_index():
    c = PrefixCaches(1, capacity_blocks=3)
    c.touch(0, [1, 2, 3])
    c.touch(0, [1])  # refresh 1: now 2 is least recently used
    c.touch(0, [4])
    assert c.size(0) == 3
    assert c.hits([1]) == {0: 1}
    assert c.hits([2]) == {}
    assert c._holders.get(2) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.lists(st.integers(0, 12), min_size=1,
                                                       max_size=6)), max_size=30))
def test_index_matches_caches(ops):
    c = PrefixCaches(3, capacity_blocks=5)
    for unit, blocks in ops:
        c.touch(unit, blocks)
    for unit in range(3):
        assert c.size(unit) <= 5
    held = {}
    for unit, lru in enumerate(c._lru):
        for b in lru:
            held.setdefault(b, set()).add(unit)
    assert held == c._holders


def route(request, caches, pending, instances=None, last=None):
    """The router with one unit per instance unless ``instances`` says otherwise."""
    instances = instances or [[u] for u in range(len(pending))]
    last = np.full(len(pending), -1) if last is None else np.array(last)
    return Router(instances, batch_tokens=8192).route(request, caches, np.array(pending), last)


def test_router_prefers_cached_prefix():
    c = PrefixCaches(3, capacity_blocks=100)
    c.touch(2, [1, 2, 3, 4])
    r = route(req([1, 2, 3, 4, 5]), c, [0, 0, 0])
    assert r.unit == 2 and r.local_tokens == 64 and r.remote_unit == -1


def test_router_queue_penalty_diverts_and_fetches_remotely():
    c = PrefixCaches(3, capacity_blocks=100)
    c.touch(2, [1, 2, 3, 4])
    # unit 2 saves 4 of 5 blocks but has 10 blocks queued: 1 + 10 > 5 + 0 (unit 0)
    r = route(req([1, 2, 3, 4, 5]), c, [0.0, 16.0, 160.0])
    assert r.unit == 0
    assert (r.remote_unit, r.remote_tokens, r.local_tokens) == (2, 64, 0)
    assert r.new_tokens(req([1, 2, 3, 4, 5])) == 16


def test_router_always_computes_one_token():
    c = PrefixCaches(1, capacity_blocks=100)
    c.touch(0, [1, 2])
    r = route(req([1, 2], tokens=20), c, [0])
    assert r.local_tokens == 19 and r.new_tokens(req([1, 2], tokens=20)) == 1


def test_router_without_reuse_info():
    c = PrefixCaches(2, capacity_blocks=100)
    r = route(Request(0, 0.0, 100, 1), c, [5.0, 1.0])
    assert r.unit == 1 and r.local_tokens == 0 and r.remote_unit == -1


def test_lockstep_tokens_by_hand():
    # one batch: the largest chunk of the instance sets its length
    assert lockstep_tokens(100, 20_000, 8192) == 8192
    assert lockstep_tokens(3000, 1000, 8192) == 3000
    # two batches: 8192 + max(808, min(8192, 20000 - 8192))
    assert lockstep_tokens(9000, 20_000, 8192) == 8192 + 8192
    # two batches, the others done after the first: 8192 + 1808
    assert lockstep_tokens(10_000, 3000, 8192) == 10_000
    assert lockstep_tokens(0, 5000, 8192) == 0


def test_idle_unit_of_busy_instance_is_not_free():
    """Units 0 and 1 run in lockstep: unit 1 would wait for unit 0's 1000 tokens."""
    c = PrefixCaches(4, capacity_blocks=100)
    r = route(Request(0, 0.0, 100, 1), c, [1000.0, 0.0, 0.0, 0.0], [[0, 1], [2, 3]])
    assert r.unit == 2
    # cost of unit 1: 7 blocks + (max(100, 1000) - 100) / 16 = 63.25; unit 2: 7 blocks
    c.touch(1, list(range(1, 7)))  # 96 of 100 tokens cached on unit 1: 1 + 996 / 16 > 7
    r = route(req(list(range(1, 8)), tokens=100), c, [1000.0, 0.0, 0.0, 0.0],
              [[0, 1], [2, 3]])
    assert (r.unit, r.remote_unit, r.remote_tokens) == (2, 1, 96)


def test_ties_go_to_the_less_loaded_instance_then_round_robin():
    c = PrefixCaches(4, capacity_blocks=100)
    inst = [[0, 1], [2, 3]]
    # unit 0 holds 30 tokens: units 1, 2, 3 all cost 7 blocks; instance 1 is less loaded
    r = route(Request(0, 0.0, 100, 1), c, [30.0, 0.0, 0.0, 0.0], inst)
    assert r.unit == 2
    # all idle: the instance, then the unit, that received a request longest ago
    assert route(Request(0, 0.0, 100, 1), c, [0.0] * 4, inst, last=[5, 3, 4, -1]).unit == 3
    assert route(Request(0, 0.0, 100, 1), c, [0.0] * 4, inst, last=[1, 6, 4, 2]).unit == 3
    assert route(Request(0, 0.0, 100, 1), c, [0.0] * 4, inst, last=[2, -1, 6, 4]).unit == 1
