"""Layer compute-time model: a roofline with efficiency factors.

A compute step that performs ``flops`` floating-point operations and moves ``mem_bytes`` bytes
through GPU memory takes::

    t = max(flops / (peak_flops * flops_efficiency),
            mem_bytes / (mem_bandwidth * memory_efficiency)) + step_overhead_s

(:meth:`ComputeModel.roofline_s`, the one formula; ``tests/test_compute.py`` checks it by hand).
The per-step FLOPs and bytes of a prefill batch come from :mod:`mfsched.workload.models`; the
stage planner (:mod:`mfsched.workload.stages`) adds them up per unit and takes the slowest unit,
because the units of an instance run each layer in lockstep (they exchange tokens every layer).

Efficiency defaults (0.6 of peak FLOP/s, 0.8 of memory bandwidth) are typical for large prefill
GEMMs; the paper calibrates Vidur profiles instead, which we do not have. Change them with the
``compute`` section of the config.
"""

from __future__ import annotations

from dataclasses import dataclass

from .hardware import GpuSpec
from .models import (
    ModelSpec,
    attention_weight_bytes,
    expert_weight_bytes,
    kv_bytes_per_token_per_layer,
)

__all__ = ["ComputeModel", "tp_allreduce_s"]


@dataclass(frozen=True, slots=True)
class ComputeModel:
    gpu: GpuSpec
    flops_efficiency: float = 0.6
    memory_efficiency: float = 0.8
    step_overhead_s: float = 20e-6

    def __post_init__(self) -> None:
        if not (0 < self.flops_efficiency <= 1 and 0 < self.memory_efficiency <= 1):
            raise ValueError("efficiencies must be in (0, 1]")
        if self.step_overhead_s < 0:
            raise ValueError("step overhead must be non-negative")

    def roofline_s(self, flops: float, mem_bytes: float) -> float:
        """Time of one compute step on one GPU (the roofline with efficiencies)."""
        t_flops = flops / (self.gpu.peak_flops * self.flops_efficiency)
        t_mem = mem_bytes / (self.gpu.mem_bandwidth_bytes_per_s * self.memory_efficiency)
        return max(t_flops, t_mem) + self.step_overhead_s

    def decode_step_s(self, m: ModelSpec, tp: int, context_tokens: int) -> float:
        """One decode step (the first token) for one request: memory bound in practice.

        Per layer a GPU reads its share of the attention weights, of one routed expert (the
        token's experts live on different units and are read in parallel) and of the shared
        MLP, plus the request's KV.
        """
        weights = attention_weight_bytes(m) + expert_weight_bytes(m)
        if m.shared_ffn_intermediate_size:
            weights += 3 * m.hidden_size * m.shared_ffn_intermediate_size * m.dtype_bytes
        kv = context_tokens * kv_bytes_per_token_per_layer(m)
        flops = 2.0 * weights / m.dtype_bytes + 4.0 * m.q_dim * context_tokens
        return m.num_layers * self.roofline_s(flops / tp, (weights + kv) / tp)


def tp_allreduce_s(payload_bytes: float, tp: int, link_bytes_per_s: float) -> float:
    """Ring all-reduce time inside a server: each GPU moves 2 (tp-1)/tp of the payload."""
    if tp <= 1:
        return 0.0
    return 2.0 * (tp - 1) / tp * payload_bytes / link_bytes_per_s
