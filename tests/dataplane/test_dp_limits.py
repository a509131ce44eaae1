"""Resource limits: their accounting, their options, and the receive ledger's bounded memory."""

from __future__ import annotations

import pytest

from mfsched.dataplane.limits import (
    ControlLimits,
    DataLimits,
    GuardStats,
    PeerTable,
    TokenBucket,
    limit_options,
    parse_limit_options,
)
from mfsched.dataplane.wire import (
    STATUS_BUSY,
    STATUS_OK,
    ChunkKey,
    PayloadPattern,
    RxLedger,
    TransportStats,
)
from mfsched.errors import UserError

PATTERN = PayloadPattern()


def test_token_bucket_allows_the_burst_then_the_rate():
    b = TokenBucket(rate=100.0, burst=10, now_s=0.0)
    assert [b.take(0.0) for _ in range(10)] == [0.0] * 10
    assert b.take(0.0) == pytest.approx(0.01)  # one token short at 100/s
    assert b.take(0.0) == pytest.approx(0.02)  # the debt grows
    assert b.take(0.03) == 0.0  # 3 tokens came back, 2 were owed, one taken
    assert b.take(10.0, 5) == 0.0 and b.tokens == pytest.approx(5.0)  # capped at the burst


def test_peer_table_counts_per_peer_and_in_all():
    guard = GuardStats()
    t = PeerTable(DataLimits(max_connections_per_peer=2, max_connections=3), guard)
    assert t.admit("a", 10) is None and t.admit("a", 11) is None
    assert "already has 2 connections" in t.admit("a", 12)
    assert t.admit("b", 12) is None
    assert "has 3 connections" in t.admit("c", 13)
    assert "out of descriptors" in t.admit("c", 1000)  # select() cannot watch it
    assert guard.connections_refused == 3
    t.release(object(), "a", 0)
    assert t.admit("c", 13) is None and t.connections == {"a": 1, "b": 1, "c": 1}


def test_unauthenticated_connections_beyond_the_limit_evict_the_oldest():
    guard = GuardStats()
    t = PeerTable(DataLimits(max_preauth_connections=2), guard)
    first, second, third = object(), object(), object()
    assert t.start_handshake(first) is None and t.start_handshake(second) is None
    assert t.start_handshake(third) is first and guard.preauth_evicted == 1
    t.authenticated(second)
    assert list(t.preauth) == [third]


def test_receive_buffers_stay_within_the_peer_budget():
    guard = GuardStats()
    t = PeerTable(DataLimits(max_buffer_bytes_per_peer=1000), guard)
    assert t.resize_buffer("a", 0, 600) and t.resize_buffer("a", 0, 400)
    assert not t.resize_buffer("a", 0, 1) and guard.buffer_refused == 1
    assert t.resize_buffer("a", 600, 100) and t.resize_buffer("b", 0, 1000)
    assert t.buffers == {"a": 500, "b": 1000}


def test_limit_options_round_trip_and_bad_ones_are_one_line_errors():
    data, control = DataLimits(handshake_timeout_s=0.5, max_connections=100), \
        ControlLimits(messages_per_s=10.0)
    argv = limit_options(data, control)
    assert argv == ["--limit", "max_connections=100", "--limit", "handshake_timeout_s=0.5",
                    "--limit", "messages_per_s=10.0"]
    assert parse_limit_options(argv[1::2]) == (data, control)
    with pytest.raises(UserError, match="--limit: 'nope=1': expected NAME=VALUE"):
        parse_limit_options(["nope=1"])
    with pytest.raises(UserError, match="max_connections: cannot read 'x' as int"):
        parse_limit_options(["max_connections=x"])
    with pytest.raises(UserError, match="must be positive"):
        parse_limit_options(["frame_timeout_s=0"])
    with pytest.raises(UserError, match="at most 960"):
        parse_limit_options(["max_connections=2000"])


def _chunk(flow, off, n, total):
    key = ChunkKey(flow, 0, off, n)
    return key, total, bytes(PATTERN.chunk(key))


def test_ledger_forgets_completed_members_after_a_while_and_beyond_a_count():
    now = [0.0]
    stats = TransportStats()
    ledger = RxLedger(PATTERN, stats, DataLimits(completed_memory_s=10.0,
                                                 max_completed_members=3), clock=lambda: now[0])
    for flow in range(1, 5):  # four complete one-chunk members at t = 0
        key, total, data = _chunk(flow, 0, 64, 64)
        assert ledger.receive(key, total, None, data) == (STATUS_OK, 64, True)
    assert not ledger.is_complete(1, 0) and ledger.is_complete(2, 0)  # beyond the count
    assert stats.members_forgotten_early == 1
    key, total, data = _chunk(2, 0, 64, 64)
    assert ledger.receive(key, total, None, data) == (STATUS_OK, 0, False)  # a late duplicate
    now[0] = 11.0
    key, total, data = _chunk(5, 0, 64, 64)
    ledger.receive(key, total, None, data)
    assert list(ledger.completed) == [5 << 16]  # the others are older than 10 s
    assert stats.bytes_delivered == 5 * 64 and stats.bytes_duplicate == 64


def test_ledger_answers_busy_beyond_the_open_member_limit():
    guard = GuardStats()
    ledger = RxLedger(PATTERN, TransportStats(), DataLimits(max_open_members=2), guard)
    for flow in (1, 2):
        key, total, data = _chunk(flow, 0, 10, 20)
        assert ledger.receive(key, total, None, data)[0] == STATUS_OK
    key, total, data = _chunk(3, 0, 10, 20)
    assert ledger.receive(key, total, None, data) == (STATUS_BUSY, 0, False)
    assert guard.members_busy == 1 and ledger.open_peak == 2
    key, total, data = _chunk(1, 10, 10, 20)  # an open member still takes chunks
    assert ledger.receive(key, total, None, data) == (STATUS_OK, 10, True)
    key, total, data = _chunk(3, 0, 10, 20)
    assert ledger.receive(key, total, None, data)[0] == STATUS_OK
