"""Inter-request order and overload control: RED, the feasibility check, selective pruning.

Pure functions of deadlines and load vectors (paper §4.4.2 and Appendix B, Algorithm 1), and
the one view of a batch they read. Two callers, one copy: the MFS policy (on its own, with the
flows of one host or of the whole simulated cluster) and the data-plane coordinator (with the
global view, :mod:`mfsched.dataplane.coordinator`). Both call :func:`red_order` to rank the live
batches and :func:`batch_loads` + :func:`feasibility_prune` to prune; they differ only in where
the in-flight P2D bytes come from (MFS: the progress view; the coordinator: the daemons'
reports).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .._jit import njit
from .types import BatchInfo

__all__ = ["BatchLoad", "BatchState", "add_in_flight", "batch_loads", "feasibility_prune",
           "loose_deadline", "red_order", "robust_effective_deadline", "split_deadlines"]


def split_deadlines(deadlines: Sequence[float]) -> tuple[list[float], list[float]]:
    """Sort and split at the largest gap between neighbours (the first one on ties).

    Returns (tight, loose); a single deadline is all tight and leaves no loose set.
    """
    d = sorted(deadlines)
    if len(d) < 2:
        return d, []
    gaps = [d[k + 1] - d[k] for k in range(len(d) - 1)]
    k = max(range(len(gaps)), key=lambda j: (gaps[j], -j))
    return d[: k + 1], d[k + 1:]


def robust_effective_deadline(deadlines: Sequence[float]) -> float:
    """RED = f x D_tight_min + (1 - f) x D_loose_min, f = share of tight requests.

    A few very tight requests in a mostly loose batch pull its RED only a little (the
    "piggyback" effect). One request: its deadline.
    """
    tight, loose = split_deadlines(deadlines)
    if not loose:
        return tight[0]
    f = len(tight) / (len(tight) + len(loose))
    return f * tight[0] + (1 - f) * loose[0]


def loose_deadline(deadlines: Sequence[float]) -> float:
    """D^Lo_min, the feasibility target of a batch (the tight minimum if nothing is loose)."""
    tight, loose = split_deadlines(deadlines)
    return loose[0] if loose else tight[0]


class BatchState:
    """What the inter-request stage knows of a live batch: its description, the layer it is
    computing, whether its compute is done, and per request the layers whose P2D flows were
    emitted. MFS extends it with its own per-batch state; the coordinator uses it as is."""

    __slots__ = ("_deadlines_memo", "compute_done", "info", "layer", "p2d_layers")

    def __init__(self, info: BatchInfo) -> None:
        self.info = info
        self.layer = 0
        self.compute_done = False
        self.p2d_layers: dict[int, set[int]] = {}  # request -> layers whose P2D was emitted
        # (live requests' deadlines, their RED, their loose deadline) when last computed
        self._deadlines_memo: tuple[list[float], float, float] = ([], float("inf"), 0.0)

    def deadlines(self, deadline_s: Mapping[int, float]) -> tuple[list[float], float, float]:
        """The live requests' deadlines (request order), their RED and their loose deadline
        (RED = inf, loose = 0 with none). Recomputed only when the live deadlines changed
        (a request ended): the split into tight and loose is the costly part of a reorder."""
        live = [deadline_s[r] for r in self.info.request_ids if r in deadline_s]
        memo = self._deadlines_memo
        if live != memo[0]:
            memo = self._deadlines_memo = (
                live, robust_effective_deadline(live) if live else float("inf"),
                loose_deadline(live) if live else 0.0)
        return memo


def red_order(batches: Iterable[BatchState], deadline_s: Mapping[int, float]) -> list:
    """The batches in ascending RED of their live requests' deadlines (``deadline_s``: request
    -> deadline of the requests still live), ties by batch id. A batch without live requests
    ranks last (RED = inf)."""
    return sorted(batches, key=lambda b: (b.deadlines(deadline_s)[1], b.info.batch_id))


def add_in_flight(acc: dict[tuple[int, int], dict[int, float]], batch_id: int,
                  request_id: int, port_bytes: Iterable[tuple[int, float]],
                  fraction: float) -> None:
    """Count ``fraction`` of a P2D flow's per-port bytes for (batch, request)."""
    load = acc.get((batch_id, request_id))
    if load is None:
        load = acc[(batch_id, request_id)] = {}
    for port, size in port_bytes:
        load[port] = load.get(port, 0.0) + size * fraction


def batch_loads(ordered: Sequence[BatchState], deadline_s: Mapping[int, float],
                pruned: Container[int], in_flight: Mapping[tuple[int, int], Mapping[int, float]],
                now_s: float) -> list[BatchLoad]:
    """The feasibility check's input (Algorithm 1's load vectors), batch by batch in ``ordered``
    (RED order): the remaining compute, the early-stage bytes of the layers not computed yet,
    and per request that can still be pruned (live, not pruned, with P2D traffic) its P2D bytes
    still to move: ``in_flight[(batch, request)]`` (per port; what the caller knows remains of
    the emitted flows) plus one layer's P2D bytes for every layer not emitted yet. Batches
    without live requests are left out."""
    loads = []
    for b in ordered:
        info = b.info
        deadlines, _, loose_s = b.deadlines(deadline_s)
        if not deadlines:
            continue
        left = 0 if b.compute_done else info.num_layers - b.layer
        early = {port: size * left for port, size in info.early_port_bytes.items()}
        prunable: dict[int, dict[int, float]] = {}
        for rid in info.request_ids:
            if rid not in deadline_s or rid in pruned or rid not in info.p2d_port_bytes:
                continue
            load = dict(in_flight.get((info.batch_id, rid), ()))
            if not b.compute_done:
                future = info.num_layers - len(b.p2d_layers.get(rid, ()))
                for port, size in info.p2d_port_bytes[rid].items():
                    load[port] = load.get(port, 0.0) + size * future
            prunable[rid] = load
        loads.append(BatchLoad(info.batch_id, deadlines, now_s + left * info.layer_compute_s,
                               early, prunable, loose_s))
    return loads


@dataclass
class BatchLoad:
    """One batch as the feasibility check sees it (loads in bytes still to move).

    ``compute_end_s``: when its remaining compute would end with no network delay;
    ``early``: port -> Stage-1/2 bytes (they gate its compute; pruning cannot remove them);
    ``prunable``: request -> port -> that request's Stage-3 bytes, which pruning removes.
    """

    batch_id: int
    deadlines: Sequence[float]
    compute_end_s: float
    early: dict[int, float] = field(default_factory=dict)
    prunable: dict[int, dict[int, float]] = field(default_factory=dict)
    loose_s: float | None = None  # loose_deadline(deadlines), if the caller knows it


def feasibility_prune(batches: Sequence[BatchLoad], capacity_bytes_per_s: Mapping[int, float],
                      now_s: float, budget: int) -> list[int]:
    """Algorithm 1: walk the batches in RED order, accumulating the per-port load S of the
    batches ranked above. A batch's worst-case finish is

        max(compute end + max_u (S_early(u) + early(u)) / cap(u),
            now + max_v (S(v) + load(v)) / cap(v))

    over the ports u its early-stage bytes cross and the ports v its P2D bytes cross: its
    compute waits for the early-stage bytes ranked at or above it, and its P2D for all bytes
    ranked at or above it, with no overlap between batches. While that exceeds
    the batch's loose deadline D^Lo_min, prune the request with the largest P2D load on the
    bottleneck port (from this batch or a higher-ranked one), up to ``budget`` requests.
    Returns the pruned request ids in pruning order.

    Our reading (docs/design.md): the paper's estimate adds compute and communication; we
    split it as above because MFS serves early stages before P2D, so higher-ranked P2D bytes
    never delay a batch's compute. Ports are compared by time (load / capacity), and the loop
    stops when pruning cannot help (the early-stage part alone is late, or no candidate has
    P2D load on the bottleneck).

    One compiled pass (:func:`_feasibility_pass`) over the loads packed into flat arrays
    (ports renumbered densely). The bottleneck port is the first of the largest time in the
    order of ``{ports of the batch's prunable requests}`` (a Python set, as the reference
    reading had it): the pass asks for that order only for a batch that may prune, which it
    then gets here and resumes from that batch.
    """
    if not batches:
        return []
    n = len(batches)
    compute_end = np.empty(n)
    target = np.empty(n)
    early_ptr = [0]
    early_port: list[int] = []
    early_bytes: list[float] = []
    req_ptr = [0]
    req_id: list[int] = []
    rp_ptr = [0]
    rp_port: list[int] = []
    rp_bytes: list[float] = []
    for i, b in enumerate(batches):
        compute_end[i] = b.compute_end_s
        target[i] = loose_deadline(b.deadlines) if b.loose_s is None else b.loose_s
        early_port.extend(b.early)
        early_bytes.extend(b.early.values())
        early_ptr.append(len(early_port))
        req_id.extend(b.prunable)
        for per_port in b.prunable.values():
            rp_port.extend(per_port)
            rp_bytes.extend(per_port.values())
            rp_ptr.append(len(rp_port))
        req_ptr.append(len(req_id))
    i64 = np.int64
    # ports renumbered densely (np.unique: sorted port ids, each entry's index among them)
    ports, dense = np.unique(np.array(early_port + rp_port, i64), return_inverse=True)
    dense = dense.reshape(-1).astype(i64)
    cap = np.array([capacity_bytes_per_s[port] for port in ports.tolist()], np.float64)
    arrays = (compute_end, target, np.array(early_ptr, i64), dense[:len(early_port)],
              np.array(early_bytes, np.float64), np.array(req_ptr, i64),
              np.array(req_id, i64), np.array(rp_ptr, i64), dense[len(early_port):],
              np.array(rp_bytes, np.float64), cap)
    num_ports = len(cap)
    above_early = np.zeros(num_ports)
    above_all = np.zeros(num_ports)
    load = np.zeros(num_ports)
    alive = np.zeros(len(req_id), np.bool_)
    pruned = np.empty(max(budget, 0), i64)
    # state kept between resumptions: [next batch, pruned so far, pool size]
    state = np.zeros(3, i64)
    order = np.empty(0, i64)  # the bottleneck scan order of the batch asked for
    while True:
        asked = _feasibility_pass(*arrays, now_s, budget, above_early, above_all, load, alive,
                                  pruned, state, order)
        if asked < 0:
            return pruned[:state[1]].tolist()
        scan = list({port for per_port in batches[asked].prunable.values() for port in per_port})
        order = np.searchsorted(ports, np.array(scan, i64)).astype(i64)


@njit
def _feasibility_pass(compute_end, target, early_ptr, early_port, early_bytes, req_ptr, req_id,
                      rp_ptr, rp_port, rp_bytes, cap, now_s, budget, above_early, above_all,
                      load, alive, pruned, state, order):
    """:func:`feasibility_prune`'s walk from batch ``state[0]``, with the arithmetic of the
    reference reading (the same additions in the same order). Returns -1 when done, or the
    index of a batch that may prune and whose bottleneck scan order is not ``order`` yet
    (state untouched for it: the caller passes the order and calls again)."""
    n = len(compute_end)
    i = state[0]
    ordered_for = -1 if len(order) == 0 else state[0]
    while i < n:
        # this batch's load: early bytes, then each prunable request's (dict order)
        for k in range(early_ptr[i], early_ptr[i + 1]):
            load[early_port[k]] += early_bytes[k]
        for q in range(req_ptr[i], req_ptr[i + 1]):
            for k in range(rp_ptr[q], rp_ptr[q + 1]):
                load[rp_port[k]] += rp_bytes[k]
        t_early = 0.0
        first = True
        for k in range(early_ptr[i], early_ptr[i + 1]):
            p = early_port[k]
            t = (above_early[p] + early_bytes[k]) / cap[p]
            if first or t > t_early:
                t_early = t
                first = False
        early_finish = compute_end[i] + t_early
        pool = state[2] + req_ptr[i + 1] - req_ptr[i]
        has_p2d = False
        for q in range(req_ptr[i], req_ptr[i + 1]):
            if rp_ptr[q + 1] > rp_ptr[q]:
                has_p2d = True
        may_prune = state[1] < budget and pool > 0 and early_finish <= target[i] and has_p2d
        if may_prune:
            t_all = 0.0
            first = True
            for q in range(req_ptr[i], req_ptr[i + 1]):
                for k in range(rp_ptr[q], rp_ptr[q + 1]):
                    p = rp_port[k]
                    t = (above_all[p] + load[p]) / cap[p]
                    if first or t > t_all:
                        t_all = t
                        first = False
            if now_s + t_all <= target[i]:
                may_prune = False
        if may_prune and ordered_for != i:
            # undo this batch's load and ask for its scan order
            for k in range(early_ptr[i], early_ptr[i + 1]):
                load[early_port[k]] = 0.0
            for q in range(req_ptr[i], req_ptr[i + 1]):
                for k in range(rp_ptr[q], rp_ptr[q + 1]):
                    load[rp_port[k]] = 0.0
            state[0] = i
            return i
        for q in range(req_ptr[i], req_ptr[i + 1]):
            alive[q] = True
        state[2] = pool
        while may_prune and state[1] < budget and state[2] > 0:
            best_p = -1
            t_all = 0.0
            for j in range(len(order)):
                p = order[j]
                t = (above_all[p] + load[p]) / cap[p]
                if best_p < 0 or t > t_all:
                    best_p = p
                    t_all = t
            if best_p < 0 or now_s + t_all <= target[i]:
                break
            victim = -1
            best_bytes = 0.0
            for q in range(req_ptr[i + 1]):
                if not alive[q]:
                    continue
                on_port = 0.0
                for k in range(rp_ptr[q], rp_ptr[q + 1]):
                    if rp_port[k] == best_p:
                        on_port = rp_bytes[k]
                if victim < 0 or on_port > best_bytes or (on_port == best_bytes
                                                          and req_id[q] < req_id[victim]):
                    victim = q
                    best_bytes = on_port
            if best_bytes <= 0.0:
                break
            pruned[state[1]] = req_id[victim]
            state[1] += 1
            alive[victim] = False
            state[2] -= 1
            own = victim >= req_ptr[i]
            for k in range(rp_ptr[victim], rp_ptr[victim + 1]):
                p = rp_port[k]
                if own:
                    load[p] = load[p] - rp_bytes[k]
                else:
                    above_all[p] = above_all[p] - rp_bytes[k]
        for k in range(early_ptr[i], early_ptr[i + 1]):
            p = early_port[k]
            above_early[p] += early_bytes[k]
        for k in range(early_ptr[i], early_ptr[i + 1]):
            p = early_port[k]
            above_all[p] += load[p]
            load[p] = 0.0
        for q in range(req_ptr[i], req_ptr[i + 1]):
            for k in range(rp_ptr[q], rp_ptr[q + 1]):
                p = rp_port[k]
                above_all[p] += load[p]
                load[p] = 0.0
        i += 1
        state[0] = i
    return -1
