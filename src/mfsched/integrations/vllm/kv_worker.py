"""Worker side of ``MFSKVConnector``: KV bytes out of the paged cache into the daemon, and back.

Who calls this: :class:`~mfsched.integrations.vllm.kv_connector.MFSKVConnector` in each vLLM
worker process (role WORKER), from its hooks.

* **Prefill (a KV producer).** ``save_kv_layer`` -> :meth:`KVWorker.stage_layer`: for every
  request of the step that goes to a decode instance, the tokens computed in this step are
  gathered from the layer's cache (:class:`~.kv_layout.TokenView`, one copy) and written into
  a fresh shared-memory segment (a second copy); the segment's name, the KV flow id of (request,
  prefill chunk, layer) and the decode host go to the gate, which submits the Stage-3 flow to
  the local daemon with the request's deadline. The cache blocks are free to reuse as soon as
  the step's last layer is staged. A segment is freed when the daemon reports the flow
  complete, when the scheduler side says the request was aborted, or after ``kv_ttl_s``
  without completion (the flow is cancelled: the decode host is gone). Staged bytes are
  bounded by ``kv_staging_bytes``: a save beyond it raises :class:`KVStoreFull`.
* **Decode (a KV consumer).** The scheduler side hands over, once per request, the blocks vLLM
  allocated and the flows the prefill side announced. :meth:`KVWorker.finished_loads` (from
  ``get_finished``, every step) asks the local daemon which flows have arrived (``kv_claim``);
  once every flow of a request is there it maps their segments, scatters each layer's tokens
  into the cache (one copy), releases them (``kv_release``) and reports the request as
  received. A load cancelled by the scheduler side releases what it claimed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch

from ...dataplane.client import DaemonClient
from ...dataplane.kvstore import KVStoreFull, Segment, kv_flow_id
from .gate import DaemonGate, KVPayload
from .kv_layout import TokenView

__all__ = ["KVLoad", "KVSave", "KVWorker"]

log = logging.getLogger("mfsched.vllm.kv")


@dataclass(frozen=True, slots=True)
class KVSave:
    """Tokens ``start..end-1`` of a request, computed in this step, to send (prefill side)."""

    req_id: str
    key: int  # kvstore.kv_request_key
    chunk: int  # the request's how-many-th prefill step (0 first)
    start: int
    end: int
    block_ids: tuple[int, ...]
    dst_server: int


@dataclass(frozen=True, slots=True)
class KVLoad:
    """A request whose KV a prefill instance sends (decode side): its blocks here, the chunks
    the prefill side staged (token ranges), and the first token not computed locally."""

    req_id: str
    key: int
    chunks: tuple[tuple[int, int], ...]
    num_layers: int
    block_ids: tuple[int, ...]
    first_token: int

    def flow_ids(self) -> list[int]:
        return [kv_flow_id(self.key, c, layer) for c in range(len(self.chunks))
                for layer in range(self.num_layers)]


@dataclass
class _Staged:
    segment: Segment
    req_id: str
    staged_s: float


@dataclass
class _Loading:
    load: KVLoad
    flows: list[int]
    started_s: float
    ready: dict[int, list] = field(default_factory=dict)  # flow id -> kv_ready row


class KVWorker:
    """KV staging (prefill) and injection (decode) of one worker."""

    def __init__(self, block_size: int, num_blocks: int, *, gate: DaemonGate | None,
                 receiver: DaemonClient | None, staging_bytes: int, ttl_s: float,
                 layer_index: Callable[[str], int], layer_dims: Callable[[str], tuple | None],
                 trace_path: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.gate = gate
        self.receiver = receiver
        self.staging_bytes = staging_bytes
        self.ttl_s = ttl_s
        self.layer_index = layer_index
        self.layer_dims = layer_dims
        self.clock = clock
        self.trace_path = trace_path
        self.layers: dict[int, TokenView] = {}
        self.saves: list[KVSave] = []
        self.staged: dict[int, _Staged] = {}
        self.cancelling: set[int] = set()  # staged flows cancelled, not yet let go by the daemon
        self.staged_bytes = 0
        self.loading: dict[str, _Loading] = {}
        # (flow, request, first level, last level) of flows the daemon delivered, latest last
        self.delivered: deque[tuple[int, str, int, int]] = deque(maxlen=100_000)
        self.stats = {"bytes_staged": 0, "flows_staged": 0, "flows_freed": 0,
                      "flows_cancelled": 0, "bytes_loaded": 0, "requests_loaded": 0}
        self._prefix = f"mfskv-tx{os.getpid()}-{os.urandom(3).hex()}"

    # --- set-up -----------------------------------------------------------------------------

    def register(self, kv_caches: Mapping[str, torch.Tensor]) -> None:
        for name, cache in kv_caches.items():
            layer = self.layer_index(name)
            if layer < 0:
                raise ValueError(f"MFSKVConnector: no layer index in layer name {name!r}")
            self.layers[layer] = TokenView(cache, self.num_blocks, self.block_size,
                                           self.layer_dims(name))

    # --- prefill: staging -------------------------------------------------------------------

    def begin_step(self, saves: Iterable[KVSave], cancels: Iterable[str]) -> None:
        self.saves = list(saves)
        self.cancel_requests(cancels)
        self.reap()

    def stage_layer(self, layer_name: str, kv_layer: torch.Tensor) -> dict[str, KVPayload]:
        """Copy this step's tokens of one layer into segments: request -> what to submit."""
        layer = self.layer_index(layer_name)
        view = self.layers.get(layer)
        if view is None or view.cache.data_ptr() != kv_layer.data_ptr():
            view = self.layers[layer] = TokenView(kv_layer, self.num_blocks, self.block_size,
                                                  self.layer_dims(layer_name))
        out: dict[str, KVPayload] = {}
        for s in self.saves:
            fid = kv_flow_id(s.key, s.chunk, layer)
            if fid in self.staged:
                continue
            rows = view.gather(s.block_ids, s.start, s.end)
            size = rows.numel() * rows.element_size()
            if self.staged_bytes + size > self.staging_bytes:
                raise KVStoreFull(
                    f"MFSKVConnector: {self.staged_bytes} bytes of KV are staged for the daemon "
                    f"and {size} more would exceed kv_staging_bytes={self.staging_bytes} "
                    "(raise it, or check that the decode host receives: flows complete, "
                    f"are cancelled after kv_ttl_s={self.ttl_s})")
            seg = Segment.create(f"{self._prefix}-{fid:x}", size)
            view.rows_of(seg.buf, s.end - s.start).copy_(rows)
            self.staged[fid] = _Staged(seg, s.req_id, self.clock())
            self.staged_bytes += size
            self.stats["bytes_staged"] += size
            self.stats["flows_staged"] += 1
            out[s.req_id] = KVPayload(fid, seg.name, s.dst_server, size)
            self._trace({"event": "kv_staged", "req_id": s.req_id, "flow": fid,
                         "layer": layer, "bytes": size, "t_s": self.clock()})
        return out

    def reap(self) -> None:
        """Free segments of completed flows; cancel and free flows older than ``ttl_s``."""
        gate = self.gate
        if gate is None:
            return
        gate.poll(self.clock())
        for fid in [f for f in gate.completed if f in self.staged]:
            msg = gate.completed.pop(fid)
            self.delivered.append((fid, self.staged[fid].req_id, msg["first_level"],
                                   msg["last_level"]))
            self._trace({"event": "kv_sent", "req_id": self.staged[fid].req_id, "flow": fid,
                         "bytes": msg["bytes"], "first_level": msg["first_level"],
                         "last_level": msg["last_level"], "t_s": self.clock()})
            self._free(fid)
        for fid in [f for f in self.cancelling if f in gate.client.cancelled]:
            gate.client.cancelled.discard(fid)
            self._free(fid)
        old = [f for f, st in self.staged.items()
               if f not in self.cancelling and self.clock() - st.staged_s > self.ttl_s]
        if old:
            log.warning("MFSKVConnector: %d KV flows not delivered within kv_ttl_s=%s s; "
                        "cancelled (is the decode host's daemon up?)", len(old), self.ttl_s)
            self._cancel(old)

    def _cancel(self, fids: list[int]) -> None:
        """Stop flows; their segments are freed once the daemon says it let go of them (it
        may not even have mapped one yet)."""
        if self.gate is None:
            for fid in fids:
                self._free(fid)
            return
        self.gate.cancel(fids)
        self.cancelling.update(fids)
        self.stats["flows_cancelled"] += len(fids)

    def cancel_requests(self, req_ids: Iterable[str]) -> None:
        """Requests aborted (or that never reach decode): stop their flows, free their bytes."""
        ids = set(req_ids)
        if not ids:
            return
        fids = [f for f, st in self.staged.items()
                if st.req_id in ids and f not in self.cancelling]
        if fids:
            self._cancel(fids)
        for rid in ids & set(self.loading):
            self._drop_load(rid)

    def _free(self, fid: int) -> None:
        self.cancelling.discard(fid)
        st = self.staged.pop(fid)
        self.staged_bytes -= st.segment.size
        st.segment.free()
        self.stats["flows_freed"] += 1

    # --- decode: injection ------------------------------------------------------------------

    def add_loads(self, loads: Iterable[KVLoad]) -> None:
        for load in loads:
            if load.req_id not in self.loading:
                self.loading[load.req_id] = _Loading(load, load.flow_ids(), self.clock())

    def finished_loads(self) -> set[str]:
        """Requests whose every flow arrived and was written into the cache."""
        if not self.loading or self.receiver is None:
            return set()
        wanted = [f for ld in self.loading.values() for f in ld.flows if f not in ld.ready]
        if wanted:
            self.receiver.send({"type": "kv_claim", "flow_ids": wanted})
            rows = {r[0]: r for r in self.receiver.wait_for("kv_ready")["flows"]}
            for ld in self.loading.values():
                ld.ready.update((f, rows[f]) for f in ld.flows if f in rows)
        done = {rid for rid, ld in self.loading.items() if len(ld.ready) == len(ld.flows)}
        for rid in done:
            self._inject(self.loading.pop(rid))
        return done

    def _inject(self, ld: _Loading) -> None:
        load = ld.load
        total = 0
        for c, (start, end) in enumerate(load.chunks):
            for layer in range(load.num_layers):
                fid = kv_flow_id(load.key, c, layer)
                _, name, size, _ = ld.ready[fid]
                view = self.layers[layer]
                tokens = end - start
                if int(size) != tokens * view.bytes_per_token:
                    raise ValueError(f"MFSKVConnector: flow of request {load.req_id} layer "
                                     f"{layer} holds {int(size)} bytes, not {tokens} tokens x "
                                     f"{view.bytes_per_token} (different KV layouts?)")
                lo = max(start, load.first_token)
                seg = Segment.attach(name, int(size))
                try:
                    if lo < end:
                        view.scatter(load.block_ids, lo, end,
                                     view.rows_of(seg.buf, tokens)[lo - start:])
                finally:
                    seg.close()
                total += int(size)
        self.receiver.send({"type": "kv_release", "flow_ids": list(ld.ready)})
        self.stats["bytes_loaded"] += total
        self.stats["requests_loaded"] += 1
        self._trace({"event": "kv_loaded", "req_id": load.req_id, "bytes": total,
                     "flows": len(ld.flows), "start_s": ld.started_s,
                     "last_arrival_s": max(r[3] for r in ld.ready.values()),
                     "loaded_s": self.clock()})

    def _drop_load(self, rid: str) -> None:
        ld = self.loading.pop(rid)
        if ld.ready and self.receiver is not None:
            self.receiver.send({"type": "kv_release", "flow_ids": list(ld.ready)})

    def _trace(self, record: dict) -> None:
        if self.trace_path:
            with open(self.trace_path, "a") as f:
                f.write(json.dumps({**record, "pid": os.getpid()}) + "\n")

    def close(self) -> None:
        for fid in list(self.staged):
            self._free(fid)
        for rid in list(self.loading):
            self._drop_load(rid)
