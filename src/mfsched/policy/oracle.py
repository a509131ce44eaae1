"""A clairvoyant reference: dependency-aware least laxity first with exact remaining work.

Laxity = deadline - now - the least time the remaining work still needs on an idle path:

* a blocking flow (Stage 1 or 2) of batch b whose data layer j consumes: the latest time it
  may finish, min over b's live requests of (deadline - compute of layers j..L - sending one
  layer's P2D after the last layer), minus now and minus its own remaining transfer time on an
  idle path (a Stage-2 flow's layer is the current one, so collectives come before fetches
  for later layers, with exact times: RLI made continuous);
* a P2D flow of request r: r's P2D deadline minus sending all of r's remaining P2D bytes
  (emitted and still to come) at its aggregate lane bandwidth.

Plain least-laxity-first across stages lets a request's P2D overtake its own collectives
whenever the network is the bottleneck, which stalls the compute that produces the rest of
its KV (measured: worse than fair sharing). So the oracle keeps the dependency order: blocking
flows above P2D, each class ordered by exact laxity (continuous priorities, re-evaluated at
every decision); a P2D flow rises above the blocking flows only when it is critical (it needs
at least ``critical_share`` of its path from now on to make its deadline) and still feasible;
P2D flows that can no longer make it drop to a background class (blocking flows never do: a
late batch still holds its instance, and the batches queued behind it wait for it). In the
simulator the compute times it uses are exact. This is a heuristic reference, not a proven
optimum: optimal multi-stage scheduling is intractable (paper §3.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import SCHEDULERS, Policy, PolicyConfig
from .red import BatchState
from .types import BatchInfo, Decision, FlowInfo, Priority, ProgressView, RequestInfo, Stage

__all__ = ["Oracle", "OracleConfig"]

_OFFSET_S = 1e4  # ranks are non-negative: laxity + offset, in microseconds
_CRITICAL, _BLOCKING, _P2D, _HOPELESS = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class OracleConfig(PolicyConfig):
    critical_share: float = 0.9

    def __post_init__(self) -> None:
        if not 0 < self.critical_share <= 1:
            raise ValueError("critical_share must be in (0, 1]")


def _rank(laxity_s: float) -> int:
    return int((min(max(laxity_s, -_OFFSET_S), _OFFSET_S) + _OFFSET_S) * 1e6)


class _OracleBatch(BatchState):
    __slots__ = ("p2d_layer_bytes",)

    def __init__(self, info: BatchInfo) -> None:
        super().__init__(info)
        self.p2d_layer_bytes: dict[int, float] = {}


@SCHEDULERS.register("oracle", help="clairvoyant least-laxity-first with exact remaining work "
                                    "(reference, not a proven optimum)")
class Oracle(Policy):
    name = "oracle"
    config_cls = OracleConfig

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.deadline: dict[int, float] = {}
        self.batches: dict[int, _OracleBatch] = {}
        self.flows: dict[int, FlowInfo] = {}
        self.p2d_of: dict[int, set[int]] = {}
        self.prio: dict[int, Priority] = {}

    def on_request(self, request: RequestInfo, now_s: float) -> None:
        self.deadline[request.request_id] = request.deadline_s
        self.p2d_of[request.request_id] = set()

    def on_request_done(self, request_id: int, now_s: float) -> None:
        self.deadline.pop(request_id, None)
        self.p2d_of.pop(request_id, None)

    def on_batch_start(self, batch: BatchInfo, now_s: float) -> None:
        self.batches[batch.batch_id] = _OracleBatch(batch)

    def on_batch_end(self, batch_id: int, now_s: float) -> None:
        self.batches.pop(batch_id, None)

    def on_layer_start(self, batch_id: int, layer: int, now_s: float) -> None:
        self.batches[batch_id].layer = layer

    def on_batch_compute_done(self, batch_id: int, now_s: float) -> None:
        self.batches[batch_id].compute_done = True

    def on_flow_submit(self, flow: FlowInfo, now_s: float) -> None:
        self.flows[flow.flow_id] = flow
        if flow.stage == Stage.P2D:
            rid = flow.request_ids[0]
            self.p2d_of[rid].add(flow.flow_id)
            b = self.batches[flow.batch_id]
            layers = b.p2d_layers.setdefault(rid, set())
            if flow.layer not in layers:
                layers.add(flow.layer)
                b.p2d_layer_bytes[rid] = 0.0
            b.p2d_layer_bytes[rid] += flow.total_bytes

    def on_flow_complete(self, flow_id: int, now_s: float) -> None:
        flow = self.flows.pop(flow_id)
        self.prio.pop(flow_id, None)
        if flow.stage == Stage.P2D:
            self.p2d_of.get(flow.request_ids[0], set()).discard(flow_id)

    def _bandwidth(self, flow: FlowInfo) -> float:
        return flow.members * flow.bottleneck_bps / 8

    def _p2d_time(self, rid: int, b: _OracleBatch, bw: float, progress: ProgressView) -> float:
        remaining = sum(progress.remaining_bytes(f) * self.flows[f].total_bytes
                        / self.flows[f].size_bytes for f in self.p2d_of.get(rid, ()))
        if not b.compute_done:
            future = b.info.num_layers - len(b.p2d_layers.get(rid, ()))
            remaining += future * b.p2d_layer_bytes.get(rid, 0.0)
        return remaining / bw

    def _priority(self, flow: FlowInfo, now_s: float, progress: ProgressView) -> Priority:
        b = self.batches[flow.batch_id]
        if flow.stage == Stage.P2D:
            rid = flow.request_ids[0]
            left = flow.deadline_s - now_s
            need = self._p2d_time(rid, b, self._bandwidth(flow), progress)
            if need > left:
                return Priority(_HOPELESS)
            if need >= self.config.critical_share * left:
                return Priority(_CRITICAL, _rank(left - need))
            return Priority(_P2D, _rank(left - need))
        consumer = max(flow.target_layer, b.layer)
        compute = (b.info.num_layers - consumer) * b.info.layer_compute_s
        own = progress.remaining_bytes(flow.flow_id) / (flow.bottleneck_bps / 8)
        best = float("inf")
        for rid in b.info.request_ids:
            if rid in self.deadline:
                tail = b.p2d_layer_bytes.get(rid, 0.0) / self._bandwidth(flow)
                best = min(best, self.deadline[rid] - compute - tail)
        # never given up on: a late batch still holds its instance, and every batch queued
        # behind it waits for its collectives
        return Priority(_BLOCKING, _rank(best - now_s - own))

    def decide(self, now_s: float, progress: ProgressView) -> Decision:
        out = {}
        for fid, flow in self.flows.items():
            prio = self._priority(flow, now_s, progress)
            if self.prio.get(fid) != prio:
                self.prio[fid] = prio
                out[fid] = prio
        return Decision(priorities=out)
