"""Moving real bytes: chunked, sealed, acknowledged, resumable transfers over TCP (asyncio).

The daemon (:mod:`mfsched.dataplane.daemon`) cuts each member of a flow into chunks and hands
every chunk to :meth:`TcpTransport.send` together with a :class:`Route`: source address,
destination address and hardware class. The transport keeps **one TCP connection per route**;
a connection's class never changes (its socket has ``IP_TOS = DSCP << 2`` and ``SO_PRIORITY``
set once, before connecting). So a flow promoted at a layer boundary sends its next chunks on
the connection of its new class; data already queued in the old class is never re-marked and
never reordered behind itself (ns-3 scenarios e1/e2 in ``../shared/tools/ns3ref``). The daemon
may also re-send a promoted member's unacknowledged chunks on the new class (the receiver keeps
the first copy), so a starved chunk cannot hold the flow back. When the first connection to a
destination opens in some class, the connections of every higher data class to it open too:
a promotion then never waits for a TCP and an authentication handshake.

Every connection starts with the handshake of :mod:`.auth` (both sides prove they know the
run's key; per-connection keys) unless the transport runs without a key; then chunks go out as
data frames (:mod:`.wire`), sealed with AES-GCM. The accepting side is :mod:`.receiver`.

Exactly-once delivery: every chunk is acknowledged by the receiver after its checks. The sender
keeps chunks until their ack; when a connection breaks it reconnects (with backoff, up to
``reconnect_timeout_s``) and sends every unacknowledged chunk again, on a new connection with
new keys and sequence numbers. The receiver's :class:`~.wire.RxLedger` merges byte intervals
per member, so each byte is delivered once however often it arrives. A chunk acknowledged on
another route (a promoted copy) is cancelled here, also when already written, so that a later
reconnect does not send it once more.

:class:`mfsched.dataplane.memtransport.MemoryTransport` implements the same interface without
sockets, for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import zlib
from collections import deque
from collections.abc import Callable

from .auth import SERVER_HELLO, AuthError, ClientHandshake, RunKey, Session
from .limits import DataLimits, GuardStats
from .receiver import Listener
from .wire import (
    ACK_FRAME,
    DATA_HEADER,
    ERROR_HEAD,
    KIND_ACK,
    KIND_DATA,
    KIND_ERROR,
    MAGIC,
    STATUS_BUSY,
    STATUS_OK,
    ChunkKey,
    PayloadPattern,
    Route,
    RxLedger,
    TransportEvents,
    TransportStats,
    apply_socket_options,
    class_socket_options,
)

__all__ = [
    "ChunkKey",
    "PayloadPattern",
    "Route",
    "RxLedger",
    "TcpTransport",
    "TransportEvents",
    "TransportStats",
]

log = logging.getLogger("mfsched.transport")

MAX_BAD_RESENDS = 5
BUSY_RETRY_S = 0.05  # the receiver had too many open members: send the chunk again after this
WRITE_HIGH_BYTES = 1 << 18  # above this much unsent in the socket's buffer, wait for it
FIRST_DATA_CLASS = 1


class PeerRefused(Exception):
    """The receiver closed the connection and said why (an error frame)."""


class TcpTransport:
    """Sender and receiver of one daemon: listens on ``port`` of every local address."""

    def __init__(self, listen_addrs: list[str], port: int, events: TransportEvents, *,
                 key: RunKey | None = None, limits: DataLimits | None = None,
                 guard: GuardStats | None = None, pattern: PayloadPattern | None = None,
                 store=None, reconnect_timeout_s: float = 30.0, congestion: bytes | None = b"cubic",
                 socket_options: Callable[[int], list] = class_socket_options) -> None:
        self.listen_addrs = listen_addrs
        self.port = port
        self.events = events
        self.key = key
        self.limits = limits or DataLimits()
        self.pattern = pattern or PayloadPattern()
        self.stats = TransportStats()
        self.guard = guard or GuardStats()
        self.ledger = RxLedger(self.pattern, self.stats, self.limits, self.guard, store=store)
        self.listener = Listener(listen_addrs, port, key, self.limits, self.ledger, events,
                                 self.guard)
        self.reconnect_timeout_s = reconnect_timeout_s
        self.congestion = congestion
        self.socket_options = socket_options
        self._conns: dict[Route, _TcpConnection] = {}
        self._warned: dict[str, int] = {}

    async def start(self) -> None:
        await self.listener.start()

    def use_payloads(self, source, store) -> None:
        """Real payload: chunks' bytes from ``source`` (a kvstore.PayloadSource), KV flows'
        arriving bytes into ``store`` (a kvstore.ReceiveStore)."""
        self.pattern = self.ledger.pattern = source
        self.ledger.store = store

    def send(self, route: Route, key: ChunkKey, total: int) -> None:
        conn = self._conns.get(route)
        if conn is None:
            conn = self._open(route)
            for c in range(FIRST_DATA_CLASS, route.hw_class):  # ready for promotions
                r = Route(route.src_addr, route.dst_addr, c)
                if r not in self._conns:
                    self._open(r)
        conn.enqueue(key, total)

    def _open(self, route: Route) -> _TcpConnection:
        conn = self._conns[route] = _TcpConnection(self, route)
        return conn

    def cancel(self, route: Route, key: ChunkKey) -> bool:
        """Forget a chunk on ``route`` (a copy elsewhere was acknowledged): not yet written,
        or written but not acknowledged (it will not be sent again after a reconnect)."""
        conn = self._conns.get(route)
        return conn is not None and conn.cancel(key)

    def break_connections(self) -> int:
        """Abort every outgoing connection (tests): they reconnect and resend."""
        n = 0
        for conn in self._conns.values():
            n += conn.abort()
        return n

    async def close(self) -> None:
        await self.listener.close()
        for conn in list(self._conns.values()):
            await conn.close()

    def as_pairs(self) -> list[tuple[str, float]]:
        """Counters for the owner's stats (the guard counters are the owner's to report)."""
        return (self.stats.as_pairs("transport.") + self.ledger.as_pairs()
                + self.listener.as_pairs()
                + [("transport.connections_out", float(len(self._conns)))])

    def warn(self, kind: str, text: str) -> None:
        """Log a sender-side problem: the first few of each kind, then every 100th."""
        n = self._warned[kind] = self._warned.get(kind, 0) + 1
        if n <= 5 or n % 100 == 0:
            log.warning("%s (#%d)", text, n)


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
        self.session: Session | None = None
        self.task = asyncio.get_running_loop().create_task(self._run())

    def enqueue(self, key: ChunkKey, total: int) -> None:
        w = self.writer
        if (w is not None and not self.queue and not self.broken
                and w.transport.get_write_buffer_size() < WRITE_HIGH_BYTES):
            self._write(w, key, total)  # the common case: no task switch before the bytes go
            return
        self.queue.append((key, total))
        self.wake.set()

    def cancel(self, key: ChunkKey) -> bool:
        if self.unacked.pop(key, None) is not None:
            return True
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

    # --- connecting ---------------------------------------------------------------------------

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            apply_socket_options(sock, self.t.socket_options(self.route.hw_class),
                                 self.t.congestion)
            sock.setblocking(False)
            sock.bind((self.route.src_addr, 0))
            await asyncio.wait_for(loop.sock_connect(sock, (self.route.dst_addr, self.t.port)),
                                   5.0)
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, limit=1 << 16)

    async def _handshake(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> Session:
        hs = ClientHandshake(self.t.key, self.route.hw_class)
        writer.write(hs.hello)
        head = await reader.readexactly(4)
        if head == MAGIC:  # an error frame instead of the server hello
            raise PeerRefused(await _read_error(reader, head))
        reply = head + await reader.readexactly(SERVER_HELLO.size - 4)
        auth, session = hs.finish(reply)
        writer.write(auth)
        return session

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff, down_since, first = 0.02, None, True
        limit_s = self.t.limits.handshake_timeout_s
        while True:
            writer = None
            try:
                reader, writer = await self._connect()
                session = await asyncio.wait_for(self._handshake(reader, writer), limit_s)
            except (TimeoutError, OSError, AuthError, PeerRefused,
                    asyncio.IncompleteReadError) as e:
                if writer is not None:
                    writer.transport.abort()
                    self.t.stats.handshake_failures += 1
                    why = str(e) or type(e).__name__
                    self.t.warn("handshake", f"{self.route.dst_addr} class "
                                f"{self.route.hw_class}: handshake failed: {why}")
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
            await self._session(reader, writer, session)

    def _requeue_unacked(self) -> None:
        if self.unacked:
            self.t.stats.chunks_resent += len(self.unacked)
            self.queue.extendleft(reversed(list(self.unacked.items())))
            self.unacked.clear()

    # --- sending and acks ----------------------------------------------------------------------

    async def _session(self, reader, writer, session: Session) -> None:
        self.session, self.broken = session, False
        acks = asyncio.get_running_loop().create_task(self._read_acks(reader, session))
        self.writer = writer
        try:
            await self._write_loop(writer)
        except (ConnectionError, OSError):
            pass
        finally:
            self.writer = None
            acks.cancel()
            with contextlib.suppress(BaseException):
                await acks
            writer.transport.abort()

    def _write(self, writer: asyncio.StreamWriter, key: ChunkKey, total: int) -> None:
        payload = self.t.pattern.chunk(key)
        if payload is None:
            return  # a cancelled KV flow's chunk: its staged bytes are gone
        sealer = self.session.sealer
        seq = sealer.next_seq()
        crc = 0 if self.session.authenticated else zlib.crc32(payload)
        header = DATA_HEADER.pack(MAGIC, KIND_DATA, seq, key.flow_id, key.member, key.offset,
                                  key.length, total, crc)
        writer.write(sealer.frame(seq, header, payload))
        self.unacked[key] = total
        stats = self.t.stats
        stats.chunks_sent += 1
        stats.bytes_sent += key.length

    async def _write_loop(self, writer: asyncio.StreamWriter) -> None:
        while not self.broken:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            key, total = self.queue.popleft()
            self._write(writer, key, total)
            if writer.transport.get_write_buffer_size() > WRITE_HIGH_BYTES:
                await writer.drain()
            if writer.transport.is_closing():
                raise ConnectionError("closed")

    async def _read_acks(self, reader: asyncio.StreamReader, session: Session) -> None:
        opener = session.opener
        size = ACK_FRAME.size + opener.tag_bytes
        try:
            while True:
                try:
                    frame = await reader.readexactly(size)
                except asyncio.IncompleteReadError as e:
                    if e.partial[:4] == MAGIC and e.partial[4:5] == bytes([KIND_ERROR]):
                        self._peer_error(e.partial)
                    break
                if frame[4] != KIND_ACK or frame[:4] != MAGIC:
                    if frame[:4] == MAGIC and frame[4] == KIND_ERROR:
                        self._peer_error(frame + await reader.read(1024))
                    else:
                        self.t.stats.bad_acks += 1
                        self.t.warn("ack", f"bad ack frame from {self.route.dst_addr}")
                    break
                head = frame[:ACK_FRAME.size]
                _, _, seq, flow, member, offset, length, status = ACK_FRAME.unpack(head)
                try:
                    opener.open(seq, head, frame[ACK_FRAME.size:])
                except AuthError as e:
                    self.t.stats.bad_acks += 1
                    self.t.warn("ack", f"ack from {self.route.dst_addr}: {e}")
                    break
                self._on_ack(ChunkKey(flow, member, offset, length), status)
        except (ConnectionError, OSError):
            pass
        finally:
            self.broken = True
            self.wake.set()

    def _peer_error(self, data: bytes) -> None:
        self.t.stats.peer_errors += 1
        _, _, n = ERROR_HEAD.unpack_from(data.ljust(ERROR_HEAD.size, b"\0"))
        reason = data[ERROR_HEAD.size:ERROR_HEAD.size + n].decode("utf-8", "replace")
        self.t.warn("peer", f"{self.route.dst_addr} closed class {self.route.hw_class}: "
                    f"{reason}")

    def _on_ack(self, key: ChunkKey, status: int) -> None:
        total = self.unacked.pop(key, None)
        if total is None:
            return
        if status == STATUS_OK:
            self.bad.pop(key, None)
            self.t.events.chunk_acked(self.route, key)
            return
        self.t.stats.chunks_resent += 1
        if status == STATUS_BUSY:
            asyncio.get_running_loop().call_later(BUSY_RETRY_S, self.enqueue, key, total)
            return
        n = self.bad[key] = self.bad.get(key, 0) + 1
        if n > MAX_BAD_RESENDS:
            self.bad.pop(key)
            self.t.events.chunk_failed(self.route, key, "chunk failed verification repeatedly")
            return
        self.queue.appendleft((key, total))
        self.wake.set()

    def _fail_all(self, reason: str) -> None:
        items = list(self.unacked) + [k for k, _ in self.queue]
        self.unacked.clear()
        self.queue.clear()
        for key in items:
            self.t.events.chunk_failed(self.route, key, reason)


async def _read_error(reader: asyncio.StreamReader, magic: bytes) -> str:
    rest = await reader.read(ERROR_HEAD.size - 4 + 1024)
    data = magic + rest
    if len(data) < ERROR_HEAD.size or data[4] != KIND_ERROR:
        return "an unexpected reply instead of the server hello"
    _, _, n = ERROR_HEAD.unpack_from(data)
    return data[ERROR_HEAD.size:ERROR_HEAD.size + n].decode("utf-8", "replace")


# --- in memory (unit tests only) ----------------------------------------------------------------
