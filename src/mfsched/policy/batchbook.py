"""The inter-request stage's state in arrays: live batches in RED order with sparse ranks, their
requests, the P2D flows in flight, and the feasibility check over them.

Two callers, one copy (paper §4.4.2 and Appendix B): the MFS policy (:mod:`mfsched.policy.mfs`,
with its own flows and the progress view) and the data-plane coordinator
(:mod:`mfsched.dataplane.coordinator`, with the daemons' reports). Each tells the book its
events as they come (requests, batches, layers, P2D flows and how much of them remains); on a
batch arrival or departure it asks for

* :meth:`BatchBook.reorder`: the batches whose live deadlines changed since the last call
  (a batch arrived, a request started or ended) get their RED (:mod:`mfsched.policy.red`)
  again and move in the order; ranks are *sparse* integers, so a batch placed between two
  others takes a rank between theirs and nobody else is renumbered (all are renumbered only
  when two neighbours leave no room, or the ranks reach :data:`RANK_LIMIT`). Only the order of
  ranks means anything: the allocation and the daemons compare them, never count them.
* :meth:`BatchBook.prune`: Algorithm 1 over the batches in that order, in two compiled passes:
  :func:`_assemble` turns the state into the load vectors (remaining compute, early-stage bytes
  of the layers not computed yet, and per request that can still be pruned its P2D bytes in
  flight and of the layers to come), and :func:`mfsched.policy.red._feasibility_pass` walks
  them (the one walk, which :func:`mfsched.policy.red.feasibility_prune` also runs on loads
  given as dictionaries).

Nothing per batch runs in Python at a decision: a batch arrival costs its own bookkeeping, the
RED of the batches that moved, and the two passes (issue 11: 1 ms at 10,000 flows).

**Defined orders** (they decide the last digits of the sums, so they are part of the result):
a request's P2D load is the entries of its flows in flight, most recently submitted first (each
flow's ports in its own order, bytes x the share still to move), then one entry per port of
the layers still to come; the walk adds them in that order and ties among ports go to the
lowest port id. (Before this book the sums followed the iteration order of Python sets and
the bottleneck among equal ports the order of a set of port ids.)

Memory: slots of ended batches, requests' pairs and flows are reused; their variable-length
lists (ports, a batch's pairs) live in one pool, compacted when half of it is dead.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Iterable

import numpy as np

from .._jit import njit
from .arrays import grown
from .red import _feasibility_pass, loose_deadline, robust_effective_deadline
from .types import BatchInfo, ProgressView

__all__ = ["RANK_GAP", "RANK_LIMIT", "BatchBook"]

RANK_GAP = 1 << 12  # ranks given apart: 12 halvings fit between two neighbours
RANK_LIMIT = 1 << 30  # ranks stay below it (the coordinator's wire format allows 2**30)
_ID_LIMIT = 1 << 24  # flow ids below it are found by an array in the bulk progress read

# int rows of the per-batch arrays (columns: batch slots)
_B_LAYER, _B_DONE, _B_NLAYERS, _B_EARLY_AT, _B_EARLY_N, _B_PAIRS_AT, _B_PAIRS_N, _B_LIVE = \
    range(8)
_B_LAYER_S, _B_LOOSE_S = range(2)  # float rows: compute time of one layer, loose deadline
# int rows of the per-(batch, request) pair arrays
_P_REQ, _P_P2D_AT, _P_P2D_N, _P_HEAD, _P_LIVE, _P_PRUNED, _P_EMITTED = range(7)
# int rows of the per-flow arrays; float rows: share still to move, size in bytes
_F_PAIR, _F_AT, _F_N, _F_NEXT, _F_PREV = range(5)
_F_LEFT, _F_SIZE = range(2)


class _Batch:
    __slots__ = ("info", "key", "layers", "pairs", "slot")

    def __init__(self, info: BatchInfo, slot: int) -> None:
        self.info = info
        self.slot = slot
        self.pairs: dict[int, int] = {}  # request -> pair slot
        self.layers: dict[int, set[int]] = {}  # request -> layers whose P2D was emitted
        self.key: tuple[float, int] | None = None  # (RED, batch id) while in the order


class _Slots:
    """Column indices handed out and taken back (a free list); the caller grows its arrays
    to fit the index it takes."""

    __slots__ = ("free", "next")

    def __init__(self) -> None:
        self.free: list[int] = []
        self.next = 0

    def take(self) -> int:
        if self.free:
            return self.free.pop()
        self.next += 1
        return self.next - 1


class BatchBook:
    """See the module docstring. Events: :meth:`add_request`, :meth:`end_request`,
    :meth:`add_batch`, :meth:`end_batch`, :meth:`set_layer`, :meth:`set_compute_done`,
    :meth:`add_p2d`, :meth:`end_p2d`, :meth:`set_left`; decisions: :meth:`reorder`,
    :meth:`prune` (after :meth:`read_progress` where the flows' progress comes from a
    progress view), :meth:`mark_pruned`."""

    def __init__(self, pool_entries: int = 1024) -> None:
        self.deadline_s: dict[int, float] = {}  # live request -> deadline
        self.pruned: set[int] = set()  # live pruned requests
        self.capacity_bytes_per_s: dict[int, float] = {}  # port -> bytes/s
        self._batches: dict[int, _Batch] = {}
        self._req_batches: dict[int, list[int]] = {}  # request -> live batches listing it
        self._flows: dict[int, int] = {}  # P2D flow -> slot
        # batch not started yet -> its flows waiting: (slot, request, layer)
        self._orphans: dict[int, list[tuple[int, int, int]]] = {}
        self._moved: set[int] = set()  # batches whose live deadlines may have changed
        # the order: (RED, batch id) keys ascending, their ranks alongside
        self._keys: list[tuple[float, int]] = []
        self._ranks: list[int] = []
        self._order: list[int] = []  # their batch slots
        self._rank: dict[int, int] = {}  # batch -> rank
        self._port: dict[int, int] = {}  # port id -> dense index
        self._cap = np.zeros(16)
        self._port_id = np.zeros(16, dtype=np.int64)
        self._b_slots, self._p_slots, self._f_slots = _Slots(), _Slots(), _Slots()
        self._bi = np.zeros((8, 64), dtype=np.int64)
        self._bf = np.zeros((2, 64))
        self._pi = np.zeros((7, 256), dtype=np.int64)
        self._fi = np.zeros((5, 256), dtype=np.int64)
        self._ff = np.zeros((2, 256))
        self._slot_of_id = np.full(256, -1, dtype=np.int64)  # flow id -> slot (ids < limit)
        self._ids_small = True
        # the pool: (int, float) entries of every variable-length list
        self._pool_i = np.zeros(pool_entries, dtype=np.int64)
        self._pool_f = np.zeros(pool_entries)
        self._pool_used = 0
        self._pool_dead = 0

    # --- requests ---------------------------------------------------------------------------

    def add_request(self, request_id: int, deadline_s: float) -> None:
        self.deadline_s[request_id] = deadline_s
        self._set_live(request_id, 1)

    def end_request(self, request_id: int) -> None:
        self.deadline_s.pop(request_id, None)
        self.pruned.discard(request_id)
        self._set_live(request_id, 0)

    def _set_live(self, request_id: int, live: int) -> None:
        for bid in self._req_batches.get(request_id, ()):
            self._pi[_P_LIVE, self._batches[bid].pairs[request_id]] = live
            self._moved.add(bid)

    def mark_pruned(self, request_ids: Iterable[int]) -> None:
        """The requests are pruned (live ones only); a pruned request stays pruned."""
        for rid in request_ids:
            if rid in self.deadline_s and rid not in self.pruned:
                self.pruned.add(rid)
                for bid in self._req_batches.get(rid, ()):
                    self._pi[_P_PRUNED, self._batches[bid].pairs[rid]] = 1

    # --- batches ----------------------------------------------------------------------------

    def add_batch(self, info: BatchInfo) -> None:
        """A batch started (a repeated start of a live batch is ignored)."""
        bid = info.batch_id
        if bid in self._batches:
            return
        caps = self.capacity_bytes_per_s
        for port, bps in info.port_capacity_bps.items():
            if caps.get(port) != bps / 8:
                caps[port] = bps / 8
                d = self._dense(port)  # (may grow the array: first)
                self._cap[d] = bps / 8
        rids = tuple(dict.fromkeys(info.request_ids))  # (a request listed twice: one pair)
        p2d = [info.p2d_port_bytes.get(rid) for rid in rids]
        # the pool's room in one piece, before the batch is registered (compaction moves only
        # what registered owners point at)
        n_p2d = sum(len(pb) for pb in p2d if pb)
        at = self._room(len(info.early_port_bytes) + n_p2d + len(p2d))
        slot = self._b_slots.take()
        self._bi = grown(self._bi, slot)
        self._bf = grown(self._bf, slot)
        early_at = at
        at = self._write(at, info.early_port_bytes.items())
        pairs_at = at
        at += len(p2d)
        b = _Batch(info, slot)
        for k, (rid, per_port) in enumerate(zip(rids, p2d, strict=True)):
            q = b.pairs[rid] = self._p_slots.take()
            self._pi = grown(self._pi, q)
            self._pool_i[pairs_at + k] = q
            # a request without P2D traffic is never prunable (its P2D start is -1)
            self._pi[:, q] = (rid, -1 if per_port is None else at, len(per_port or ()), -1,
                              rid in self.deadline_s, rid in self.pruned, 0)
            if per_port is not None:
                at = self._write(at, per_port.items())
            self._req_batches.setdefault(rid, []).append(bid)
        self._bi[:, slot] = (0, 0, info.num_layers, early_at, len(info.early_port_bytes),
                             pairs_at, len(p2d), 0)
        self._bf[_B_LAYER_S, slot] = info.layer_compute_s
        self._batches[bid] = b
        self._moved.add(bid)
        for f, rid, layer in self._orphans.pop(bid, ()):
            self._attach(f, b, rid, layer)

    def end_batch(self, batch_id: int) -> None:
        b = self._batches.pop(batch_id, None)
        if b is None:
            return
        self._moved.discard(batch_id)
        if b.key is not None:
            k = bisect_left(self._keys, b.key)
            del self._keys[k], self._ranks[k], self._order[k]
            del self._rank[batch_id]
        for rid, q in b.pairs.items():
            f = self._pi[_P_HEAD, q]
            while f >= 0:
                self._fi[_F_PAIR, f] = -1
                f = self._fi[_F_NEXT, f]
            self._pool_dead += self._pi[_P_P2D_N, q]
            self._p_slots.free.append(q)
            listed = self._req_batches[rid]
            listed.remove(batch_id)
            if not listed:
                del self._req_batches[rid]
        self._pool_dead += self._bi[_B_EARLY_N, b.slot] + self._bi[_B_PAIRS_N, b.slot]
        self._b_slots.free.append(b.slot)

    def has_batch(self, batch_id: int) -> bool:
        return batch_id in self._batches

    def set_layer(self, batch_id: int, layer: int) -> None:
        self._bi[_B_LAYER, self._batches[batch_id].slot] = layer

    def set_compute_done(self, batch_id: int) -> None:
        self._bi[_B_DONE, self._batches[batch_id].slot] = 1

    def layer(self, batch_id: int) -> int:
        return int(self._bi[_B_LAYER, self._batches[batch_id].slot])

    def emitted_layers(self, batch_id: int, request_id: int) -> int:
        """How many layers' P2D the batch emitted for the request."""
        return len(self._batches[batch_id].layers.get(request_id, ()))

    # --- P2D flows --------------------------------------------------------------------------

    def add_p2d(self, flow_id: int, batch_id: int, request_id: int, layer: int,
                port_bytes: Collection[tuple[int, float]], size_bytes: float = 1.0) -> bool:
        """A P2D flow of (batch, request) carrying ``port_bytes`` ((port, bytes) pairs) for
        ``layer``; it counts in full until :meth:`set_left` or :meth:`read_progress` says
        otherwise. A flow of a batch not started yet waits for its start. True if it is the
        first flow of its layer for the request."""
        if flow_id in self._flows:
            return False
        at = self._write(self._room(len(port_bytes)), port_bytes)  # before registering
        f = self._f_slots.take()
        self._fi = grown(self._fi, f)
        self._ff = grown(self._ff, f)
        self._fi[:, f] = (-1, at - len(port_bytes), len(port_bytes), -1, -1)
        self._ff[:, f] = (1.0, size_bytes)
        self._flows[flow_id] = f
        if self._ids_small:
            if 0 <= flow_id < _ID_LIMIT:
                self._slot_of_id = grown(self._slot_of_id, flow_id)
                self._slot_of_id[flow_id] = f
            else:
                self._ids_small = False
        b = self._batches.get(batch_id)
        if b is None:
            self._orphans.setdefault(batch_id, []).append((f, request_id, layer))
            return False
        return self._attach(f, b, request_id, layer)

    def _attach(self, f: int, b: _Batch, rid: int, layer: int) -> bool:
        """Count the flow in its (batch, request) pair, first in the pair's list; True if
        its layer is new for the request."""
        layers = b.layers.setdefault(rid, set())
        q = b.pairs.get(rid)
        new = layer not in layers
        if new:
            layers.add(layer)
            if q is not None:
                self._pi[_P_EMITTED, q] += 1
        if q is None:  # not a request of the batch: it never counts
            return new
        head = self._pi[_P_HEAD, q]
        self._fi[_F_PAIR, f] = q
        self._fi[_F_NEXT, f] = head
        if head >= 0:
            self._fi[_F_PREV, head] = f
        self._pi[_P_HEAD, q] = f
        return new

    def end_p2d(self, flow_id: int) -> None:
        f = self._flows.pop(flow_id, None)
        if f is None:
            return
        q, nxt, prev = self._fi[_F_PAIR, f], self._fi[_F_NEXT, f], self._fi[_F_PREV, f]
        if q >= 0:
            if prev >= 0:
                self._fi[_F_NEXT, prev] = nxt
            else:
                self._pi[_P_HEAD, q] = nxt
            if nxt >= 0:
                self._fi[_F_PREV, nxt] = prev
        else:  # detached (its batch ended) or waiting for its batch
            for waiting in self._orphans.values():
                waiting[:] = [entry for entry in waiting if entry[0] != f]
        if self._ids_small and 0 <= flow_id < len(self._slot_of_id):
            self._slot_of_id[flow_id] = -1
        self._pool_dead += self._fi[_F_N, f]
        self._f_slots.free.append(f)

    def set_left(self, flow_id: int, share: float) -> None:
        """The share of the flow's bytes still to move (the coordinator: a daemon's report)."""
        f = self._flows.get(flow_id)
        if f is not None:
            self._ff[_F_LEFT, f] = share

    def read_progress(self, progress: ProgressView) -> None:
        """Every flow's share still to move from a progress view: remaining bytes / size, in
        bulk from the view's arrays where it offers them (the simulator's network), else
        through its getter."""
        bulk = getattr(progress, "flow_arrays", None)
        if bulk is not None and self._ids_small:
            ids, remaining, _ = bulk()
            _read_shares(ids, remaining, self._slot_of_id, self._ff)
            return
        for fid, f in self._flows.items():
            self._ff[_F_LEFT, f] = progress.remaining_bytes(fid) / self._ff[_F_SIZE, f]

    # --- decisions --------------------------------------------------------------------------

    def reorder(self) -> dict[int, int]:
        """Bring the order up to date; returns the batches whose rank changed, with their new
        rank. A batch without live requests ranks last (RED = inf); ties by batch id."""
        changed: dict[int, int] = {}
        for bid in sorted(self._moved):
            b = self._batches[bid]
            live = [self.deadline_s[r] for r in b.info.request_ids if r in self.deadline_s]
            key = (robust_effective_deadline(live) if live else float("inf"), bid)
            self._bi[_B_LIVE, b.slot] = bool(live)
            self._bf[_B_LOOSE_S, b.slot] = loose_deadline(live) if live else 0.0
            if key == b.key:
                continue
            old = None
            if b.key is not None:
                old = bisect_left(self._keys, b.key)
                del self._keys[old], self._order[old]
                old_rank = self._ranks.pop(old)
            b.key = key
            k = bisect_left(self._keys, key)
            self._order.insert(k, b.slot)
            if k == old:  # same neighbours: its rank still fits between them
                self._keys.insert(k, key)
                self._ranks.insert(k, old_rank)
                continue
            rank = self._rank_at(k)
            if rank is None:  # no room: renumber everybody
                self._keys.insert(k, key)
                self._ranks.insert(k, 0)
                self._ranks[:] = range(RANK_GAP, RANK_GAP * (len(self._keys) + 1), RANK_GAP)
                for (_, other), r in zip(self._keys, self._ranks, strict=True):
                    if self._rank.get(other) != r:
                        self._rank[other] = changed[other] = r
                continue
            self._keys.insert(k, key)
            self._ranks.insert(k, rank)
            self._rank[bid] = changed[bid] = rank
        self._moved.clear()
        return changed

    def _rank_at(self, k: int) -> int | None:
        """A free rank for position ``k`` of the order (before the key now there), or None."""
        lo = self._ranks[k - 1] if k > 0 else None
        hi = self._ranks[k] if k < len(self._ranks) else None
        if lo is None and hi is None:
            return RANK_GAP
        if hi is None:
            return lo + RANK_GAP if lo + RANK_GAP < RANK_LIMIT else None
        if lo is None:
            return hi - RANK_GAP if hi >= RANK_GAP else (hi // 2 if hi > 0 else None)
        return lo + (hi - lo) // 2 if hi - lo >= 2 else None

    def rank(self, batch_id: int) -> int:
        return self._rank[batch_id]

    def ranks(self) -> dict[int, int]:
        """Every live batch's rank (after :meth:`reorder`)."""
        return dict(self._rank)

    def prune(self, now_s: float, budget: int) -> list[int]:
        """Algorithm 1 (:func:`mfsched.policy.red.feasibility_prune`) over the batches in the
        order of the last :meth:`reorder`: the requests to prune, in pruning order (not
        marked: the caller calls :meth:`mark_pruned` with those it prunes)."""
        if budget <= 0 or not self._keys:
            return []
        order = np.array(self._order, dtype=np.int64)
        pruned = _feasibility_pass(
            *_assemble(order, now_s, self._bi, self._bf, self._pi, self._fi, self._ff,
                       self._pool_i, self._pool_f),
            self._cap, self._port_id, now_s, budget)
        return pruned.tolist()

    # --- storage ----------------------------------------------------------------------------

    def _dense(self, port: int) -> int:
        d = self._port.get(port)
        if d is None:
            d = self._port[port] = len(self._port)
            self._cap = grown(self._cap, d)
            self._port_id = grown(self._port_id, d)
            self._port_id[d] = port
            self._cap[d] = np.inf  # until a batch lists its capacity: never a bottleneck
        return d

    def _room(self, n: int) -> int:
        """Where ``n`` pool entries go: the pool compacted (half of it dead) or grown first."""
        if self._pool_used + n > len(self._pool_i):
            if 2 * self._pool_dead >= self._pool_used:
                self._compact()
            if self._pool_used + n > len(self._pool_i):
                size = max(2 * len(self._pool_i), self._pool_used + n)
                self._pool_i = grown(self._pool_i, size - 1)
                self._pool_f = grown(self._pool_f, size - 1)
        at = self._pool_used
        self._pool_used += n
        return at

    def _write(self, at: int, entries: Collection[tuple[int, float]]) -> int:
        """(port, bytes) entries into the pool from ``at`` (ports dense); returns where they
        end."""
        for k, (port, size) in enumerate(entries, at):
            self._pool_i[k] = self._dense(port)
            self._pool_f[k] = size
        return at + len(entries)

    def _compact(self) -> None:
        """Copy the live lists to the front of the pool, in place, and re-point their owners."""
        segments = []  # (owner array, row of its start, row of its length, column)
        for b in self._batches.values():
            segments.append((self._bi, _B_EARLY_AT, _B_EARLY_N, b.slot))
            segments.append((self._bi, _B_PAIRS_AT, _B_PAIRS_N, b.slot))
            for q in b.pairs.values():
                if self._pi[_P_P2D_AT, q] >= 0:
                    segments.append((self._pi, _P_P2D_AT, _P_P2D_N, q))
        segments.extend((self._fi, _F_AT, _F_N, f) for f in self._flows.values())
        segments.sort(key=lambda s: s[0][s[1], s[3]])  # by start: moving down never overlaps
        used = 0
        for owner, at_row, n_row, col in segments:
            at, n = owner[at_row, col], owner[n_row, col]
            self._pool_i[used:used + n] = self._pool_i[at:at + n]
            self._pool_f[used:used + n] = self._pool_f[at:at + n]
            owner[at_row, col] = used
            used += n
        self._pool_used, self._pool_dead = used, 0


@njit
def _read_shares(ids, remaining, slot_of_id, ff):
    """Share still to move = remaining bytes / size, for every flow of the network's arrays
    that the book holds."""
    for k in range(len(ids)):
        fid = ids[k]
        if 0 <= fid < len(slot_of_id):
            f = slot_of_id[fid]
            if f >= 0:
                ff[_F_LEFT, f] = remaining[k] / ff[_F_SIZE, f]


@njit
def _assemble(order, now_s, bi, bf, pi, fi, ff, pool_i, pool_f):
    """The load vectors of the batches in ``order`` (batch slots) as
    :func:`mfsched.policy.red._feasibility_pass` reads them. Batches without live requests
    are left out; a request counts if live, not pruned and with P2D traffic."""
    # first pass: how many batches, requests and entries
    nb = ne = nr = nrp = 0
    for o in range(len(order)):
        s = order[o]
        if bi[_B_LIVE, s] == 0:
            continue
        nb += 1
        ne += bi[_B_EARLY_N, s]
        at = bi[_B_PAIRS_AT, s]
        for j in range(at, at + bi[_B_PAIRS_N, s]):
            q = pool_i[j]
            if pi[_P_LIVE, q] == 0 or pi[_P_PRUNED, q] != 0 or pi[_P_P2D_AT, q] < 0:
                continue
            nr += 1
            f = pi[_P_HEAD, q]
            while f >= 0:
                nrp += fi[_F_N, f]
                f = fi[_F_NEXT, f]
            if bi[_B_DONE, s] == 0:
                nrp += pi[_P_P2D_N, q]
    compute_end = np.empty(nb)
    target = np.empty(nb)
    early_ptr = np.empty(nb + 1, np.int64)
    early_port = np.empty(ne, np.int64)
    early_bytes = np.empty(ne)
    req_ptr = np.empty(nb + 1, np.int64)
    req_id = np.empty(nr, np.int64)
    rp_ptr = np.empty(nr + 1, np.int64)
    rp_port = np.empty(nrp, np.int64)
    rp_bytes = np.empty(nrp)
    i = e = r = k = 0
    early_ptr[0] = req_ptr[0] = rp_ptr[0] = 0
    for o in range(len(order)):
        s = order[o]
        if bi[_B_LIVE, s] == 0:
            continue
        done = bi[_B_DONE, s] != 0
        left = 0 if done else bi[_B_NLAYERS, s] - bi[_B_LAYER, s]
        compute_end[i] = now_s + left * bf[_B_LAYER_S, s]
        target[i] = bf[_B_LOOSE_S, s]
        at = bi[_B_EARLY_AT, s]
        for j in range(at, at + bi[_B_EARLY_N, s]):
            early_port[e] = pool_i[j]
            early_bytes[e] = pool_f[j] * left
            e += 1
        at = bi[_B_PAIRS_AT, s]
        for j in range(at, at + bi[_B_PAIRS_N, s]):
            q = pool_i[j]
            if pi[_P_LIVE, q] == 0 or pi[_P_PRUNED, q] != 0 or pi[_P_P2D_AT, q] < 0:
                continue
            req_id[r] = pi[_P_REQ, q]
            f = pi[_P_HEAD, q]
            while f >= 0:  # in flight: most recent first
                share = ff[_F_LEFT, f]
                for m in range(fi[_F_AT, f], fi[_F_AT, f] + fi[_F_N, f]):
                    rp_port[k] = pool_i[m]
                    rp_bytes[k] = pool_f[m] * share
                    k += 1
                f = fi[_F_NEXT, f]
            if not done:  # one layer's bytes for every layer not emitted yet
                future = bi[_B_NLAYERS, s] - pi[_P_EMITTED, q]
                p2d = pi[_P_P2D_AT, q]
                for m in range(p2d, p2d + pi[_P_P2D_N, q]):
                    rp_port[k] = pool_i[m]
                    rp_bytes[k] = pool_f[m] * future
                    k += 1
            r += 1
            rp_ptr[r] = k
        i += 1
        early_ptr[i] = e
        req_ptr[i] = r
    return (compute_end, target, early_ptr, early_port, early_bytes, req_ptr, req_id, rp_ptr,
            rp_port, rp_bytes)
