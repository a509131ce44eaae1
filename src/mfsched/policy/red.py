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

    __slots__ = ("compute_done", "info", "layer", "p2d_layers")

    def __init__(self, info: BatchInfo) -> None:
        self.info = info
        self.layer = 0
        self.compute_done = False
        self.p2d_layers: dict[int, set[int]] = {}  # request -> layers whose P2D was emitted


def red_order(batches: Iterable[BatchState], deadline_s: Mapping[int, float]) -> list:
    """The batches in ascending RED of their live requests' deadlines (``deadline_s``: request
    -> deadline of the requests still live), ties by batch id. A batch without live requests
    ranks last (RED = inf)."""
    def red(b: BatchState) -> float:
        return robust_effective_deadline(
            [deadline_s[r] for r in b.info.request_ids if r in deadline_s] or [float("inf")])

    return sorted(batches, key=lambda b: (red(b), b.info.batch_id))


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
        deadlines = [deadline_s[r] for r in info.request_ids if r in deadline_s]
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
                               early, prunable))
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
    """
    above_early: dict[int, float] = {}
    above_all: dict[int, float] = {}
    pruned: list[int] = []
    pool: dict[int, dict[int, float]] = {}
    for b in batches:
        early = dict(b.early)
        load = dict(b.early)
        for r, per_port in b.prunable.items():
            pool[r] = per_port
            _add(load, per_port, 1.0)
        own = set(b.prunable)
        p2d_ports = {port for per_port in b.prunable.values() for port in per_port}
        target = loose_deadline(b.deadlines)
        _, t_early = _bottleneck(above_early, early, capacity_bytes_per_s, early)
        early_finish = b.compute_end_s + t_early
        while len(pruned) < budget and pool and early_finish <= target:
            port, t_all = _bottleneck(above_all, load, capacity_bytes_per_s, p2d_ports)
            if port is None or now_s + t_all <= target:
                break
            victim = max(pool, key=lambda r: (pool[r].get(port, 0.0), -r))
            if pool[victim].get(port, 0.0) <= 0.0:
                break
            pruned.append(victim)
            _add(load if victim in own else above_all, pool.pop(victim), -1.0)
        _add(above_early, early, 1.0)
        _add(above_all, load, 1.0)
    return pruned


def _add(acc: dict[int, float], loads: Mapping[int, float], sign: float) -> None:
    for port, size in loads.items():
        acc[port] = acc.get(port, 0.0) + sign * size


def _bottleneck(above, load, capacity, ports) -> tuple[int | None, float]:
    """Among ``ports``, the one whose accumulated load takes longest, and that time."""
    best_port, best_t = None, 0.0
    for port in ports:
        t = (above.get(port, 0.0) + load.get(port, 0.0)) / capacity[port]
        if best_port is None or t > best_t:
            best_port, best_t = port, t
    return best_port, best_t
