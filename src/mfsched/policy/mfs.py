"""MFS: the multi-stage flow scheduler (paper §4), every mechanism switchable for ablations.

How a flow's priority is decided (levels as in :mod:`mfsched.policy.rmlq`):

* **Stage 2** (collectives) enter the top early-stage level: their data is needed now (RLI 0).
* **Stage 1** (KV reuse) enter at ``early(RLI)``, RLI = target layer - current layer of their
  batch, and are promoted at each layer boundary of that batch as RLI shrinks (``rli``).
* **Stage 3** (P2D) enter at the P2D band of their MLU and are promoted when it rises: at
  layer boundaries of their batch while it computes, then every ``p2d_refresh_s`` (``mlu``).
  MLU = remaining bytes / (time to the P2D deadline x B x (1 - rho)). A flow whose MLU alone
  (rho = 0) is in [``mlu_urgent``, ``mlu_infeasible``] takes the reserved top level; beyond
  ``mlu_infeasible`` the deadline is out of reach and the flow is not promoted (no bandwidth
  poured into a certain miss, the paper's "black hole"); otherwise the MLU with rho picks a
  P2D band below the early stages. By default Size_rem is the flow's own remaining bytes, as
  in the paper's formula; ``mlu_per_request`` counts all of the request's remaining P2D bytes
  (emitted and to come) and gives all its P2D flows one level (measured worse: it promotes
  whole requests above everyone's collectives; docs/design.md).
* Promotion only (``promotion``); nothing is ever demoted, except pruned requests' P2D.
* Ties inside a level are broken by the RED rank of the flow's batch (``red_tiebreak``;
  early-stage flows only, as in the paper). RED is recomputed on batch arrival and departure.
* On the same events the feasibility check runs and may prune up to ``drop_budget`` requests
  (``pruning``): their P2D flows go to the scavenger class K and still complete on spare
  capacity. Stage-1 flows of a pruned request are not demoted, because its batch's layers wait
  for them and the other requests of the batch would pay.

rho (the load in the MLU's effective bandwidth B x (1 - rho)) is the utilisation of the P2D
flow's ports by early-stage traffic, from the bytes of early-stage flows that completed in the
last ``rho_window_s``, capped at ``rho_max``: what early stages leave to P2D levels below them.
It shapes the P2D bands only; the test for the top level uses rho = 0, because a flow promoted
there preempts the early stages. B is the flow's bottleneck capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import SCHEDULERS, Policy, PolicyConfig
from .batchbook import BatchBook
from .rmlq import LevelLayout, minimal_link_utilization, mlu_thresholds, p2d_band
from .types import (
    BatchInfo,
    Decision,
    FlowInfo,
    GlobalOrder,
    Priority,
    ProgressView,
    RequestInfo,
    Stage,
)

__all__ = ["MFS", "MFSConfig"]

# Stage members read once: an enum member's lookup costs more than the comparison
_KV_REUSE, _COLLECTIVE, _P2D = Stage.KV_REUSE, Stage.COLLECTIVE, Stage.P2D
_NO_RATE_CAPS = Decision._field_defaults["rate_caps"]  # MFS never caps a rate
# the two named tuples built per flow and per decision, without their keyword-parsing
# constructors (positional, all fields given): a third of a microsecond per new flow
_new_tuple = tuple.__new__


@dataclass(frozen=True, slots=True)
class MFSConfig(PolicyConfig):
    early_levels: int = 0  # 0: half of the K-1 non-urgent levels, rounded up (K=8: RLI 0..3+)
    mlu_e: float = 4.0
    mlu_u: float = 0.5
    mlu_urgent: float = 0.9  # promote to the reserved top level from this MLU ...
    mlu_infeasible: float = 1.0  # ... up to this one; beyond it the deadline is out of reach
    mlu_per_request: bool = False
    p2d_refresh_s: float = 1e-3
    rho_window_s: float = 10e-3
    rho_max: float = 0.9
    rli: bool = True
    mlu: bool = True
    promotion: bool = True
    red_tiebreak: bool = True
    pruning: bool = True
    drop_budget: int = 2

    def __post_init__(self) -> None:
        self.layout()
        if not (self.mlu_e > 1 and self.mlu_u > 0 and 0 < self.mlu_urgent
                <= self.mlu_infeasible):
            raise ValueError("need mlu_e > 1, mlu_u > 0 and 0 < mlu_urgent <= mlu_infeasible")
        if not (self.p2d_refresh_s > 0 and self.rho_window_s > 0 and 0 <= self.rho_max < 1):
            raise ValueError("need p2d_refresh_s > 0, rho_window_s > 0, 0 <= rho_max < 1")
        if self.drop_budget < 0:
            raise ValueError("drop_budget must be >= 0")

    def layout(self) -> LevelLayout:
        early = self.early_levels or max(1, self.num_levels // 2)
        return LevelLayout(self.num_levels, early)


class _RequestView:
    """MFS's view of a live request (whether it is pruned: ``MFS.book.pruned``)."""

    __slots__ = ("flows", "level")

    def __init__(self) -> None:
        self.flows: set[int] = set()  # active P2D flows
        self.level: int | None = None  # monotone P2D level of the request


class _BatchView:
    """MFS's view of a live batch: its description, the layer it computes, whether its compute
    is done, its flows and its RED rank (the inter-request state is in :class:`BatchBook`)."""

    __slots__ = ("compute_done", "flows", "info", "layer", "p2d_layer_bw", "p2d_layer_bytes",
                 "rank")

    def __init__(self, info: BatchInfo) -> None:
        self.info = info
        self.layer = 0
        self.compute_done = False
        self.rank = 0
        self.flows: set[int] = set()
        self.p2d_layer_bytes: dict[int, float] = {}  # request -> P2D bytes of one layer
        self.p2d_layer_bw: dict[int, float] = {}  # request -> summed lane bottlenecks, B/s


@SCHEDULERS.register("mfs", help="MFS: RMLQ with RLI (early stages), MLU (P2D), RED order "
                                 "and feasibility pruning")
class MFS(Policy):
    name = "mfs"
    config_cls = MFSConfig
    needs_port_loads = True

    def __init__(self, config: MFSConfig | None = None) -> None:
        super().__init__(config)
        c: MFSConfig = self.config
        self.layout = c.layout()
        self.thresholds = mlu_thresholds(c.mlu_e, c.mlu_u, self.layout.p2d_bands)
        self.requests: dict[int, _RequestView] = {}
        # RED order, pruning's loads, live deadlines, pruned requests, port capacities
        self.book = BatchBook()
        self.batches: dict[int, _BatchView] = {}
        self.flows: dict[int, FlowInfo] = {}
        self.prio: dict[int, Priority] = {}
        self._level: dict[int, int] = {}  # flow -> its level, which only ever moves up
        # read per flow on the hot path, so bound once
        self._rli = c.rli
        self._early_of = self.layout.early
        self._caps = self.book.capacity_bytes_per_s  # port -> bytes/s (rho's denominator)
        self._tiebreak = c.red_tiebreak
        self._global: GlobalOrder | None = None  # a coordinator's order, once one was given
        self._new: list[int] = []
        self._boundaries: set[int] = set()
        self._order_dirty = False
        self._pruned_changed = False
        self._next_refresh = float("inf")
        # port -> [window index, early-stage bytes in it, bytes in the window before]
        self._early: dict[int, list] = {}
        self._finished: set[int] = set()  # batches done computing with P2D flows in flight

    # --- notifications ----------------------------------------------------------------------

    def on_request(self, request: RequestInfo, now_s: float) -> None:
        self.requests[request.request_id] = _RequestView()
        self.book.add_request(request.request_id, request.deadline_s)

    def on_request_done(self, request_id: int, now_s: float) -> None:
        self.requests.pop(request_id, None)
        self.book.end_request(request_id)

    def on_batch_start(self, batch: BatchInfo, now_s: float) -> None:
        self.batches[batch.batch_id] = _BatchView(batch)
        self.book.add_batch(batch)
        self._order_dirty = True

    def on_batch_end(self, batch_id: int, now_s: float) -> None:
        self.batches.pop(batch_id, None)
        self.book.end_batch(batch_id)
        self._finished.discard(batch_id)
        self._order_dirty = True

    def on_global_order(self, order: GlobalOrder, now_s: float) -> None:
        self._global = order
        self._order_dirty = True

    def on_layer_start(self, batch_id: int, layer: int, now_s: float) -> None:
        self.batches[batch_id].layer = layer
        self.book.set_layer(batch_id, layer)
        self._boundaries.add(batch_id)

    def on_batch_compute_done(self, batch_id: int, now_s: float) -> None:
        self.batches[batch_id].compute_done = True
        self.book.set_compute_done(batch_id)
        self._finished.add(batch_id)

    def on_flow_submit(self, flow: FlowInfo, now_s: float) -> None:
        self.flows[flow.flow_id] = flow
        b = self.batches[flow.batch_id]
        b.flows.add(flow.flow_id)
        if flow.stage == _P2D:
            rid = flow.request_ids[0]
            self.requests[rid].flows.add(flow.flow_id)
            if self.book.add_p2d(flow.flow_id, flow.batch_id, rid, flow.layer, flow.port_bytes,
                                 flow.size_bytes):  # the first flow of a new layer
                b.p2d_layer_bytes[rid] = 0.0
                b.p2d_layer_bw[rid] = 0.0
            b.p2d_layer_bytes[rid] += flow.total_bytes
            b.p2d_layer_bw[rid] += flow.members * flow.bottleneck_bps / 8
        self._new.append(flow.flow_id)

    def on_flow_complete(self, flow_id: int, now_s: float) -> None:
        flow = self.flows.pop(flow_id)
        self.prio.pop(flow_id, None)
        self._level.pop(flow_id, None)
        b = self.batches.get(flow.batch_id)
        if b is not None:
            b.flows.discard(flow_id)
        if flow.stage == _P2D:
            r = self.requests.get(flow.request_ids[0])
            if r is not None:
                r.flows.discard(flow_id)
            self.book.end_p2d(flow_id)
        else:
            bucket = int(now_s / self.config.rho_window_s)
            for port, size in flow.port_bytes:
                w = self._early.get(port)
                if w is None or w[0] != bucket:
                    prev = 0.0 if w is None or w[0] != bucket - 1 else w[1]
                    w = self._early[port] = [bucket, 0.0, prev]
                w[1] += size

    # --- decisions ---------------------------------------------------------------------------

    def decide(self, now_s: float, progress: ProgressView) -> Decision:
        c: MFSConfig = self.config
        out: dict[int, Priority] = {}
        if self._order_dirty:
            self._order_dirty = False
            self._reorder(out)
            if c.pruning:
                if self._global is None:
                    self._prune(now_s, progress, out)
                else:
                    self._mark_pruned(self._global.pruned, out)
        if self._new:
            flows = self.flows
            for fid in self._new:
                if fid in flows:
                    self._assign(fid, now_s, progress, out)
            self._new.clear()
        if self._boundaries:
            if c.promotion:
                for bid in self._boundaries:
                    b = self.batches.get(bid)
                    if b is not None:
                        self._promote_batch(b, now_s, progress, out)
            self._boundaries.clear()
        if now_s >= self._next_refresh and c.promotion:
            self._next_refresh = float("inf")
            self._refresh_finished(now_s, progress, out)
        if self._finished:
            wake = self._schedule_refresh(now_s)
        else:  # no finished batch has P2D flows in flight: no tick wanted
            self._next_refresh, wake = float("inf"), None
        pruned = None
        if self._pruned_changed:
            self._pruned_changed = False
            pruned = frozenset(self.book.pruned)
        return _new_tuple(Decision, (out, _NO_RATE_CAPS, pruned, wake))  # at every decision

    def _emit(self, fid: int, prio: Priority, out: dict[int, Priority]) -> None:
        if self.prio.get(fid) != prio:
            self.prio[fid] = prio
            out[fid] = prio

    def _assign(self, fid, now_s, progress, out) -> None:
        """(Re)compute a flow's priority. Called on submission, and at promotion points only
        when ``promotion`` is on."""
        flow = self.flows[fid]
        b = self.batches[flow.batch_id]
        if flow.stage == _P2D:
            if flow.request_ids[0] in self.book.pruned:
                self._emit(fid, Priority(self.layout.scavenger), out)
                return
            self._place(fid, self._p2d_level(flow, b, now_s, progress), 0, out)
        else:
            self._place(fid, self._early_level(flow, b), b.rank if self._tiebreak else 0, out)

    def _early_level(self, flow: FlowInfo, b: _BatchView) -> int:
        """The level of the flow's RLI (target layer - its batch's layer; 0 for collectives
        and without ``rli``)."""
        rli = flow.target_layer - b.layer if self._rli and flow.stage == _KV_REUSE else 0
        return self._early_of(rli)

    def _place(self, fid: int, level: int, rank: int, out: dict[int, Priority]) -> None:
        """Give the flow (level, rank), its level never below one it had (promotion only:
        RMLQ never demotes), and emit the priority if it changed."""
        old = self._level.get(fid)
        if old is not None and old < level:
            level = old
        self._level[fid] = level
        p = self.prio.get(fid)
        if p is None or p[0] != level or p[1] != rank:
            self.prio[fid] = out[fid] = _new_tuple(Priority, (level, rank))

    def _p2d_level(self, flow: FlowInfo, b: _BatchView, now_s, progress) -> int:
        c: MFSConfig = self.config
        if not c.mlu:
            return self.layout.p2d(self.layout.p2d_bands - 1)
        if c.mlu_per_request:
            rid = flow.request_ids[0]
            r = self.requests[rid]
            remaining, bw = self._request_p2d(rid, r, b, flow, progress)
        else:
            remaining = progress.remaining_bytes(flow.flow_id)
            bw = flow.bottleneck_bps / 8
        mlu = minimal_link_utilization(remaining, flow.deadline_s - now_s, bw, 0.0)
        band = p2d_band(mlu, self._rho(flow, now_s), c.mlu_urgent, c.mlu_infeasible,
                        self.thresholds)
        level = self.layout.p2d(band)
        if c.mlu_per_request:
            r.level = level if r.level is None else min(r.level, level)
            return r.level
        return level

    def _request_p2d(self, rid, r: _RequestView, b: _BatchView, flow: FlowInfo, progress):
        """All of the request's remaining P2D bytes (emitted and to come) and its lanes'
        summed bottleneck bandwidth."""
        remaining = 0.0
        for fid in r.flows:
            f = self.flows[fid]
            remaining += progress.remaining_bytes(fid) * f.total_bytes / f.size_bytes
        if not b.compute_done:
            emitted = self.book.emitted_layers(b.info.batch_id, rid)
            remaining += (b.info.num_layers - emitted) * b.p2d_layer_bytes.get(rid, 0.0)
        bw = b.p2d_layer_bw.get(rid) or flow.members * flow.bottleneck_bps / 8
        return remaining, bw

    def _rho(self, flow: FlowInfo, now_s: float) -> float:
        """Early-stage utilisation of the flow's most loaded port over the last window: bytes of
        early-stage flows completed there, from two fixed windows (the current one and the
        share of the previous one that still falls in the sliding window)."""
        window = self.config.rho_window_s
        pos = now_s / window
        bucket = int(pos)
        rho = 0.0
        early, caps = self._early, self._caps
        for port, _size in flow.port_bytes:
            w = early.get(port)
            if w is None or w[0] < bucket - 1:
                continue
            cap = caps.get(port)
            if not cap:
                continue
            recent = w[1] + w[2] * (1.0 - (pos - bucket)) if w[0] == bucket else \
                w[1] * (1.0 - (pos - bucket))
            rho = max(rho, recent / (cap * window))
        return min(rho, self.config.rho_max)

    def _promote_batch(self, b: _BatchView, now_s, progress, out) -> None:
        """A layer boundary: early flows move up as RLI shrinks; P2D MLUs are refreshed."""
        flows = self.flows
        rank = b.rank if self._tiebreak else 0
        for fid in b.flows:  # (nothing here adds or removes flows)
            flow = flows[fid]
            stage = flow.stage
            if stage == _KV_REUSE:  # what _assign does for it, with its batch at hand
                self._place(fid, self._early_level(flow, b), rank, out)
            elif stage == _P2D:
                self._assign(fid, now_s, progress, out)

    def _refresh_finished(self, now_s, progress, out) -> None:
        """Periodic MLU refresh of P2D flows whose batch finished computing."""
        for bid in self._finished:
            b = self.batches[bid]
            for fid in list(b.flows):
                if self.flows[fid].stage == _P2D:
                    self._assign(fid, now_s, progress, out)

    def _schedule_refresh(self, now_s: float) -> float | None:
        """Tick every p2d_refresh_s while some finished batch still has P2D flows in flight."""
        self._finished = {bid for bid in self._finished
                          if any(self.flows[f].stage == _P2D
                                 for f in self.batches[bid].flows)}
        if not (self.config.promotion and self.config.mlu) or not self._finished:
            self._next_refresh = float("inf")
            return None
        if self._next_refresh == float("inf"):
            self._next_refresh = now_s + self.config.p2d_refresh_s
        return self._next_refresh

    # --- inter-request order and overload control ---------------------------------------------

    def _reorder(self, out) -> None:
        """RED ranks of the live batches (ours, or a coordinator's where it has one). Ours are
        sparse (:class:`BatchBook`): only the batches that moved get a new one."""
        changed = self.book.reorder()
        if self._global is not None:  # every batch: the coordinator's rank, else ours
            ranks = self._global.ranks
            changed = {bid: ranks.get(bid, self.book.rank(bid)) for bid in self.batches}
        for bid, rank in changed.items():
            b = self.batches[bid]
            if b.rank != rank:
                b.rank = rank
                if self.config.red_tiebreak:
                    for fid in b.flows:
                        p = self.prio.get(fid)
                        if p is not None and self.flows[fid].stage != _P2D:
                            self._emit(fid, Priority(p.level, rank), out)

    def _prune(self, now_s, progress, out) -> None:
        """The feasibility check over the batches in RED order (Algorithm 1)."""
        self.book.read_progress(progress)
        self._mark_pruned(self.book.prune(now_s, self.config.drop_budget), out)

    def _mark_pruned(self, victims, out) -> None:
        """The requests' P2D flows go to the scavenger level (now and when submitted)."""
        for rid in victims:
            r = self.requests.get(rid)
            if r is None or rid in self.book.pruned:
                continue
            self.book.mark_pruned((rid,))
            self._pruned_changed = True
            for fid in r.flows:
                self._emit(fid, Priority(self.layout.scavenger), out)
