"""Bandwidth allocation: hand-computed cases and properties."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfsched.sim.allocation import allocate, link_loads


def alloc(cap, paths, classes=None, weights=None):
    ef, el, ew = [], [], []
    for f, path in enumerate(paths):
        for k, link in enumerate(path):
            ef.append(f)
            el.append(link)
            ew.append(1.0 if weights is None else weights[f][k])
    classes = [0] * len(paths) if classes is None else classes
    return allocate(np.array(cap, float), np.array(ef), np.array(el), np.array(ew),
                    np.array(classes))


def test_one_link_fair():
    assert alloc([10.0], [[0], [0]]).tolist() == [5.0, 5.0]


def test_parking_lot():
    # links A(10) B(10) C(8); long crosses all; B has 3 flows -> 10/3 each
    cap = [10.0, 10.0, 8.0]
    r = alloc(cap, [[0, 1, 2], [0], [1], [1], [2]])
    assert r == pytest.approx([10 / 3, 20 / 3, 10 / 3, 10 / 3, 8 - 10 / 3])


def test_multi_link_bottleneck_elsewhere():
    # f0 crosses a slow link (2); on the shared link (10) f1 takes the rest
    r = alloc([2.0, 10.0], [[0, 1], [1]])
    assert r.tolist() == pytest.approx([2.0, 8.0])


def test_strict_priority():
    # high flow limited to 4 by link 1; the two low flows share the remaining 6
    r = alloc([10.0, 4.0], [[0, 1], [0], [0]], classes=[0, 1, 1])
    assert r.tolist() == pytest.approx([4.0, 3.0, 3.0])


def test_lower_class_starves_on_saturated_link():
    r = alloc([10.0], [[0], [0], [0]], classes=[0, 3, 3])
    assert r.tolist() == pytest.approx([10.0, 0.0, 0.0])


def test_group_weight_counts_members():
    # a group with 2 members on the link (weight 2) and a plain flow: 2r + r = 9
    r = alloc([9.0], [[0], [0]], weights=[[2.0], [1.0]])
    assert r.tolist() == pytest.approx([3.0, 3.0])


def test_group_proportional_members():
    # group: member of size 4 on link 0 (w=1), member of size 2 on link 1 (w=0.5);
    # plain flow on link 1: 0.5x + x = 10 -> x = 20/3 for both
    r = alloc([10.0, 10.0], [[0, 1], [1]], weights=[[1.0, 0.5], [1.0]])
    assert r.tolist() == pytest.approx([20 / 3, 20 / 3])


def test_empty():
    assert alloc([1.0], []).tolist() == []


@st.composite
def problems(draw):
    n_links = draw(st.integers(1, 6))
    cap = draw(st.lists(st.floats(0.5, 100.0), min_size=n_links, max_size=n_links))
    n_flows = draw(st.integers(1, 10))
    paths, weights, classes = [], [], []
    for _ in range(n_flows):
        path = draw(st.lists(st.integers(0, n_links - 1), min_size=1, max_size=3, unique=True))
        paths.append(path)
        weights.append(draw(st.lists(st.floats(0.1, 4.0), min_size=len(path),
                                     max_size=len(path))))
        classes.append(draw(st.integers(0, 3)))
    return cap, paths, classes, weights


def _loads(cap, paths, weights, rates):
    ef = [f for f, p in enumerate(paths) for _ in p]
    el = [link for p in paths for link in p]
    ew = [w for ws in weights for w in ws]
    return link_loads(len(cap), np.array(ef), np.array(el), np.array(ew), rates)


@settings(max_examples=300, deadline=None)
@given(problems())
def test_capacity_respected_and_every_flow_bottlenecked(problem):
    """No link exceeds capacity; every flow crosses a saturated link on which no same-class
    flow gets more and no lower-class flow gets anything (strict priority + max-min):
    the allocation is work-conserving."""
    cap, paths, classes, weights = problem
    rates = alloc(cap, paths, classes, weights)
    loads = _loads(cap, paths, weights, rates)
    assert (loads <= np.array(cap) * (1 + 1e-9) + 1e-9).all()
    for f, path in enumerate(paths):
        ok = False
        for link in path:
            if loads[link] < cap[link] * (1 - 1e-6):
                continue
            others = [g for g, p in enumerate(paths) if link in p]
            same = [rates[g] for g in others if classes[g] == classes[f]]
            lower = [rates[g] for g in others if classes[g] > classes[f]]
            if rates[f] >= max(same) * (1 - 1e-6) and all(x <= 1e-9 for x in lower):
                ok = True
        assert ok, (f, rates, loads)


def test_interpreted_kernel_matches_compiled():
    """The kernel gives the same answer with numba and as plain Python (MFSCHED_NO_JIT)."""
    code = ("import numpy as np; from mfsched.sim.allocation import allocate;"
            "r = allocate(np.array([10., 10., 8.]), np.array([0,0,0,1,2,3,4]),"
            "np.array([0,1,2,0,1,1,2]), np.ones(7), np.array([0,1,0,0,2]));"
            "print(repr(r.tolist()))")
    outs = []
    for env in ({}, {"MFSCHED_NO_JIT": "1"}):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, **env}, check=True)
        outs.append(res.stdout)
    assert outs[0] == outs[1]


def test_rate_cap_leaves_the_rest_to_others():
    # a capped flow (cap 2) and a plain flow on one link of 10: 2 and 8
    r = allocate(np.array([10.0]), np.array([0, 1]), np.array([0, 0]), np.ones(2),
                 np.array([0, 0]), caps=np.array([2.0, np.inf]))
    assert r.tolist() == pytest.approx([2.0, 8.0])
    # a capped high-priority flow leaves the remainder to the lower class
    r = allocate(np.array([10.0]), np.array([0, 1]), np.array([0, 0]), np.ones(2),
                 np.array([0, 1]), caps=np.array([3.0, np.inf]))
    assert r.tolist() == pytest.approx([3.0, 7.0])


def test_several_caps_in_one_class_freeze_in_order_of_their_level():
    # one link of 10, caps 5, 3, 2 given out of order and one uncapped flow: the cap of 2
    # freezes first at level 2, the other three share the remaining 8 (8/3 each, below 3)
    r = allocate(np.array([10.0]), np.arange(4), np.zeros(4), np.ones(4), np.zeros(4),
                 caps=np.array([5.0, 3.0, 2.0, np.inf]))
    assert r.tolist() == pytest.approx([8 / 3, 8 / 3, 2.0, 8 / 3])
    # caps 1, 3, 2 and one uncapped flow: each capped flow gets its cap, the fourth the rest
    r = allocate(np.array([10.0]), np.arange(4), np.zeros(4), np.ones(4), np.zeros(4),
                 caps=np.array([1.0, 3.0, 2.0, np.inf]))
    assert r.tolist() == pytest.approx([1.0, 3.0, 2.0, 4.0])


def test_shares_weight_the_fair_split():
    """A flow striped over 2 connections gets twice a 1-connection flow's rate: 2r + r = 9."""
    r = allocate(np.array([9.0]), np.array([0, 1]), np.array([0, 0]), np.array([1.0, 1.0]),
                 np.array([0, 0]), shares=np.array([2.0, 1.0]))
    assert r.tolist() == pytest.approx([6.0, 3.0])


def test_shares_with_a_cap_and_a_second_bottleneck():
    """Link 0 (12): f0 (share 3, capped at 3), f1 (share 1), f2 (share 2, also on link 1 of
    capacity 2). Filling: f0 freezes at its cap 3 (level 1); f2 freezes at 2 on link 1
    (level 1); f1 takes the rest of link 0: 12 - 3 - 2 = 7."""
    r = allocate(np.array([12.0, 2.0]), np.array([0, 1, 2, 2]), np.array([0, 0, 0, 1]),
                 np.ones(4), np.array([0, 0, 0]), caps=np.array([3.0, np.inf, np.inf]),
                 shares=np.array([3.0, 1.0, 2.0]))
    assert r.tolist() == pytest.approx([3.0, 7.0, 2.0])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 1200), st.integers(1, 8), st.sampled_from(["float", "int", "key"]),
       st.integers(0, 2**32 - 1))
def test_stable_sorts_are_numpys_stable_argsort(n, distinct, kind, seed):
    """The allocator's own sorts (the merge sort for any values; the radix sort for integer
    keys, which hands fewer than 256 items to the merge sort) order items exactly as numpy's
    stable argsort of their values does: few distinct values, so most comparisons tie; class
    keys with the level 43 bits above the rank (digits skipped); the items a shuffled subset
    (as the allocator sorts a subset of rows)."""
    from mfsched.sim.allocation import _stable_sort, _stable_sort_ints

    rng = np.random.default_rng(seed)
    values = rng.integers(0, distinct, n)
    if kind == "key":
        values = (rng.integers(0, 8, n) << 43) + values * rng.integers(1, 1 << 20)
    values = values.astype(float if kind == "float" else np.int64)
    items = rng.permutation(n)[:rng.integers(0, n + 1)].astype(np.int64)
    want = items[np.argsort(values[items], kind="stable")].tolist()
    for sort in (_stable_sort,) if kind == "float" else (_stable_sort, _stable_sort_ints):
        out = np.empty(len(items), dtype=np.int64)
        sort(values, items, out, np.empty(len(items), dtype=np.int64))
        assert out.tolist() == want, sort.__name__
