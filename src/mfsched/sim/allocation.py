"""Pure bandwidth allocation: strict priority across classes, weighted max-min inside one.

Flows are rows: flow ``f`` loads links ``links[f, :nlinks[f]]`` with weights
``weights[f, :nlinks[f]]`` (the flow's rate times the weight is what it puts on that link) and
belongs to class ``keys[f]``. A plain flow has weight 1 on each link of its path; a group of
parallel members sharing one rate variable has, on each link, the sum of its members' relative
sizes there (see :mod:`mfsched.sim.network`).

A flow's *share* (``shares[f]``, 1 for one transport connection) is how many fair shares it
claims: a flow striped over c parallel connections (NCCL channels, a transfer engine's queue
pairs) rises c times as fast as a one-connection flow during filling, as c connections would
under per-connection fairness (TCP, or DCQCN per queue pair).

A flow may also carry a rate cap (``caps[f]``, ``inf`` for none): it then freezes when it
reaches the cap, like a private bottleneck, and leaves the rest to others (policies that
pace flows, such as Karuna's minimal-rate deadline flows, use it).

Classes are served in increasing key order. Inside a class rates are weighted max-min fair by
progressive filling on the capacity the higher classes left: all unfrozen flows rise together
(each at its share times a common level) until some link saturates; the flows crossing it
freeze at that level; repeat. Lower classes (the scavenger class is just the last one) only get
what is left, so the allocation is
work-conserving: a link with spare capacity has no flow that is limited by it.

:func:`allocate_subset` runs at every reallocation of the simulator, so it is a compiled
kernel: compiled by Cython when the package is installed (its types in ``allocation.pxd``;
the loops are written so that both compilers take them: index loops, no slices of fresh
arrays passed to the generic sort), else by numba on first use (:mod:`mfsched._jit`).
:func:`allocate_rows` calls it on every row and :func:`allocate` is the same computation for
a sparse entry list, the form the tests and the ns-3 check use. Hand-computed cases are in
``tests/test_allocation.py``; the network model is checked against packet-level ns-3 by
``bench/ns3_check.py``.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit
from ..policy.types import MAX_RANK, RANK_BITS

__all__ = ["allocate", "allocate_rows", "allocate_subset", "link_loads", "priority_key",
           "scratch_arrays"]

_REL_TOL = 1e-9
# How far below the links' bound a cap must lie for a step to skip the link scans: far more
# than the rounding of the quantities compared (1e-16 relative per operation).
_BOUND_MARGIN = 1e-9
_INF = float("inf")  # a float literal: numba reads np.inf through a slow global lookup
_MAX_LEVEL = (1 << (63 - RANK_BITS)) - 1
_RUN = 16  # the stable sort's insertion-sorted runs
_RADIX_BITS = 11  # digits of the integer sort (2,048 counters)
_RADIX_MIN = 256  # fewer items: the merge sort (a radix pass clears 2,048 counters)


def priority_key(level: int, rank: int) -> int:
    """Strict order of (level, rank) as one integer (level first)."""
    if not (0 <= rank <= MAX_RANK and 0 <= level <= _MAX_LEVEL):
        raise ValueError(f"priority ({level}, {rank}) out of range: levels 0..{_MAX_LEVEL}, "
                         f"ranks 0..{MAX_RANK}")
    return (level << RANK_BITS) + rank


def allocate(capacity: np.ndarray, entry_flow: np.ndarray, entry_link: np.ndarray,
             entry_weight: np.ndarray, flow_class: np.ndarray,
             caps: np.ndarray | None = None, shares: np.ndarray | None = None) -> np.ndarray:
    """Rates for ``len(flow_class)`` flows given a sparse flow x link incidence list.

    Entry ``e`` says flow ``entry_flow[e]`` loads link ``entry_link[e]`` with weight
    ``entry_weight[e]``; classes are served in increasing ``flow_class`` order. Every flow must
    have at least one entry with a positive weight. ``caps`` optionally limits flow rates;
    ``shares`` optionally gives flows more than one fair share (default 1 each).
    """
    n = len(flow_class)
    entry_flow = np.asarray(entry_flow, dtype=np.int64)
    nlinks = np.bincount(entry_flow, minlength=n).astype(np.int64)
    width = max(1, int(nlinks.max())) if n else 1
    links = np.zeros((n, width), dtype=np.int64)
    weights = np.zeros((n, width))
    fill = np.zeros(n, dtype=np.int64)
    for f, link, w in zip(entry_flow, entry_link, entry_weight, strict=True):
        links[f, fill[f]] = link
        weights[f, fill[f]] = w
        fill[f] += 1
    rates = np.zeros(n)
    allocate_rows(np.asarray(capacity, dtype=np.float64), links, weights, nlinks,
                  np.asarray(flow_class, dtype=np.int64),
                  np.full(n, _INF) if caps is None else np.asarray(caps, dtype=float),
                  np.ones(n) if shares is None else np.asarray(shares, dtype=float), n, rates)
    return rates


def allocate_rows(capacity: np.ndarray, links: np.ndarray, weights: np.ndarray,
                  nlinks: np.ndarray, keys: np.ndarray, caps: np.ndarray, shares: np.ndarray,
                  n: int, rates: np.ndarray) -> None:
    """Write the rates of flows ``0..n-1`` (capacity units per second) into ``rates``: the
    compiled :func:`allocate_subset` over every row on the full capacity. (The simulator's
    network calls that kernel from its own compiled reallocation; a compiled wrapper here
    would only add compilation: numba re-optimises every callee inside each caller.)"""
    allocate_subset(capacity, capacity.copy(), np.arange(n, dtype=np.int64), links, weights,
                    nlinks, keys, caps, shares, rates,
                    *scratch_arrays(len(capacity), len(keys), int(np.sum(nlinks[:n]))))


def scratch_arrays(n_links: int, n_rows: int, entries: int) -> tuple[np.ndarray, ...]:
    """The working space of :func:`allocate_subset` for flows among ``n_rows`` rows with at
    most ``entries`` (flow, link) entries in all, on ``n_links`` links: a link -> local
    number map (all -1), a frozen flag per row (all 0; both left so by every call), the
    class order and the sort's scratch, the class filling's integer rows and link demands,
    and its capped flows. The caller keeps them between calls (the network, growing them with
    its rows): allocating them per call cost about 2 us of a 2-5 us reallocation."""
    return (np.full(n_links, -1, dtype=np.int64), np.zeros(n_rows, dtype=np.uint8),
            np.empty(n_rows, dtype=np.int64), np.empty(n_rows, dtype=np.int64),
            np.empty((5, entries + 1), dtype=np.int64), np.empty(entries + 1),
            np.empty(n_rows, dtype=np.int64))


@njit
def allocate_subset(capacity, residual, rows, links, weights, nlinks, keys, caps, shares,
                    rates, local_of, frozen, order, sort_tmp, scratch_ints, scratch_demand,
                    scratch_capped):
    """:func:`allocate_rows` for the flows in ``rows`` only, on ``residual`` capacity (updated
    in place): what the other flows leave (:mod:`mfsched.sim.network` reserves paced flows'
    rates before it fills the rest). The last seven arrays are :func:`scratch_arrays`'s."""
    n = len(rows)
    for r in range(n):
        rates[rows[r]] = 0.0
    if n == 0:
        return
    _stable_sort_ints(keys, rows, order[:n], sort_tmp[:n])
    i = 0
    while i < n:
        key = keys[order[i]]
        j = i
        while j < n and keys[order[j]] == key:
            j += 1
        if j > i + 1 or not _fill_single(residual, rates, order[i], links, weights, nlinks,
                                         caps, shares):
            _fill_class(capacity, residual, local_of, frozen, rates, order[i:j], links,
                        weights, nlinks, caps, shares, scratch_ints, scratch_demand,
                        scratch_capped)
        i = j
    for r in range(n):
        frozen[rows[r]] = 0


@njit(inline="always")
def _fill_single(residual, rates, f, links, weights, nlinks, caps, shares):
    """A class of one uncapped flow over distinct links, each with a positive demand: the
    general filling's single step (:func:`_fill_class`) with the same arithmetic in the same
    order (level 0, the first link with the least headroom, the flow frozen there), without
    the class's link index and without a call (inlined: passing a dozen arrays to a compiled
    call costs more than the step). Returns False, doing nothing, for any other flow."""
    if caps[f] < _INF:
        return False
    best = _INF
    level = 0.0
    for k in range(nlinks[f]):
        d = 0.0 + weights[f, k] * shares[f]
        if d <= 1e-12:
            return False
        g = links[f, k]
        for k2 in range(k):
            if links[f, k2] == g:
                return False
        headroom = residual[g] - level * d
        if headroom < 0.0:
            headroom = 0.0
        if headroom < best * d:
            best = headroom / d
    level += best
    rate = level * shares[f]
    rates[f] = rate
    for k in range(nlinks[f]):
        g = links[f, k]
        residual[g] -= rate * weights[f, k]
        if residual[g] < 0.0:
            residual[g] = 0.0
    return True


@njit
def _fill_class(capacity, residual, local_of, frozen, rates, members, links, weights, nlinks,
                caps, shares, scratch_ints, scratch_demand, scratch_capped):
    """Progressive filling of one class on ``residual`` capacity (updated in place).

    The level rises; an unfrozen flow's rate is its share times the level. Per-link demand
    (sum of weight x share of unfrozen flows) is kept incrementally and a
    link -> flows index finds the flows to freeze, so one filling step costs O(links of the
    class + entries of the flows it freezes). The ``scratch_*`` arrays are the caller's, at
    least as long as the class's entries (rows 0-4 of ``scratch_ints``: link numbering,
    fan-out offsets, link -> flows index, fill pointers, links with demand) and members
    (``scratch_capped``).
    """
    n_members = len(members)
    # local link numbering and demand
    n_local = 0
    count = 0
    for m in range(n_members):
        count += nlinks[members[m]]
    glob = scratch_ints[0, :count]
    demand = scratch_demand[:count]
    fan = scratch_ints[1, :count + 1]
    for loc in range(count):
        demand[loc] = 0.0
        fan[loc] = 0
    fan[count] = 0
    for m in range(n_members):
        f = members[m]
        for k in range(nlinks[f]):
            g = links[f, k]
            loc = local_of[g]
            if loc < 0:
                loc = n_local
                local_of[g] = loc
                glob[loc] = g
                n_local += 1
            demand[loc] += weights[f, k] * shares[f]
            fan[loc + 1] += 1
    for loc in range(n_local):
        fan[loc + 1] += fan[loc]
    flows_of = scratch_ints[2, :fan[n_local]]
    fill = scratch_ints[3, :n_local]
    for loc in range(n_local):
        fill[loc] = fan[loc]
    for m in range(n_members):
        f = members[m]
        for k in range(nlinks[f]):
            loc = local_of[links[f, k]]
            flows_of[fill[loc]] = f
            fill[loc] += 1
    # flows with a rate cap, by the level at which they reach it
    n_capped = 0
    for m in range(n_members):
        if caps[members[m]] < _INF:
            n_capped += 1
    capped = scratch_capped[:n_capped]
    c = 0
    for m in range(n_members):
        f = members[m]
        if caps[f] < _INF:
            capped[c] = f
            c += 1
    if n_capped > 1:
        # by the level at which each reaches its cap (positions sorted, ties in member order)
        cap_level = np.empty(n_capped)
        position = np.empty(n_capped, dtype=np.int64)
        for c in range(n_capped):
            cap_level[c] = caps[capped[c]] / shares[capped[c]]
            position[c] = c
        by_level = np.empty(n_capped, dtype=np.int64)
        sort_tmp = np.empty(n_capped, dtype=np.int64)
        _stable_sort(cap_level, position, by_level, sort_tmp)
        unsorted = capped.copy()
        for c in range(n_capped):
            capped[c] = unsorted[by_level[c]]
    cap_ptr = 0
    left = n_members
    level = 0.0
    # A lower bound on the level at which any link of the class would saturate or reach the
    # freezing tolerance: min over links with demand of (residual - tol x capacity) / demand,
    # as of the last full step. Freezing flows at a level below a link's bound only raises it,
    # so the bound stays valid; while the next cap lies clearly below it, the step is a pure
    # cap step (no link can be the best or within tolerance) and the two scans over the
    # class's links would change nothing: the step then costs O(1), with the same arithmetic.
    bound = -_INF
    # the links with demand, in numbering order (both scans skip the others anyway)
    active = scratch_ints[4, :n_local]
    n_active = 0
    for loc in range(n_local):
        if demand[loc] > 1e-12:
            active[n_active] = loc
            n_active += 1
    while left > 0:
        while cap_ptr < n_capped and frozen[capped[cap_ptr]]:
            cap_ptr += 1
        if cap_ptr < n_capped:
            f = capped[cap_ptr]
            if bound > 0.0 and caps[f] / shares[f] < bound * (1.0 - _BOUND_MARGIN):
                best = max(caps[f] / shares[f] - level, 0.0)
                level += best
                left -= _freeze(f, level, frozen, rates, residual, demand, local_of, links,
                                weights, nlinks, shares)
                frozen_caps, cap_ptr = _freeze_capped(capped, cap_ptr, n_capped, level, frozen,
                                                      rates, residual, demand, local_of, links,
                                                      weights, nlinks, caps, shares)
                left -= frozen_caps
                continue
        best = _INF
        best_loc = -1
        for a in range(n_active):
            loc = active[a]
            d = demand[loc]
            if d > 1e-12:
                headroom = residual[glob[loc]] - level * d
                if headroom < 0.0:
                    headroom = 0.0
                if headroom < best * d:
                    best = headroom / d
                    best_loc = loc
        while cap_ptr < n_capped and frozen[capped[cap_ptr]]:
            cap_ptr += 1
        best_cap = -1
        if cap_ptr < n_capped and caps[capped[cap_ptr]] / shares[capped[cap_ptr]] - level < best:
            best = max(caps[capped[cap_ptr]] / shares[capped[cap_ptr]] - level, 0.0)
            best_cap = capped[cap_ptr]
            best_loc = -1
        level += best
        if best_cap >= 0:
            left -= _freeze(best_cap, level, frozen, rates, residual, demand, local_of,
                            links, weights, nlinks, shares)
        frozen_caps, cap_ptr = _freeze_capped(capped, cap_ptr, n_capped, level, frozen, rates,
                                              residual, demand, local_of, links, weights, nlinks,
                                              caps, shares)
        left -= frozen_caps
        bound = _INF
        kept = 0
        for a in range(n_active):
            loc = active[a]
            if demand[loc] > 1e-12 and (loc == best_loc or residual[glob[loc]]
                                        - level * demand[loc] <= _REL_TOL * capacity[glob[loc]]):
                for e in range(fan[loc], fan[loc + 1]):
                    f = flows_of[e]
                    if not frozen[f]:
                        left -= _freeze(f, level, frozen, rates, residual, demand, local_of,
                                        links, weights, nlinks, shares)
            if demand[loc] > 1e-12:
                g = glob[loc]
                b = (residual[g] - _REL_TOL * capacity[g]) / demand[loc]
                if b < bound:
                    bound = b
                active[kept] = loc
                kept += 1
        n_active = kept  # demand only falls: a link without any stays out of both scans
    for loc in range(n_local):
        local_of[glob[loc]] = -1


@njit
def _stable_sort(values, items, out, tmp):
    """``items`` in increasing ``values[item]``, equal values in their order in ``items``,
    into ``out`` (``tmp``: scratch of the same length): numpy's stable argsort, written as a
    bottom-up merge sort (insertion-sorted runs, then merges of runs) because numba compiles
    its own ``argsort(kind="mergesort")`` for seconds per key type, most of a first run's
    compilation. A stable sort has one answer, so the order is numpy's exactly."""
    n = len(items)
    for i in range(n):
        out[i] = items[i]
    for lo in range(0, n, _RUN):
        hi = min(lo + _RUN, n)
        for i in range(lo + 1, hi):
            x = out[i]
            v = values[x]
            j = i
            while j > lo and v < values[out[j - 1]]:
                out[j] = out[j - 1]
                j -= 1
            out[j] = x
    src, dst = out, tmp
    in_out = True  # whether src is out
    width = _RUN
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            if mid < hi and values[src[mid]] < values[src[mid - 1]]:  # else: already in order
                xi, xj = src[i], src[j]
                vi, vj = values[xi], values[xj]
                while True:
                    if vj < vi:  # strictly: equal values keep their order (stable)
                        dst[k] = xj
                        k += 1
                        j += 1
                        if j == hi:
                            break
                        xj = src[j]
                        vj = values[xj]
                    else:
                        dst[k] = xi
                        k += 1
                        i += 1
                        if i == mid:
                            break
                        xi = src[i]
                        vi = values[xi]
            while i < mid:
                dst[k] = src[i]
                k += 1
                i += 1
            while j < hi:
                dst[k] = src[j]
                k += 1
                j += 1
        src, dst = dst, src
        in_out = not in_out
        width *= 2
    if not in_out:
        for i in range(n):
            out[i] = src[i]


@njit
def _stable_sort_ints(values, items, out, tmp):
    """:func:`_stable_sort` for int64 values (the class keys): a stable LSD radix sort on
    11-bit digits of ``value - min``, skipping the digits in which every item agrees
    (priority keys put the level 43 bits above the rank, so most digits are constant); the
    merge sort for fewer than 256 items. Stable, so the same order as the merge sort and
    numpy's stable argsort. 10,000 class keys: 0.3 ms instead of the merge sort's 0.6 ms."""
    n = len(items)
    if n < _RADIX_MIN:
        _stable_sort(values, items, out, tmp)
        return
    lo = values[items[0]]
    for i in range(n):
        if values[items[i]] < lo:
            lo = values[items[i]]
    first = values[items[0]] - lo
    varying = 0  # the bits of (value - lo) in which some item differs from the first
    for i in range(n):
        varying |= (values[items[i]] - lo) ^ first
    mask = (1 << _RADIX_BITS) - 1
    counts = np.empty(1 << _RADIX_BITS, dtype=np.int64)
    src = items
    where = 0  # where src is: 0 items, 1 out, 2 tmp
    shift = 0
    while shift < 63 and (varying >> shift) > 0:  # (no shift by 64: undefined in LLVM)
        if (varying >> shift) & mask:  # else: one digit for all, nothing to reorder
            for d in range(mask + 1):
                counts[d] = 0
            for i in range(n):
                counts[((values[src[i]] - lo) >> shift) & mask] += 1
            start = 0
            for d in range(mask + 1):
                c = counts[d]
                counts[d] = start
                start += c
            dst = tmp if where == 1 else out
            for i in range(n):
                x = src[i]
                d = ((values[x] - lo) >> shift) & mask
                dst[counts[d]] = x
                counts[d] += 1
            src = dst
            where = 2 if where == 1 else 1
        shift += _RADIX_BITS
    if where != 1:
        for i in range(n):
            out[i] = src[i]


@njit
def _freeze_capped(capped, cap_ptr, n_capped, level, frozen, rates, residual, demand, local_of,
                   links, weights, nlinks, caps, shares):
    """Freeze the capped flows from ``cap_ptr`` on whose cap is within tolerance of ``level``;
    returns how many froze and where the pointer stops."""
    count = 0
    while cap_ptr < n_capped:
        f = capped[cap_ptr]
        if not frozen[f]:
            if caps[f] / shares[f] - level > _REL_TOL * caps[f] / shares[f]:
                break
            count += _freeze(f, level, frozen, rates, residual, demand, local_of, links,
                             weights, nlinks, shares)
        cap_ptr += 1
    return count, cap_ptr


@njit
def _freeze(f, level, frozen, rates, residual, demand, local_of, links, weights, nlinks, shares):
    frozen[f] = True
    rate = level * shares[f]
    rates[f] = rate
    for k in range(nlinks[f]):
        g = links[f, k]
        w = weights[f, k]
        demand[local_of[g]] -= w * shares[f]
        residual[g] -= rate * w
        if residual[g] < 0.0:
            residual[g] = 0.0
    return 1


def link_loads(n_links: int, entry_flow: np.ndarray, entry_link: np.ndarray,
               entry_weight: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Load each link carries under ``rates`` (for invariant checks and utilisation)."""
    return np.bincount(entry_link, weights=entry_weight * rates[entry_flow], minlength=n_links)
