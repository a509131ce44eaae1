"""The event loop: one heap for compute and network events, one clock, one policy.

Heap keys are ``(time_s, kind, seq)``: at equal times, events run in :class:`EventKind` order
(network completions first, so data that arrives at t is usable by a step that starts at t;
then compute completions, then arrivals, then policy wake-ups), and in submission order
(``seq``) within a kind. Stale network and wake-up events are dropped lazily by version.

After all events of one instant, the engine asks the policy to decide once (through the shared
:class:`~mfsched.policy.driver.PolicyDriver`, which applies the new priorities and rate caps to
the network and the wake-up time to the heap), reallocates bandwidth if anything changed and
schedules the next network completion. The world (:mod:`mfsched.sim.serving`) submits flows and
tells the policy about requests, batches and layers through the engine, so the policy is always
told before it is asked.

The public methods used by :class:`~mfsched.sim.serving.Serving` (``now_s``, ``schedule``,
``new_flow_id``, ``submit``, the notifications, ``run`` and the counters) are the contract a
wall-clock engine implements to run the same serving logic over real transports.

No run hangs: two bounds derived from the inputs stop it with
:class:`~mfsched.errors.SimulationStuck` naming the slowest flow in flight (the world adds the
oldest unfinished request).

* **Simulated time** may not pass the latest arrival or flow deadline seen, plus
  ``DRAIN_FACTOR`` x the serial work submitted so far (every compute step, and every flow
  alone on its slowest link, one after another), plus ``DRAIN_SLACK_S``; nor the time the
  clock resolves in nanosecond steps (:data:`mfsched.validate.MAX_SIMULATED_S`). A
  work-conserving cluster drains its work faster than one server doing it serially; the
  factor is headroom for what the serial sum does not see (flows paced to their deadlines).
* **Events**: every event either does work (an arrival, a compute step, a flow completion) or
  not (a policy wake-up, a network event that completes nothing, after rounding). Work events
  are bounded by the work; events without work may come at most ``IDLE_EVENTS`` in a row, or
  one per ``MIN_IDLE_PERIOD_S`` of simulated time since the last work (a policy refreshing
  every millisecond while a long flow runs is fine; a clock that no longer advances, or a
  policy that wakes itself at the same instant, is not).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import numpy as np

from ..errors import SimulationStuck
from ..policy.base import Policy
from ..policy.driver import PolicyDriver
from ..policy.types import BatchInfo, FlowInfo, RequestInfo, Stage
from ..validate import MAX_SIMULATED_S
from .network import FluidNetwork
from .transfer import Transfer

__all__ = ["DRAIN_FACTOR", "DRAIN_SLACK_S", "IDLE_EVENTS", "MIN_IDLE_PERIOD_S", "Engine",
           "EventKind", "FlowRecordRow"]

_INF = float("inf")
DRAIN_FACTOR = 10.0
DRAIN_SLACK_S = 1.0
IDLE_EVENTS = 10_000
MIN_IDLE_PERIOD_S = 1e-6


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
    """The simulator's runtime: virtual clock, one event heap, the fluid network, and the
    policy behind a :class:`~mfsched.policy.driver.PolicyDriver` (the engine is the driver's
    :class:`~mfsched.policy.driver.Enforcer`: priorities and rate caps go straight to the
    network, wake-ups become WAKE events; the network is the progress view).

    ``network`` replaces the fluid network (tests drive the engine with a scripted one)."""

    def __init__(self, capacity_bytes_per_s: np.ndarray, policy: Policy,
                 check_invariants: bool = False, record_flows: bool = False,
                 contention_free: bool = False, network: FluidNetwork | None = None) -> None:
        self.network = network if network is not None else \
            FluidNetwork(capacity_bytes_per_s, check_invariants, contention_free)
        self.policy = policy
        self.now_s = 0.0
        self.events = 0
        self.submitted_bytes = 0.0
        self.flow_records: list[FlowRecordRow] | None = [] if record_flows else None
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._net_version = 0
        self._wake_version = 0
        self._wake_s = _INF
        self._next_flow_id = 0
        # the no-hang bounds (module docstring)
        self.work_s = 0.0  # serial work submitted so far
        self._horizon_s = 0.0  # latest arrival or flow deadline seen
        self._time_limit_s = DRAIN_SLACK_S
        self._idle = 0  # events without work since the last work
        self._idle_since_s = 0.0
        # the Enforcer side: straight to the network, no wrapper on the hot path
        self.apply_priority = self.network.set_priority
        self.apply_rate_cap = self.network.set_rate_cap
        self.driver = PolicyDriver(policy, self, progress=self.network)

    @property
    def needs_port_loads(self) -> bool:
        """Whether batch descriptions must carry their traffic matrix (the policy asks)."""
        return bool(getattr(self.policy, "needs_port_loads", False))

    @property
    def pruned(self) -> frozenset[int]:
        return self.driver.pruned

    @property
    def ever_pruned(self) -> set[int]:
        return self.driver.ever_pruned

    # --- scheduling ---------------------------------------------------------------------------

    def schedule(self, time_s: float, kind: EventKind, payload: Any = None) -> None:
        if time_s < self.now_s:
            raise ValueError(f"cannot schedule in the past ({time_s} < {self.now_s})")
        self._seq += 1
        heapq.heappush(self._heap, (time_s, int(kind), self._seq, payload))
        if kind == EventKind.COMPUTE:
            self._bound(time_s - self.now_s, 0.0)
        elif kind == EventKind.ARRIVAL:
            self._bound(0.0, time_s)

    def _bound(self, work_s: float, horizon_s: float) -> None:
        """Count submitted work and the horizon. The time limit they give only grows, so the
        loop compares with the limit as last computed and recomputes it only when an event
        lies beyond (:meth:`_check_time`): recomputing it here, at every flow and compute
        step, cost 2-3% of a run."""
        self.work_s += work_s
        if horizon_s > self._horizon_s:
            self._horizon_s = horizon_s

    def new_flow_id(self) -> int:
        self._next_flow_id += 1
        return self._next_flow_id

    # --- what the world tells the policy (through the driver) ---------------------------------

    def request_arrived(self, info: RequestInfo) -> None:
        self.driver.add_request(info, self.now_s)

    def request_done(self, request_id: int) -> None:
        self.driver.finish_request(request_id, self.now_s)

    def batch_started(self, info: BatchInfo) -> None:
        self.driver.start_batch(info, self.now_s)

    def batch_ended(self, batch_id: int) -> None:
        """The serving logic saw the batch depart. The driver departs batches itself (compute
        done, no live flow), so nothing is left to do here; the wall-clock engine forwards the
        event to the data plane's coordinator."""

    def layer_started(self, batch_id: int, layer: int) -> None:
        self.driver.layer_start(batch_id, layer, self.now_s)

    def batch_compute_done(self, batch_id: int) -> None:
        self.driver.compute_done(batch_id, self.now_s)

    def submit(self, info: FlowInfo, transfer: Transfer, on_done: Callable[[int], None]) -> None:
        """Start a flow now; ``on_done(flow_id)`` runs when its last byte arrives."""
        self.driver.submit(info, self.now_s).tag = on_done
        self.network.add(info.flow_id, transfer.links, transfer.weights, info.size_bytes,
                         share=transfer.share)
        self.submitted_bytes += info.size_bytes
        # alone, the flow moves all its members' bytes over its slowest link at most
        self._bound(8.0 * info.total_bytes / info.bottleneck_bps,
                    0.0 if info.deadline_s is None else info.deadline_s)

    # --- the Enforcer protocol (apply_priority / apply_rate_cap are bound in __init__) --------

    def apply_pruned(self, request_ids: frozenset[int]) -> None:
        """Nothing to do: the network needs no pruned set (the driver keeps it for records)."""

    def set_wake(self, wake_s: float | None) -> None:
        target = _INF if wake_s is None else max(wake_s, self.now_s)
        if target == self._wake_s:
            return
        self._wake_version += 1
        self._wake_s = target
        if target < _INF:
            self.schedule(target, EventKind.WAKE, self._wake_version)

    # --- the loop -----------------------------------------------------------------------------

    def run(self, dispatch: Callable[[int, Any], None],
            should_stop: Callable[[], bool]) -> None:
        """Process events until the heap is empty or ``should_stop()``; COMPUTE and ARRIVAL
        events go to ``dispatch(kind, payload)``."""
        heap = self._heap
        network = self.network
        driver = self.driver
        while True:
            if (driver.pending or network.dirty) and (not heap or heap[0][0] > self.now_s):
                driver.decide(self.now_s)  # once per instant (inlined: the hottest path)
                if network.dirty:
                    t_next = network.reallocate()
                    self._net_version += 1
                    if t_next < _INF:
                        self.schedule(max(t_next, self.now_s), EventKind.FLOWS,
                                      self._net_version)
            if not heap or should_stop():
                return
            t, kind, _, payload = heapq.heappop(heap)
            if kind == _FLOWS:
                if payload != self._net_version:
                    continue
            elif kind == _WAKE and payload != self._wake_version:
                continue
            if t > self._time_limit_s:
                self._check_time(t)
            if kind == _FLOWS:
                self.now_s = t
                self.events += 1
                done = network.advance_and_pop(t)
                if done:
                    self._complete_flows(done)
                    self._idle = 0
                    self._idle_since_s = t
                else:
                    network.dirty = True  # rounding: reallocate and reschedule
                    self._idle_event()
                continue
            if t > self.now_s:
                network.advance(t)
                self.now_s = t
            self.events += 1
            if kind == _WAKE:
                self._wake_s = _INF
                driver.wake()
                self._idle_event()
            else:
                dispatch(kind, payload)
                self._idle = 0
                self._idle_since_s = t

    def _idle_event(self) -> None:
        self._idle += 1
        if (self._idle > IDLE_EVENTS
                and self._idle > (self.now_s - self._idle_since_s) / MIN_IDLE_PERIOD_S):
            raise SimulationStuck(
                f"{self._idle:,} events in a row did no work (no arrival, compute step or flow "
                f"completion) within {self.now_s - self._idle_since_s:.3g} s of simulated time, "
                f"at t = {self.now_s:.9g} s; {self.slowest_flow()}")

    def _check_time(self, t: float) -> None:
        """``t`` passed the limit as last computed: recompute it; stuck if still past."""
        self._time_limit_s = min(MAX_SIMULATED_S, self._horizon_s + DRAIN_FACTOR * self.work_s
                                 + DRAIN_SLACK_S)
        if t <= self._time_limit_s:
            return
        raise SimulationStuck(
            f"simulated time would reach {t:.6g} s, past this run's bound of "
            f"{self._time_limit_s:.6g} s (latest arrival or deadline {self._horizon_s:.6g} s "
            f"+ {DRAIN_FACTOR:g} x {self.work_s:.6g} s of serial work + {DRAIN_SLACK_S:g} s, "
            f"at most {MAX_SIMULATED_S:.6g} s); {self.slowest_flow()}")

    def slowest_flow(self) -> str:
        """The flow in flight that would take longest to finish at its current rate."""
        flows = self.driver.flows
        if not flows:
            return "no flow in flight"

        def left_s(fid: int) -> float:
            rate = self.network.rate_bytes_per_s(fid)
            return self.network.remaining_bytes(fid) / rate if rate > 0 else _INF

        fid = max(flows, key=left_s)
        info = flows[fid].info
        rids = ",".join(map(str, info.request_ids[:4])) + (
            ",..." if len(info.request_ids) > 4 else "")
        return (f"slowest flow in flight: flow {fid} ({Stage(info.stage).name} of batch "
                f"{info.batch_id}, layer {info.layer}, request {rids}), "
                f"{self.network.remaining_bytes(fid):.4g} of {info.size_bytes:.4g} bytes left "
                f"at {self.network.rate_bytes_per_s(fid):.4g} B/s, submitted at "
                f"{info.submit_s:.6g} s")

    def _complete_flows(self, done: list[int]) -> None:
        driver = self.driver
        for fid in done:
            live = driver.complete(fid, self.now_s)
            if self.flow_records is not None:
                info = live.info
                self.flow_records.append((
                    fid, int(info.stage), info.batch_id, info.layer, info.members,
                    info.size_bytes, info.total_bytes, info.submit_s, self.now_s,
                    live.first.level, live.last.level))
            live.tag(fid)
