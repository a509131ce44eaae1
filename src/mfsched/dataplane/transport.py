"""Moving real bytes: chunked, verified, acknowledged, resumable transfers over TCP (asyncio).

The daemon (:mod:`mfsched.dataplane.daemon`) cuts each member of a flow into chunks and hands
every chunk to :meth:`TcpTransport.send` together with a :class:`Route`: source address,
destination address and hardware class. The transport keeps **one TCP connection per route**;
a connection's class never changes (its socket has ``IP_TOS = DSCP << 2`` and ``SO_PRIORITY``
set once, before connecting). So a flow promoted at a layer boundary sends its next chunks on
the connection of its new class; data already queued in the old class is never re-marked and
never reordered behind itself (ns-3 scenarios e1/e2 in ``../shared/tools/ns3ref``). The daemon
may also re-send a promoted member's unacknowledged chunks on the new class (the receiver keeps
the first copy), so a starved chunk cannot hold the flow back.

Integrity and exactly-once delivery:

* Payload is deterministic: chunk bytes are a slice of a fixed pseudo-random pattern at an
  offset derived from (flow, member, byte offset), so nothing is stored and a resend is
  identical. The receiver checks the header's CRC-32 and compares the bytes with the expected
  slice; a bad chunk is answered ``BAD`` and sent again.
* Every chunk is acknowledged by the receiver after the check. The sender keeps chunks until
  their ack; when a connection breaks it reconnects (with backoff, up to
  ``reconnect_timeout_s``) and sends every unacknowledged chunk again. The receiver's
  :class:`RxLedger` merges byte intervals per member, so each byte is delivered once however
  often it arrives; duplicates are counted, not delivered.

Frames (big-endian): data = header :data:`DATA_HEADER` + payload; ack = :data:`ACK_FRAME`.
:class:`MemoryTransport` implements the same interface without sockets, for unit tests only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from .netns import CONTROL_CLASS, so_priority_of_class, tos_of_class

__all__ = [
    "ACK_FRAME",
    "DATA_HEADER",
    "ChunkKey",
    "MemoryFabric",
    "MemoryTransport",
    "PayloadPattern",
    "Route",
    "RxLedger",
    "TcpTransport",
    "TransportEvents",
    "TransportStats",
]

log = logging.getLogger("mfsched.transport")

MAGIC = b"MFSD"
DATA_HEADER = struct.Struct("!4sBQHQIQI")  # magic, kind, flow, member, offset, length, total, crc
ACK_FRAME = struct.Struct("!4sBQHQIB")  # magic, kind, flow, member, offset, length, status
KIND_DATA, KIND_ACK = 1, 2
STATUS_OK, STATUS_BAD = 0, 1
MAX_CHUNK_BYTES = 1 << 20
MAX_MEMBER_BYTES = 1 << 40
MAX_BAD_RESENDS = 5
_PATTERN_BYTES = 1 << 20


class ChunkKey(NamedTuple):
    flow_id: int
    member: int
    offset: int
    length: int


class Route(NamedTuple):
    """One TCP connection: from a local address to a peer address in one hardware class."""

    src_addr: str
    dst_addr: str
    hw_class: int


class TransportEvents(Protocol):
    """What a transport tells its owner (the daemon, or a test)."""

    def chunk_acked(self, route: Route, key: ChunkKey) -> None:
        """The receiver verified the chunk (possibly a duplicate of an earlier copy)."""

    def chunk_failed(self, route: Route, key: ChunkKey, reason: str) -> None:
        """The transport gave up on the chunk (peer unreachable for too long, bad resends)."""

    def member_received(self, flow_id: int, member: int, new_bytes: int, total: int,
                        complete: bool) -> None:
        """Receiver side: bytes delivered for the first time; ``complete`` once per member."""


@dataclass
class TransportStats:
    chunks_sent: int = 0
    bytes_sent: int = 0
    chunks_resent: int = 0  # after a broken connection or a BAD ack
    reconnects: int = 0
    bytes_delivered: int = 0  # receiver: first copies only
    bytes_duplicate: int = 0  # receiver: copies of bytes already delivered
    chunks_bad: int = 0  # receiver: failed the length/checksum/content check
    members_complete: int = 0

    def as_pairs(self, prefix: str = "") -> list[tuple[str, float]]:
        return [(prefix + k, float(v)) for k, v in self.__dict__.items()]


class PayloadPattern:
    """The deterministic payload: slices of one seeded pseudo-random buffer."""

    def __init__(self, seed: int = 0x4D4653) -> None:
        body = random.Random(seed).randbytes(_PATTERN_BYTES)
        self._buf = memoryview(body + body[:MAX_CHUNK_BYTES])

    @staticmethod
    def start(flow_id: int, member: int, offset: int) -> int:
        return (flow_id * 2654435761 + member * 40503 + offset) % _PATTERN_BYTES

    def chunk(self, key: ChunkKey) -> memoryview:
        s = self.start(key.flow_id, key.member, key.offset)
        return self._buf[s:s + key.length]


def check_chunk(key: ChunkKey, total: int) -> str | None:
    """Why a chunk header is impossible, or None."""
    if not 0 < key.length <= MAX_CHUNK_BYTES:
        return f"chunk length {key.length} outside 1..{MAX_CHUNK_BYTES}"
    if not 0 < total <= MAX_MEMBER_BYTES or key.offset + key.length > total:
        return f"chunk [{key.offset}, {key.offset + key.length}) outside a {total}-byte member"
    return None


class _RxMember:
    __slots__ = ("delivered", "intervals", "total")

    def __init__(self, total: int) -> None:
        self.total = total
        self.delivered = 0
        self.intervals: list[list[int]] = []  # disjoint, sorted [start, end)


def add_interval(intervals: list[list[int]], start: int, end: int) -> int:
    """Merge [start, end) into sorted disjoint intervals; returns the bytes that were new."""
    new = end - start
    merged_start, merged_end = start, end
    keep: list[list[int]] = []
    pos = 0
    for i, (a, b) in enumerate(intervals):
        if b < start:
            pos = i + 1
            keep.append([a, b])
            continue
        if a > end:
            keep.append([a, b])
            continue
        new -= max(0, min(b, end) - max(a, start))
        merged_start, merged_end = min(merged_start, a), max(merged_end, b)
    keep.insert(pos, [merged_start, merged_end])
    intervals[:] = keep
    return new


class RxLedger:
    """Receiver state shared by every connection of one transport: verification and dedup."""

    def __init__(self, pattern: PayloadPattern, stats: TransportStats) -> None:
        self.pattern = pattern
        self.stats = stats
        self.members: dict[tuple[int, int], _RxMember] = {}

    def receive(self, key: ChunkKey, total: int, crc: int,
                data: bytes) -> tuple[int, int, bool]:
        """(status, new bytes, member just completed) for one arriving chunk."""
        if (len(data) != key.length or zlib.crc32(data) != crc
                or self.pattern.chunk(key) != data):
            self.stats.chunks_bad += 1
            return STATUS_BAD, 0, False
        m = self.members.get((key.flow_id, key.member))
        if m is None:
            m = self.members[(key.flow_id, key.member)] = _RxMember(total)
        elif m.total != total:
            self.stats.chunks_bad += 1
            return STATUS_BAD, 0, False
        if m.delivered == m.total:
            self.stats.bytes_duplicate += key.length
            return STATUS_OK, 0, False
        new = add_interval(m.intervals, key.offset, key.offset + key.length)
        m.delivered += new
        self.stats.bytes_delivered += new
        self.stats.bytes_duplicate += key.length - new
        complete = new > 0 and m.delivered == m.total
        if complete:
            self.stats.members_complete += 1
            m.intervals = []
        return STATUS_OK, new, complete

    def delivered(self, flow_id: int, member: int) -> int:
        m = self.members.get((flow_id, member))
        return 0 if m is None else m.delivered


def class_socket_options(hw_class: int) -> list[tuple[int, int, int | bytes]]:
    """Socket options of a data connection of one class (applied before connect)."""
    return [(socket.IPPROTO_IP, socket.IP_TOS, tos_of_class(hw_class)),
            (socket.SOL_SOCKET, socket.SO_PRIORITY, so_priority_of_class(hw_class)),
            (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def _apply(sock: socket.socket, options, congestion: bytes | None) -> None:
    for level, opt, value in options:
        with contextlib.suppress(OSError):  # SO_PRIORITY > 6 needs CAP_NET_ADMIN
            sock.setsockopt(level, opt, value)
    if congestion:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion)


# --- TCP ---------------------------------------------------------------------------------------


class TcpTransport:
    """Sender and receiver of one daemon: listens on ``port`` of every local address."""

    def __init__(self, listen_addrs: list[str], port: int, events: TransportEvents, *,
                 pattern: PayloadPattern | None = None, reconnect_timeout_s: float = 30.0,
                 congestion: bytes | None = b"cubic",
                 socket_options: Callable[[int], list] = class_socket_options) -> None:
        self.listen_addrs = listen_addrs
        self.port = port
        self.events = events
        self.pattern = pattern or PayloadPattern()
        self.stats = TransportStats()
        self.ledger = RxLedger(self.pattern, self.stats)
        self.reconnect_timeout_s = reconnect_timeout_s
        self.congestion = congestion
        self.socket_options = socket_options
        self._servers: list[asyncio.AbstractServer] = []
        self._conns: dict[Route, _TcpConnection] = {}
        self._peers: set[asyncio.StreamWriter] = set()
        self._closed = False

    async def start(self) -> None:
        for addr in self.listen_addrs:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _apply(sock, class_socket_options(CONTROL_CLASS), None)
            sock.bind((addr, self.port))
            self._servers.append(await asyncio.start_server(self._serve, sock=sock,
                                                            limit=2 * MAX_CHUNK_BYTES))

    def send(self, route: Route, key: ChunkKey, total: int) -> None:
        conn = self._conns.get(route)
        if conn is None:
            conn = self._conns[route] = _TcpConnection(self, route)
        conn.enqueue(key, total)

    def cancel(self, route: Route, key: ChunkKey) -> bool:
        """Drop a chunk not yet written on ``route`` (a copy elsewhere was acknowledged)."""
        conn = self._conns.get(route)
        return conn is not None and conn.cancel(key)

    def break_connections(self) -> int:
        """Abort every outgoing connection (tests): they reconnect and resend."""
        n = 0
        for conn in self._conns.values():
            n += conn.abort()
        return n

    async def close(self) -> None:
        self._closed = True
        for srv in self._servers:
            srv.close()
        for conn in list(self._conns.values()):
            await conn.close()
        for w in list(self._peers):
            w.close()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 1.0)

    # --- receiving ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            _apply(sock, class_socket_options(CONTROL_CLASS), None)
        self._peers.add(writer)
        try:
            while not self._closed:
                if not await self._receive_one(reader, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:  # shutting down (Python 3.11 would log it otherwise)
            pass
        finally:
            self._peers.discard(writer)
            writer.close()

    async def _receive_one(self, reader, writer) -> bool:
        head = await reader.readexactly(DATA_HEADER.size)
        magic, kind, flow, member, offset, length, total, crc = DATA_HEADER.unpack(head)
        key = ChunkKey(flow, member, offset, length)
        problem = "bad magic or kind" if (magic != MAGIC or kind != KIND_DATA) else \
            check_chunk(key, total)
        if problem:
            log.warning("dropping a data connection from %s: %s",
                        writer.get_extra_info("peername"), problem)
            return False
        data = await reader.readexactly(length)
        status, new, complete = self.ledger.receive(key, total, crc, data)
        writer.write(ACK_FRAME.pack(MAGIC, KIND_ACK, flow, member, offset, length, status))
        if new:
            self.events.member_received(flow, member, new, total, complete)
        return True


class _TcpConnection:
    """One outgoing connection: a queue of chunks, the unacknowledged ones, reconnects."""

    def __init__(self, transport: TcpTransport, route: Route) -> None:
        self.t = transport
        self.route = route
        self.queue: deque[tuple[ChunkKey, int]] = deque()
        self.unacked: dict[ChunkKey, int] = {}
        self.bad: dict[ChunkKey, int] = {}
        self.wake = asyncio.Event()
        self.broken = False
        self.writer: asyncio.StreamWriter | None = None
        self.task = asyncio.get_running_loop().create_task(self._run())

    def enqueue(self, key: ChunkKey, total: int) -> None:
        self.queue.append((key, total))
        self.wake.set()

    def cancel(self, key: ChunkKey) -> bool:
        for i, (k, _) in enumerate(self.queue):
            if k == key:
                del self.queue[i]
                return True
        return False

    def abort(self) -> int:
        if self.writer is None:
            return 0
        self.writer.transport.abort()
        return 1

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        if self.writer is not None:
            self.writer.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            _apply(sock, self.t.socket_options(self.route.hw_class), self.t.congestion)
            sock.setblocking(False)
            sock.bind((self.route.src_addr, 0))
            await asyncio.wait_for(loop.sock_connect(sock, (self.route.dst_addr, self.t.port)),
                                   5.0)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, limit=1 << 16)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff, down_since, first = 0.02, None, True
        while True:
            try:
                reader, writer = await self._connect()
            except (TimeoutError, OSError) as e:
                down_since = down_since or loop.time()
                if loop.time() - down_since > self.t.reconnect_timeout_s:
                    self._fail_all(f"{self.route.dst_addr} unreachable: {e}")
                    down_since = None
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 0.5)
                continue
            if not first:
                self.t.stats.reconnects += 1
            first, backoff, down_since = False, 0.02, None
            self._requeue_unacked()
            await self._session(reader, writer)

    def _requeue_unacked(self) -> None:
        if self.unacked:
            self.t.stats.chunks_resent += len(self.unacked)
            self.queue.extendleft(reversed(list(self.unacked.items())))
            self.unacked.clear()

    async def _session(self, reader, writer) -> None:
        self.writer, self.broken = writer, False
        acks = asyncio.get_running_loop().create_task(self._read_acks(reader))
        try:
            await self._write_loop(writer)
        except (ConnectionError, OSError):
            pass
        finally:
            acks.cancel()
            with contextlib.suppress(BaseException):
                await acks
            self.writer = None
            writer.transport.abort()

    async def _write_loop(self, writer: asyncio.StreamWriter) -> None:
        pattern, stats = self.t.pattern, self.t.stats
        while not self.broken:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            key, total = self.queue.popleft()
            self.unacked[key] = total
            payload = pattern.chunk(key)
            writer.write(DATA_HEADER.pack(MAGIC, KIND_DATA, key.flow_id, key.member, key.offset,
                                          key.length, total, zlib.crc32(payload)))
            writer.write(payload)
            stats.chunks_sent += 1
            stats.bytes_sent += key.length
            if writer.transport.get_write_buffer_size() > (1 << 18):
                await writer.drain()
            if writer.transport.is_closing():
                raise ConnectionError("closed")

    async def _read_acks(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                frame = await reader.readexactly(ACK_FRAME.size)
                magic, kind, flow, member, offset, length, status = ACK_FRAME.unpack(frame)
                if magic != MAGIC or kind != KIND_ACK:
                    log.warning("bad ack frame from %s", self.route.dst_addr)
                    break
                self._on_ack(ChunkKey(flow, member, offset, length), status)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.broken = True
            self.wake.set()

    def _on_ack(self, key: ChunkKey, status: int) -> None:
        total = self.unacked.pop(key, None)
        if total is None:
            return
        if status == STATUS_OK:
            self.bad.pop(key, None)
            self.t.events.chunk_acked(self.route, key)
            return
        n = self.bad[key] = self.bad.get(key, 0) + 1
        if n > MAX_BAD_RESENDS:
            self.bad.pop(key)
            self.t.events.chunk_failed(self.route, key, "chunk failed verification repeatedly")
            return
        self.t.stats.chunks_resent += 1
        self.queue.appendleft((key, total))
        self.wake.set()

    def _fail_all(self, reason: str) -> None:
        items = list(self.unacked) + [k for k, _ in self.queue]
        self.unacked.clear()
        self.queue.clear()
        for key in items:
            self.t.events.chunk_failed(self.route, key, reason)


# --- in memory (unit tests only) ----------------------------------------------------------------


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
                 pattern: PayloadPattern | None = None) -> None:
        self.fabric = fabric
        self.addrs = addrs
        self.events = events
        self.pattern = pattern or PayloadPattern()
        self.stats = TransportStats()
        self.ledger = RxLedger(self.pattern, self.stats)
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
        data = bytes(self.pattern.chunk(key))
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
