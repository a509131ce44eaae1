"""The transport's interface without sockets: an in-memory fabric for tests.

Who calls this: the data-plane tests (daemons on one event loop, the driver contract test) and
the in-memory cluster of ``tests/dataplane/memcluster.py``. Same ledger, acknowledgements,
resends and statistics as :class:`mfsched.dataplane.transport.TcpTransport`, no sockets and no
handshake (there is no wire to protect).
"""

from __future__ import annotations

import asyncio
import zlib

from .wire import (
    STATUS_OK,
    ChunkKey,
    PayloadPattern,
    Route,
    RxLedger,
    TransportEvents,
    TransportStats,
)

__all__ = ["MemoryFabric", "MemoryTransport"]


class MemoryFabric:
    """Addresses -> in-memory transports; delivers after ``delay_s`` via the event loop."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.endpoints: dict[str, MemoryTransport] = {}


class MemoryTransport:
    """The TCP transport's interface without sockets: same ledger, acks, resends, stats.

    ``break_connections`` loses everything in flight (as a reset would) and resends it;
    ``corrupt_next`` flips a byte in the next chunks so that the receiver refuses them.
    """

    def __init__(self, fabric: MemoryFabric, addrs: list[str], events: TransportEvents, *,
                 pattern: PayloadPattern | None = None, store=None) -> None:
        self.fabric = fabric
        self.addrs = addrs
        self.events = events
        self.pattern = pattern or PayloadPattern()
        self.stats = TransportStats()
        self.ledger = RxLedger(self.pattern, self.stats, store=store)
        self.unacked: dict[Route, dict[ChunkKey, int]] = {}
        self._handles: dict[Route, list[asyncio.TimerHandle]] = {}
        self._corrupt = 0
        self.sent_routes: list[Route] = []

    async def start(self) -> None:
        for a in self.addrs:
            self.fabric.endpoints[a] = self

    async def close(self) -> None:
        for hs in self._handles.values():
            for h in hs:
                h.cancel()
        for a in self.addrs:
            self.fabric.endpoints.pop(a, None)

    def as_pairs(self) -> list[tuple[str, float]]:
        return self.stats.as_pairs("transport.") + self.ledger.as_pairs()

    def use_payloads(self, source, store) -> None:
        """As :meth:`TcpTransport.use_payloads`."""
        self.pattern = self.ledger.pattern = source
        self.ledger.store = store

    def corrupt_next(self, n: int) -> None:
        self._corrupt += n

    def send(self, route: Route, key: ChunkKey, total: int) -> None:
        self.unacked.setdefault(route, {})[key] = total
        self.stats.chunks_sent += 1
        self.stats.bytes_sent += key.length
        self.sent_routes.append(route)
        loop = asyncio.get_running_loop()
        h = loop.call_later(self.fabric.delay_s, self._deliver, route, key, total)
        self._handles.setdefault(route, []).append(h)

    def cancel(self, route: Route, key: ChunkKey) -> bool:
        return False

    def break_connections(self) -> int:
        n = 0
        for route, hs in self._handles.items():
            for h in hs:
                h.cancel()
            hs.clear()
            pending = self.unacked.get(route, {})
            if pending:
                n += 1
                self.stats.reconnects += 1
                self.stats.chunks_resent += len(pending)
                for key, total in list(pending.items()):
                    self.stats.chunks_sent -= 1
                    self.stats.bytes_sent -= key.length
                    self.send(route, key, total)
        return n

    def _deliver(self, route: Route, key: ChunkKey, total: int) -> None:
        peer = self.fabric.endpoints.get(route.dst_addr)
        if peer is None:
            self.events.chunk_failed(route, key, f"{route.dst_addr} unreachable")
            self.unacked.get(route, {}).pop(key, None)
            return
        payload = self.pattern.chunk(key)
        if payload is None:  # a cancelled KV flow: nothing to deliver, nothing to ack
            self.unacked.get(route, {}).pop(key, None)
            return
        data = bytes(payload)
        crc = zlib.crc32(data)
        if self._corrupt:
            self._corrupt -= 1
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        status, new, complete = peer.ledger.receive(key, total, crc, data)
        if new:
            peer.events.member_received(key.flow_id, key.member, new, total, complete)
        if self.unacked.get(route, {}).pop(key, None) is None:
            return
        if status == STATUS_OK:
            self.events.chunk_acked(route, key)
        else:
            self.stats.chunks_resent += 1
            self.send(route, key, total)
