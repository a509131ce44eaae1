"""Where prefill and decode instances live, and what a prefill unit is.

Parallelism model (documented in ``docs/design.md``):

* MoE models run data-parallel attention with expert parallelism, as vLLM and SGLang do for
  DeepSeek/Mixtral-style models: an instance has ``ep`` *units*; a unit is one TP group of
  ``tp`` GPUs that runs attention for its own requests and hosts ``num_experts / ep`` experts.
  Every layer exchanges tokens between units (EP all-to-all dispatch and combine).
* Dense models have one unit per instance: ``tp x sp`` GPUs that process every request
  together (SP shards the sequence, TP the heads).

A unit is also the granularity of the prefix KV cache and of routing (a "prefill unit" in the
paper). Decode instances mirror the prefill instances 1:1 and receive each unit's KV on the
matching GPUs. Prefill instances take the first GPUs of the cluster, decode instances follow.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .models import (
    ModelSpec,
    attention_weight_bytes,
    expert_weight_bytes,
    kv_bytes_per_token_per_layer,
)

__all__ = ["Deployment", "Parallelism", "Unit", "build_deployment", "kv_cache_tokens_per_unit",
           "weight_bytes_per_gpu"]


@dataclass(frozen=True, slots=True)
class Parallelism:
    tp: int = 1
    ep: int = 1
    sp: int = 1

    def validate(self, model: ModelSpec) -> None:
        if min(self.tp, self.ep, self.sp) < 1:
            raise UserError("tp, ep and sp must be at least 1")
        if model.is_moe and self.sp != 1:
            raise UserError(f"{model.name} is MoE: use tp and ep (sequence parallelism is "
                            "modelled for dense models only)")
        if not model.is_moe and self.ep != 1:
            raise UserError(f"{model.name} is dense: expert parallelism needs an MoE model")
        if model.num_kv_heads % self.tp and self.tp % model.num_kv_heads:
            raise UserError(f"tp={self.tp} does not divide the {model.num_kv_heads} KV heads")

    @property
    def units_per_instance(self) -> int:
        return self.ep

    @property
    def gpus_per_unit(self) -> int:
        return self.tp * self.sp

    @property
    def gpus_per_instance(self) -> int:
        return self.gpus_per_unit * self.units_per_instance

    def label(self) -> str:
        parts = [f"TP{self.tp}"]
        if self.ep > 1:
            parts.append(f"EP{self.ep}")
        if self.sp > 1:
            parts.append(f"SP{self.sp}")
        return "/".join(parts)


@dataclass(frozen=True, slots=True)
class Unit:
    """A prefill unit: ``gpus`` ordered [sp rank][tp rank]; ``decode_gpus`` receive its KV."""

    unit_id: int
    instance_id: int
    index: int
    gpus: tuple[int, ...]
    decode_gpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Deployment:
    model: ModelSpec
    parallelism: Parallelism
    instances: tuple[tuple[Unit, ...], ...]
    gpus_per_server: int

    @property
    def units(self) -> tuple[Unit, ...]:
        return tuple(u for inst in self.instances for u in inst)

    @property
    def prefill_gpus(self) -> int:
        return len(self.instances) * self.parallelism.gpus_per_instance

    def server_of(self, gpu: int) -> int:
        return gpu // self.gpus_per_server


def build_deployment(model: ModelSpec, parallelism: Parallelism, num_gpus: int,
                     gpus_per_server: int, prefill_instances: int | None = None) -> Deployment:
    """Place ``prefill_instances`` prefill instances and as many decode instances (1:1).

    With ``prefill_instances=None`` half of the cluster is used for prefill.
    """
    parallelism.validate(model)
    per_inst = parallelism.gpus_per_instance
    if prefill_instances is None:
        prefill_instances = num_gpus // (2 * per_inst)
    if prefill_instances < 1 or 2 * prefill_instances * per_inst > num_gpus:
        raise UserError(
            f"{prefill_instances} prefill + {prefill_instances} decode instances of "
            f"{per_inst} GPUs ({parallelism.label()}) do not fit in {num_gpus} GPUs")
    decode_base = prefill_instances * per_inst
    instances = []
    unit_id = 0
    for i in range(prefill_instances):
        units = []
        for k in range(parallelism.units_per_instance):
            first = i * per_inst + k * parallelism.gpus_per_unit
            gpus = tuple(range(first, first + parallelism.gpus_per_unit))
            units.append(Unit(unit_id, i, k, gpus, tuple(g + decode_base for g in gpus)))
            unit_id += 1
        instances.append(tuple(units))
    return Deployment(model, parallelism, tuple(instances), gpus_per_server)


def weight_bytes_per_gpu(model: ModelSpec, parallelism: Parallelism) -> float:
    """Parameter bytes one GPU of a prefill unit holds (embeddings and LM head included)."""
    m, p = model, parallelism
    per_layer = attention_weight_bytes(m)
    if m.is_moe:
        per_layer += m.num_experts / p.ep * expert_weight_bytes(m)
        per_layer += 3 * m.hidden_size * m.shared_ffn_intermediate_size * m.dtype_bytes
    else:
        per_layer += expert_weight_bytes(m)
    embeddings = 2 * m.vocab_size * m.hidden_size * m.dtype_bytes
    return (m.num_layers * per_layer + embeddings) / p.tp


def kv_cache_tokens_per_unit(model: ModelSpec, parallelism: Parallelism, gpu_mem_bytes: float,
                             mem_utilization: float = 0.9) -> int:
    """Tokens of KV (all layers) a unit can keep: its GPUs' memory after the weights.

    ``mem_utilization`` is vLLM's ``gpu_memory_utilization`` (default 0.9).
    """
    free = gpu_mem_bytes * mem_utilization - weight_bytes_per_gpu(model, parallelism)
    if free <= 0:
        raise UserError(f"{model.name} with {parallelism.label()} does not fit in GPU memory "
                        f"({weight_bytes_per_gpu(model, parallelism) / 2**30:.1f} GiB of weights "
                        "per GPU)")
    per_token = kv_bytes_per_token_per_layer(model) * model.num_layers
    return int(free * parallelism.gpus_per_unit / per_token)
