"""Both vLLM sides' adapter of the shared policy driver: text request ids, flow specs, no timers.

Who calls this: :class:`~mfsched.integrations.vllm.planner.StepPlanner` (scheduler side, one
batch per vLLM step, flows registered when the step is planned) and
:class:`~mfsched.integrations.vllm.gate.InProcessGate` (worker side, flows registered when the
transfer is really submitted, layer boundaries as they happen). The bookkeeping and the
application of decisions are :class:`mfsched.policy.driver.PolicyDriver`'s, the simulator's and
the daemon's own driver; this module adds only what vLLM needs around it:

* vLLM request ids are text, the policy's are ints: :class:`KeyedDriver` interns them (and
  drops a key when the driver has forgotten its request, which it defers until the request's
  flows completed) and indexes the live flows of each request (what vLLM finishes or awaits);
* a :class:`FlowSpec` (what a connector knows of a transfer) becomes a
  :class:`~mfsched.policy.types.FlowInfo` with its TP lanes as members;
* it is the driver's :class:`~mfsched.policy.driver.Enforcer` for a runtime with neither timers
  nor byte counters: priorities are read back from the driver, rate caps are kept per flow (the
  gate hands them out with its permits), the wake-up time is kept and :meth:`KeyedDriver.due`
  tells a hook whether it passed (vLLM calls the connector at every step and, on the worker,
  at every layer, and each of those calls decides, so a wake-up is served at the next hook);
  progress is :class:`~mfsched.policy.driver.StaticProgress` (connectors report completions,
  not bytes: a flow's remaining size is its size until it completes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ...policy import BatchInfo, Decision, FlowInfo, Policy, Priority, RequestInfo, Stage
from ...policy.driver import PolicyDriver

__all__ = ["FlowSpec", "KeyedDriver"]


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


class KeyedDriver:
    """A :class:`PolicyDriver` addressed with vLLM's request ids; see the module docstring."""

    def __init__(self, policy: Policy) -> None:
        self.driver = PolicyDriver(policy, self)
        self.policy = policy
        self.caps: dict[int, float] = {}  # flow -> its rate cap (bytes/s per member)
        self.wake_s: float | None = None
        self._ids: dict[str, int] = {}
        self._keys: dict[int, str] = {}
        self._request_flows: dict[str, set[int]] = {}
        self._next_request = 0
        self._next_flow = 0

    # --- requests ---------------------------------------------------------------------------

    def has_request(self, key: str) -> bool:
        """The policy still knows the request (it may be finished with flows still moving)."""
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
        self._request_flows[key] = set()
        self.driver.add_request(RequestInfo(rid, arrival_s, slo_s, input_tokens), now_s)
        return rid

    def finish_request(self, key: str, now_s: float) -> None:
        """The request needs no more transfers; forgotten once its flows completed."""
        rid = self._ids.get(key)
        if rid is not None:
            self.driver.finish_request(rid, now_s)
            self._drop_if_forgotten(rid)

    def _drop_if_forgotten(self, rid: int) -> None:
        if not self.driver.has_request(rid):
            key = self._keys.pop(rid, None)
            if key is not None:
                del self._ids[key]
                self._request_flows.pop(key, None)

    def live_flows(self, key: str) -> frozenset[int]:
        return frozenset(self._request_flows.get(key, ()))

    def request_priority(self, key: str) -> Priority | None:
        """The most urgent priority among the request's flows in flight."""
        prios = [p for f in self._request_flows.get(key, ())
                 if (p := self.driver.priority(f)) is not None]
        return min(prios) if prios else None

    # --- batches ----------------------------------------------------------------------------

    def start_batch(self, batch_id: int, request_keys: Iterable[str], num_layers: int,
                    layer_compute_s: float, p2d_layer_bytes: Mapping[str, Mapping[int, float]],
                    early_layer_bytes: Mapping[int, float],
                    port_capacity_bps: Mapping[int, float], now_s: float) -> None:
        """A batch starts its first layer; byte maps are per layer (see :class:`BatchInfo`)."""
        keys = [k for k in request_keys if k in self._ids]
        self.driver.start_batch(BatchInfo(
            batch_id=batch_id, instance=0,
            request_ids=tuple(self._ids[k] for k in keys),
            num_layers=num_layers, start_s=now_s, layer_compute_s=layer_compute_s,
            p2d_port_bytes={self._ids[k]: dict(v) for k, v in p2d_layer_bytes.items()
                            if k in self._ids},
            early_port_bytes=dict(early_layer_bytes),
            port_capacity_bps=dict(port_capacity_bps)), now_s)

    def has_batch(self, batch_id: int) -> bool:
        return self.driver.has_batch(batch_id)

    def layer_start(self, batch_id: int, layer: int, now_s: float) -> None:
        self.driver.layer_start(batch_id, layer, now_s)

    def compute_done(self, batch_id: int, now_s: float) -> None:
        self.driver.compute_done(batch_id, now_s)

    # --- flows ------------------------------------------------------------------------------

    def submit(self, spec: FlowSpec, now_s: float) -> int:
        rid = self._ids[spec.request_key]
        fid = self._next_flow
        total = spec.size_bytes * spec.lanes
        self.driver.submit(FlowInfo(
            flow_id=fid, stage=spec.stage, batch_id=spec.batch_id, request_ids=(rid,),
            layer=spec.layer, target_layer=spec.target_layer, size_bytes=spec.size_bytes,
            total_bytes=total, members=spec.lanes, port_bytes=((spec.port, total),),
            bottleneck_bps=spec.bottleneck_bps, deadline_s=spec.deadline_s, submit_s=now_s),
            now_s)
        self._next_flow += 1
        self._request_flows[spec.request_key].add(fid)
        return fid

    def flow(self, fid: int) -> FlowInfo:
        return self.driver.flows[fid].info

    def priority(self, fid: int) -> Priority | None:
        return self.driver.priority(fid)

    def complete(self, fid: int, now_s: float) -> None:
        live = self.driver.complete(fid, now_s)
        if live is None:
            return
        self.caps.pop(fid, None)
        rid = live.info.request_ids[0]
        key = self._keys.get(rid)
        if key is not None:
            self._request_flows[key].discard(fid)
        self._drop_if_forgotten(rid)

    # --- decisions --------------------------------------------------------------------------

    def decide(self, now_s: float) -> Decision:
        return self.driver.decide(now_s)

    def due(self, now_s: float) -> bool:
        """Whether the policy's wake-up time has come (a hook should decide)."""
        return self.wake_s is not None and now_s >= self.wake_s

    @property
    def pruned(self) -> frozenset[str]:
        """The requests the policy pruned (their P2D flows ride the scavenger class)."""
        return frozenset(self._keys[r] for r in self.driver.pruned if r in self._keys)

    # --- the Enforcer protocol ----------------------------------------------------------------

    def apply_priority(self, flow_id: int, priority: Priority) -> None:
        """Nothing to push: the hooks read the driver's current priority of each flow."""

    def apply_rate_cap(self, flow_id: int, cap_bytes_per_s: float | None) -> None:
        if cap_bytes_per_s is None:
            self.caps.pop(flow_id, None)
        else:
            self.caps[flow_id] = cap_bytes_per_s

    def apply_pruned(self, request_ids: frozenset[int]) -> None:
        """Nothing to push: :attr:`pruned` reads the driver's set."""

    def set_wake(self, wake_s: float | None) -> None:
        self.wake_s = wake_s
