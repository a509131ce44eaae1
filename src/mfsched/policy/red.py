"""Inter-request order and overload control: RED, the feasibility check, selective pruning.

Pure functions of deadlines and load vectors (paper §4.4.2 and Appendix B, Algorithm 1); the
MFS policy and the data-plane coordinator both call them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["BatchLoad", "feasibility_prune", "robust_effective_deadline", "split_deadlines"]


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
    """One batch as the feasibility check sees it.

    ``base_finish_s``: when it would finish without any network delay (now + remaining
    compute); ``fixed``: port -> bytes it must still move that pruning cannot remove;
    ``prunable``: request -> port -> bytes that pruning the request would remove.
    """

    batch_id: int
    deadlines: Sequence[float]
    base_finish_s: float
    fixed: dict[int, float] = field(default_factory=dict)
    prunable: dict[int, dict[int, float]] = field(default_factory=dict)


def feasibility_prune(batches: Sequence[BatchLoad], capacity_bytes_per_s: Mapping[int, float],
                      budget: int) -> list[int]:
    """Algorithm 1: walk the batches in RED order with the per-port load S of the batches
    ranked above; while a batch's worst-case finish (no overlap: base finish + the bottleneck
    port's accumulated load / capacity) exceeds its loose deadline, prune the request with the
    largest prunable load on that bottleneck port (from this batch or a higher-ranked one), up
    to ``budget`` requests. Returns the pruned request ids in pruning order.

    Our reading: ports are compared by time (load / capacity) rather than raw bytes, and the
    loop stops if no candidate has prunable load on the bottleneck (pruning cannot help).
    """
    above: dict[int, float] = {}
    pruned: list[int] = []
    pool: dict[int, dict[int, float]] = {}
    for b in batches:
        load = dict(b.fixed)
        for r, per_port in b.prunable.items():
            pool[r] = per_port
            _add(load, per_port, 1.0)
        own = set(b.prunable)
        target = loose_deadline(b.deadlines)
        while len(pruned) < budget and pool:
            port, finish = _bottleneck(above, load, capacity_bytes_per_s, b.base_finish_s)
            if finish <= target or port is None:
                break
            victim = max(pool, key=lambda r: (pool[r].get(port, 0.0), -r))
            if pool[victim].get(port, 0.0) <= 0.0:
                break
            pruned.append(victim)
            _add(load if victim in own else above, pool.pop(victim), -1.0)
        _add(above, load, 1.0)
    return pruned


def _add(acc: dict[int, float], loads: Mapping[int, float], sign: float) -> None:
    for port, size in loads.items():
        acc[port] = acc.get(port, 0.0) + sign * size


def _bottleneck(above, load, capacity, base_finish_s) -> tuple[int | None, float]:
    best_port, best_t = None, 0.0
    for port in set(above) | set(load):
        t = (above.get(port, 0.0) + load.get(port, 0.0)) / capacity[port]
        if best_port is None or t > best_t:
            best_port, best_t = port, t
    return best_port, base_finish_s + best_t
