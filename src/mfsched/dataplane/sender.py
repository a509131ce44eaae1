"""The host's software strict-priority queues: which chunk a NIC sends next (``permit``).

Owned by the daemon (:mod:`mfsched.dataplane.daemon`), one instance per daemon. Every member
of a flow that leaves this server through a NIC is a :class:`MemberTx`. Members wait in one
heap per (NIC, hardware class), ordered by the flow's (level, rank) and then round-robin, so
members with equal priority share the NIC fairly, chunk by chunk; a member striped over c
connections in the model (``share``: NCCL channels, a KV engine's queue pairs) sends c chunks
per turn, as c connections would share a link. A queue may have at most
``window_bytes`` unacknowledged in flight; the kernel's HTB queues on the NIC then serve the
classes in strict priority. So ordering across classes is done by the "hardware", ordering
inside a class (several policy levels may share one, and ranks are unlimited) by this software
queue: the paper's hybrid priority queue (§5).

A promotion moves a member to the heap of its new class; its next chunks use the connection of
that class. Chunks it still has in flight on a lower class for longer than
``promote_copy_after_s`` (starved there, ns-3 scenario e1) are sent again on the new class; the
receiver keeps the first copy. Rate caps (Karuna's pacing) delay a member's next chunk.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..policy.types import Priority
from .transport import ChunkKey, Route

__all__ = ["MemberTx", "SendScheduler", "SenderConfig"]


@dataclass(frozen=True, slots=True)
class SenderConfig:
    chunk_bytes: int = 32 * 1024
    window_bytes: int = 256 * 1024  # in flight per (NIC, hardware class)
    promote_copy_after_s: float = 0.010  # wall seconds; inf disables copies on promotion

    def __post_init__(self) -> None:
        if not (1024 <= self.chunk_bytes <= 1 << 20 and self.window_bytes >= self.chunk_bytes):
            raise ValueError("need 1 KiB <= chunk_bytes <= 1 MiB <= ... and window >= chunk")


class MemberTx:
    """One member being sent: byte accounting, its place in the queues, its pace. Queued
    members are many (100,000 in the load test): the containers only some of them need are
    created on first use."""

    __slots__ = ("acked", "acked_offsets", "cap_bytes_per_s", "cls", "done", "dst_addr",
                 "first_send_s", "flow_id", "index", "inflight", "next_offset", "next_send_s",
                 "nic", "prio", "queued", "retry", "share", "src_addr", "total", "version")

    def __init__(self, flow_id: int, index: int, nic: int, src_addr: str, dst_addr: str,
                 total_bytes: int, share: int = 1) -> None:
        self.flow_id = flow_id
        self.index = index
        self.nic = nic
        self.src_addr = src_addr
        self.dst_addr = dst_addr
        self.total = total_bytes
        self.share = share
        self.next_offset = 0
        self.acked = 0
        self.acked_offsets: set[int] | None = None  # once a chunk was acknowledged
        self.inflight: dict[ChunkKey, list[tuple[Route, float]]] = {}
        self.retry: deque[ChunkKey] | None = None  # once a chunk failed
        self.prio: Priority | None = None
        self.cls = -1
        self.version = 0
        self.queued = False
        self.done = False
        self.cap_bytes_per_s: float | None = None
        self.next_send_s = 0.0
        self.first_send_s = -1.0

    def has_unsent(self) -> bool:
        return bool(self.retry) or self.next_offset < self.total

    def next_chunk(self, chunk_bytes: int) -> ChunkKey:
        if self.retry:
            return self.retry.popleft()
        off = self.next_offset
        length = min(chunk_bytes, self.total - off)
        self.next_offset += length
        return ChunkKey(self.flow_id, self.index, off, length)

    @property
    def remaining(self) -> int:
        return self.total - self.acked


class _Transport:
    def send(self, route: Route, key: ChunkKey, total: int) -> None: ...
    def cancel(self, route: Route, key: ChunkKey) -> bool: ...


class SendScheduler:
    def __init__(self, transport: _Transport, config: SenderConfig,
                 hw_class_of: Callable[[Priority], int],
                 on_member_done: Callable[[MemberTx], None]) -> None:
        self.transport = transport
        self.config = config
        self.hw_class_of = hw_class_of
        self.on_member_done = on_member_done
        self.members: dict[tuple[int, int], MemberTx] = {}
        self.queues: dict[tuple[int, int], list] = {}
        self.inflight: dict[tuple[int, int], int] = {}
        self.copies = 0  # chunks re-sent on a promoted member's new class
        self.promotions = 0  # members moved to a higher hardware class
        self._seq = itertools.count()
        self._loop = asyncio.get_running_loop()

    # --- members -----------------------------------------------------------------------------

    def add(self, m: MemberTx) -> None:
        self.members[(m.flow_id, m.index)] = m

    def set_priority(self, m: MemberTx, prio: Priority) -> None:
        cls = self.hw_class_of(prio)
        promoted = 0 <= cls < m.cls
        m.prio, m.cls = prio, cls
        m.version += 1
        m.queued = False
        if promoted:
            self.promotions += 1
            self._copy_starved(m)
        self._push(m)

    def set_rate_cap(self, m: MemberTx, cap_bytes_per_s: float | None) -> None:
        m.cap_bytes_per_s = cap_bytes_per_s if cap_bytes_per_s and cap_bytes_per_s > 0 else None
        if m.cap_bytes_per_s is None:
            m.next_send_s = 0.0

    def forget_flow(self, flow_id: int, indices) -> None:
        for i in indices:
            m = self.members.get((flow_id, i))
            if m is not None and not m.inflight:
                del self.members[(flow_id, i)]

    def drop(self, m: MemberTx) -> None:
        """Stop sending a member (its flow was cancelled): queued and unacknowledged chunks
        are cancelled, its window share is given back."""
        m.done = True
        m.queued = False
        for key, routes in list(m.inflight.items()):
            for route, _ in list(routes):
                self.transport.cancel(route, key)
                self._release(m, key, route)
        self.members.pop((m.flow_id, m.index), None)

    def _push(self, m: MemberTx) -> None:
        if m.queued or m.done or m.prio is None or not m.has_unsent():
            return
        m.queued = True
        heap = self.queues.setdefault((m.nic, m.cls), [])
        heapq.heappush(heap, (m.prio.level, m.prio.rank, next(self._seq), m.version, m))

    # --- permits ------------------------------------------------------------------------------

    def pump(self) -> None:
        """Permit chunks, best first, while each (NIC, class) has window left."""
        now = self._loop.time()
        window = self.config.window_bytes
        for qkey, heap in self.queues.items():
            room = window - self.inflight.get(qkey, 0)
            while heap and room > 0:
                _, _, _, version, m = heapq.heappop(heap)
                if version != m.version or not m.queued:
                    continue
                m.queued = False
                if m.done or not m.has_unsent():
                    continue
                if m.next_send_s > now:
                    self._loop.call_at(m.next_send_s, self._unpark, m, m.version)
                    continue
                for _ in range(m.share):  # one chunk per connection of the member per turn
                    if room <= 0 or not m.has_unsent() or m.next_send_s > now:
                        break
                    key = m.next_chunk(self.config.chunk_bytes)
                    self._send(m, key, m.cls, now)
                    room -= key.length
                self._push(m)

    def _unpark(self, m: MemberTx, version: int) -> None:
        if m.version == version:
            self._push(m)
            self.pump()

    def _send(self, m: MemberTx, key: ChunkKey, cls: int, now: float) -> None:
        route = Route(m.src_addr, m.dst_addr, cls)
        self.transport.send(route, key, m.total)
        m.inflight.setdefault(key, []).append((route, now))
        qkey = (m.nic, cls)
        self.inflight[qkey] = self.inflight.get(qkey, 0) + key.length
        if m.first_send_s < 0:
            m.first_send_s = now
        if m.cap_bytes_per_s:
            m.next_send_s = max(now, m.next_send_s) + key.length / m.cap_bytes_per_s

    def _copy_starved(self, m: MemberTx) -> None:
        """After a promotion: send again, on the new class, chunks stuck in a lower one."""
        now = self._loop.time()
        limit = self.config.promote_copy_after_s
        for key, routes in list(m.inflight.items()):
            if m.acked_offsets is not None and key.offset in m.acked_offsets:
                continue
            if all(r.hw_class > m.cls and now - t >= limit for r, t in routes):
                self._send(m, key, m.cls, now)
                self.copies += 1

    # --- transport events -----------------------------------------------------------------------

    def _release(self, m: MemberTx, key: ChunkKey, route: Route) -> bool:
        routes = m.inflight.get(key)
        if not routes:
            return False
        for i, (r, _) in enumerate(routes):
            if r == route:
                del routes[i]
                qkey = (m.nic, route.hw_class)
                self.inflight[qkey] -= key.length
                if not routes:
                    del m.inflight[key]
                return True
        return False

    def chunk_acked(self, route: Route, key: ChunkKey) -> None:
        m = self.members.get((key.flow_id, key.member))
        if m is None or not self._release(m, key, route):
            return
        if m.acked_offsets is None:
            m.acked_offsets = set()
        if key.offset not in m.acked_offsets:
            m.acked_offsets.add(key.offset)
            m.acked += key.length
            for r, _ in list(m.inflight.get(key, ())):
                if self.transport.cancel(r, key):
                    self._release(m, key, r)
        if m.acked >= m.total and not m.done:
            m.done = True
            self.on_member_done(m)
        if m.done and not m.inflight:
            self.members.pop((m.flow_id, m.index), None)

    def chunk_failed(self, route: Route, key: ChunkKey) -> None:
        m = self.members.get((key.flow_id, key.member))
        if m is None or not self._release(m, key, route):
            return
        acked = m.acked_offsets is not None and key.offset in m.acked_offsets
        if not acked and key not in m.inflight:
            if m.retry is None:
                m.retry = deque()
            m.retry.append(key)
            self._push(m)

    # --- what the policy's progress view reads ---------------------------------------------

    def rate_bytes_per_s(self, m: MemberTx) -> float:
        if m.first_send_s < 0:
            return 0.0
        elapsed = self._loop.time() - m.first_send_s
        return m.acked / elapsed if elapsed > 0 else 0.0

    def queued_bytes(self) -> int:
        return sum(m.total - m.acked for m in self.members.values() if not m.done)
