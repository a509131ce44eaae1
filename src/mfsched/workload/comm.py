"""How the serving stack puts its bytes on the wire: the EP collective's implementation and the
transport connections each transfer is striped over.

Two facts of the real software decide how hard the stages collide on a link, and neither is a
free knob; each default below is what the named software does on the scenario's hardware:

* **The EP collective's implementation** (``ep_backend``):

  - ``alltoall``: a routed all-to-all (DeepEP/pplx style): each token's activation goes to the
    EP ranks of its top-k experts, over one connection per pair of ranks. These kernels need
    GPU-initiated RDMA (NVSHMEM over GPUDirect RDMA, or NVLink), so they are the default only
    where the GPU supports GPUDirect RDMA.
  - ``allgather``: vLLM's ``allgather_reducescatter`` backend, its default
    (``vllm/config/parallel.py``: ``all2all_backend = "allgather_reducescatter"``, v0.33):
    dispatch all-gathers every rank's hidden states plus its top-k weights and ids over the EP
    group, every rank runs its local experts on all tokens, and combine reduce-scatters the
    outputs. With unequal token counts vLLM's ``PyNcclCommunicator.all_gatherv`` and
    ``reduce_scatterv`` issue one grouped ``ncclBroadcast`` / ``ncclReduce`` per rank, and NCCL
    runs broadcast and reduce with the ring algorithm only (``src/graph/tuning.cc``), so the
    bytes move along the ring: edge r -> r+1 carries every shard but one. With TP > 1 vLLM
    uses sequence-parallel MoE (``ParallelConfig.use_sequence_parallel_moe``): each GPU of the
    instance contributes its unit's tokens / tp and the ring spans all GPUs of the instance.

* **Connections per transfer**, the unit of fairness on a link (TCP connections, or RDMA queue
  pairs under DCQCN, converge to per-connection fair shares):

  - ``ring_channels``: NCCL stripes a ring collective over channels, each with its own
    connection on every ring edge (``NCCL_IB_QPS_PER_CONNECTION`` defaults to 1). On servers
    whose GPUs hang off PCIe Gen3, NCCL's topology search stops at one ring, because one ring
    already reaches the GPU's PCIe bandwidth (``PCI_BW`` 12 GB/s = ``totalBw``,
    ``src/graph/search.cc``); ``ncclTopoDupChannels`` adds none below 25 GB/s per channel, and
    ``connectRings`` then doubles every channel (``src/graph/connect.cc``): 2 channels, both on
    the same ring and NICs. On servers with one NIC per GPU the search finds one ring per NIC
    and doubles them: 2 per NIC.
  - ``kv_connections``: the KV transfer engine. The paper integrates Mooncake, whose RDMA
    transport opens ``num_qp_per_ep = 2`` queue pairs per endpoint and stripes 64 KiB slices
    over them (Mooncake ``GlobalConfig`` defaults).
  - ``mesh_connections``: connections per pair of ranks of a routed all-to-all (1).

``ring_collectives=False`` moves the all-gather / reduce-scatter as a mesh instead (every rank
straight to every other over its own connection), the way the model moved it before it knew
NCCL's rings; it exists to measure what the ring changes.

Simplification (named): connections are per transfer. Mooncake's queue pairs belong to an
endpoint (a pair of NICs) and concurrent transfers between the same NICs share them; here each
concurrent KV transfer brings its own, which favours KV traffic when several transfers of one
unit overlap.

Callers: :mod:`mfsched.workload.stages` (collective members and connections), the run
configuration (defaults per scenario), ``docs/design.md`` section "Contention mechanisms".
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

__all__ = ["EP_BACKENDS", "CommModel", "default_comm"]

EP_BACKENDS = ("alltoall", "allgather")

# NCCL: one ring per NIC (or one ring on PCIe Gen3), every channel doubled by connectRings.
_NCCL_CHANNEL_DUPLICATION = 2
# Mooncake transfer engine, GlobalConfig.num_qp_per_ep.
MOONCAKE_QPS_PER_ENDPOINT = 2


@dataclass(frozen=True, slots=True)
class CommModel:
    ep_backend: str = "alltoall"
    ring_channels: int = _NCCL_CHANNEL_DUPLICATION
    kv_connections: int = 1
    mesh_connections: int = 1
    ring_collectives: bool = True

    def __post_init__(self) -> None:
        if self.ep_backend not in EP_BACKENDS:
            raise UserError(f"EP backend {self.ep_backend!r} unknown; choose from "
                            f"{', '.join(EP_BACKENDS)}")
        for name in ("ring_channels", "kv_connections", "mesh_connections"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be at least 1, "
                                f"got {getattr(self, name)}")


def default_comm(gpudirect_rdma: bool, nccl_rings: int) -> CommModel:
    """What the paper's software stack does on this hardware.

    ``gpudirect_rdma``: whether the GPU supports GPUDirect RDMA (data-center parts do,
    GeForce cards do not), which routed all-to-all kernels need. ``nccl_rings``: the rings
    NCCL's topology search finds (1 on PCIe Gen3 servers, one per NIC on rail-optimised
    NVSwitch servers); each is doubled into two channels.
    """
    return CommModel(ep_backend="alltoall" if gpudirect_rdma else "allgather",
                     ring_channels=_NCCL_CHANNEL_DUPLICATION * nccl_rings,
                     kv_connections=MOONCAKE_QPS_PER_ENDPOINT)
