"""Pure bandwidth allocation: strict priority across classes, weighted max-min inside one.

Flows are rows: flow ``f`` loads links ``links[f, :nlinks[f]]`` with weights
``weights[f, :nlinks[f]]`` (the flow's rate times the weight is what it puts on that link) and
belongs to class ``keys[f]``. A plain flow has weight 1 on each link of its path; a group of
parallel members sharing one rate variable has, on each link, the sum of its members' relative
sizes there (see :mod:`mfsched.sim.network`).

A flow may also carry a rate cap (``caps[f]``, ``inf`` for none): it then freezes when it
reaches the cap, like a private bottleneck, and leaves the rest to others (policies that
pace flows, such as Karuna's minimal-rate deadline flows, use it).

Classes are served in increasing key order. Inside a class rates are max-min fair by
progressive filling on the capacity the higher classes left: all unfrozen flows rise together
until some link saturates; the flows crossing it freeze at that level; repeat. Lower classes
(the scavenger class is just the last one) only get what is left, so the allocation is
work-conserving: a link with spare capacity has no flow that is limited by it.

:func:`allocate_rows` runs at every reallocation of the simulator, so it is a compiled kernel
(:mod:`mfsched._jit`); :func:`allocate` is the same computation for a sparse entry list, the
form the tests and the ns-3 check use. Hand-computed cases are in ``tests/test_allocation.py``;
the network model is checked against packet-level ns-3 by ``bench/ns3_check.py``.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit

__all__ = ["allocate", "allocate_rows", "link_loads", "priority_key"]

_REL_TOL = 1e-9
_INF = float("inf")  # a float literal: numba reads np.inf through a slow global lookup
_RANK_BITS = 40  # ranks below 2**40; levels below 2**23


def priority_key(level: int, rank: int) -> int:
    """Strict order of (level, rank) as one integer (level first)."""
    return (level << _RANK_BITS) + rank


def allocate(capacity: np.ndarray, entry_flow: np.ndarray, entry_link: np.ndarray,
             entry_weight: np.ndarray, flow_class: np.ndarray,
             caps: np.ndarray | None = None) -> np.ndarray:
    """Rates for ``len(flow_class)`` flows given a sparse flow x link incidence list.

    Entry ``e`` says flow ``entry_flow[e]`` loads link ``entry_link[e]`` with weight
    ``entry_weight[e]``; classes are served in increasing ``flow_class`` order. Every flow must
    have at least one entry with a positive weight. ``caps`` optionally limits flow rates.
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
    return allocate_rows(np.asarray(capacity, dtype=np.float64), links, weights, nlinks,
                         np.asarray(flow_class, dtype=np.int64),
                         np.full(n, _INF) if caps is None else np.asarray(caps, dtype=float), n)


@njit
def allocate_rows(capacity, links, weights, nlinks, keys, caps, n):
    """Rates of flows ``0..n-1`` (capacity units per second)."""
    rates = np.zeros(n)
    if n == 0:
        return rates
    residual = capacity.copy()
    demand = np.zeros(len(capacity))
    frozen = np.zeros(n, dtype=np.bool_)
    order = np.argsort(keys[:n], kind="mergesort")
    active = np.empty(n, dtype=np.int64)
    i = 0
    while i < n:
        key = keys[order[i]]
        n_active = 0
        while i < n and keys[order[i]] == key:
            active[n_active] = order[i]
            n_active += 1
            i += 1
        _fill_class(capacity, residual, demand, frozen, rates, active, n_active, links,
                    weights, nlinks, caps)
    return rates


@njit
def _fill_class(capacity, residual, demand, frozen, rates, active, n_active, links, weights,
                nlinks, caps):
    """Progressive filling of one class on ``residual`` capacity (updated in place)."""
    level = 0.0
    while n_active > 0:
        for i in range(n_active):
            f = active[i]
            for k in range(nlinks[f]):
                demand[links[f, k]] = 0.0
        for i in range(n_active):
            f = active[i]
            for k in range(nlinks[f]):
                demand[links[f, k]] += weights[f, k]
        best = _INF
        best_link = -1
        for i in range(n_active):
            f = active[i]
            if caps[f] - level < best:
                best = max(caps[f] - level, 0.0)
                best_link = -1
            for k in range(nlinks[f]):
                link = links[f, k]
                d = demand[link]
                headroom = residual[link] - level * d
                if headroom < 0.0:
                    headroom = 0.0
                if headroom < best * d:
                    best = headroom / d
                    best_link = link
        level += best
        for i in range(n_active):
            f = active[i]
            if caps[f] < _INF and caps[f] - level <= _REL_TOL * caps[f]:
                frozen[f] = True
                continue
            for k in range(nlinks[f]):
                link = links[f, k]
                if link == best_link or (
                        residual[link] - level * demand[link] <= _REL_TOL * capacity[link]):
                    frozen[f] = True
                    break
        kept = 0
        for i in range(n_active):
            f = active[i]
            if frozen[f]:
                rates[f] = level
                for k in range(nlinks[f]):
                    link = links[f, k]
                    residual[link] -= level * weights[f, k]
                    if residual[link] < 0.0:
                        residual[link] = 0.0
            else:
                active[kept] = f
                kept += 1
        n_active = kept


def link_loads(n_links: int, entry_flow: np.ndarray, entry_link: np.ndarray,
               entry_weight: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Load each link carries under ``rates`` (for invariant checks and utilisation)."""
    return np.bincount(entry_link, weights=entry_weight * rates[entry_flow], minlength=n_links)
