"""A small wall-clock driver of one policy object, shared by both halves of the vLLM connector.

Who calls this: :class:`~mfsched.integrations.vllm.planner.StepPlanner` (scheduler side, one
batch per vLLM step, flows registered when the step is planned) and
:class:`~mfsched.integrations.vllm.gate.InProcessGate` (worker side, flows registered when the
transfer is really submitted, layer boundaries as they happen). Both use the pure policy core
unchanged (:func:`mfsched.policy.make_policy`); this module only keeps the bookkeeping the
policy protocol asks of a driver:

* vLLM request ids are text, the policy's are ints: the driver interns them;
* the policy must not see a flow of an unknown request or batch, nor a request forgotten while
  its flows still move, so ``finish_request`` is deferred until the request's flows completed,
  and a batch departs (``on_batch_end``) once its compute is done and its flows completed;
* progress is pulled: a flow's remaining bytes are its size until it completes (vLLM's
  connectors report completion, not bytes), so MLU is conservative between layer boundaries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ...policy import BatchInfo, Decision, FlowInfo, Policy, Priority, RequestInfo, Stage

__all__ = ["FlowSpec", "PolicyDriver"]


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """A flow as the connector knows it: ``size_bytes`` per lane, ``lanes`` TP lanes, all on
    one ``port`` (an opaque id: the instance's NIC egress or ingress)."""

    stage: Stage
    batch_id: int
    request_key: str
    layer: int
    target_layer: int
    size_bytes: float
    lanes: int
    port: int
    bottleneck_bps: float
    deadline_s: float | None


class _StaticProgress:
    """Progress view without byte counters: nothing moved until completion."""

    def __init__(self, flows: Mapping[int, FlowInfo]) -> None:
        self._flows = flows

    def remaining_bytes(self, flow_id: int) -> float:
        return self._flows[flow_id].size_bytes

    def rate_bytes_per_s(self, flow_id: int) -> float:
        return 0.0


class _Batch:
    __slots__ = ("compute_done", "flows")

    def __init__(self) -> None:
        self.compute_done = False
        self.flows: set[int] = set()


class PolicyDriver:
    """Feeds one policy and remembers its answers (current priority per flow, pruned set)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._ids: dict[str, int] = {}
        self._keys: dict[int, str] = {}
        self._next_request = 0
        self._next_flow = 0
        self._flows: dict[int, FlowInfo] = {}
        self._request_flows: dict[int, set[int]] = {}
        self._finishing: set[int] = set()
        self._batches: dict[int, _Batch] = {}
        self.priority: dict[int, Priority] = {}
        self._pruned: frozenset[int] = frozenset()
        self._progress = _StaticProgress(self._flows)

    # --- requests ---------------------------------------------------------------------------

    def has_request(self, key: str) -> bool:
        return key in self._ids

    def request_id(self, key: str) -> int:
        return self._ids[key]

    def add_request(self, key: str, arrival_s: float, slo_s: float, input_tokens: int,
                    now_s: float) -> int:
        """Register a request once (later calls return its id and change nothing)."""
        rid = self._ids.get(key)
        if rid is not None:
            return rid
        rid = self._next_request
        self._next_request += 1
        self._ids[key] = rid
        self._keys[rid] = key
        self._request_flows[rid] = set()
        self.policy.on_request(RequestInfo(rid, arrival_s, slo_s, input_tokens), now_s)
        return rid

    def finish_request(self, key: str, now_s: float) -> None:
        """The request needs no more transfers; forgotten once its flows completed."""
        rid = self._ids.get(key)
        if rid is None:
            return
        self._finishing.add(rid)
        self._forget_if_idle(rid, now_s)

    def live_flows(self, key: str) -> frozenset[int]:
        rid = self._ids.get(key)
        return frozenset(self._request_flows.get(rid, ())) if rid is not None else frozenset()

    def request_priority(self, key: str) -> Priority | None:
        """The most urgent priority among the request's flows still in flight."""
        prios = [self.priority[f] for f in self.live_flows(key) if f in self.priority]
        return min(prios) if prios else None

    def _forget_if_idle(self, rid: int, now_s: float) -> None:
        if rid in self._finishing and not self._request_flows.get(rid):
            self._finishing.discard(rid)
            self._request_flows.pop(rid, None)
            key = self._keys.pop(rid)
            del self._ids[key]
            self.policy.on_request_done(rid, now_s)

    # --- batches ----------------------------------------------------------------------------

    def start_batch(self, batch_id: int, request_keys: Iterable[str], num_layers: int,
                    layer_compute_s: float, p2d_layer_bytes: Mapping[str, Mapping[int, float]],
                    early_layer_bytes: Mapping[int, float],
                    port_capacity_bps: Mapping[int, float], now_s: float) -> None:
        """A batch starts its first layer; byte maps are per layer (see :class:`BatchInfo`)."""
        keys = [k for k in request_keys if k in self._ids]
        info = BatchInfo(
            batch_id=batch_id, instance=0,
            request_ids=tuple(self._ids[k] for k in keys),
            num_layers=num_layers, start_s=now_s, layer_compute_s=layer_compute_s,
            p2d_port_bytes={self._ids[k]: dict(v) for k, v in p2d_layer_bytes.items()
                            if k in self._ids},
            early_port_bytes=dict(early_layer_bytes),
            port_capacity_bps=dict(port_capacity_bps))
        self._batches[batch_id] = _Batch()
        self.policy.on_batch_start(info, now_s)

    def has_batch(self, batch_id: int) -> bool:
        return batch_id in self._batches

    def layer_start(self, batch_id: int, layer: int, now_s: float) -> None:
        b = self._batches.get(batch_id)
        if b is not None and not b.compute_done:
            self.policy.on_layer_start(batch_id, layer, now_s)

    def compute_done(self, batch_id: int, now_s: float) -> None:
        b = self._batches.get(batch_id)
        if b is None or b.compute_done:
            return
        b.compute_done = True
        self.policy.on_batch_compute_done(batch_id, now_s)
        self._end_if_idle(batch_id, now_s)

    def _end_if_idle(self, batch_id: int, now_s: float) -> None:
        b = self._batches.get(batch_id)
        if b is not None and b.compute_done and not b.flows:
            del self._batches[batch_id]
            self.policy.on_batch_end(batch_id, now_s)

    # --- flows ------------------------------------------------------------------------------

    def submit(self, spec: FlowSpec, now_s: float) -> int:
        rid = self._ids[spec.request_key]
        fid = self._next_flow
        self._next_flow += 1
        total = spec.size_bytes * spec.lanes
        flow = FlowInfo(
            flow_id=fid, stage=spec.stage, batch_id=spec.batch_id, request_ids=(rid,),
            layer=spec.layer, target_layer=spec.target_layer, size_bytes=spec.size_bytes,
            total_bytes=total, members=spec.lanes, port_bytes=((spec.port, total),),
            bottleneck_bps=spec.bottleneck_bps, deadline_s=spec.deadline_s, submit_s=now_s)
        self._flows[fid] = flow
        self._request_flows[rid].add(fid)
        self._batches[spec.batch_id].flows.add(fid)
        self.policy.on_flow_submit(flow, now_s)
        return fid

    def flow(self, fid: int) -> FlowInfo:
        return self._flows[fid]

    def complete(self, fid: int, now_s: float) -> None:
        flow = self._flows.get(fid)
        if flow is None:
            return
        self.policy.on_flow_complete(fid, now_s)
        del self._flows[fid]
        self.priority.pop(fid, None)
        rid = flow.request_ids[0]
        self._request_flows.get(rid, set()).discard(fid)
        b = self._batches.get(flow.batch_id)
        if b is not None:
            b.flows.discard(fid)
        self._forget_if_idle(rid, now_s)
        self._end_if_idle(flow.batch_id, now_s)

    # --- decisions --------------------------------------------------------------------------

    def decide(self, now_s: float) -> Decision:
        decision = self.policy.decide(now_s, self._progress)
        for fid, prio in decision.priorities.items():
            if fid in self._flows:
                self.priority[fid] = prio
        if decision.pruned is not None:
            self._pruned = decision.pruned
        return decision

    @property
    def pruned(self) -> frozenset[str]:
        """The requests the policy pruned (their P2D flows ride the scavenger class)."""
        return frozenset(self._keys[r] for r in self._pruned if r in self._keys)
