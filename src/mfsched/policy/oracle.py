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

**How it runs.** The walk over every flow at every decision is the definition, so it is one
compiled pass (:func:`_oracle_walk`) over state kept in arrays (flows by id; batches, requests
and each batch's requests by slot) and the network's flow arrays when the progress view offers
them (``flow_arrays``, as PIAS reads them; else the getters). A request's remaining P2D bytes
are summed over its live P2D flows in the network's slot order. (The Python walk this replaced
summed them in the iteration order of a set; sums differ in the last place at most, which can
move a rank by one microsecond of laxity. ``tests/test_oracle.py`` checks the pass against a
Python walk with the same order.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._jit import njit
from .arrays import grown, progress_arrays
from .base import SCHEDULERS, Policy, PolicyConfig
from .types import BatchInfo, Decision, FlowInfo, Priority, ProgressView, RequestInfo, Stage

__all__ = ["Oracle", "OracleConfig"]

_OFFSET_S = 1e4  # ranks are non-negative: laxity + offset, in microseconds
_CRITICAL, _BLOCKING, _P2D, _HOPELESS = 0, 1, 2, 3
_INF = float("inf")

# rows of the per-flow arrays (columns: flow ids)
_KIND, _BATCH, _REQ, _PAIR, _TARGET, _LEVEL, _RANK = range(7)  # int64
_TOTAL, _SIZE, _BW, _OWN_BW, _DEADLINE = range(5)  # float64: bytes, bytes, B/s, B/s, s
_NONE, _BLOCKING_FLOW, _P2D_FLOW = 0, 1, 2  # _KIND
# rows of the per-batch int64 arrays (columns: batch slots); each batch's requests are the
# pairs _LO.._HI-1 (one pair per (batch, request): the request's slot and the P2D layers the
# batch emitted for it, and the bytes of the latest such layer)
_LAYER, _DONE, _NLAYERS, _LO, _HI = range(5)
_PAIR_REQ, _PAIR_LAYERS = range(2)
_REQ_DEADLINE, _REQ_SUM = range(2)  # float64 rows of the per-request arrays


@dataclass(frozen=True, slots=True)
class OracleConfig(PolicyConfig):
    critical_share: float = 0.9

    def __post_init__(self) -> None:
        if not 0 < self.critical_share <= 1:
            raise ValueError("critical_share must be in (0, 1]")


@SCHEDULERS.register("oracle", help="clairvoyant least-laxity-first with exact remaining work "
                                    "(reference, not a proven optimum)")
class Oracle(Policy):
    name = "oracle"
    config_cls = OracleConfig

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.flows: set[int] = set()
        # slots are never reused (the arrays grow by doubling); the dictionaries hold only
        # live requests and batches
        self._req_slot: dict[int, int] = {}  # live request -> slot
        self._req_slots = 0
        self._batch_slot: dict[int, int] = {}  # live batch -> slot
        self._batch_slots = 0
        # live batch slot -> request id -> (pair, the P2D layers it emitted)
        self._pairs: dict[int, dict[int, tuple[int, set[int]]]] = {}
        self._pair_slots = 0
        self._fi = np.zeros((7, 64), dtype=np.int64)
        self._ff = np.zeros((5, 64))
        self._bi = np.zeros((5, 64), dtype=np.int64)
        self._bf = np.zeros(64)  # layer compute time, s
        self._pi = np.zeros((2, 64), dtype=np.int64)
        self._pf = np.zeros(64)  # P2D bytes of the latest layer
        self._rf = np.zeros((2, 64))
        self._rlive = np.zeros(64, dtype=np.uint8)  # live request slots (0/1)
        self._changed = np.empty(64, dtype=np.int64)

    def _request(self, rid: int) -> int:
        slot = self._req_slot.get(rid)
        if slot is None:
            slot = self._req_slot[rid] = self._req_slots
            self._req_slots += 1
            self._rf = grown(self._rf, slot)
            self._rlive = grown(self._rlive, slot)
        return slot

    def _pair(self, batch_slot: int, rid: int) -> tuple[int, set[int]]:
        pairs = self._pairs[batch_slot]
        entry = pairs.get(rid)
        if entry is None:
            pair = self._pair_slots
            self._pair_slots += 1
            self._pi = grown(self._pi, pair)
            self._pf = grown(self._pf, pair)
            self._pi[_PAIR_REQ, pair] = self._request(rid)
            entry = pairs[rid] = (pair, set())
        return entry

    def on_request(self, request: RequestInfo, now_s: float) -> None:
        slot = self._request(request.request_id)
        self._rf[_REQ_DEADLINE, slot] = request.deadline_s
        self._rlive[slot] = True

    def on_request_done(self, request_id: int, now_s: float) -> None:
        slot = self._req_slot.pop(request_id, None)
        if slot is not None:
            self._rlive[slot] = False

    def on_batch_start(self, batch: BatchInfo, now_s: float) -> None:
        slot = self._batch_slot[batch.batch_id] = self._batch_slots
        self._batch_slots += 1  # (slots are not reused: ended batches leave _batch_slot)
        self._bi = grown(self._bi, slot)
        self._bf = grown(self._bf, slot)
        self._pairs[slot] = {}
        lo = self._pair_slots
        for rid in batch.request_ids:
            self._pair(slot, rid)
        self._bi[:, slot] = (0, 0, batch.num_layers, lo, self._pair_slots)
        self._bf[slot] = batch.layer_compute_s

    def on_batch_end(self, batch_id: int, now_s: float) -> None:
        slot = self._batch_slot.pop(batch_id, None)
        if slot is not None:
            del self._pairs[slot]

    def on_layer_start(self, batch_id: int, layer: int, now_s: float) -> None:
        self._bi[_LAYER, self._batch_slot[batch_id]] = layer

    def on_batch_compute_done(self, batch_id: int, now_s: float) -> None:
        self._bi[_DONE, self._batch_slot[batch_id]] = 1

    def on_flow_submit(self, flow: FlowInfo, now_s: float) -> None:
        fid = flow.flow_id
        self._fi = grown(self._fi, fid)
        self._ff = grown(self._ff, fid)
        batch = self._batch_slot[flow.batch_id]
        fi, ff = self._fi, self._ff
        fi[_BATCH, fid] = batch
        fi[_TARGET, fid] = flow.target_layer
        fi[_LEVEL, fid] = -1  # no priority yet
        ff[_TOTAL, fid] = flow.total_bytes
        ff[_SIZE, fid] = flow.size_bytes
        ff[_BW, fid] = flow.members * flow.bottleneck_bps / 8
        ff[_OWN_BW, fid] = flow.bottleneck_bps / 8
        if flow.stage == Stage.P2D:
            fi[_KIND, fid] = _P2D_FLOW
            ff[_DEADLINE, fid] = flow.deadline_s
            pair, layers = self._pair(batch, flow.request_ids[0])
            fi[_PAIR, fid] = pair
            fi[_REQ, fid] = self._pi[_PAIR_REQ, pair]
            if flow.layer not in layers:
                layers.add(flow.layer)
                self._pi[_PAIR_LAYERS, pair] = len(layers)
                self._pf[pair] = 0.0
            self._pf[pair] += flow.total_bytes
        else:
            fi[_KIND, fid] = _BLOCKING_FLOW
        self.flows.add(fid)

    def on_flow_complete(self, flow_id: int, now_s: float) -> None:
        self.flows.discard(flow_id)
        self._fi[_KIND, flow_id] = _NONE

    def decide(self, now_s: float, progress: ProgressView) -> Decision:
        ids, remaining, _ = progress_arrays(progress, self.flows, rates=False)
        if len(self._changed) < len(ids):
            self._changed = np.empty(2 * len(ids), dtype=np.int64)
        count = _oracle_walk(ids, remaining, now_s, self.config.critical_share, self._fi,
                             self._ff, self._bi, self._bf, self._pi, self._pf, self._rf,
                             self._rlive, self._changed)
        fi = self._fi
        return Decision(priorities={fid: Priority(int(fi[_LEVEL, fid]), int(fi[_RANK, fid]))
                                    for fid in self._changed[:count].tolist()})


@njit
def _rank(laxity_s):
    return int((min(max(laxity_s, -_OFFSET_S), _OFFSET_S) + _OFFSET_S) * 1e6)


@njit
def _oracle_walk(ids, remaining, now_s, critical_share, fi, ff, bi, bf, pi, pf, rf, rlive,
                 changed):
    """One decision over the flows ``ids`` (bytes left: ``remaining``): each flow's priority
    into ``fi``; the ids of those that changed into ``changed``; returns their count."""
    n = len(ids)
    for i in range(n):  # each live request's remaining P2D bytes, in slot order
        if fi[_KIND, ids[i]] == _P2D_FLOW:
            rf[_REQ_SUM, fi[_REQ, ids[i]]] = 0.0
    for i in range(n):
        fid = ids[i]
        if fi[_KIND, fid] == _P2D_FLOW and rlive[fi[_REQ, fid]]:
            rf[_REQ_SUM, fi[_REQ, fid]] += remaining[i] * ff[_TOTAL, fid] / ff[_SIZE, fid]
    count = 0
    for i in range(n):
        fid = ids[i]
        b = fi[_BATCH, fid]
        if fi[_KIND, fid] == _P2D_FLOW:
            # r's P2D deadline minus sending all its remaining P2D bytes, emitted and to come
            left = ff[_DEADLINE, fid] - now_s
            pair = fi[_PAIR, fid]
            need = rf[_REQ_SUM, fi[_REQ, fid]]
            if bi[_DONE, b] == 0:
                need += (bi[_NLAYERS, b] - pi[_PAIR_LAYERS, pair]) * pf[pair]
            need /= ff[_BW, fid]
            rank = 0
            if need > left:
                level = _HOPELESS
            elif need >= critical_share * left:
                level, rank = _CRITICAL, _rank(left - need)
            else:
                level, rank = _P2D, _rank(left - need)
        else:
            # the latest finish that lets every live request of the batch compute the
            # remaining layers and send one layer's P2D after the last, minus own transfer;
            # never given up on: a late batch still holds its instance, and every batch
            # queued behind it waits for its collectives
            consumer = max(fi[_TARGET, fid], bi[_LAYER, b])
            compute = (bi[_NLAYERS, b] - consumer) * bf[b]
            own = remaining[i] / ff[_OWN_BW, fid]
            best = _INF
            for pair in range(bi[_LO, b], bi[_HI, b]):
                r = pi[_PAIR_REQ, pair]
                if rlive[r]:
                    tail = pf[pair] / ff[_BW, fid]
                    best = min(best, rf[_REQ_DEADLINE, r] - compute - tail)
            level, rank = _BLOCKING, _rank(best - now_s - own)
        if fi[_LEVEL, fid] != level or fi[_RANK, fid] != rank:
            fi[_LEVEL, fid] = level
            fi[_RANK, fid] = rank
            changed[count] = fid
            count += 1
    return count
