"""Receiver ledger, in-memory transport and the software priority queues (no sockets)."""

from __future__ import annotations

import asyncio
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mfsched.dataplane.sender import MemberTx, SenderConfig, SendScheduler
from mfsched.dataplane.transport import MemoryFabric, MemoryTransport
from mfsched.dataplane.wire import (
    STATUS_BAD,
    STATUS_OK,
    ChunkKey,
    PayloadPattern,
    Route,
    RxLedger,
    TransportStats,
    add_interval,
)
from mfsched.policy.types import Priority

PATTERN = PayloadPattern()


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 50)), max_size=30))
def test_add_interval_counts_each_byte_once(spans):
    intervals: list[list[int]] = []
    seen: set[int] = set()
    for start, length in spans:
        new = add_interval(intervals, start, start + length)
        fresh = set(range(start, start + length)) - seen
        assert new == len(fresh)
        seen |= fresh
    assert sum(b - a for a, b in intervals) == len(seen)
    assert all(intervals[i][1] < intervals[i + 1][0] for i in range(len(intervals) - 1))


def _chunk(flow, member, off, n):
    key = ChunkKey(flow, member, off, n)
    data = bytes(PATTERN.chunk(key))
    return key, data, zlib.crc32(data)


def test_ledger_verifies_and_deduplicates():
    ledger = RxLedger(PATTERN, TransportStats())
    k1, d1, c1 = _chunk(5, 0, 0, 100)
    k2, d2, c2 = _chunk(5, 0, 100, 50)
    assert ledger.receive(k1, 150, c1, d1) == (STATUS_OK, 100, False)
    assert ledger.receive(k1, 150, c1, d1) == (STATUS_OK, 0, False)  # duplicate
    bad = bytes([d2[0] ^ 1]) + d2[1:]
    assert ledger.receive(k2, 150, zlib.crc32(bad), bad)[0] == STATUS_BAD  # wrong content
    assert ledger.receive(k2, 150, c2 ^ 1, d2)[0] == STATUS_BAD  # wrong checksum
    assert ledger.receive(k2, 150, c2, d2) == (STATUS_OK, 50, True)
    assert ledger.receive(k2, 150, c2, d2) == (STATUS_OK, 0, False)
    assert ledger.is_complete(5, 0) and ledger.delivered(5, 0) == 0  # no longer open
    s = ledger.stats
    assert (s.bytes_delivered, s.bytes_duplicate, s.chunks_bad, s.members_complete) == \
        (150, 150, 2, 1)


class Events:
    def __init__(self):
        self.acked: list[tuple[Route, ChunkKey]] = []
        self.failed: list[ChunkKey] = []
        self.received: dict[tuple[int, int], int] = {}
        self.complete: list[tuple[int, int]] = []

    def chunk_acked(self, route, key):
        self.acked.append((route, key))

    def chunk_failed(self, route, key, reason):
        self.failed.append(key)

    def member_received(self, flow, member, new, total, complete):
        self.received[(flow, member)] = self.received.get((flow, member), 0) + new
        if complete:
            self.complete.append((flow, member))


async def _pair(delay=0.0):
    fab = MemoryFabric(delay)
    ea, eb = Events(), Events()
    a, b = MemoryTransport(fab, ["a"], ea), MemoryTransport(fab, ["b"], eb)
    await a.start()
    await b.start()
    return a, b, ea, eb


def test_memory_transport_break_resends_and_receiver_gets_bytes_once():
    async def go():
        a, b, ea, eb = await _pair(delay=0.01)
        route = Route("a", "b", 3)
        total = 10 * 4096
        for i in range(10):
            a.send(route, ChunkKey(1, 0, i * 4096, 4096), total)
        await asyncio.sleep(0)
        assert a.break_connections() == 1
        a.corrupt_next(2)
        await asyncio.sleep(0.1)
        return a, b, ea, eb, total

    a, b, ea, eb, total = asyncio.run(go())
    assert len({k for _, k in ea.acked}) == 10 and not ea.failed
    assert eb.received == {(1, 0): total} and eb.complete == [(1, 0)]
    assert a.stats.reconnects == 1 and a.stats.chunks_resent >= 10 + 2
    assert b.stats.bytes_delivered == total and b.stats.chunks_bad == 2


class FakeTransport:
    def __init__(self):
        self.sent: list[tuple[Route, ChunkKey]] = []

    def send(self, route, key, total):
        self.sent.append((route, key))

    def cancel(self, route, key):
        return False


def _sched(window=4096, chunk=1024, copy_after=0.0):
    done: list[MemberTx] = []
    t = FakeTransport()
    s = SendScheduler(t, SenderConfig(chunk, window, copy_after),
                      lambda p: min(p.level, 7), done.append)
    return s, t, done


def test_strict_priority_round_robin_and_window():
    async def go():
        s, t, done = _sched()
        low = MemberTx(1, 0, 0, "a", "b", 4096)
        hi1 = MemberTx(2, 0, 0, "a", "b", 2048)
        hi2 = MemberTx(3, 0, 0, "a", "c", 2048)
        for m, p in ((low, Priority(2, 0)), (hi1, Priority(2, -1)), (hi2, Priority(2, -1))):
            s.add(m)
            s.set_priority(m, p)
        s.pump()
        # one class, window 4 chunks: the two rank -1 members alternate, low waits
        assert [k.flow_id for _, k in t.sent] == [2, 3, 2, 3]
        for r, k in list(t.sent):
            s.chunk_acked(r, k)
        assert [m.flow_id for m in done] == [2, 3]
        s.pump()
        assert [k.flow_id for _, k in t.sent[4:]] == [1, 1, 1, 1]

    asyncio.run(go())


def test_a_member_with_two_connections_sends_two_chunks_per_turn():
    """Weighted round robin: shares 2 and 1 in one class send chunks 2:1."""
    async def go():
        s, t, _done = _sched(window=6144)
        two = MemberTx(1, 0, 0, "a", "b", 8192, share=2)
        one = MemberTx(2, 0, 0, "a", "c", 8192)
        for m in (two, one):
            s.add(m)
            s.set_priority(m, Priority(3))
        s.pump()
        assert [k.flow_id for _, k in t.sent] == [1, 1, 2, 1, 1, 2]

    asyncio.run(go())


def test_classes_have_separate_windows_and_promotion_copies_starved_chunks():
    async def go():
        s, t, _done = _sched(window=2048, copy_after=0.0)
        m = MemberTx(1, 0, 0, "a", "b", 8192)
        s.add(m)
        s.set_priority(m, Priority(6))
        s.pump()
        assert [(r.hw_class, k.offset) for r, k in t.sent] == [(6, 0), (6, 1024)]
        s.set_priority(m, Priority(1))  # promotion: stuck chunks are copied to class 1
        s.pump()
        classes = [(r.hw_class, k.offset) for r, k in t.sent[2:]]
        assert classes[:2] == [(1, 0), (1, 1024)] and s.copies == 2
        # the copies' acks count once; the late acks of the originals are ignored
        for r, k in list(t.sent):
            s.chunk_acked(r, k)
        assert m.acked == 2048 + 1024 * (len(t.sent) - 4)
        assert s.inflight[(0, 6)] == 0 and s.inflight[(0, 1)] >= 0

    asyncio.run(go())


def test_rate_cap_paces_chunks():
    async def go():
        s, t, _done = _sched(window=1 << 20, chunk=1024)
        m = MemberTx(1, 0, 0, "a", "b", 10 * 1024)
        s.add(m)
        s.set_priority(m, Priority(0))
        s.set_rate_cap(m, 1024 / 0.01)  # one chunk per 10 ms
        s.pump()
        await asyncio.sleep(0.035)
        return len(t.sent)

    n = asyncio.run(go())
    assert 3 <= n <= 5


@pytest.mark.parametrize("failed_first", [True, False])
def test_failed_chunk_is_retried(failed_first):
    async def go():
        s, t, done = _sched()
        m = MemberTx(1, 0, 0, "a", "b", 1024)
        s.add(m)
        s.set_priority(m, Priority(0))
        s.pump()
        route, key = t.sent[0]
        if failed_first:
            s.chunk_failed(route, key)
            s.pump()
            assert t.sent[1][1] == key
            route, key = t.sent[1]
        s.chunk_acked(route, key)
        return done

    assert len(asyncio.run(go())) == 1
