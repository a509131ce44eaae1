"""A clairvoyant reference: least laxity first with exact remaining work, unlimited levels.

Laxity = deadline - now - the least time the remaining work still needs on an idle path:

* a blocking flow (Stage 1 or 2) of batch b: min over b's requests of their deadline minus
  (b's remaining compute + sending one layer's P2D after the last layer);
* a P2D flow of request r: r's deadline minus sending all of r's remaining P2D bytes (emitted
  and still to come) at its aggregate lane bandwidth.

Every flow gets its own rank (continuous priorities, re-evaluated at every decision), flows of
requests whose laxity is already negative drop below all others (least-laxity-first would
otherwise pour bandwidth into certain misses). In the simulator the compute times it uses are
exact. This is a heuristic upper reference, not a proven optimum: optimal multi-stage
scheduling is intractable (paper §3.1).
"""

from __future__ import annotations

from .base import SCHEDULERS, Policy
from .types import BatchInfo, Decision, FlowInfo, Priority, ProgressView, RequestInfo, Stage

__all__ = ["Oracle"]

_OFFSET_S = 1e4  # ranks are non-negative: laxity + offset, in microseconds


class _B:
    __slots__ = ("compute_done", "info", "layer", "p2d_layer_bytes", "p2d_layers")

    def __init__(self, info: BatchInfo) -> None:
        self.info = info
        self.layer = 0
        self.compute_done = False
        self.p2d_layers: dict[int, set[int]] = {}
        self.p2d_layer_bytes: dict[int, float] = {}


@SCHEDULERS.register("oracle", help="clairvoyant least-laxity-first with exact remaining work "
                                    "(reference, not a proven optimum)")
class Oracle(Policy):
    name = "oracle"

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.deadline: dict[int, float] = {}
        self.batches: dict[int, _B] = {}
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
        self.batches[batch.batch_id] = _B(batch)

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

    def _p2d_time(self, rid: int, b: _B, bw: float, progress: ProgressView) -> float:
        remaining = sum(progress.remaining_bytes(f) * self.flows[f].total_bytes
                        / self.flows[f].size_bytes for f in self.p2d_of.get(rid, ()))
        if not b.compute_done:
            future = b.info.num_layers - len(b.p2d_layers.get(rid, ()))
            remaining += future * b.p2d_layer_bytes.get(rid, 0.0)
        return remaining / bw

    def _laxity(self, flow: FlowInfo, now_s: float, progress: ProgressView) -> float:
        b = self.batches[flow.batch_id]
        if flow.stage == Stage.P2D:
            rid = flow.request_ids[0]
            return self.deadline[rid] - now_s - self._p2d_time(rid, b, self._bandwidth(flow),
                                                               progress)
        layers_left = 0 if b.compute_done else b.info.num_layers - b.layer
        compute = layers_left * b.info.layer_compute_s
        best = float("inf")
        for rid in b.info.request_ids:
            if rid in self.deadline:
                tail = b.p2d_layer_bytes.get(rid, 0.0) / self._bandwidth(flow)
                best = min(best, self.deadline[rid] - now_s - compute - tail)
        return best

    def decide(self, now_s: float, progress: ProgressView) -> Decision:
        out = {}
        for fid, flow in self.flows.items():
            lax = self._laxity(flow, now_s, progress)
            if lax < 0:
                prio = Priority(1, 0)
            else:
                prio = Priority(0, int((lax + _OFFSET_S) * 1e6) if lax < _OFFSET_S else 0)
            if self.prio.get(fid) != prio:
                self.prio[fid] = prio
                out[fid] = prio
        return Decision(priorities=out)
