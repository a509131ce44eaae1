"""The inter-request state in arrays (:class:`BatchBook`) against plain Python readings of it.

* RED order: after random arrivals and departures of requests and batches, the ranks order the
  live batches exactly as sorting them afresh by (RED of their live deadlines, batch id) does;
  ranks are unique and in range, and a reorder reports exactly the batches whose rank changed.
  Sparse ranks by hand: a batch placed between two others renumbers nobody.
* Pruning: the book's compiled assembly + walk prunes what :func:`feasibility_prune` prunes on
  load vectors built here with dictionaries from the same events (the reading of
  ``batch_loads`` before the state moved into arrays), through slot reuse, pool compaction,
  flows of batches not started yet and flows outliving their batch. Byte counts and shares are
  small dyadic fractions, so every sum is exact whatever its order.
"""

from __future__ import annotations

import random

import pytest

from mfsched.policy.batchbook import RANK_GAP, RANK_LIMIT, BatchBook
from mfsched.policy.red import (
    BatchLoad,
    feasibility_prune,
    loose_deadline,
    robust_effective_deadline,
)
from mfsched.policy.types import BatchInfo


def _info(bid, rids, early, p2d, caps, layers=4, layer_s=0.25):
    return BatchInfo(bid, 0, tuple(rids), layers, 0.0, layer_s, p2d, early,
                     {port: 8 * c for port, c in caps.items()})


def test_a_batch_between_two_others_renumbers_nobody():
    book = BatchBook()
    for rid, deadline in ((1, 1.0), (2, 3.0), (3, 2.0)):
        book.add_request(rid, deadline)
    book.add_batch(_info(10, (1,), {}, {}, {}))
    book.add_batch(_info(30, (2,), {}, {}, {}))
    assert book.reorder() == {10: RANK_GAP, 30: 2 * RANK_GAP}
    book.add_batch(_info(20, (3,), {}, {}, {}))
    assert book.reorder() == {20: RANK_GAP + RANK_GAP // 2}
    book.end_batch(10)
    assert book.reorder() == {} and book.ranks() == {20: RANK_GAP + RANK_GAP // 2,
                                                     30: 2 * RANK_GAP}
    # request 2 ends: batch 30 has no live request, RED = inf, it stays last (no change)
    book.end_request(2)
    assert book.reorder() == {}
    # in front of batch 40 (rank GAP / 2 = 2048) twelve more batches fit by halving (1024, 512,
    # ..., 1, 0); the thirteenth finds no room and everybody is renumbered, in order
    book.add_request(4, 0.5)
    book.add_batch(_info(40, (4,), {}, {}, {}))
    assert book.reorder() == {40: RANK_GAP // 2}
    for k in range(13):
        book.add_request(50 + k, 0.4 - 0.01 * k)
        book.add_batch(_info(50 + k, (50 + k,), {}, {}, {}))
        before = book.ranks()
        changed = book.reorder()
        if k < 12:
            assert changed == {50 + k: (RANK_GAP // 4) >> k}
    ranks = book.ranks()
    assert sorted(ranks.values()) == [RANK_GAP * (i + 1) for i in range(len(ranks))]
    assert sorted(ranks, key=ranks.get) == [*range(62, 49, -1), 40, 20, 30]
    assert changed == {b: r for b, r in ranks.items() if before.get(b) != r}
    assert len(changed) == len(ranks)


def _red_key(book, infos, bid):
    live = [book.deadline_s[r] for r in infos[bid].request_ids if r in book.deadline_s]
    return (robust_effective_deadline(live) if live else float("inf"), bid)


@pytest.mark.parametrize("seed", range(6))
def test_ranks_order_the_batches_by_red(seed):
    rng = random.Random(seed)
    book, infos, before = BatchBook(), {}, {}
    next_rid = 0
    for _ in range(400):
        roll = rng.random()
        if roll < 0.45 or not infos:
            rids = []
            for _ in range(rng.randint(1, 4)):
                next_rid += 1
                rids.append(next_rid)
                # few distinct deadlines: ties in RED are broken by batch id
                book.add_request(next_rid, rng.choice([1.0, 2.0, 3.0, rng.uniform(0, 4)]))
            bid = max(infos, default=0) + 1
            infos[bid] = _info(bid, rids, {}, {}, {})
            book.add_batch(infos[bid])
        elif roll < 0.7:
            bid = rng.choice(sorted(infos))
            book.end_batch(bid)
            del infos[bid]
        else:
            live = sorted(book.deadline_s)
            if live:
                book.end_request(rng.choice(live))
        changed = book.reorder()
        ranks = book.ranks()
        assert sorted(ranks) == sorted(infos)
        assert sorted(infos, key=ranks.get) == sorted(
            infos, key=lambda b: _red_key(book, infos, b))
        assert len(set(ranks.values())) == len(ranks)
        assert all(0 <= r < RANK_LIMIT for r in ranks.values())
        assert changed == {b: r for b, r in ranks.items() if before.get(b) != r}
        before = ranks


class _Reference:
    """The same events kept in dictionaries, and the load vectors built from them."""

    def __init__(self):
        self.infos, self.layer, self.done, self.emitted = {}, {}, set(), {}
        self.flows = {}  # flow -> [batch, request, layer, ports, share]

    def loads(self, book, now_s):
        out = []
        for bid in sorted(self.infos, key=lambda b: _red_key(book, self.infos, b)):
            info = self.infos[bid]
            live = [book.deadline_s[r] for r in info.request_ids if r in book.deadline_s]
            if not live:
                continue
            left = 0 if bid in self.done else info.num_layers - self.layer[bid]
            prunable = {}
            for rid in info.request_ids:
                if rid not in book.deadline_s or rid in book.pruned \
                        or rid not in info.p2d_port_bytes:
                    continue
                load = {}
                for fb, fr, _, ports, share in self.flows.values():
                    if (fb, fr) == (bid, rid):
                        for port, size in ports:
                            load[port] = load.get(port, 0.0) + size * share
                if bid not in self.done:
                    future = info.num_layers - len(self.emitted.get((bid, rid), ()))
                    for port, size in info.p2d_port_bytes[rid].items():
                        load[port] = load.get(port, 0.0) + size * future
                prunable[rid] = load
            out.append(BatchLoad(bid, live, now_s + left * info.layer_compute_s,
                                 {p: s * left for p, s in info.early_port_bytes.items()},
                                 prunable, loose_deadline(live)))
        return out


@pytest.mark.parametrize("seed", range(8))
def test_prune_matches_the_walk_over_dictionaries(seed, monkeypatch):
    rng = random.Random(seed)
    compactions = []
    original = BatchBook._compact
    monkeypatch.setattr(BatchBook, "_compact",
                        lambda self: (compactions.append(1), original(self)))
    ports = rng.sample(range(1000), rng.choice([3, 5, 8]))
    caps = {p: rng.choice([1.0, 2.0, 4.0]) for p in ports}
    book, ref = BatchBook(pool_entries=16), _Reference()  # small: it compacts
    next_rid = next_bid = next_fid = 0
    pruned_any = 0
    for step in range(800):
        now = step / 64
        roll = rng.random()
        live_batches = sorted(ref.infos)
        if (roll < 0.15 or not live_batches) and len(live_batches) < 8:
            rids = []
            for _ in range(rng.randint(1, 4)):
                next_rid += 1
                rids.append(next_rid)
                book.add_request(next_rid, now + rng.choice([0.5, 1.0, 2.0, 4.0]))
            next_bid += 1
            early = {p: rng.choice([0.5, 1.0, 2.0])
                     for p in rng.sample(ports, rng.randint(0, len(ports)))}
            p2d = {r: {p: rng.choice([0.25, 0.5, 1.0]) for p in rng.sample(ports, 2)}
                   for r in rids if rng.random() < 0.8}
            info = _info(next_bid, rids, early, p2d, caps, layers=rng.randint(2, 6),
                         layer_s=rng.choice([0.125, 0.25]))
            book.add_batch(info)
            ref.infos[next_bid], ref.layer[next_bid] = info, 0
        elif roll < 0.55:  # a P2D flow (sometimes of the next batch, not started yet)
            bid = rng.choice([*live_batches, next_bid + 1])
            rids = ref.infos[bid].request_ids if bid in ref.infos else (next_rid + 1,)
            rid = rng.choice(rids) if rng.random() < 0.95 else 10**6  # not of the batch
            layer = rng.randint(0, 5)
            flow_ports = tuple((p, rng.choice([0.25, 0.5, 1.0]))
                               for p in rng.choices(ports, k=rng.randint(1, 3)))
            next_fid += 1
            book.add_p2d(next_fid, bid, rid, layer, flow_ports)
            ref.flows[next_fid] = [bid, rid, layer, flow_ports, 1.0]
            if bid in ref.infos and rid in ref.infos[bid].request_ids:
                ref.emitted.setdefault((bid, rid), set()).add(layer)
        elif roll < 0.65 and ref.flows:
            fid = rng.choice(sorted(ref.flows))
            share = rng.choice([0.0, 0.25, 0.5])
            book.set_left(fid, share)
            ref.flows[fid][4] = share
        elif roll < 0.75 and ref.flows:
            fid = rng.choice(sorted(ref.flows))
            book.end_p2d(fid)
            del ref.flows[fid]
        elif roll < 0.85:
            bid = rng.choice(live_batches)
            if rng.random() < 0.3:
                book.set_compute_done(bid)
                ref.done.add(bid)
            else:
                ref.layer[bid] = min(ref.layer[bid] + 1, ref.infos[bid].num_layers)
                book.set_layer(bid, ref.layer[bid])
        elif roll < 0.92 or len(live_batches) >= 8:
            bid = rng.choice(live_batches)
            book.end_batch(bid)
            del ref.infos[bid]  # (its flows in flight end later; they count nowhere)
        else:
            live = sorted(book.deadline_s)
            if live:
                book.end_request(rng.choice(live))
        # a newly started batch takes the flows that waited for it
        for v in ref.flows.values():
            if v[0] in ref.infos and v[1] in ref.infos[v[0]].request_ids:
                ref.emitted.setdefault((v[0], v[1]), set()).add(v[2])
        book.reorder()
        budget = rng.choice([0, 1, 2, 5])
        expected = feasibility_prune(ref.loads(book, now), caps, now, budget)
        assert book.prune(now, budget) == expected, f"step {step}"
        book.mark_pruned(expected)
        pruned_any += bool(expected)
    assert pruned_any > 10 and compactions  # the cases prune, and the pool was compacted


def test_a_request_listed_twice_is_one_pair():
    book = BatchBook()
    book.add_request(1, 1.0)
    book.add_batch(_info(10, (1, 1), {}, {1: {5: 1.0}}, {5: 1.0}))
    book.reorder()
    assert book.prune(0.0, 2) == [1]  # 4 layers x 1 byte at 1 B/s cannot make 1 s
    book.end_batch(10)
    book.end_request(1)  # (a stale batch entry would fail here)
    book.add_request(2, 1.0)
    book.add_batch(_info(11, (2,), {}, {}, {}))
    assert book._p_slots.next == 1  # the freed pair was reused: none was leaked
