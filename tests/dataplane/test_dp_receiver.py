"""The TCP transport on loopback (no namespaces, no root): authenticated transfers, resends
after broken connections, and each hostile peer's trick alone, with exact counters."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import hostile
import pytest

from mfsched.dataplane.auth import RunKey
from mfsched.dataplane.limits import DataLimits
from mfsched.dataplane.transport import TcpTransport
from mfsched.dataplane.wire import ChunkKey, Route

VICTIM, SENDER = "127.0.0.1", "127.0.0.2"
LIMITS = DataLimits(handshake_timeout_s=0.5, frame_timeout_s=0.5, frame_min_bytes_per_s=1e6,
                    max_connections_per_peer=8, max_preauth_connections=12)


class Events:
    def __init__(self):
        self.acked: set[ChunkKey] = set()
        self.failed: list[ChunkKey] = []
        self.received: dict[tuple[int, int], int] = {}
        self.cond = threading.Condition()

    def chunk_acked(self, route, key):
        with self.cond:
            self.acked.add(key)
            self.cond.notify_all()

    def chunk_failed(self, route, key, reason):
        self.failed.append(key)

    def member_received(self, flow, member, new, total, complete):
        self.received[(flow, member)] = self.received.get((flow, member), 0) + new

    def wait_acked(self, n: int, timeout_s: float = 20.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.acked) >= n, timeout_s)


class Loopback:
    """A victim transport on 127.0.0.1 and a legitimate sender on 127.0.0.2, one event loop."""

    def __init__(self, victim_key, sender_key, limits=LIMITS) -> None:
        probe = socket.socket()
        probe.bind((VICTIM, 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.victim_events, self.sender_events = Events(), Events()

        async def start():
            v = TcpTransport([VICTIM], self.port, self.victim_events, key=victim_key,
                             limits=limits, congestion=None, reconnect_timeout_s=2.0)
            s = TcpTransport([SENDER], self.port, self.sender_events, key=sender_key,
                             limits=limits, congestion=None, reconnect_timeout_s=2.0)
            await v.start()
            await s.start()
            return v, s

        self.victim, self.sender = self.call(start())

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def send(self, flow: int, size: int, chunk: int = 32 * 1024, hw_class: int = 3) -> int:
        async def go():
            return self.queue(flow, size, chunk, hw_class)
        return self.call(go())

    def queue(self, flow: int, size: int, chunk: int = 32 * 1024, hw_class: int = 3) -> int:
        """Hand a flow's chunks to the sender (on the loop's thread); how many."""
        n = 0
        for off in range(0, size, chunk):
            self.sender.send(Route(SENDER, VICTIM, hw_class),
                             ChunkKey(flow, 0, off, min(chunk, size - off)), size)
            n += 1
        return n

    def guard(self) -> dict[str, int]:
        return dict(self.victim.guard.__dict__)

    def close(self) -> None:
        async def stop():
            await self.sender.close()
            await self.victim.close()
        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def loopback():
    made = []

    def make(victim_key=None, sender_key=None, **kw):
        lb = Loopback(victim_key, sender_key, **kw)
        made.append(lb)
        return lb

    yield make
    for lb in made:
        lb.close()


def _until(cond, timeout_s: float = 10.0) -> bool:
    """Wait for a condition another thread makes true (the victim's counters)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_authenticated_transfer_and_resend_after_a_broken_connection(loopback):
    key = RunKey.generate()
    lb = loopback(key, key)
    lb.send(2, 1024)  # the connection is up before the transfer (else nothing breaks)
    assert lb.sender_events.wait_acked(1)

    async def send_and_break():
        # One coroutine on the loop both transports share: no ack can arrive between the
        # chunks' writes and the break, so the break always finds chunks unacknowledged.
        return lb.queue(1, 4 << 20), lb.sender.break_connections()

    n, broken = lb.call(send_and_break())
    assert broken >= 1  # the sender may hold several connections to the victim
    assert lb.sender_events.wait_acked(n + 1)
    assert lb.victim_events.received == {(2, 0): 1024, (1, 0): 4 << 20}  # every byte once
    st = lb.victim.stats
    assert st.bytes_delivered == (4 << 20) + 1024 and st.members_complete == 2
    s = lb.sender.stats
    assert s.reconnects >= 1 and s.chunks_resent >= 1 and s.handshake_failures == 0
    g = lb.guard()
    assert g.pop("truncated") <= 1  # the break may have cut a frame in half
    assert not any(g.values())
    pairs = dict(lb.victim.as_pairs())
    assert pairs["rx.class3.bytes"] >= 4 << 20 and pairs["rx.class3.first_s"] > 0


def test_promotion_classes_are_connected_before_they_are_needed(loopback):
    key = RunKey.generate()
    lb = loopback(key, key)
    n = lb.send(1, 64 * 1024, hw_class=4)
    assert lb.sender_events.wait_acked(n)
    assert _until(lambda: lb.victim.listener.peers.total == 4)  # classes 1, 2, 3 and 4
    assert lb.victim.listener.peers.preauth == {}  # all authenticated
    assert lb.victim.listener.class_rx_bytes[1:4] == [0, 0, 0]  # idle until a promotion


def test_a_sender_with_another_key_delivers_nothing(loopback):
    lb = loopback(RunKey.generate(), RunKey.generate())
    lb.send(1, 64 * 1024, hw_class=1)
    assert _until(lambda: lb.sender.stats.handshake_failures >= 3)
    assert lb.victim.stats.bytes_delivered == 0 and not lb.sender_events.acked
    # the sender checks our proof first and leaves: counted here as failed handshakes too
    assert _until(lambda: lb.guard()["handshake_failed"] >= 3)
    lb2 = loopback(RunKey.generate(), None)  # a sender without a key at all
    lb2.send(1, 1024, hw_class=1)
    assert _until(lambda: lb2.guard()["handshake_failed"] >= 2)
    assert lb2.victim.stats.bytes_delivered == 0


def test_outsider_tricks_are_refused_and_counted(loopback):
    lb = loopback(RunKey.generate(), None)
    port = lb.port
    reasons = hostile.forged_chunks(VICTIM, port, 3)
    assert reasons == ["the sender does not know the run key"] * 3
    assert "not an mfsched data-plane client hello" in hostile.raw_frames(VICTIM, port)
    hostile.garbage(VICTIM, port, 1 << 20)
    assert _until(lambda: lb.guard()["handshake_failed"] == 5)
    hostile.truncated_hello(VICTIM, port)
    assert _until(lambda: lb.guard()["truncated"] == 1)
    sent, took_s, reason = hostile.trickle(VICTIM, port, 0.05)
    assert reason == "handshake not completed in time" and sent < 39
    assert 0.5 <= took_s < 2.0 and lb.guard()["handshake_timeouts"] == 1
    assert lb.victim.stats.bytes_delivered == 0


@pytest.mark.parametrize("case", ["per_peer", "eviction"])
def test_idle_floods_are_bounded(loopback, case):
    key = RunKey.generate()
    # long enough a handshake deadline that the 40 connections are all open before any expires
    limits = DataLimits(handshake_timeout_s=3.0, max_connections_per_peer=8,
                        max_preauth_connections=100) if case == "per_peer" else \
        DataLimits(handshake_timeout_s=3.0, max_connections_per_peer=64,
                   max_preauth_connections=12)
    lb = loopback(key, key, limits=limits)
    sources = ["127.0.0.3"] if case == "per_peer" else ["127.0.0.3", "127.0.0.4"]
    flood = hostile.idle_flood(VICTIM, lb.port, 40, sources, hold_s=20)
    g = lb.guard()
    assert flood["established"] == 40 and flood["still_open"] == 0 and flood["other"] == 0
    if case == "per_peer":  # 8 held until their handshake deadline, 32 refused at once
        expect = {"refused": 32, "evicted": 0, "timeout": 8}
    else:  # each connection beyond 12 unauthenticated ones closes the oldest
        expect = {"refused": 0, "evicted": 28, "timeout": 12}
    assert {k: flood[k] for k in expect} == expect
    assert (g["connections_refused"], g["preauth_evicted"], g["handshake_timeouts"]) == \
        tuple(expect.values())
    n = lb.send(1, 256 * 1024)  # the legitimate sender is still served
    assert lb.sender_events.wait_acked(n)
    assert lb.victim.listener.peers.total == lb.victim.listener.peers.connections[SENDER]


def test_insider_tricks_are_refused_and_counted(loopback):
    key = RunKey.generate()
    lb = loopback(key, None)
    port = lb.port
    delivered, reason = hostile.insider_good_chunk(VICTIM, port, key)
    assert delivered == 2048 and reason == "frame 0 replayed (expected 1)"
    assert hostile.insider_bad_mac(VICTIM, port, key) == "frame 0 does not authenticate"
    assert "chunk length 1073741824 outside" in hostile.insider_oversize(VICTIM, port, key)
    hostile.insider_truncated(VICTIM, port, key)
    took_s, reason = hostile.insider_stall(VICTIM, port, key)
    assert reason == "frame not completed in time" and 0.5 <= took_s < 2.5
    many = hostile.insider_many_connections(VICTIM, port, key, 10)
    assert many == {"authenticated": 8, "refused": 2}
    assert _until(lambda: lb.guard()["truncated"] == 1)
    g = lb.guard()
    assert (g["replayed"], g["bad_mac"], g["oversize"], g["frame_timeouts"],
            g["connections_refused"]) == (1, 1, 1, 1, 2)
    assert lb.victim.stats.bytes_delivered == 2048  # the one good chunk, once


def test_captured_frames_are_useless_elsewhere(loopback):
    key = RunKey.generate()
    lb = loopback(key, None)
    p = hostile.Peer(VICTIM, lb.port)
    assert p.handshake(key)
    first = p.frame(ChunkKey(hostile.INSIDER_FLOW, 0, 0, 1024), 1024)
    p.close()
    # the same frame inside another authenticated connection: another key
    assert hostile.insider_foreign_frames(VICTIM, lb.port, key, first) == \
        "frame 0 does not authenticate"
    assert lb.guard()["bad_mac"] == 1


def test_a_peer_over_its_buffer_budget_is_cut_off(loopback):
    key = RunKey.generate()
    lb = loopback(key, None, limits=DataLimits(max_buffer_bytes_per_peer=300 * 1024))
    peers = [hostile.Peer(VICTIM, lb.port) for _ in range(3)]
    for p in peers:
        assert p.handshake(key)
    # 128 KiB buffers each: the third connection's does not fit
    reason = peers[2].closed_with(timeout_s=5)
    assert reason is not None and "would exceed 307200 bytes" in reason
    assert lb.guard()["buffer_refused"] == 1
    for p in peers:
        p.close()
