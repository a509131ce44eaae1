"""``MFSKVConnector``: a vLLM KV connector whose KV bytes the mfsched data plane carries.

Who calls this: vLLM, with ``"kv_connector": "MFSKVConnector"`` and
``"kv_connector_module_path": "mfsched.integrations.vllm.kv_connector"`` in
``--kv-transfer-config``; one instance in the scheduler process, one in each worker. Unlike
:class:`~.connector.MFSConnector`, which decides the order in which another connector (NIXL)
issues its transfers, this one moves the bytes itself, through the host daemon of
:mod:`mfsched.dataplane`, so MFS's per-layer priorities reach the wire as traffic classes:

* **Prefill** (``kv_producer``): a request sent with ``kv_transfer_params`` ``{"do_remote_decode":
  true, "mfs_decode_server": <decode host's daemon server number>, "ttft_slo_s": ...}`` has each
  layer's new tokens copied out of the paged cache at ``save_kv_layer`` into shared memory and
  submitted to the local daemon as a Stage-3 flow with the request's deadline
  (:mod:`.kv_worker`); the daemon runs the MFS policy (the planner's step, layer and deadline
  events are its ``request`` / ``batch_start`` / ``layer_start`` / ``submit`` /
  ``batch_compute_done`` messages, :class:`~.gate.DaemonGate`) and sends the bytes on the
  connection of each flow's current class. The blocks are free when the request finishes
  (every layer was staged during its last step); ``request_finished`` returns the
  ``kv_transfer_params`` the proxy hands to the decode instance: ``mfs_kv`` (request key,
  chunks, layers) and ``mfs_deadline_s``.
* **Decode** (``kv_consumer``): a request with ``"do_remote_prefill": true`` and ``mfs_kv`` is
  loaded asynchronously: vLLM allocates its blocks, the worker takes each flow from the local
  daemon's receive store once all have arrived, writes them into the blocks and reports the
  request in ``get_finished``.

The scheduler side keeps the per-request facts that this needs (block tables, prefill chunks,
the decode host) and ships them in :class:`MFSKVMetadata` with the MFS step plan of
:class:`~.scheduler_side.MFSConnectorScheduler`. Limitations: one TP rank per engine (the flow
ids do not name a rank), no pipeline parallelism, no hybrid (HMA) KV cache groups.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

from ...dataplane.client import DaemonClient
from ...dataplane.kvstore import kv_request_key
from ...errors import UserError
from .connector import _extra, _layer_index, model_shape
from .gate import DaemonGate
from .kv_worker import KVLoad, KVSave, KVWorker
from .options import GATE_DAEMON_PREFIX, parse_options
from .planner import StepPlan
from .scheduler_side import MFSConnectorScheduler
from .tracelog import DecisionLog
from .worker_side import MFSConnectorWorker

if TYPE_CHECKING:
    import torch
    from vllm.config import VllmConfig

__all__ = ["MFSKVConnector", "MFSKVMetadata"]

log = logging.getLogger("mfsched.vllm.kv")


@dataclass
class MFSKVMetadata(KVConnectorMetadata):
    """Scheduler -> worker, once per step."""

    plan: StepPlan | None = None
    saves: list[KVSave] = field(default_factory=list)
    loads: list[KVLoad] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)


class _NoInner:
    """The step planner builds an inner connector's metadata; there is none here."""

    @staticmethod
    def build_connector_meta(scheduler_output: Any) -> None:
        return None


@dataclass
class _Sending:
    key: int
    dst_server: int
    chunks: list[tuple[int, int]] = field(default_factory=list)


class _KVScheduler:
    """Scheduler-side facts of KV flows: block tables, prefill chunks, loads to announce."""

    def __init__(self, engine_id: str, num_layers: int, decode_server: int,
                 produces: bool, consumes: bool) -> None:
        self.engine_id = engine_id
        self.num_layers = num_layers
        self.decode_server = decode_server
        self.produces, self.consumes = produces, consumes
        self.blocks: dict[str, list[int]] = {}
        self.sending: dict[str, _Sending] = {}
        self.to_load: dict[str, dict] = {}  # matched, blocks not yet allocated
        self.loads: list[KVLoad] = []
        self.loading: set[str] = set()
        self.cancels: list[str] = []

    def matched(self, request: Any, num_computed_tokens: int) -> tuple[int, bool]:
        params = request.kv_transfer_params or {}
        rid = request.request_id
        if self.produces and params.get("do_remote_decode") and rid not in self.sending:
            dst = params.get("mfs_decode_server", self.decode_server)
            if not isinstance(dst, int) or dst < 0:
                log.error("request %s: no decode host (kv_transfer_params mfs_decode_server or "
                          "the decode_server option); its KV is not sent", rid)
            else:
                self.sending[rid] = _Sending(kv_request_key(self.engine_id, rid), dst)
        kv = params.get("mfs_kv")
        if self.consumes and params.get("do_remote_prefill") and isinstance(kv, dict):
            tokens = len(request.prompt_token_ids) - num_computed_tokens
            if tokens > 0:
                self.to_load[rid] = kv
                return tokens, True
        return 0, False

    def allocated(self, request: Any, blocks: Any, num_external_tokens: int) -> None:
        kv = self.to_load.pop(request.request_id, None)
        if kv is None or num_external_tokens <= 0:
            return
        self.loads.append(KVLoad(
            request.request_id, int(kv["key"]),
            tuple((int(a), int(b)) for a, b in kv["chunks"]), int(kv["layers"]),
            tuple(blocks.get_block_ids()[0]), int(request.num_computed_tokens)))
        self.loading.add(request.request_id)
        request.kv_transfer_params = {**request.kv_transfer_params, "do_remote_prefill": False}

    def step(self, scheduler_output: Any, prompt_lengths: dict[str, int]) -> MFSKVMetadata:
        for r in scheduler_output.scheduled_new_reqs:
            self.blocks[r.req_id] = list(r.block_ids[0])
        cached = scheduler_output.scheduled_cached_reqs
        resumed = getattr(cached, "resumed_req_ids", set()) or set()
        for rid, new in zip(cached.req_ids, cached.new_block_ids, strict=False):
            if new is not None:
                if rid in resumed:
                    self.blocks[rid] = list(new[0])
                else:
                    self.blocks.setdefault(rid, []).extend(new[0])
        saves = []
        counts = scheduler_output.num_scheduled_tokens
        computed = {r.req_id: r.num_computed_tokens for r in scheduler_output.scheduled_new_reqs}
        computed.update(zip(cached.req_ids, cached.num_computed_tokens, strict=False))
        for rid, s in self.sending.items():
            if rid not in counts:
                continue
            # From where the last chunk ended: a local prefix-cache hit is sent too (it is in
            # the request's blocks; the decode side needs every prompt token).
            start = s.chunks[-1][1] if s.chunks else 0
            end = min(int(computed[rid]) + int(counts[rid]), prompt_lengths.get(rid, 0))
            if end > start:
                saves.append(KVSave(rid, s.key, len(s.chunks), start, end,
                                    tuple(self.blocks[rid]), s.dst_server))
                s.chunks.append((start, end))
        for rid in scheduler_output.finished_req_ids or ():
            self.blocks.pop(rid, None)
        meta = MFSKVMetadata(saves=saves, loads=self.loads, cancels=self.cancels)
        self.loads, self.cancels = [], []
        return meta

    def finished(self, request: Any) -> dict | None:
        from vllm.v1.request import RequestStatus

        rid = request.request_id
        self.to_load.pop(rid, None)
        if rid in self.loading:
            self.loading.discard(rid)
            if request.status == RequestStatus.FINISHED_ABORTED:
                self.cancels.append(rid)
        s = self.sending.pop(rid, None)
        if s is None:
            return None
        covered = sum(b - a for a, b in s.chunks)
        if request.status == RequestStatus.FINISHED_ABORTED or \
                covered < len(request.prompt_token_ids):
            self.cancels.append(rid)  # it will never reach decode: stop and free its flows
            return None
        return {"do_remote_prefill": True, "do_remote_decode": False,
                "mfs_kv": {"key": s.key, "chunks": [list(c) for c in s.chunks],
                           "layers": self.num_layers}}

    def received(self, req_ids) -> None:
        self.loading.difference_update(req_ids or ())


class MFSKVConnector(KVConnectorBase_V1):
    """See the module docstring."""

    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole,
                 kv_cache_config: Any = None) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        tc = self._kv_transfer_config
        self.options = parse_options(_extra(tc).get("mfs"))
        if not self.options.gate.startswith(GATE_DAEMON_PREFIX):
            raise UserError('MFSKVConnector moves KV through the mfsched host daemon: set '
                            '"mfs": {"gate": "daemon:<its control socket>"}')
        self.socket_path = self.options.gate[len(GATE_DAEMON_PREFIX):]
        self.clock = time.time
        self.log = DecisionLog(self.options.trace_path, role.name.lower())
        self.shape = model_shape(vllm_config, self.options)
        self.produces, self.consumes = bool(tc.is_kv_producer), bool(tc.is_kv_consumer)
        now = lambda: self.clock()  # noqa: E731  (tests replace self.clock)
        self.scheduler_side: MFSConnectorScheduler | None = None
        self.kv_scheduler: _KVScheduler | None = None
        self.worker_side: MFSConnectorWorker | None = None
        self.kv: KVWorker | None = None
        self._prompt_lengths: dict[str, int] = {}
        if role == KVConnectorRole.SCHEDULER:
            self.scheduler_side = MFSConnectorScheduler(self.options, self.shape, self.produces,
                                                        self.log, now)
            self.kv_scheduler = _KVScheduler(str(tc.engine_id), self.shape.num_layers,
                                             self.options.decode_server, self.produces,
                                             self.consumes)
            return
        gate = None
        if self.produces:
            self.worker_side = MFSConnectorWorker(self.options, self.log, now, _layer_index)
            gate = self.worker_side.gate
            assert isinstance(gate, DaemonGate)
        num_blocks = int(getattr(kv_cache_config, "num_blocks", 0) or 0)
        self.kv = KVWorker(vllm_config.cache_config.block_size, num_blocks, gate=gate,
                           receiver=DaemonClient(self.socket_path) if self.consumes else None,
                           staging_bytes=self.options.kv_staging_bytes,
                           ttl_s=self.options.kv_ttl_s, layer_index=_layer_index,
                           layer_dims=lambda name: _layer_dims(vllm_config, name),
                           trace_path=self.options.trace_path, clock=now)

    # --- worker side ------------------------------------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self.kv.register(kv_caches)

    def bind_connector_metadata(self, connector_metadata: KVConnectorMetadata) -> None:
        super().bind_connector_metadata(connector_metadata)
        meta = connector_metadata
        if not isinstance(meta, MFSKVMetadata):
            return
        if self.worker_side is not None:
            self.worker_side.bind(meta.plan)
        self.kv.begin_step(meta.saves, meta.cancels)
        self.kv.add_loads(meta.loads)

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        """Loads are asynchronous: they are written in ``get_finished`` once arrived."""

    def wait_for_layer_load(self, layer_name: str) -> None:
        """Nothing to wait for: a request runs only after all its layers were written."""

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any,
                      **kwargs: Any) -> None:
        w = self.worker_side
        if w is None or not self.kv.saves:
            return
        layer = w.enter_layer("save_kv_layer", layer_name)
        w.save_layer(layer, self.kv.stage_layer(layer_name, kv_layer))

    def wait_for_save(self):
        if self.worker_side is not None:
            self.worker_side.step_saved()
            self.kv.reap()

    def get_finished(self, finished_req_ids: set[str]) -> tuple[set[str] | None, set[str] | None]:
        self.kv.reap()
        return None, (self.kv.finished_loads() or None)

    def shutdown(self):
        if self.kv is not None:
            self.kv.close()
        if self.worker_side is not None:
            self.worker_side.close()
        self.log.close()

    # --- scheduler side ---------------------------------------------------------------------

    def get_num_new_matched_tokens(self, request: Any,
                                   num_computed_tokens: int) -> tuple[int | None, bool]:
        self._prompt_lengths[request.request_id] = len(request.prompt_token_ids)
        tokens, is_async = self.kv_scheduler.matched(request, num_computed_tokens)
        self.scheduler_side.matched(request, tokens, is_async)
        return tokens, is_async

    def update_state_after_alloc(self, request: Any, blocks: Any,
                                 num_external_tokens: int) -> None:
        self.kv_scheduler.allocated(request, blocks, num_external_tokens)
        self.scheduler_side.allocated(request, num_external_tokens)

    def build_connector_meta(self, scheduler_output: Any) -> KVConnectorMetadata:
        meta = self.kv_scheduler.step(scheduler_output, self._prompt_lengths)
        _, meta.plan = self.scheduler_side.build_meta(scheduler_output, _NoInner())
        return meta

    def update_connector_output(self, connector_output: Any) -> None:
        self.kv_scheduler.received(connector_output.finished_recving)
        self.scheduler_side.transfers_done(connector_output)

    def request_finished(self, request: Any,
                         block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        """Blocks are freed at once: every layer was staged (copied) during the step."""
        params = self.kv_scheduler.finished(request)
        self._prompt_lengths.pop(request.request_id, None)
        return False, self.scheduler_side.finished(request, False, params)


def _layer_dims(vllm_config: Any, layer_name: str) -> tuple[int, int] | None:
    """(block dim, in-block dim) of a layer's cache: vLLM's logical layer view, or what its
    attention backend says."""
    from .kv_layout import dims_from_backend, logical_dims

    dims = logical_dims()
    if dims is not None:
        return dims
    try:
        layer = vllm_config.compilation_config.static_forward_context[layer_name]
        backend = getattr(layer, "attn_backend", None) or layer.get_attn_backend()
        mc, pc = vllm_config.model_config, vllm_config.parallel_config
        return dims_from_backend(backend, mc.get_num_kv_heads(pc), mc.get_head_size())
    except (KeyError, AttributeError, TypeError):
        return None
