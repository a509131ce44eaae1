"""The accepting side of a daemon's data transport: handshakes, frames, acks, and their limits.

:class:`~.transport.TcpTransport` starts one :class:`Listener` on its addresses; each accepted
connection is an :class:`RxConnection`, a buffered protocol (bytes are received straight into
its own buffer, frames are checked in place) that goes through three states:

1. ``hello``: the peer's :data:`~.auth.CLIENT_HELLO`; answered with the server hello;
2. ``auth``: the peer's :data:`~.auth.CLIENT_AUTH`; both must arrive within
   ``handshake_timeout_s`` of the accept, and the peer must prove it knows the run key;
3. ``frames``: data frames (:mod:`.wire`), each opened (:class:`~.auth.Opener`: in sequence and
   authentic), verified and recorded by the shared :class:`~.wire.RxLedger`, and acknowledged.

Whatever a peer does wrong closes its connection after an error frame that says why, and
counts in :class:`~.limits.GuardStats`: a refused connection (too many from that peer or in
all, or a descriptor select() cannot watch), an unauthenticated connection evicted by newer
ones, a failed or slow handshake, a frame that is malformed, too long, forged or replayed, a
frame that does not complete in time (``frame_timeout_s + length / frame_min_bytes_per_s``:
trickling peers), receive buffers beyond the peer's budget. Nothing a peer sends is buffered
beyond the frame it is in; a legitimate sender reconnects and sends its unacknowledged chunks
again. Deadlines are checked by one sweep timer per listener, not a timer per frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from .auth import CLIENT_AUTH, CLIENT_HELLO, AuthError, ServerHandshake, Session
from .limits import DataLimits, GuardStats, PeerTable
from .netns import CONTROL_CLASS, HW_CLASSES
from .wire import (
    ACK_FRAME,
    DATA_HEADER,
    KIND_ACK,
    KIND_DATA,
    MAGIC,
    ChunkKey,
    RxLedger,
    TransportEvents,
    apply_socket_options,
    check_chunk,
    class_socket_options,
    error_frame,
)

__all__ = ["Listener", "RxConnection"]

log = logging.getLogger("mfsched.receiver")

_HELLO, _AUTH, _FRAMES, _CLOSED = 0, 1, 2, 3
_PREAUTH_BYTES = CLIENT_HELLO.size + CLIENT_AUTH.size
_FRAME_BUFFER_BYTES = 128 * 1024  # after the handshake; grows for longer frames
_H = DATA_HEADER.size
_DISCARD = bytearray(4096)  # where a closing connection's last bytes go


class Listener:
    """Accepts data connections on ``port`` of every local address."""

    def __init__(self, addrs: list[str], port: int, key, limits: DataLimits,
                 ledger: RxLedger, events: TransportEvents, guard: GuardStats) -> None:
        self.addrs = addrs
        self.port = port
        self.key = key
        self.limits = limits
        self.ledger = ledger
        self.events = events
        self.guard = guard
        self.peers = PeerTable(limits, guard)
        self.conns: set[RxConnection] = set()
        self.class_rx_bytes = [0] * HW_CLASSES
        self.class_first_rx_s = [0.0] * HW_CLASSES  # loop time of the first data byte
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self._notes: dict[str, int] = {}

    async def start(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        for addr in self.addrs:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            apply_socket_options(sock, class_socket_options(CONTROL_CLASS), None)
            sock.bind((addr, self.port))
            self._servers.append(await loop.create_server(lambda: RxConnection(self),
                                                          sock=sock, backlog=512))
        lim = self.limits
        self._sweep_s = max(0.05, min(1.0, lim.handshake_timeout_s / 4, lim.frame_timeout_s / 4))
        self._sweeper = loop.call_later(self._sweep_s, self._sweep)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for srv in self._servers:
            srv.close()
        for conn in list(self.conns):
            conn.abort()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 1.0)

    def _sweep(self) -> None:
        now = self.loop.time()
        for conn in list(self.conns):
            if 0.0 < conn.deadline_s <= now:
                conn.expire()
        self._sweeper = self.loop.call_later(self._sweep_s, self._sweep)

    def note(self, kind: str, peer: str, reason: str) -> None:
        """Log refused traffic: the first few of each kind, then every 1000th (a flood must
        not flood the log too); the counters have every one."""
        n = self._notes[kind] = self._notes.get(kind, 0) + 1
        if n <= 5 or n % 1000 == 0:
            log.warning("data connection from %s closed (%s, #%d): %s", peer, kind, n, reason)

    def as_pairs(self) -> list[tuple[str, float]]:
        pairs = [("rx.connections", float(self.peers.total)),
                 ("rx.connections_preauth", float(len(self.peers.preauth))),
                 ("rx.buffer_bytes", float(sum(self.peers.buffers.values())))]
        for c in range(HW_CLASSES):
            if self.class_rx_bytes[c]:
                pairs.append((f"rx.class{c}.bytes", float(self.class_rx_bytes[c])))
                pairs.append((f"rx.class{c}.first_s", self.class_first_rx_s[c]))
        return pairs


class RxConnection(asyncio.BufferedProtocol):
    """One accepted connection (see the module docstring)."""

    def __init__(self, listener: Listener) -> None:
        self.l = listener
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.state = _HELLO
        self.buf = bytearray(_PREAUTH_BYTES)
        self.view = memoryview(self.buf)
        self.pos = 0  # next unparsed byte
        self.end = 0  # end of received bytes
        self.deadline_s = 0.0  # 0: none
        self.counted = False
        self.hs: ServerHandshake | None = None
        self.session: Session | None = None
        self.acks: list[bytes] = []
        self.refused = False

    # --- asyncio callbacks ----------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if peername else "?"
        lis = self.l
        reason = lis.peers.admit(self.peer, sock.fileno() if sock is not None else -1)
        if reason is not None:
            self._refuse("refused", reason)
            return
        self.counted = True
        lis.conns.add(self)
        if sock is not None:
            apply_socket_options(sock, class_socket_options(CONTROL_CLASS), None)
        lis.peers.resize_buffer(self.peer, 0, len(self.buf))
        self.hs = ServerHandshake(lis.key)
        self.deadline_s = lis.loop.time() + lis.limits.handshake_timeout_s
        oldest = lis.peers.start_handshake(self)
        if isinstance(oldest, RxConnection):
            oldest._refuse("evicted", "too many unauthenticated connections; closed the oldest")

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.state == _CLOSED:
            return memoryview(_DISCARD)
        free = len(self.buf) - self.end
        if free < len(self.buf) // 4 and self.pos:  # no tiny reads: move the partial frame up
            self._compact()
            free = len(self.buf) - self.end
        if not free:  # cannot happen: _frame grows the buffer for a frame longer than it
            self._refuse("malformed", "receive buffer full")
            return memoryview(_DISCARD)
        return self.view[self.end:]

    def buffer_updated(self, nbytes: int) -> None:
        if self.state == _CLOSED:
            return
        self.end += nbytes
        self._parse()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            self._drain()
        if self.state != _CLOSED and self.end > self.pos:
            self.l.guard.truncated += 1
            self.l.note("truncated", self.peer, "ended inside a frame or a handshake")
        elif self.state == _AUTH:  # the peer left after our hello: it could not check our tag
            self.l.guard.handshake_failed += 1
            self.l.note("abandoned", self.peer, "left during the handshake")
        self.state = _CLOSED
        self._forget()

    # --- closing --------------------------------------------------------------------------------

    def abort(self) -> None:
        self.state = _CLOSED
        if self.transport is not None:
            self.transport.abort()
        self._forget()

    def expire(self) -> None:
        if self.state in (_HELLO, _AUTH):
            self.l.guard.handshake_timeouts += 1
            self._refuse("handshake_timeout", "handshake not completed in time")
        else:
            self.l.guard.frame_timeouts += 1
            self._refuse("frame_timeout", "frame not completed in time")

    def _refuse(self, kind: str, reason: str) -> None:
        """Tell the peer why, close, forget."""
        self.l.note(kind, self.peer, reason)
        self.state = _CLOSED
        self.refused = True
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self.transport.write(error_frame(reason))
            self.transport.close()
        self._forget()

    def _drain(self) -> None:
        """Read what the peer sent before we close (called just before the socket is closed):
        a socket closed with unread data resets the connection and may drop the error frame
        we just wrote. Bounded: a peer still sending after 256 KiB gets the reset."""
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            for _ in range(4):
                if not os.read(sock.fileno(), 1 << 16):
                    break

    def _forget(self) -> None:
        if self.counted:
            self.counted = False
            self.l.conns.discard(self)
            self.l.peers.release(self, self.peer, len(self.buf))
        self.deadline_s = 0.0

    # --- buffer -------------------------------------------------------------------------------

    def _compact(self) -> None:
        n = self.end - self.pos
        if self.pos:
            self.buf[0:n] = self.buf[self.pos:self.end]
        self.pos, self.end = 0, n

    def _resize(self, size: int) -> bool:
        """A buffer of ``size`` bytes holding the unparsed bytes, within the peer's budget."""
        if not self.l.peers.resize_buffer(self.peer, len(self.buf), size):
            self._refuse("buffer", f"receive buffers of {self.peer} would exceed "
                                   f"{self.l.limits.max_buffer_bytes_per_peer} bytes")
            return False
        new = bytearray(size)
        n = self.end - self.pos
        new[0:n] = self.buf[self.pos:self.end]
        self.view.release()
        self.buf, self.view = new, memoryview(new)
        self.pos, self.end = 0, n
        return True

    # --- parsing ------------------------------------------------------------------------------

    def _parse(self) -> None:
        lis = self.l
        now = lis.loop.time()
        progressed = False
        pending = 0  # length of the frame waiting for more bytes
        try:
            while self.state != _CLOSED:
                avail = self.end - self.pos
                if self.state == _FRAMES:
                    if avail < _H:
                        break
                    n = self._frame(avail, now)
                    if n <= 0:
                        pending = -n
                        break
                    self.pos += n
                    progressed = True
                elif self.state == _HELLO:
                    if avail < CLIENT_HELLO.size:
                        break
                    reply = self.hs.respond(self.view[self.pos:self.pos + CLIENT_HELLO.size])
                    self.pos += CLIENT_HELLO.size
                    self.state = _AUTH
                    self.transport.write(reply)
                else:  # _AUTH
                    if avail < CLIENT_AUTH.size:
                        break
                    self.session = self.hs.finish(self.view[self.pos:self.pos + CLIENT_AUTH.size])
                    self.pos += CLIENT_AUTH.size
                    self.hs = None
                    self.state = _FRAMES
                    self.deadline_s = 0.0
                    lis.peers.authenticated(self)
                    if not self._resize(_FRAME_BUFFER_BYTES):
                        return
        except AuthError as e:
            self._flush_acks()
            if self.state == _FRAMES:
                setattr(lis.guard, e.kind, getattr(lis.guard, e.kind) + 1)
            else:
                lis.guard.handshake_failed += 1
            self._refuse(e.kind, str(e))
            return
        self._flush_acks()
        if self.state == _CLOSED:
            return
        if self.pos == self.end:
            self.pos = self.end = 0
            if self.state == _FRAMES:
                self.deadline_s = 0.0
        elif self.state == _FRAMES and (progressed or self.deadline_s == 0.0):
            self.deadline_s = now + lis.limits.frame_deadline_s(pending)

    def _flush_acks(self) -> None:
        if self.acks:
            if not self.transport.is_closing():
                self.transport.write(b"".join(self.acks))
            self.acks.clear()

    def _frame(self, avail: int, now: float) -> int:
        """Handle the frame at ``pos``: its size once done, or minus its payload length if it
        is not all here yet (0 if it closed the connection)."""
        lis, buf, pos = self.l, self.buf, self.pos
        magic, kind, seq, flow, member, offset, length, total, crc = \
            DATA_HEADER.unpack_from(buf, pos)
        if magic != MAGIC or kind != KIND_DATA:
            lis.guard.malformed += 1
            self._refuse("malformed", "not a data frame")
            return 0
        key = ChunkKey(flow, member, offset, length)
        problem = check_chunk(key, total, lis.limits.max_frame_payload_bytes)
        if problem is not None:
            too_long = length > lis.limits.max_frame_payload_bytes
            if too_long:
                lis.guard.oversize += 1
            else:
                lis.guard.malformed += 1
            self._refuse("oversize" if too_long else "malformed", problem)
            return 0
        session = self.session
        cls = session.hw_class
        if not lis.class_first_rx_s[cls]:
            lis.class_first_rx_s[cls] = now
        size = _H + length + session.opener.tag_bytes
        if avail < size:
            if size > len(buf):
                self._resize(size)
            return -length
        lis.class_rx_bytes[cls] += length
        view = self.view
        payload = session.opener.open(seq, view[pos:pos + _H], view[pos + _H:pos + size])
        status, new, complete = lis.ledger.receive(key, total, None if session.authenticated
                                                 else crc, payload)
        sealer = session.sealer
        ack_seq = sealer.next_seq()
        ack = ACK_FRAME.pack(MAGIC, KIND_ACK, ack_seq, flow, member, offset, length, status)
        self.acks.append(sealer.frame(ack_seq, ack, b""))
        if new:
            lis.events.member_received(flow, member, new, total, complete)
        return size
