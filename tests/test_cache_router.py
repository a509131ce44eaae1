"""Prefix caches (LRU, holder index) and the KV-aware router."""

from hypothesis import given, settings
from hypothesis import strategies as st

from mfsched.workload.cache import PrefixCaches
from mfsched.workload.requests import Request
from mfsched.workload.router import route_request


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


def test_router_prefers_cached_prefix():
    c = PrefixCaches(3, capacity_blocks=100)
    c.touch(2, [1, 2, 3, 4])
    r = route_request(req([1, 2, 3, 4, 5]), c, pending_tokens=[0, 0, 0])
    assert r.unit == 2 and r.local_tokens == 64 and r.remote_unit == -1


def test_router_queue_penalty_diverts_and_fetches_remotely():
    c = PrefixCaches(3, capacity_blocks=100)
    c.touch(2, [1, 2, 3, 4])
    # unit 2 has 4 cached blocks (saves 4 blocks) but 10 blocks of queued work
    r = route_request(req([1, 2, 3, 4, 5]), c, pending_tokens=[0.0, 16.0, 160.0])
    assert r.unit == 0
    assert (r.remote_unit, r.remote_tokens, r.local_tokens) == (2, 64, 0)
    assert r.new_tokens(req([1, 2, 3, 4, 5])) == 16


def test_router_always_computes_one_token():
    c = PrefixCaches(1, capacity_blocks=100)
    c.touch(0, [1, 2])
    r = route_request(req([1, 2], tokens=20), c, pending_tokens=[0])
    assert r.local_tokens == 19 and r.new_tokens(req([1, 2], tokens=20)) == 1


def test_router_without_reuse_info():
    c = PrefixCaches(2, capacity_blocks=100)
    r = route_request(Request(0, 0.0, 100, 1), c, pending_tokens=[5.0, 1.0])
    assert r.unit == 1 and r.local_tokens == 0 and r.remote_unit == -1
