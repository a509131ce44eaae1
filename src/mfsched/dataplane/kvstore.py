"""Real payload: KV bytes staged in shared memory by a runtime, sent by the daemon, stored by
the receiving daemon until the runtime on that host takes them.

Who calls this: the daemon (:mod:`.daemon`, :mod:`.runstate`) on both ends of a KV flow, the
transports through :class:`PayloadSource` (what a chunk's bytes are) and the receive ledger
(:class:`~.wire.RxLedger`) through :class:`ReceiveStore` (where an arriving chunk's bytes go);
on the runtime's side the vLLM connector (:mod:`mfsched.integrations.vllm.kv_worker`) through
:class:`Segment`.

* A **KV flow** is a flow whose id has :data:`KV_FLOW_BIT` set. Its bytes are real: the runtime
  copied them into a shared-memory :class:`Segment` (a file under ``/dev/shm``, mode 0600) and
  named it in the ``submit`` message; the daemon maps it and sends slices of it (no copy until
  the socket write). Every other flow carries the seeded pattern of :class:`~.wire.PayloadPattern`
  as before (the emulation's synthetic bytes).
* The receiving daemon keeps each KV flow in a segment of its own (:class:`ReceiveStore`),
  written chunk by chunk at the chunk's offset; the ledger's interval merge makes delivery
  exactly once (a duplicate writes the same bytes to the same place). A complete flow waits
  until a local runtime claims it (``kv_claim`` -> ``kv_ready`` with the segment's name), copies
  it and releases it (``kv_release``).
* **Bounded.** The store holds at most ``capacity_bytes``; a chunk of a new flow that does not
  fit is answered BUSY (the sender tries again, the back-pressure of a full store) and logged
  with the store's state. Flows nobody claims within ``ttl_s`` after their last byte
  (requests that never reach decode), incomplete flows without progress for ``ttl_s`` (a
  sender that vanished) and flows claimed by a runtime that disconnected without releasing them
  (a decode engine that is gone) are freed.

Flow ids: the runtime derives them from the request (:func:`kv_flow_id`), so that the decode
side can name the flows of a request it learns about from ``kv_transfer_params`` without asking
the prefill side. A 40-bit key per request, a 8-bit chunk index and a 12-bit layer.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import mmap
import os
import re
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from .wire import ChunkKey, PayloadPattern

__all__ = [
    "KV_FLOW_BIT",
    "KVStoreFull",
    "PayloadSource",
    "ReceiveStore",
    "Segment",
    "is_kv_flow",
    "kv_flow_id",
    "kv_request_key",
    "segment_name_ok",
]

log = logging.getLogger("mfsched.kvstore")

KV_FLOW_BIT = 1 << 61
MAX_LAYERS = 1 << 12
MAX_CHUNKS = 1 << 8
SHM_DIR = "/dev/shm"
_NAME = re.compile(r"^mfskv-[A-Za-z0-9_.-]{1,100}$")


def kv_request_key(engine_id: str, request_id: str) -> int:
    """A 40-bit key for one request of one engine (BLAKE2b of both ids)."""
    digest = hashlib.blake2b(f"{engine_id}\0{request_id}".encode(), digest_size=5).digest()
    return int.from_bytes(digest, "big")


def kv_flow_id(request_key: int, chunk: int, layer: int) -> int:
    """The flow carrying ``layer`` of the ``chunk``-th prefill step of a request."""
    if not (0 <= layer < MAX_LAYERS and 0 <= chunk < MAX_CHUNKS and 0 <= request_key < 1 << 40):
        raise ValueError(f"KV flow id out of range: key {request_key}, chunk {chunk}, "
                         f"layer {layer} (at most {MAX_CHUNKS} chunks, {MAX_LAYERS} layers)")
    return KV_FLOW_BIT | request_key << 20 | chunk << 12 | layer


def is_kv_flow(flow_id: int) -> bool:
    return bool(flow_id & KV_FLOW_BIT)


def segment_name_ok(name: str) -> bool:
    """Segment names are plain file names under /dev/shm starting with ``mfskv-``."""
    return bool(_NAME.match(name))


class KVStoreFull(RuntimeError):
    """A staging area or receive store has no room for a flow."""


class Segment:
    """A shared-memory segment: a file in ``/dev/shm`` mapped into this process.

    Not :mod:`multiprocessing.shared_memory`: before Python 3.13 its resource tracker unlinks
    a segment that another process only attached to when that process exits."""

    __slots__ = ("_map", "buf", "name", "size")

    def __init__(self, name: str, size: int, create: bool) -> None:
        if not segment_name_ok(name):
            raise ValueError(f"bad segment name {name!r}")
        self.name, self.size = name, size
        path = os.path.join(SHM_DIR, name)
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags | os.O_NOFOLLOW, 0o600)
        try:
            if create:
                os.ftruncate(fd, max(size, 1))
            elif os.fstat(fd).st_size < size:
                raise ValueError(f"segment {name} holds {os.fstat(fd).st_size} bytes, "
                                 f"not {size}")
            self._map = mmap.mmap(fd, max(size, 1))
        except BaseException:
            os.close(fd)
            if create:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        os.close(fd)
        self.buf = memoryview(self._map)[:size]

    @classmethod
    def create(cls, name: str, size: int) -> Segment:
        return cls(name, size, True)

    @classmethod
    def attach(cls, name: str, size: int) -> Segment:
        return cls(name, size, False)

    def close(self) -> None:
        """Unmap (the name stays)."""
        if self.buf is not None:
            with contextlib.suppress(BufferError):  # a view still exported: GC unmaps it
                self.buf.release()
                self._map.close()
            self.buf = None

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, self.name))

    def free(self) -> None:
        self.close()
        self.unlink()


class PayloadSource:
    """What a chunk's bytes are: a KV flow's staged segment, or the pattern."""

    def __init__(self, pattern: PayloadPattern | None = None) -> None:
        self.pattern = pattern or PayloadPattern()
        self.segments: dict[int, Segment] = {}

    def attach(self, flow_id: int, name: str, size: int) -> None:
        if flow_id not in self.segments:
            self.segments[flow_id] = Segment.attach(name, size)

    def detach(self, flow_id: int) -> None:
        seg = self.segments.pop(flow_id, None)
        if seg is not None:
            seg.close()

    def chunk(self, key: ChunkKey):
        """The chunk's bytes without a copy, or None for a KV flow no longer staged (it was
        cancelled: the chunk is dropped)."""
        if key.flow_id & KV_FLOW_BIT:
            seg = self.segments.get(key.flow_id)
            return None if seg is None else seg.buf[key.offset:key.offset + key.length]
        return self.pattern.chunk(key)

    def matches(self, key: ChunkKey, data) -> bool:
        return self.pattern.matches(key, data)

    def close(self) -> None:
        for fid in list(self.segments):
            self.detach(fid)


@dataclass
class _Stored:
    segment: Segment
    total: int
    complete: bool = False
    touched_s: float = 0.0
    arrived_wall_s: float = 0.0  # time.time() of the last byte (comparable across processes)
    owner: Hashable | None = None  # the runtime that claimed it


class ReceiveStore:
    """Receiving end of KV flows: one segment per flow, bounded, claimed by local runtimes."""

    def __init__(self, capacity_bytes: int = 1 << 30, ttl_s: float = 60.0,
                 prefix: str | None = None, clock: Callable[[], float] = time.monotonic,
                 on_forget: Callable[[int], None] | None = None) -> None:
        if capacity_bytes <= 0 or ttl_s <= 0:
            raise ValueError("capacity_bytes and ttl_s must be positive")
        self.capacity_bytes = capacity_bytes
        self.ttl_s = ttl_s
        self.prefix = prefix or f"mfskv-rx{os.getpid()}-{os.urandom(3).hex()}"
        self.clock = clock
        self.on_forget = on_forget  # the ledger forgets an incomplete member that was dropped
        self.flows: dict[int, _Stored] = {}
        self.held_bytes = 0
        self.counters = {"kv.flows_stored": 0, "kv.bytes_stored": 0, "kv.flows_claimed": 0,
                         "kv.flows_expired": 0, "kv.flows_orphaned": 0, "kv.full_refusals": 0,
                         "kv.held_bytes_peak": 0}
        self._warned_full_s = -1e9

    # --- the ledger's side --------------------------------------------------------------------

    def write(self, key: ChunkKey, total: int, data) -> bool:
        """Store an arriving chunk of a KV flow; False if the store has no room for a new flow
        (the ledger answers BUSY). Member 0 only (KV flows have one member)."""
        f = self.flows.get(key.flow_id)
        if f is None:
            if self.held_bytes + total > self.capacity_bytes:
                self.counters["kv.full_refusals"] += 1
                now = self.clock()
                if now - self._warned_full_s > 5.0:
                    self._warned_full_s = now
                    log.error("KV receive store full: %d of %d bytes held by %d flows (%d "
                              "complete, not yet claimed); a %d-byte flow waits (raise "
                              "--kv-store-bytes or make the decode side claim faster)",
                              self.held_bytes, self.capacity_bytes, len(self.flows),
                              sum(s.complete for s in self.flows.values()), total)
                return False
            name = f"{self.prefix}-{key.flow_id:x}"
            f = self.flows[key.flow_id] = _Stored(Segment.create(name, total), total)
            self.held_bytes += total
            c = self.counters
            c["kv.held_bytes_peak"] = max(c["kv.held_bytes_peak"], self.held_bytes)
        f.segment.buf[key.offset:key.offset + key.length] = data
        f.touched_s = self.clock()
        return True

    def completed(self, flow_id: int) -> None:
        f = self.flows.get(flow_id)
        if f is not None and not f.complete:
            f.complete = True
            f.touched_s = self.clock()
            f.arrived_wall_s = time.time()
            self.counters["kv.flows_stored"] += 1
            self.counters["kv.bytes_stored"] += f.total

    # --- the runtime's side -------------------------------------------------------------------

    def claim(self, flow_ids: Iterable[int], owner: Hashable) -> list[list]:
        """[flow id, segment name, bytes, arrival wall time] of each of ``flow_ids`` that is
        complete; they are the owner's until released (or until the owner disconnects)."""
        ready = []
        for fid in flow_ids:
            f = self.flows.get(fid)
            if f is not None and f.complete and f.owner in (None, owner):
                if f.owner is None:
                    self.counters["kv.flows_claimed"] += 1
                f.owner = owner
                ready.append([fid, f.segment.name, f.total, f.arrived_wall_s])
        return ready

    def release(self, flow_ids: Iterable[int], owner: Hashable | None = None) -> int:
        n = 0
        for fid in flow_ids:
            f = self.flows.get(fid)
            if f is not None and f.complete and (owner is None or f.owner in (None, owner)):
                self._drop(fid)
                n += 1
        return n

    def owner_gone(self, owner: Hashable) -> int:
        """A runtime disconnected: what it claimed and did not release is freed."""
        gone = [fid for fid, f in self.flows.items() if f.owner == owner]
        for fid in gone:
            self._drop(fid)
        self.counters["kv.flows_orphaned"] += len(gone)
        return len(gone)

    def sweep(self) -> int:
        """Free flows nobody claimed (or that made no progress) for ``ttl_s``."""
        horizon = self.clock() - self.ttl_s
        old = [fid for fid, f in self.flows.items() if f.owner is None and f.touched_s < horizon]
        for fid in old:
            if not self.flows[fid].complete and self.on_forget is not None:
                self.on_forget(fid)
            self._drop(fid)
        self.counters["kv.flows_expired"] += len(old)
        return len(old)

    def _drop(self, flow_id: int) -> None:
        f = self.flows.pop(flow_id)
        self.held_bytes -= f.total
        f.segment.free()

    def close(self) -> None:
        for fid in list(self.flows):
            self._drop(fid)

    def as_pairs(self) -> list[tuple[str, float]]:
        return [(k, float(v)) for k, v in self.counters.items()] + [
            ("kv.held_bytes", float(self.held_bytes)), ("kv.held_flows", float(len(self.flows)))]
