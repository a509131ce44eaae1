"""``MFSConnector``: vLLM's KV-connector API (v1) with MFS deciding, another connector moving.

Who calls this: vLLM. With ``"kv_connector": "MFSConnector"`` and ``"kv_connector_module_path":
"mfsched.integrations.vllm.connector"`` in ``--kv-transfer-config``, vLLM's connector factory
imports this module and builds one instance in the scheduler process (role SCHEDULER) and one in
each worker process (role WORKER). Each instance builds the *inner* connector named in
``kv_connector_extra_config["inner"]`` (NixlConnector, ExampleConnector, ...) with the same
role and forwards every hook to it, as vLLM's MultiConnector composes its children; the inner
``KVTransferConfig`` inherits the outer one's fields, ``engine_id`` included (otherwise the
scheduler and worker instances of the inner connector get different random engine ids, which
NIXL rejects).

This module is the facade vLLM sees: the class-level hooks, the configuration of the inner
connector, and the forwarding of every hook. What MFS adds lives, as in vLLM's own connectors
(``NixlConnectorScheduler`` / ``NixlConnectorWorker``), in one object per role:

* :class:`~.scheduler_side.MFSConnectorScheduler` (role SCHEDULER): deadlines and flows to the
  policy, the step plan, the inner connector's metadata in MFS order, ``mfs_deadline_s`` for
  the decode side;
* :class:`~.worker_side.MFSConnectorWorker` (role WORKER): the transfers of each step through
  a :class:`~.gate.TransferGate` (submit, permit in priority order, complete), layer
  boundaries so that RLI and MLU advance.

:class:`MFSConnectorMetadata` carries the inner metadata and the plan from one to the other.
This is the only module of mfsched that imports vLLM (pinned: the API is marked experimental).

(About 430 lines, over the project's 400, for one reason: vLLM calls some 45 hooks on the
connector object and the facade must define each of them to forward it; MFS logic is not here.)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vllm.config.kv_transfer import KVTransferConfig
from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorMetadata,
    KVConnectorRole,
)

from ...errors import UserError
from ...policy import Priority
from .gate import TransferGate
from .options import MFSOptions, parse_options
from .planner import ModelShape, StepPlan, StepPlanner, kv_bytes_per_token_per_layer
from .scheduler_side import MFSConnectorScheduler
from .tracelog import DecisionLog
from .worker_side import MFSConnectorWorker

if TYPE_CHECKING:
    import torch
    from vllm.config import VllmConfig

__all__ = ["MFSConnector", "MFSConnectorMetadata", "inner_vllm_config", "model_shape"]

# Fields of the outer KVTransferConfig that the inner one inherits unless it sets them.
_INHERITED_FIELDS = ("kv_buffer_device", "kv_role", "kv_port", "enable_permute_local_kv",
                     "kv_load_failure_policy", "engine_id")
_DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}


@dataclass
class MFSConnectorMetadata(KVConnectorMetadata):
    """Scheduler -> worker, once per step: the inner connector's metadata and the MFS plan."""

    inner: KVConnectorMetadata | None
    plan: StepPlan | None

    @property
    def order(self) -> tuple[str, ...]:
        return self.plan.order if self.plan else ()

    @property
    def priorities(self) -> dict[str, Priority | None]:
        return self.plan.priorities() if self.plan else {}

    @property
    def pruned(self) -> frozenset[str]:
        return self.plan.pruned if self.plan else frozenset()


# --- configuration --------------------------------------------------------------------------


def _extra(kv_transfer_config: KVTransferConfig | None) -> dict[str, Any]:
    return dict(kv_transfer_config.kv_connector_extra_config or {}) if kv_transfer_config else {}


def inner_transfer_config(outer: KVTransferConfig) -> KVTransferConfig:
    """The inner connector's KVTransferConfig: ``extra["inner"]`` over the outer fields."""
    inner = _extra(outer).get("inner")
    if not isinstance(inner, dict) or not inner.get("kv_connector"):
        raise UserError('MFSConnector needs kv_connector_extra_config["inner"] = '
                        '{"kv_connector": "<connector name>", ...}')
    fields = {name: getattr(outer, name) for name in _INHERITED_FIELDS if hasattr(outer, name)}
    fields.update(inner)
    return KVTransferConfig(**fields)


def inner_vllm_config(vllm_config: VllmConfig) -> VllmConfig:
    """A shallow copy of ``vllm_config`` whose kv_transfer_config is the inner connector's."""
    config = copy.copy(vllm_config)
    config.kv_transfer_config = inner_transfer_config(vllm_config.kv_transfer_config)
    return config


def model_shape(vllm_config: VllmConfig, options: MFSOptions) -> ModelShape:
    """Layers, KV bytes per token per layer per TP rank, and TP lanes of the served model."""
    mc, pc = vllm_config.model_config, vllm_config.parallel_config
    kvb = options.kv_bytes_per_token_per_layer
    if not kvb:
        kvb = kv_bytes_per_token_per_layer(mc.get_num_kv_heads(pc), mc.get_head_size(),
                                           _cache_dtype_bytes(vllm_config), bool(mc.use_mla))
    return ModelShape(num_layers=max(1, mc.get_num_layers(pc)), kv_bytes_per_token_per_layer=kvb,
                      tp_lanes=max(1, pc.tensor_parallel_size))


def _cache_dtype_bytes(vllm_config: VllmConfig) -> int:
    name = str(vllm_config.cache_config.cache_dtype)
    if name.startswith("fp8"):
        return 1
    if name in _DTYPE_BYTES:
        return _DTYPE_BYTES[name]
    return vllm_config.model_config.dtype.itemsize


def _layer_index(layer_name: str) -> int:
    from vllm.model_executor.models.utils import extract_layer_index

    try:
        return extract_layer_index(layer_name)
    except (AssertionError, ValueError):
        return -1


def _inner_class_from_current_config():
    """The inner connector class, from the config vLLM is building (for class-level hooks)."""
    from vllm.config import get_current_vllm_config_or_none

    config = get_current_vllm_config_or_none()
    if config is None or config.kv_transfer_config is None:
        return None
    try:
        return KVConnectorFactory.get_connector_class(
            inner_transfer_config(config.kv_transfer_config))
    except (UserError, ValueError, AttributeError, ImportError):
        return None


# --- the connector --------------------------------------------------------------------------


class MFSConnector(KVConnectorBase_V1):
    """MFS around an inner connector; see the module docstring."""

    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole,
                 kv_cache_config: Any) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        self.options = parse_options(_extra(self._kv_transfer_config).get("mfs"))
        self._inner_config = inner_vllm_config(vllm_config)
        inner_cls = KVConnectorFactory.get_connector_class(self._inner_config.kv_transfer_config)
        self.inner: KVConnectorBase_V1 = inner_cls(self._inner_config, role, kv_cache_config)
        self.clock: Callable[[], float] = time.time  # the clock of Request.arrival_time
        self.log = DecisionLog(self.options.trace_path, role.name.lower())
        self.shape = model_shape(vllm_config, self.options)
        self.scheduler_side: MFSConnectorScheduler | None = None
        self.worker_side: MFSConnectorWorker | None = None
        now = lambda: self.clock()  # noqa: E731  (tests replace self.clock)
        if role == KVConnectorRole.SCHEDULER:
            self.scheduler_side = MFSConnectorScheduler(
                self.options, self.shape, bool(self._kv_transfer_config.is_kv_producer),
                self.log, now)
        else:
            self.worker_side = MFSConnectorWorker(self.options, self.log, now, _layer_index)

    @property
    def planner(self) -> StepPlanner | None:
        return self.scheduler_side.planner if self.scheduler_side else None

    @property
    def gate(self) -> TransferGate | None:
        return self.worker_side.gate if self.worker_side else None

    @property
    def layer_events(self):
        return self.worker_side.layer_events if self.worker_side else ()

    @property
    def permit_log(self):
        return self.worker_side.permit_log if self.worker_side else ()

    # --- class-level hooks ------------------------------------------------------------------

    @classmethod
    def get_required_kvcache_layout(cls, vllm_config: VllmConfig) -> str | None:
        if vllm_config.kv_transfer_config is None:
            return None
        inner = inner_vllm_config(vllm_config)
        return KVConnectorFactory.get_connector_class(
            inner.kv_transfer_config).get_required_kvcache_layout(inner)

    @classmethod
    def requires_piecewise_for_cudagraph(cls, extra_config: dict[str, Any]) -> bool:
        inner = dict(extra_config.get("inner") or {})
        if not inner.get("kv_connector"):
            return False
        inner.setdefault("kv_role", "kv_both")  # only to resolve the class
        inner_cls = KVConnectorFactory.get_connector_class(KVTransferConfig(**inner))
        return inner_cls.requires_piecewise_for_cudagraph(
            inner.get("kv_connector_extra_config") or {})

    @classmethod
    def supports_sleep_mode(cls, kv_transfer_config: KVTransferConfig) -> bool:
        inner = inner_transfer_config(kv_transfer_config)
        inner_cls = KVConnectorFactory.get_connector_class(inner)
        check = getattr(inner_cls, "supports_sleep_mode", None)
        return bool(check(inner)) if check else False

    @classmethod
    def build_kv_connector_stats(cls, data: dict[str, Any] | None = None):
        inner_cls = _inner_class_from_current_config()
        return inner_cls.build_kv_connector_stats(data) if inner_cls else None

    @classmethod
    def build_prom_metrics(cls, vllm_config: VllmConfig, metric_types, labelnames,
                           per_engine_labelvalues):
        inner = inner_vllm_config(vllm_config)
        inner_cls = KVConnectorFactory.get_connector_class(inner.kv_transfer_config)
        return inner_cls.build_prom_metrics(inner, metric_types, labelnames,
                                            per_engine_labelvalues)

    @property
    def supports_divergent_local_hybrid_hits(self) -> bool:
        return bool(getattr(self.inner, "supports_divergent_local_hybrid_hits", False))

    @property
    def requires_kv_delivery(self) -> bool:
        return bool(getattr(self.inner, "requires_kv_delivery",
                            self._kv_transfer_config.is_kv_producer))

    def _fwd(self, name: str, *args: Any, default: Any = None, **kwargs: Any) -> Any:
        """Call the inner connector's hook ``name`` if its vLLM version has it."""
        method = getattr(self.inner, name, None)
        return method(*args, **kwargs) if method is not None else default

    # --- worker side: lifecycle -------------------------------------------------------------

    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        self.inner.register_kv_caches(kv_caches)

    def unregister_kv_caches(self) -> None:
        self._fwd("unregister_kv_caches")

    def restore_kv_caches(self) -> None:
        self._fwd("restore_kv_caches")

    def get_mem_pool_context(self):
        return self._fwd("get_mem_pool_context")

    def set_host_xfer_buffer_ops(self, copy_operation) -> None:
        self._fwd("set_host_xfer_buffer_ops", copy_operation)

    def finish_forward(self) -> None:
        self._fwd("finish_forward")

    def reset_capture_state(self) -> None:
        self._fwd("reset_capture_state")

    def handle_preemptions(self, kv_connector_metadata: KVConnectorMetadata) -> None:
        inner = kv_connector_metadata.inner if isinstance(
            kv_connector_metadata, MFSConnectorMetadata) else kv_connector_metadata
        self._fwd("handle_preemptions", inner)

    def bind_connector_metadata(self, connector_metadata: KVConnectorMetadata) -> None:
        plan = None
        inner = connector_metadata
        if isinstance(connector_metadata, MFSConnectorMetadata):
            inner, plan = connector_metadata.inner, connector_metadata.plan
        self.inner.bind_connector_metadata(inner)
        super().bind_connector_metadata(connector_metadata)
        if self.worker_side is not None:
            self.worker_side.bind(plan)

    def clear_connector_metadata(self) -> None:
        self.inner.clear_connector_metadata()
        super().clear_connector_metadata()

    def shutdown(self):
        try:
            return self.inner.shutdown()
        finally:
            if self.worker_side is not None:
                self.worker_side.close()
            self.log.close()

    # --- worker side: MFS at the per-layer hooks --------------------------------------------

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        if self.worker_side is not None and self.has_connector_metadata():
            self.worker_side.start_load()
        self.inner.start_load_kv(forward_context, **kwargs)

    def wait_for_layer_load(self, layer_name: str) -> None:
        w = self.worker_side
        layer = w.enter_layer("wait_for_layer_load", layer_name) if w else -1
        self.inner.wait_for_layer_load(layer_name)
        if w is not None:
            w.layer_loaded(layer)

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any,
                      **kwargs: Any) -> None:
        w = self.worker_side
        if w is not None:
            w.save_layer(w.enter_layer("save_kv_layer", layer_name))
        self.inner.save_kv_layer(layer_name, kv_layer, attn_metadata, **kwargs)

    def wait_for_save(self):
        result = self.inner.wait_for_save()
        if self.worker_side is not None:
            self.worker_side.step_saved()
        return result

    def get_finished(self, finished_req_ids: set[str]):
        sending, recving = self.inner.get_finished(finished_req_ids)
        if self.worker_side is not None:
            self.worker_side.received(recving)
        return sending, recving

    def get_transfer_results(self, finished_req_ids: set[str]):
        results = self.inner.get_transfer_results(finished_req_ids)
        if self.worker_side is not None:
            self.worker_side.received(results.finished_recving)
        return results

    def get_block_ids_with_load_errors(self) -> set[int]:
        return self.inner.get_block_ids_with_load_errors()

    def get_kv_connector_stats(self):
        return self.inner.get_kv_connector_stats()

    def get_kv_connector_kv_cache_events(self):
        return self._fwd("get_kv_connector_kv_cache_events")

    def get_handshake_metadata(self):
        return self.inner.get_handshake_metadata()

    def set_xfer_handshake_metadata(self, metadata) -> None:
        self.inner.set_xfer_handshake_metadata(metadata)

    def set_xfer_handshake_metadata_pp_aware(self, metadata) -> None:
        self._fwd("set_xfer_handshake_metadata_pp_aware", metadata)

    def build_connector_worker_meta(self):
        return self._fwd("build_connector_worker_meta")

    def get_finished_count(self) -> int | None:
        return self._fwd("get_finished_count")

    # --- scheduler side ---------------------------------------------------------------------

    def bind_kv_cache_manager(self, kv_cache_manager: Any) -> None:
        self._kv_cache_manager = kv_cache_manager
        self.inner.bind_kv_cache_manager(kv_cache_manager)

    def bind_gpu_block_pool(self, gpu_block_pool: Any) -> None:
        self.inner.bind_gpu_block_pool(gpu_block_pool)

    def get_loaded_kv_cache_group_ids(self, request: Any) -> tuple[int, ...]:
        return self.inner.get_loaded_kv_cache_group_ids(request)

    def on_new_request(self, request: Any) -> None:
        if self.scheduler_side is not None:
            self.scheduler_side.track(request)
        self._fwd("on_new_request", request)

    def get_num_new_matched_tokens(self, request: Any,
                                   num_computed_tokens: int) -> tuple[int | None, bool]:
        tokens, is_async = self.inner.get_num_new_matched_tokens(request, num_computed_tokens)
        if self.scheduler_side is not None:
            self.scheduler_side.matched(request, tokens, is_async)
        return tokens, is_async

    def get_external_cache_hit_sources(self, request: Any, num_external_tokens: int):
        return self.inner.get_external_cache_hit_sources(request, num_external_tokens)

    def update_state_after_alloc(self, request: Any, blocks: Any,
                                 num_external_tokens: int) -> None:
        self.inner.update_state_after_alloc(request, blocks, num_external_tokens)
        if self.scheduler_side is not None:
            self.scheduler_side.allocated(request, num_external_tokens)

    def build_connector_meta(self, scheduler_output: Any) -> KVConnectorMetadata:
        assert self.scheduler_side is not None, "build_connector_meta runs on the scheduler side"
        inner, plan = self.scheduler_side.build_meta(scheduler_output, self.inner)
        return MFSConnectorMetadata(inner=inner, plan=plan)

    def update_connector_output(self, connector_output: Any) -> None:
        self.inner.update_connector_output(connector_output)
        if self.scheduler_side is not None:
            self.scheduler_side.transfers_done(connector_output)

    def request_finished(self, request: Any,
                         block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        delay_free, params = self.inner.request_finished(request, block_ids)
        if self.scheduler_side is not None:
            params = self.scheduler_side.finished(request, bool(delay_free), params)
        return delay_free, params

    def register_finished_partial_tail(self, request: Any, block_ids: Any,
                                       partial_tail_offloads: Any) -> bool:
        return bool(self._fwd("register_finished_partial_tail", request, block_ids,
                              partial_tail_offloads, default=False))

    def take_events(self):
        return self.inner.take_events()

    def has_pending_block_frees(self) -> bool:
        return bool(self._fwd("has_pending_block_frees", default=False))

    def has_pending_push_work(self) -> bool:
        return bool(self._fwd("has_pending_push_work", default=False))

    def reset_cache(self) -> bool | None:
        return self._fwd("reset_cache")
