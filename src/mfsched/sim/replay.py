"""Replay a fixed set of flows through the fluid network and report their finish times.

No workload, no policy: each flow has a path (link ids), a size, a start time and a priority
that may change at given times. This is how the network model alone is checked against hand
computations (``tests/test_network.py``) and against packet-level ns-3 (``bench/ns3_check.py``,
which reads the scenarios of ``../shared/tools/ns3ref``).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..policy.types import Priority
from .network import FluidNetwork

__all__ = ["ReplayFlow", "replay"]


@dataclass(frozen=True, slots=True)
class ReplayFlow:
    flow_id: str
    links: tuple[int, ...]
    size_bytes: float
    start_s: float
    level: int = 0
    level_changes: tuple[tuple[float, int], ...] = ()  # (time_s, new level)


def replay(capacity_bytes_per_s: Sequence[float], flows: Sequence[ReplayFlow],
           check_invariants: bool = True) -> dict[str, float]:
    """Finish time of every flow (seconds, absolute)."""
    net = FluidNetwork(np.asarray(capacity_bytes_per_s, dtype=float), check_invariants)
    events: list[tuple[float, int, int, int]] = []  # (time, kind 0=start 1=change, seq, idx)
    seq = 0
    for i, f in enumerate(flows):
        events.append((f.start_s, 0, seq, i))
        seq += 1
        for t, _level in f.level_changes:
            events.append((t, 1, seq, i))
            seq += 1
    heapq.heapify(events)
    change_index = [0] * len(flows)
    index_of = {f.flow_id: i for i, f in enumerate(flows)}
    finish: dict[str, float] = {}
    while events or len(net):
        t_next = net.reallocate() if net.dirty else net.next_completion_s()
        t_event = events[0][0] if events else float("inf")
        if t_next <= t_event:
            net.advance(t_next)
            for fid in net.pop_completed():
                finish[flows[fid].flow_id] = t_next
            continue
        net.advance(t_event)
        _, kind, _, i = heapq.heappop(events)
        f = flows[i]
        if kind == 0:
            weights = np.ones(len(f.links))
            net.add(i, np.asarray(f.links, dtype=np.int64), weights, f.size_bytes,
                    Priority(f.level))
        else:
            _t, level = f.level_changes[change_index[i]]
            change_index[i] += 1
            if i in net:
                net.set_priority(i, Priority(level))
    missing = set(index_of) - set(finish)
    if missing:
        raise RuntimeError(f"flows never finished: {sorted(missing)}")
    return finish
