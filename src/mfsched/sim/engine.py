"""The event loop: one heap for compute and network events, one clock, one policy.

Heap keys are ``(time_s, kind, seq)``: at equal times, events run in :class:`EventKind` order
(network completions first, so data that arrives at t is usable by a step that starts at t;
then compute completions, then arrivals, then policy wake-ups), and in submission order
(``seq``) within a kind. Stale network and wake-up events are dropped lazily by version.

After all events of one instant, the engine asks the policy to decide once, applies the new
priorities, reallocates bandwidth if anything changed and schedules the next network
completion. The world (:mod:`mfsched.sim.serving`) submits flows and tells the policy about
requests, batches and layers through the engine, so the policy is always told before it is
asked.

The public methods used by :class:`~mfsched.sim.serving.Serving` (``now_s``, ``schedule``,
``new_flow_id``, ``submit``, the notifications, ``run`` and the counters) are the contract a
wall-clock engine implements to run the same serving logic over real transports.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import numpy as np

from ..policy.base import Policy
from ..policy.types import BatchInfo, FlowInfo, Priority, RequestInfo
from .network import FluidNetwork
from .transfer import Transfer

__all__ = ["Engine", "EventKind", "FlowRecordRow"]

_INF = float("inf")


class EventKind(IntEnum):
    FLOWS = 0  # the earliest active flow completes
    COMPUTE = 1  # a compute step ends
    ARRIVAL = 2  # a request arrives
    WAKE = 3  # the policy asked to be called again

_FLOWS, _WAKE = int(EventKind.FLOWS), int(EventKind.WAKE)

# (flow_id, stage, batch_id, layer, members, size_bytes, total_bytes, submit_s, finish_s,
#  first_level, last_level)
FlowRecordRow = tuple[int, int, int, int, int, float, float, float, float, int, int]


class Engine:
    def __init__(self, capacity_bytes_per_s: np.ndarray, policy: Policy,
                 check_invariants: bool = False, record_flows: bool = False,
                 contention_free: bool = False) -> None:
        self.network = FluidNetwork(capacity_bytes_per_s, check_invariants, contention_free)
        self.policy = policy
        self.now_s = 0.0
        self.events = 0
        self.pruned: frozenset[int] = frozenset()
        self.ever_pruned: set[int] = set()
        self.submitted_bytes = 0.0
        self.flow_records: list[FlowRecordRow] | None = [] if record_flows else None
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._net_version = 0
        self._wake_version = 0
        self._wake_s = _INF
        self._policy_dirty = False
        self._flows: dict[int, _Active] = {}
        self._next_flow_id = 0

    # --- scheduling ---------------------------------------------------------------------------

    def schedule(self, time_s: float, kind: EventKind, payload: Any = None) -> None:
        if time_s < self.now_s:
            raise ValueError(f"cannot schedule in the past ({time_s} < {self.now_s})")
        self._seq += 1
        heapq.heappush(self._heap, (time_s, int(kind), self._seq, payload))

    def new_flow_id(self) -> int:
        self._next_flow_id += 1
        return self._next_flow_id

    # --- what the world tells the policy ------------------------------------------------------

    def request_arrived(self, info: RequestInfo) -> None:
        self.policy.on_request(info, self.now_s)
        self._policy_dirty = True

    def request_done(self, request_id: int) -> None:
        self.policy.on_request_done(request_id, self.now_s)
        self._policy_dirty = True

    def batch_started(self, info: BatchInfo) -> None:
        self.policy.on_batch_start(info, self.now_s)
        self._policy_dirty = True

    def batch_ended(self, batch_id: int) -> None:
        self.policy.on_batch_end(batch_id, self.now_s)
        self._policy_dirty = True

    def layer_started(self, batch_id: int, layer: int) -> None:
        self.policy.on_layer_start(batch_id, layer, self.now_s)
        self._policy_dirty = True

    def batch_compute_done(self, batch_id: int) -> None:
        self.policy.on_batch_compute_done(batch_id, self.now_s)
        self._policy_dirty = True

    def submit(self, info: FlowInfo, transfer: Transfer, on_done: Callable[[int], None]) -> None:
        """Start a flow now; ``on_done(flow_id)`` runs when its last byte arrives."""
        self.network.add(info.flow_id, transfer.links, transfer.weights, info.size_bytes,
                         share=transfer.share)
        self._flows[info.flow_id] = _Active(info, on_done)
        self.submitted_bytes += info.size_bytes
        self.policy.on_flow_submit(info, self.now_s)
        self._policy_dirty = True

    # --- the loop -----------------------------------------------------------------------------

    def run(self, dispatch: Callable[[int, Any], None],
            should_stop: Callable[[], bool]) -> None:
        """Process events until the heap is empty or ``should_stop()``; COMPUTE and ARRIVAL
        events go to ``dispatch(kind, payload)``."""
        heap = self._heap
        network = self.network
        while True:
            if (self._policy_dirty or network.dirty) and (not heap or heap[0][0] > self.now_s):
                self._decide()
            if not heap or should_stop():
                return
            t, kind, _, payload = heapq.heappop(heap)
            if kind == _FLOWS:
                if payload != self._net_version:
                    continue
                self.now_s = t
                self.events += 1
                self._complete_flows(network.advance_and_pop(t))
                continue
            if kind == _WAKE and payload != self._wake_version:
                continue
            if t > self.now_s:
                network.advance(t)
                self.now_s = t
            self.events += 1
            if kind == _WAKE:
                self._wake_s = _INF
                self._policy_dirty = True
            else:
                dispatch(kind, payload)

    def _decide(self) -> None:
        decision = self.policy.decide(self.now_s, self.network)
        self._policy_dirty = False
        flows = self._flows
        for fid, prio in decision.priorities.items():
            active = flows.get(fid)
            if active is None:
                continue
            if active.first is None:
                active.first = prio
            active.last = prio
            self.network.set_priority(fid, prio)
        for fid, cap in decision.rate_caps.items():
            if fid in flows:
                self.network.set_rate_cap(fid, cap)
        if decision.pruned is not None:
            self.pruned = decision.pruned
            self.ever_pruned |= decision.pruned
        self._set_wake(decision.wake_s)
        if self.network.dirty:
            t_next = self.network.reallocate()
            self._net_version += 1
            if t_next < _INF:
                self.schedule(max(t_next, self.now_s), EventKind.FLOWS, self._net_version)

    def _set_wake(self, wake_s: float | None) -> None:
        target = _INF if wake_s is None else max(wake_s, self.now_s)
        if target == self._wake_s:
            return
        self._wake_version += 1
        self._wake_s = target
        if target < _INF:
            self.schedule(target, EventKind.WAKE, self._wake_version)

    def _complete_flows(self, done: list[int]) -> None:
        if not done:
            self.network.dirty = True  # rounding: reallocate and reschedule
            return
        for fid in done:
            active = self._flows.pop(fid)
            self.policy.on_flow_complete(fid, self.now_s)
            if self.flow_records is not None:
                info = active.info
                self.flow_records.append((
                    fid, int(info.stage), info.batch_id, info.layer, info.members,
                    info.size_bytes, info.total_bytes, info.submit_s, self.now_s,
                    active.first.level, active.last.level))
            active.on_done(fid)
        self._policy_dirty = True


class _Active:
    """Book-keeping for one flow in flight."""

    __slots__ = ("first", "info", "last", "on_done")

    def __init__(self, info: FlowInfo, on_done: Callable[[int], None]) -> None:
        self.info = info
        self.on_done = on_done
        self.first: Priority | None = None
        self.last: Priority | None = None
