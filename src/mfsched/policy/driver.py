"""The one driver of a policy object: the bookkeeping every runtime needs, every decision applied.

Who calls this: every runtime that runs a policy, through a small adapter of its own:

* the simulator's engine (:mod:`mfsched.sim.engine`: virtual clock, fluid network),
* the data-plane daemon's run state (:mod:`mfsched.dataplane.runstate`: wall clock, software
  queues and PCIe lanes, decisions of the coordinator),
* both sides of the vLLM connector (:mod:`mfsched.integrations.vllm.planner` on the scheduler
  side, :mod:`mfsched.integrations.vllm.gate` on the worker side).

A runtime tells the driver what happens (requests, batches, layers, flows, a coordinator's
order) and asks it to decide once per instant; the driver keeps what the policy protocol asks
of a driver and applies each field of the :class:`~mfsched.policy.types.Decision` through the
runtime's :class:`Enforcer`:

* **Flows.** A flow is live from :meth:`PolicyDriver.submit` to :meth:`PolicyDriver.complete`;
  a flow of an unknown (or departed) batch is refused before the policy sees it. The driver
  remembers each live flow's first and current priority (flow records, permits).
* **Requests.** :meth:`PolicyDriver.finish_request` forgets a request at once if no live flow
  serves it, otherwise when the last one completes: the policy never sees a request forgotten
  while its flows still move.
* **Batches.** A batch departs (``on_batch_end``) once it was told its compute is done and all
  its flows completed; the driver checks that at the next decision, so a runtime may report
  the compute end before it submits the batch's last flows in the same instant. Layer
  boundaries of a batch whose compute is done, or that is unknown, are ignored.
* **Decisions.** ``priorities`` and ``rate_caps`` of live flows go to
  :meth:`Enforcer.apply_priority` / :meth:`Enforcer.apply_rate_cap` (changes of flows that
  completed meanwhile are dropped), a new pruned set to :meth:`Enforcer.apply_pruned`, and the
  wake-up time to :meth:`Enforcer.set_wake` after every decision (``None``: no wake-up wanted).
  A runtime without timers (vLLM's hooks) remembers the wake time and decides at its next hook.
* **A coordinator's decisions** (the data plane's RED order and pruned requests, paper §5)
  reach the policy through one path, :meth:`PolicyDriver.global_order` ->
  :meth:`Policy.on_global_order`, and come back out as ordinary decisions; nothing overwrites
  a policy's priorities afterwards.
* **Progress.** The policy reads progress through the runtime's
  :class:`~mfsched.policy.types.ProgressView` (the network, the sender's byte counters), or
  :class:`StaticProgress` where a runtime has no byte counters (vLLM's connectors report
  completions only: a flow's remaining size is its size until it completes).

Pure, like the rest of :mod:`mfsched.policy`: no clock (every call takes ``now_s``), no I/O.
The simulator's hot path goes through :meth:`submit`, :meth:`complete` and :meth:`decide`:
they do a few dictionary operations per flow and bind the enforcer's methods once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from .base import Policy
from .types import BatchInfo, Decision, FlowInfo, GlobalOrder, Priority, ProgressView, RequestInfo

__all__ = ["Enforcer", "LiveFlow", "PolicyDriver", "StaticProgress", "UnknownBatch"]


class UnknownBatch(ValueError):
    """A flow names a batch the driver does not know (never started, or departed)."""


class Enforcer(Protocol):
    """What a runtime provides to the driver: where decisions take effect. (The progress view
    is passed separately; many runtimes implement both in one object.)"""

    def apply_priority(self, flow_id: int, priority: Priority) -> None:
        """A live flow's priority changed (or it got its first one)."""
        ...

    def apply_rate_cap(self, flow_id: int, cap_bytes_per_s: float | None) -> None:
        """A live flow's per-member rate limit changed (``None`` lifts it)."""
        ...

    def apply_pruned(self, request_ids: frozenset[int]) -> None:
        """The policy's full pruned set changed (its P2D flows ride the scavenger level)."""
        ...

    def set_wake(self, wake_s: float | None) -> None:
        """Decide again at ``wake_s`` (replaces the previous wish; ``None``: no wake-up)."""
        ...


class StaticProgress:
    """Progress of a runtime without byte counters: nothing moved until completion."""

    def __init__(self, flows: Mapping[int, LiveFlow]) -> None:
        self._flows = flows

    def remaining_bytes(self, flow_id: int) -> float:
        live = self._flows.get(flow_id)
        return 0.0 if live is None else live.info.size_bytes

    def rate_bytes_per_s(self, flow_id: int) -> float:
        return 0.0


class LiveFlow:
    """A flow between submission and completion: its description and the priorities it got
    (``first``: the first one, ``last``: the current one; None before the first decision).
    ``tag`` is the runtime's own (the simulator keeps the flow's completion callback there)."""

    __slots__ = ("batch", "first", "info", "last", "owner", "tag")

    def __init__(self, info: FlowInfo, batch: _LiveBatch, owner: int) -> None:
        self.info = info
        self.batch = batch
        self.owner = owner  # the request it serves alone, or -1 (it serves several)
        self.first: Priority | None = None
        self.last: Priority | None = None
        self.tag = None


class _LiveBatch:
    __slots__ = ("compute_done", "flows", "group_flows", "info")

    def __init__(self, info: BatchInfo) -> None:
        self.info = info
        self.compute_done = False
        self.flows = 0
        self.group_flows = 0  # live flows that serve several of its requests (collectives)


class PolicyDriver:
    """Feeds one policy, keeps the driver's bookkeeping and applies its decisions."""

    def __init__(self, policy: Policy, enforcer: Enforcer,
                 progress: ProgressView | None = None) -> None:
        self.policy = policy
        self.enforcer = enforcer
        self.flows: dict[int, LiveFlow] = {}
        self.progress: ProgressView = progress if progress is not None else \
            StaticProgress(self.flows)
        self.pruned: frozenset[int] = frozenset()
        self.ever_pruned: set[int] = set()
        self.pending = False  # something happened since the last decision
        self._requests: dict[int, int] = {}  # request -> its own live flows (one request each)
        self._finishing: set[int] = set()  # finished, forgotten when their flows completed
        self._batches: dict[int, _LiveBatch] = {}
        self._ready: set[int] = set()  # compute done and no live flows: depart at decide
        # bound once: the simulator calls these on its hot path
        self._apply_priority = enforcer.apply_priority
        self._apply_rate_cap = enforcer.apply_rate_cap
        self._set_wake = enforcer.set_wake

    # --- requests -----------------------------------------------------------------------------

    def add_request(self, info: RequestInfo, now_s: float) -> bool:
        """A request arrived; False (and nothing told) if it is known already."""
        rid = info.request_id
        if rid in self._requests:
            return False
        self._requests[rid] = 0
        self.policy.on_request(info, now_s)
        self.pending = True
        return True

    def has_request(self, request_id: int) -> bool:
        """The policy knows the request (finished requests until their flows completed)."""
        return request_id in self._requests

    def finish_request(self, request_id: int, now_s: float) -> None:
        """The request needs no more transfers: forgotten now, or when its live flows
        completed."""
        live = self._requests.get(request_id)
        if live is None:
            return
        if live or self._in_group_flow(request_id):
            self._finishing.add(request_id)
            return
        self._forget(request_id, now_s)

    def _in_group_flow(self, request_id: int) -> bool:
        """A live flow serving several requests of its batch serves this one (flows of one
        request are counted per request; flows of several, per batch: a collective names all
        its batch's requests, and counting those per request would cost the simulator)."""
        return any(b.group_flows and request_id in b.info.request_ids
                   for b in self._batches.values())

    def _forget(self, request_id: int, now_s: float) -> None:
        del self._requests[request_id]
        self._finishing.discard(request_id)
        self.policy.on_request_done(request_id, now_s)
        self.pending = True

    # --- batches ------------------------------------------------------------------------------

    def start_batch(self, info: BatchInfo, now_s: float) -> None:
        if info.batch_id in self._batches:
            raise ValueError(f"batch {info.batch_id} started twice")
        self._batches[info.batch_id] = _LiveBatch(info)
        self.policy.on_batch_start(info, now_s)
        self.pending = True

    def has_batch(self, batch_id: int) -> bool:
        return batch_id in self._batches

    def batch(self, batch_id: int) -> BatchInfo | None:
        b = self._batches.get(batch_id)
        return None if b is None else b.info

    def layer_start(self, batch_id: int, layer: int, now_s: float) -> None:
        b = self._batches.get(batch_id)
        if b is None or b.compute_done:
            return
        self.policy.on_layer_start(batch_id, layer, now_s)
        self.pending = True

    def compute_done(self, batch_id: int, now_s: float) -> None:
        b = self._batches.get(batch_id)
        if b is None or b.compute_done:
            return
        b.compute_done = True
        self.policy.on_batch_compute_done(batch_id, now_s)
        if not b.flows:
            self._ready.add(batch_id)
        self.pending = True

    def _depart(self, now_s: float) -> None:
        ready, self._ready = self._ready, set()
        for bid in sorted(ready):
            b = self._batches.get(bid)
            if b is not None and not b.flows:  # (a flow may have come after the compute end)
                del self._batches[bid]
                self.policy.on_batch_end(bid, now_s)

    # --- flows --------------------------------------------------------------------------------

    def submit(self, info: FlowInfo, now_s: float) -> LiveFlow:
        """A flow is ready to send; it gets its priority at the next decision. Raises
        :class:`UnknownBatch` (and keeps nothing) if its batch is not live."""
        b = self._batches.get(info.batch_id)
        if b is None:
            raise UnknownBatch(f"flow {info.flow_id}: batch {info.batch_id} is not live")
        if info.flow_id in self.flows:
            raise ValueError(f"flow {info.flow_id} submitted twice")
        self.policy.on_flow_submit(info, now_s)  # may refuse: then nothing is kept
        rids = info.request_ids
        b.flows += 1
        if len(rids) == 1:
            owner = rids[0]
            n = self._requests.get(owner)
            if n is not None:
                self._requests[owner] = n + 1
        else:
            owner = -1
            b.group_flows += 1
        live = self.flows[info.flow_id] = LiveFlow(info, b, owner)
        self.pending = True
        return live

    def complete(self, flow_id: int, now_s: float) -> LiveFlow | None:
        """The flow's last byte arrived; returns what the driver knew of it (None: not live)."""
        live = self.flows.pop(flow_id, None)
        if live is None:
            return None
        self.policy.on_flow_complete(flow_id, now_s)
        b = live.batch  # (a batch departs only without live flows: it is still there)
        b.flows -= 1
        if not b.flows and b.compute_done:
            self._ready.add(b.info.batch_id)
        owner = live.owner
        if owner >= 0:
            left = self._requests.get(owner)
            if left is not None:
                self._requests[owner] = left - 1
        else:
            b.group_flows -= 1
        if self._finishing:
            for rid in live.info.request_ids:
                if rid in self._finishing and not self._requests[rid] \
                        and not self._in_group_flow(rid):
                    self._forget(rid, now_s)
        self.pending = True
        return live

    def priority(self, flow_id: int) -> Priority | None:
        """A live flow's current priority (None: not live, or not decided yet)."""
        live = self.flows.get(flow_id)
        return None if live is None else live.last

    # --- a coordinator ------------------------------------------------------------------------

    def global_order(self, order: GlobalOrder, now_s: float) -> None:
        """A coordinator's inter-request decision (see :meth:`Policy.on_global_order`)."""
        self.policy.on_global_order(order, now_s)
        self.pending = True

    # --- decisions ----------------------------------------------------------------------------

    def wake(self) -> None:
        """The policy's wake-up time came: the next decision is due."""
        self.pending = True

    def decide(self, now_s: float) -> Decision:
        """Ask the policy once and apply its answer through the enforcer."""
        self.pending = False
        if self._ready:
            self._depart(now_s)
        d = self.policy.decide(now_s, self.progress)
        flows = self.flows
        if d.priorities:
            apply = self._apply_priority
            for fid, prio in d.priorities.items():
                live = flows.get(fid)
                if live is None:
                    continue
                if live.first is None:
                    live.first = prio
                live.last = prio
                apply(fid, prio)
        if d.rate_caps:
            cap_of = self._apply_rate_cap
            for fid, cap in d.rate_caps.items():
                if fid in flows:
                    cap_of(fid, cap)
        if d.pruned is not None:
            self.pruned = d.pruned
            self.ever_pruned |= d.pruned
            self.enforcer.apply_pruned(d.pruned)
        self._set_wake(d.wake_s)
        return d
