"""Inter-request order and overload control: RED, the feasibility check, selective pruning.

Pure functions of deadlines and load vectors (paper §4.4.2 and Appendix B, Algorithm 1). Their
callers keep the live state in :class:`mfsched.policy.batchbook.BatchBook` (MFS and the
data-plane coordinator, one copy), which ranks batches by :func:`robust_effective_deadline`
and runs the walk of Algorithm 1, :func:`_feasibility_pass`, on load vectors it assembles in
arrays. :func:`feasibility_prune` runs the same walk on load vectors given as dictionaries
(:class:`BatchLoad`): the readable statement of the check, and the entry of its hand tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .._jit import njit

__all__ = ["BatchLoad", "feasibility_prune", "loose_deadline", "robust_effective_deadline",
           "split_deadlines"]


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
    bottleneck port (from this batch or a higher-ranked one; ties: the lower request id), up
    to ``budget`` requests. Returns the pruned request ids in pruning order.

    Our reading (docs/design.md): the paper's estimate adds compute and communication; we
    split it as above because MFS serves early stages before P2D, so higher-ranked P2D bytes
    never delay a batch's compute. Ports are compared by time (load / capacity), ties to the
    lowest port id, and the loop stops when pruning cannot help (the early-stage part alone is
    late, or no candidate has P2D load on the bottleneck).

    The walk is one compiled pass, :func:`_feasibility_pass`, over the loads packed into flat
    arrays (ports renumbered densely, in ascending id).
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
    return _feasibility_pass(
        compute_end, target, np.array(early_ptr, i64), dense[:len(early_port)],
        np.array(early_bytes, np.float64), np.array(req_ptr, i64), np.array(req_id, i64),
        np.array(rp_ptr, i64), dense[len(early_port):], np.array(rp_bytes, np.float64), cap,
        ports.astype(i64), now_s, budget).tolist()


@njit
def _feasibility_pass(compute_end, target, early_ptr, early_port, early_bytes, req_ptr, req_id,
                      rp_ptr, rp_port, rp_bytes, cap, port_id, now_s, budget):
    """:func:`feasibility_prune`'s walk over batches ``0..n-1`` (in RED order): batch ``i``
    has ``compute_end[i]``, its loose deadline ``target[i]``, early-stage entries
    ``early_ptr[i]..early_ptr[i+1]-1`` (dense port, bytes) and prunable requests
    ``req_ptr[i]..req_ptr[i+1]-1``, request ``q`` with id ``req_id[q]`` and P2D entries
    ``rp_ptr[q]..rp_ptr[q+1]-1`` (a port may appear in several entries of one request: they
    add up). Port ``p`` has capacity ``cap[p]`` (bytes/s) and id ``port_id[p]`` (ties among
    equally loaded ports go to the lowest id). Returns the pruned request ids in order."""
    n = len(compute_end)
    num_ports = len(cap)
    above_early = np.zeros(num_ports)
    above_all = np.zeros(num_ports)
    load = np.zeros(num_ports)
    alive = np.zeros(len(req_id), np.uint8)
    pruned = np.empty(max(budget, 0), np.int64)
    count = 0
    pool = 0
    for i in range(n):
        # this batch's load: early bytes, then each prunable request's entries
        for k in range(early_ptr[i], early_ptr[i + 1]):
            load[early_port[k]] += early_bytes[k]
        has_p2d = False
        for q in range(req_ptr[i], req_ptr[i + 1]):
            alive[q] = True
            for k in range(rp_ptr[q], rp_ptr[q + 1]):
                load[rp_port[k]] += rp_bytes[k]
                has_p2d = True
        pool += req_ptr[i + 1] - req_ptr[i]
        t_early = 0.0
        first = True
        for k in range(early_ptr[i], early_ptr[i + 1]):
            p = early_port[k]
            t = (above_early[p] + early_bytes[k]) / cap[p]
            if first or t > t_early:
                t_early = t
                first = False
        if has_p2d and compute_end[i] + t_early <= target[i]:
            while count < budget and pool > 0:
                # the bottleneck among the ports of this batch's prunable requests
                best_p = -1
                t_all = 0.0
                for k in range(rp_ptr[req_ptr[i]], rp_ptr[req_ptr[i + 1]]):
                    p = rp_port[k]
                    t = (above_all[p] + load[p]) / cap[p]
                    if best_p < 0 or t > t_all or (t == t_all and port_id[p] < port_id[best_p]):
                        best_p = p
                        t_all = t
                if best_p < 0 or now_s + t_all <= target[i]:
                    break
                # the live candidate (this batch or above) with the most bytes there
                victim = -1
                best_bytes = 0.0
                for q in range(req_ptr[i + 1]):
                    if not alive[q]:
                        continue
                    on_port = 0.0
                    for k in range(rp_ptr[q], rp_ptr[q + 1]):
                        if rp_port[k] == best_p:
                            on_port += rp_bytes[k]
                    if victim < 0 or on_port > best_bytes or (on_port == best_bytes
                                                              and req_id[q] < req_id[victim]):
                        victim = q
                        best_bytes = on_port
                if best_bytes <= 0.0:
                    break
                pruned[count] = req_id[victim]
                count += 1
                alive[victim] = False
                pool -= 1
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
        for k in range(rp_ptr[req_ptr[i]], rp_ptr[req_ptr[i + 1]]):
            p = rp_port[k]
            above_all[p] += load[p]
            load[p] = 0.0
    return pruned[:count]
