"""What travels on a data connection, and what the receiver keeps of it.

Shared by both ends of the TCP transport (:mod:`.transport` sends, :mod:`.receiver` receives),
by the in-memory transport of the unit tests and by the hostile-peer tests, which speak the
protocol on purpose badly. After the handshake of :mod:`.auth`:

* the sender writes **data frames**: :data:`DATA_HEADER` (magic, kind, sequence number, flow,
  member, byte offset, length, member total, CRC-32) followed by the payload; on an
  authenticated connection the payload is sealed (AES-GCM ciphertext + 16-byte tag, the header
  authenticated with it) and the CRC field is 0;
* the receiver answers each with an **ack**: :data:`ACK_FRAME` (..., status), sealed the same
  way (empty payload, so just the tag), or, when it closes the connection because of the
  sender, one **error frame** (:data:`ERROR_HEAD` + a UTF-8 reason), never sealed.

Payload is deterministic: slices of one seeded 1 MiB pseudo-random buffer at an offset
derived from (flow, member, byte offset), so nothing is stored, a resend is identical and the
receiver checks every byte. The :class:`RxLedger` merges byte intervals per member, so each
byte is delivered once however often it arrives; it forgets completed members after a while
(:class:`~.limits.DataLimits`), so its memory is bounded.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ..traffic_classes import DEFAULT_CLASSES
from .limits import DataLimits, GuardStats
from .netns import so_priority_of_class

__all__ = [
    "ACK_FRAME",
    "DATA_HEADER",
    "ERROR_HEAD",
    "ChunkKey",
    "PayloadPattern",
    "Route",
    "RxLedger",
    "TransportEvents",
    "TransportStats",
    "add_interval",
    "check_chunk",
    "class_socket_options",
    "error_frame",
]

MAGIC = b"MFSD"
# data: magic, kind, seq, flow, member, offset, length, member total, CRC-32
DATA_HEADER = struct.Struct("!4sBQQHQIQI")
ACK_FRAME = struct.Struct("!4sBQQHQIB")  # magic, kind, seq, flow, member, offset, length, status
ERROR_HEAD = struct.Struct("!4sBH")  # magic, kind, reason length (then the reason, UTF-8)
KIND_DATA, KIND_ACK, KIND_ERROR = 1, 2, 3
STATUS_OK, STATUS_BAD, STATUS_BUSY = 0, 1, 2
MAX_CHUNK_BYTES = 1 << 20
MAX_MEMBER_BYTES = 1 << 40
MAX_REASON_BYTES = 240
_PATTERN_BYTES = 1 << 20
_KV_FLOW_BIT = 1 << 61  # kvstore.KV_FLOW_BIT: flows with real payload (kvstore imports wire)


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
    chunks_resent: int = 0  # after a broken connection or a BAD/BUSY ack
    reconnects: int = 0
    handshake_failures: int = 0  # sender: the receiver refused us, or did not prove the key
    peer_errors: int = 0  # sender: error frames received (the receiver closed on us)
    bad_acks: int = 0  # sender: an ack that did not authenticate or came out of order
    bytes_delivered: int = 0  # receiver: first copies only
    bytes_duplicate: int = 0  # receiver: copies of bytes already delivered
    chunks_bad: int = 0  # receiver: failed the length/checksum/content check
    members_complete: int = 0
    members_forgotten_early: int = 0  # receiver: completed members forgotten by count

    def as_pairs(self, prefix: str = "") -> list[tuple[str, float]]:
        return [(prefix + k, float(v)) for k, v in self.__dict__.items()]


class PayloadPattern:
    """The deterministic payload: slices of one seeded pseudo-random buffer."""

    def __init__(self, seed: int = 0x4D4653) -> None:
        body = random.Random(seed).randbytes(_PATTERN_BYTES)
        self._bytes = body + body[:MAX_CHUNK_BYTES]
        self._buf = memoryview(self._bytes)

    @staticmethod
    def start(flow_id: int, member: int, offset: int) -> int:
        return (flow_id * 2654435761 + member * 40503 + offset) % _PATTERN_BYTES

    def chunk(self, key: ChunkKey) -> memoryview:
        """The chunk's bytes, without a copy (for sending)."""
        s = self.start(key.flow_id, key.member, key.offset)
        return self._buf[s:s + key.length]

    def matches(self, key: ChunkKey, data) -> bool:
        """Whether ``data`` (any bytes-like object) is the chunk: one memcmp, no copy.
        (Comparing a memoryview with ``==`` goes element by element: 29 us per 32 KiB.)"""
        s = self.start(key.flow_id, key.member, key.offset)
        return len(data) == key.length and self._bytes.startswith(data, s)


def check_chunk(key: ChunkKey, total: int, max_bytes: int = MAX_CHUNK_BYTES) -> str | None:
    """Why a chunk header is impossible, or None."""
    if not 0 < key.length <= max_bytes:
        return f"chunk length {key.length} outside 1..{max_bytes}"
    if not 0 < total <= MAX_MEMBER_BYTES or key.offset + key.length > total:
        return f"chunk [{key.offset}, {key.offset + key.length}) outside a {total}-byte member"
    return None


def error_frame(reason: str) -> bytes:
    """What a receiver writes before closing a connection because of its peer."""
    text = reason.encode("utf-8", "replace")[:MAX_REASON_BYTES]
    return ERROR_HEAD.pack(MAGIC, KIND_ERROR, len(text)) + text


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
    """Receiver state shared by every connection of one transport: verification and dedup.

    Members with bytes missing are *open* (at most ``max_open_members``: a chunk of a new
    member beyond that is answered BUSY and sent again later). A completed member is
    remembered for ``completed_memory_s`` (and among the last ``max_completed_members``), so
    that late copies of its chunks (a copy of a starved chunk, a resend after a reconnect) are
    counted as duplicates; after that it is forgotten. A copy arriving later still would be
    delivered again: the limits are minutes and hundreds of thousands, far beyond the few
    seconds a copy can stay in a queue."""

    def __init__(self, pattern: PayloadPattern, stats: TransportStats,
                 limits: DataLimits | None = None, guard: GuardStats | None = None,
                 clock: Callable[[], float] = time.monotonic, store=None) -> None:
        self.pattern = pattern
        self.store = store  # a kvstore.ReceiveStore: where KV flows' real bytes go (or None)
        self.stats = stats
        self.limits = limits or DataLimits()
        self.guard = guard or GuardStats()
        self.clock = clock
        self.members: dict[int, _RxMember] = {}  # flow << 16 | member
        self.completed: dict[int, float] = {}  # the same keys -> completion time, oldest first
        self.open_peak = 0

    def receive(self, key: ChunkKey, total: int, crc: int | None,
                data) -> tuple[int, int, bool]:
        """(status, new bytes, member just completed) for one arriving chunk. ``crc`` is None
        on an authenticated connection (the AEAD tag already covered the bytes)."""
        kv = key.flow_id & _KV_FLOW_BIT
        if (len(data) != key.length or (crc is not None and zlib.crc32(data) != crc)
                or (not kv and not self.pattern.matches(key, data))
                or (kv and (self.store is None or key.member != 0))):
            self.stats.chunks_bad += 1
            return STATUS_BAD, 0, False
        mkey = key.flow_id << 16 | key.member
        m = self.members.get(mkey)
        if m is None:
            if mkey in self.completed:
                self.stats.bytes_duplicate += key.length
                return STATUS_OK, 0, False
            if len(self.members) >= self.limits.max_open_members:
                self.guard.members_busy += 1
                return STATUS_BUSY, 0, False
            if kv and not self.store.write(key, total, data):
                return STATUS_BUSY, 0, False  # the store is full: the sender tries again
            m = self.members[mkey] = _RxMember(total)
            self.open_peak = max(self.open_peak, len(self.members))
        elif m.total != total:
            self.stats.chunks_bad += 1
            return STATUS_BAD, 0, False
        elif kv:
            self.store.write(key, total, data)  # real bytes (a duplicate rewrites the same)
        if key.offset == 0 and key.length == total:
            new = total  # the whole member in one chunk (m is new: nothing delivered yet)
        else:
            new = add_interval(m.intervals, key.offset, key.offset + key.length)
        m.delivered += new
        self.stats.bytes_delivered += new
        self.stats.bytes_duplicate += key.length - new
        complete = new > 0 and m.delivered == m.total
        if complete:
            self.stats.members_complete += 1
            del self.members[mkey]
            self._remember(mkey)
            if kv:
                self.store.completed(key.flow_id)
        return STATUS_OK, new, complete

    def forget(self, flow_id: int, member: int = 0) -> None:
        """Drop an open member (its receive buffer was freed: the sender vanished)."""
        self.members.pop(flow_id << 16 | member, None)

    def _remember(self, mkey: int) -> None:
        now = self.clock()
        done = self.completed
        done[mkey] = now
        lim = self.limits
        horizon = now - lim.completed_memory_s
        while done:
            oldest = next(iter(done))
            if done[oldest] >= horizon and len(done) <= lim.max_completed_members:
                break
            if done[oldest] >= horizon:
                self.stats.members_forgotten_early += 1
            del done[oldest]

    def delivered(self, flow_id: int, member: int) -> int:
        """Bytes delivered so far of an open member (0 if it is not open)."""
        m = self.members.get(flow_id << 16 | member)
        return 0 if m is None else m.delivered

    def is_complete(self, flow_id: int, member: int) -> bool:
        """Whether the member completed and is still remembered."""
        return (flow_id << 16 | member) in self.completed

    def as_pairs(self) -> list[tuple[str, float]]:
        return [("ledger.open_members", float(len(self.members))),
                ("ledger.open_members_peak", float(self.open_peak)),
                ("ledger.completed_remembered", float(len(self.completed)))]


# --- sockets -------------------------------------------------------------------------------------


def class_socket_options(hw_class: int) -> list[tuple[int, int, int | bytes]]:
    """Socket options of a data connection of one class (applied before connect)."""
    return [(socket.IPPROTO_IP, socket.IP_TOS, DEFAULT_CLASSES.tos_of(hw_class)),
            (socket.SOL_SOCKET, socket.SO_PRIORITY, so_priority_of_class(hw_class)),
            (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def apply_socket_options(sock: socket.socket, options, congestion: bytes | None) -> None:
    for level, opt, value in options:
        with contextlib.suppress(OSError):  # SO_PRIORITY > 6 needs CAP_NET_ADMIN
            sock.setsockopt(level, opt, value)
    if congestion:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion)
