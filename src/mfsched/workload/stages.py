"""From a prefill batch to per-layer compute steps and Stage 1/2/3 flows.

:class:`StagePlanner` turns the chunks a batch processes on each unit of an instance into a
:class:`BatchPlan`: the steps of one layer (compute steps and blocking Stage-2 collectives;
every layer of a batch is identical) plus, per request, the members of its per-layer Stage-1
fetch and Stage-3 P2D transfer. A *member* is one point-to-point transfer
``(src_gpu, dst_gpu, bytes)``. The simulator and the emulated testbed both execute plans.

Layer structure per model family (step 0 always produces the layer's KV, so the layer's P2D
flows start when step 0 ends):

* MoE (DP attention + EP): attention -> EP dispatch -> experts -> EP combine. How dispatch
  and combine move bytes depends on :class:`~mfsched.workload.comm.CommModel`: a routed
  all-to-all (a mesh of pairs) or vLLM's all-gather / reduce-scatter (NCCL rings over every
  GPU of the instance).
* Dense with SP: attention -> SP KV all-gather -> FFN (the all-gather is placed between the
  two compute steps; in ring/Ulysses attention it overlaps the attention core, but what matters
  for the network is that it blocks the rest of the layer).
* Dense TP/only: attention + FFN as one compute step.

TP all-reduces inside a server are added to compute time (NVLink/PCIe, no NIC contention, as
the paper assumes); a TP group that spans servers gets ring all-reduce collectives instead.

Every collective step and KV transfer says over how many transport connections each member is
striped (``connections``): NCCL channels for rings, the KV transfer engine's queue pairs for
Stage 1 and 3. The network model gives a member that many fair shares on its links.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .comm import CommModel
from .compute import ComputeModel, tp_allreduce_s
from .deployment import Deployment, Unit
from .models import (
    a2a_bytes_per_token,
    allgather_dispatch_bytes_per_token,
    attention_flops,
    attention_weight_bytes,
    expert_weight_bytes,
    ffn_flops_per_token,
    kv_bytes_per_token_per_layer,
)

__all__ = [
    "BatchPlan",
    "Chunk",
    "CollectiveStep",
    "ComputeStep",
    "Member",
    "RequestTransfer",
    "StagePlanner",
    "ep_dispatch_bytes",
]

Member = tuple[int, int, float]  # (src_gpu, dst_gpu, size_bytes)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Part of one request processed in a batch on unit ``unit_index`` of the instance.

    ``prefix_tokens`` precede the chunk and already have KV (cached, fetched or computed by an
    earlier chunk); ``p2d_tokens`` is the KV this chunk ships to decode (the first chunk also
    ships the reused prefix); ``reuse_tokens`` are fetched from ``reuse_unit`` (first chunk).
    """

    request_id: int
    unit_index: int
    new_tokens: int
    prefix_tokens: int
    p2d_tokens: int
    reuse_tokens: int = 0
    reuse_unit: Unit | None = None


@dataclass(frozen=True, slots=True)
class ComputeStep:
    name: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class CollectiveStep:
    """A blocking Stage-2 collective; each member striped over ``connections`` connections."""

    name: str
    members: tuple[Member, ...]
    connections: int = 1


@dataclass(frozen=True, slots=True)
class RequestTransfer:
    """One request's KV transfer of one layer; each member over ``connections`` connections."""

    request_id: int
    members: tuple[Member, ...]
    connections: int = 1


@dataclass(frozen=True, slots=True)
class BatchPlan:
    instance_id: int
    steps: tuple[ComputeStep | CollectiveStep, ...]
    reuse: tuple[RequestTransfer, ...]
    p2d: tuple[RequestTransfer, ...]

    @property
    def layer_compute_s(self) -> float:
        return sum(s.duration_s for s in self.steps if isinstance(s, ComputeStep))


def ep_dispatch_bytes(model, tokens: int, ep: int) -> float:
    """Bytes one unit with ``tokens`` tokens sends to *each* other unit in an EP dispatch.

    Routing is assumed uniform: each of a token's top-k activations lands on any of the ``ep``
    units with probability 1/ep. Combine returns the same volume.
    """
    return tokens * a2a_bytes_per_token(model) / ep


@dataclass(frozen=True)
class StagePlanner:
    deployment: Deployment
    compute: ComputeModel
    intra_server_bytes_per_s: float
    comm: CommModel = field(default_factory=CommModel)

    def plan(self, instance_id: int, chunks: Sequence[Chunk]) -> BatchPlan:
        units = self.deployment.instances[instance_id]
        tokens = [0] * len(units)
        for c in chunks:
            tokens[c.unit_index] += c.new_tokens
        par = self.deployment.parallelism
        cross_tp = self._tp_crosses_servers(units[0])
        attn = ComputeStep("attention", self._attention_s(units, chunks, tokens, cross_tp))
        if self.deployment.model.is_moe:
            ep = self._ring_ep if self.comm.ep_backend == "allgather" else self._dispatch
            steps = [attn, ep(units, tokens, reverse=False),
                     ComputeStep("experts", self._moe_ffn_s(tokens, cross_tp)),
                     ep(units, tokens, reverse=True)]
        else:
            ffn = ComputeStep("ffn", self._dense_ffn_s(tokens, cross_tp))
            steps = [attn, self._sp_allgather(units, tokens), ffn] if par.sp > 1 else [attn, ffn]
        if cross_tp:
            steps.insert(steps.index(attn) + 1, self._tp_ring(units, tokens, "tp-allreduce-attn"))
            steps.append(self._tp_ring(units, tokens, "tp-allreduce-ffn"))
        reuse, p2d = self._kv_transfers(units, chunks)
        return BatchPlan(instance_id, _tidy(steps), reuse, p2d)

    # --- compute steps -------------------------------------------------------------------

    def _tp_crosses_servers(self, unit: Unit) -> bool:
        tp = self.deployment.parallelism.tp
        server = self.deployment.server_of
        return any(len({server(g) for g in unit.gpus[s:s + tp]}) > 1
                   for s in range(0, len(unit.gpus), tp))

    def _tp_time(self, tokens_per_gpu: float, cross_tp: bool) -> float:
        if cross_tp:
            return 0.0
        m = self.deployment.model
        payload = tokens_per_gpu * m.hidden_size * m.dtype_bytes
        return tp_allreduce_s(payload, self.deployment.parallelism.tp,
                              self.intra_server_bytes_per_s)

    def _attention_s(self, units, chunks, tokens, cross_tp) -> float:
        m, par = self.deployment.model, self.deployment.parallelism
        g = par.gpus_per_unit
        flops = [0.0] * len(units)
        kv = [0.0] * len(units)
        for c in chunks:
            flops[c.unit_index] += attention_flops(m, c.new_tokens, c.prefix_tokens)
            kv[c.unit_index] += (c.prefix_tokens + c.new_tokens) * kv_bytes_per_token_per_layer(m)
        weights = attention_weight_bytes(m) / par.tp
        return max(
            self.compute.roofline_s(f / g, weights + b / g) + self._tp_time(t / par.sp, cross_tp)
            for f, b, t in zip(flops, kv, tokens, strict=True)
        )

    def _moe_ffn_s(self, tokens, cross_tp) -> float:
        m, par = self.deployment.model, self.deployment.parallelism
        total = sum(tokens)
        expert_pair_flops = 2.0 * 3 * m.hidden_size * m.ffn_intermediate_size
        routed = total * m.experts_per_token / par.ep * expert_pair_flops
        local_per_token = ffn_flops_per_token(m) - m.experts_per_token * expert_pair_flops
        shared_w = 3 * m.hidden_size * m.shared_ffn_intermediate_size * m.dtype_bytes
        weights = (m.num_experts / par.ep * expert_weight_bytes(m) + shared_w) / par.tp
        return max(
            self.compute.roofline_s((routed + t * local_per_token) / par.tp, weights)
            + self._tp_time(t, cross_tp)
            for t in tokens
        )

    def _dense_ffn_s(self, tokens, cross_tp) -> float:
        m, par = self.deployment.model, self.deployment.parallelism
        weights = expert_weight_bytes(m) / par.tp
        return max(
            self.compute.roofline_s(t * ffn_flops_per_token(m) / par.gpus_per_unit, weights)
            + self._tp_time(t / par.sp, cross_tp)
            for t in tokens
        )

    # --- Stage 2 collectives ---------------------------------------------------------------

    def _dispatch(self, units, tokens, reverse: bool) -> CollectiveStep:
        m, par = self.deployment.model, self.deployment.parallelism
        members: list[Member] = []
        for a, ua in enumerate(units):
            per_lane = ep_dispatch_bytes(m, tokens[a], par.ep) / par.tp
            if per_lane <= 0:
                continue
            for b, ub in enumerate(units):
                if a == b:
                    continue
                for t in range(par.tp):
                    src, dst = (ub.gpus[t], ua.gpus[t]) if reverse else (ua.gpus[t], ub.gpus[t])
                    members.append((src, dst, per_lane))
        return CollectiveStep("ep-combine" if reverse else "ep-dispatch", tuple(members),
                              self.comm.mesh_connections)

    def _ring_ep(self, units, tokens, reverse: bool) -> CollectiveStep:
        """vLLM's all-gather dispatch (``reverse``: reduce-scatter combine) as NCCL runs it:
        grouped broadcasts (reduces), one rooted at every GPU of the instance, along one ring
        over the instance's GPUs. GPU g holds its unit's tokens / tp (sequence-parallel MoE
        when tp > 1). On edge r -> r+1 the all-gather carries every shard but r+1's (whose
        chain ends at r), the reduce-scatter every shard but r's (whose chain starts at r+1).
        """
        m, tp = self.deployment.model, self.deployment.parallelism.tp
        ring = [g for u in units for g in u.gpus]
        per_token = m.hidden_size * m.dtype_bytes if reverse else \
            allgather_dispatch_bytes_per_token(m)
        shard = [tokens[k] / tp * per_token for k, u in enumerate(units) for _ in u.gpus]
        name = "ep-reducescatter" if reverse else "ep-allgather"
        n = len(ring)
        members: list[Member] = []
        if not self.comm.ring_collectives:  # the mesh reading: each shard straight to its ranks
            for i in range(n):
                for j in range(n):
                    src, dst, size = (j, i, shard[i]) if reverse else (i, j, shard[i])
                    if i != j and size > 0:
                        members.append((ring[src], ring[dst], size))
            return CollectiveStep(name, tuple(members), self.comm.mesh_connections)
        total = sum(shard)
        for i in range(n if n > 1 else 0):
            size = total - (shard[i] if reverse else shard[(i + 1) % n])
            if size > 0:
                members.append((ring[i], ring[(i + 1) % n], size))
        return CollectiveStep(name, tuple(members), self.comm.ring_channels)

    def _sp_allgather(self, units, tokens) -> CollectiveStep:
        m, par = self.deployment.model, self.deployment.parallelism
        members: list[Member] = []
        for k, u in enumerate(units):
            shard = tokens[k] / par.sp * kv_bytes_per_token_per_layer(m) / par.tp
            if shard <= 0:
                continue
            for s in range(par.sp):
                for s2 in range(par.sp):
                    if s != s2:
                        for t in range(par.tp):
                            members.append((u.gpus[s * par.tp + t], u.gpus[s2 * par.tp + t],
                                            shard))
        return CollectiveStep("sp-allgather", tuple(members), self.comm.mesh_connections)

    def _tp_ring(self, units, tokens, name: str) -> CollectiveStep:
        m, par = self.deployment.model, self.deployment.parallelism
        members: list[Member] = []
        for k, u in enumerate(units):
            payload = tokens[k] / par.sp * m.hidden_size * m.dtype_bytes
            size = 2.0 * (par.tp - 1) / par.tp * payload
            if size <= 0:
                continue
            for s in range(par.sp):
                ring = u.gpus[s * par.tp:(s + 1) * par.tp]
                for i, g in enumerate(ring):
                    members.append((g, ring[(i + 1) % len(ring)], size))
        return CollectiveStep(name, tuple(members), self.comm.ring_channels)

    # --- Stage 1 and Stage 3 -----------------------------------------------------------------

    def _kv_transfers(self, units, chunks):
        kv = kv_bytes_per_token_per_layer(self.deployment.model)
        reuse, p2d = [], []
        for c in chunks:
            u = units[c.unit_index]
            g = len(u.gpus)
            if c.p2d_tokens > 0:
                share = c.p2d_tokens * kv / g
                p2d.append(RequestTransfer(c.request_id, tuple(
                    (src, dst, share) for src, dst in zip(u.gpus, u.decode_gpus, strict=True)),
                    self.comm.kv_connections))
            if c.reuse_tokens > 0 and c.reuse_unit is not None:
                share = c.reuse_tokens * kv / g
                reuse.append(RequestTransfer(c.request_id, tuple(
                    (src, dst, share) for src, dst in zip(c.reuse_unit.gpus, u.gpus,
                                                          strict=True)), self.comm.kv_connections))
        return tuple(reuse), tuple(p2d)


def _tidy(steps) -> tuple[ComputeStep | CollectiveStep, ...]:
    """Drop empty collectives and merge compute steps that end up adjacent."""
    out: list[ComputeStep | CollectiveStep] = []
    for s in steps:
        if isinstance(s, CollectiveStep) and not s.members:
            continue
        if isinstance(s, ComputeStep) and out and isinstance(out[-1], ComputeStep):
            prev = out.pop()
            s = ComputeStep(f"{prev.name}+{s.name}", prev.duration_s + s.duration_s)
        out.append(s)
    return tuple(out)
