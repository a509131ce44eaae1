"""Stage planner: flow volumes and layer structure, hand-computed."""

import pytest

from mfsched.workload.compute import ComputeModel
from mfsched.workload.deployment import Parallelism, build_deployment
from mfsched.workload.hardware import GPUS
from mfsched.workload.models import MODELS
from mfsched.workload.stages import (
    Chunk,
    CollectiveStep,
    ComputeStep,
    StagePlanner,
    ep_dispatch_bytes,
)


def planner(model="mixtral-8x7b", par=None, gpus=32, per_server=4):
    par = par or Parallelism(tp=1, ep=8)
    m = MODELS.get(model)
    d = build_deployment(m, par, gpus, per_server)
    return StagePlanner(d, ComputeModel(GPUS.get("rtx3090")), 12.6e9), d


def test_ep_dispatch_bytes():
    m = MODELS.get("mixtral-8x7b")
    # 100 tokens x 4096 x 2 experts x 2 bytes / 8 units
    assert ep_dispatch_bytes(m, 100, 8) == 100 * 4096 * 2 * 2 / 8


def test_moe_layer_structure_and_volumes():
    p, _d = planner()
    plan = p.plan(0, [Chunk(7, 0, 100, 0, 100), Chunk(8, 3, 50, 16, 66)])
    kinds = [type(s).__name__ for s in plan.steps]
    assert kinds == ["ComputeStep", "CollectiveStep", "ComputeStep", "CollectiveStep"]
    dispatch, combine = plan.steps[1], plan.steps[3]
    assert dispatch.name == "ep-dispatch" and combine.name == "ep-combine"
    # unit 0 sends 100 tokens' share to each of 7 others, unit 3 50 tokens' share
    assert len(dispatch.members) == 14
    by_src = {}
    for src, _dst, size in dispatch.members:
        by_src.setdefault(src, set()).add(size)
    assert by_src == {0: {100 * 16384 / 8}, 3: {50 * 16384 / 8}}
    assert sorted((dst, src) for src, dst, _ in combine.members) == sorted(
        (src, dst) for src, dst, _ in dispatch.members)


def test_p2d_and_reuse_members():
    p, d = planner()
    remote = d.instances[1][2]
    plan = p.plan(0, [Chunk(1, 5, 40, 24, 64, reuse_tokens=24, reuse_unit=remote)])
    (p2d,) = plan.p2d
    assert p2d.members == ((5, 21, 64 * 4096),)
    (reuse,) = plan.reuse
    assert reuse.members == ((10, 5, 24 * 4096),)


def test_tp_lanes_split_kv():
    p, _d = planner("mixtral-8x22b", Parallelism(tp=4, ep=8), gpus=128, per_server=8)
    plan = p.plan(0, [Chunk(1, 1, 10, 0, 10)])
    (p2d,) = plan.p2d
    assert [m[:2] for m in p2d.members] == [(4, 68), (5, 69), (6, 70), (7, 71)]
    assert {m[2] for m in p2d.members} == {10 * 4096 / 4}
    dispatch = plan.steps[1]
    assert len(dispatch.members) == 7 * 4  # to 7 units, one member per TP lane


def test_single_unit_dense_merges_compute():
    m = MODELS.get("llama-3-70b")
    d = build_deployment(m, Parallelism(tp=8), 32, 8)
    p = StagePlanner(d, ComputeModel(GPUS.get("a100")), 300e9)
    plan = p.plan(0, [Chunk(1, 0, 1000, 0, 1000)])
    assert len(plan.steps) == 1 and isinstance(plan.steps[0], ComputeStep)
    assert plan.steps[0].name == "attention+ffn"


def test_sp_allgather():
    m = MODELS.get("llama-3-8b")
    d = build_deployment(m, Parallelism(tp=4, sp=4), 64, 8)
    p = StagePlanner(d, ComputeModel(GPUS.get("a100")), 300e9)
    plan = p.plan(0, [Chunk(1, 0, 400, 0, 400)])
    ag = plan.steps[1]
    assert isinstance(ag, CollectiveStep) and ag.name == "sp-allgather"
    assert len(ag.members) == 4 * 3 * 4  # 4 SP ranks x 3 peers x 4 TP lanes
    assert {m[2] for m in ag.members} == {400 / 4 * 4096 / 4}


def test_cross_server_tp_becomes_flows():
    m = MODELS.get("llama-3-70b")
    d = build_deployment(m, Parallelism(tp=8), 32, 4)  # 4 GPUs per server: TP8 spans two
    p = StagePlanner(d, ComputeModel(GPUS.get("a100")), 300e9)
    plan = p.plan(0, [Chunk(1, 0, 100, 0, 100)])
    names = [s.name for s in plan.steps]
    assert names == ["attention", "tp-allreduce-attn", "ffn", "tp-allreduce-ffn"]
    ring = plan.steps[1]
    assert len(ring.members) == 8
    assert ring.members[0][2] == pytest.approx(2 * 7 / 8 * 100 * 8192 * 2)


def test_lockstep_uses_slowest_unit():
    p, _ = planner()
    one = p.plan(0, [Chunk(1, 0, 1000, 0, 1000)])
    two = p.plan(0, [Chunk(1, 0, 1000, 0, 1000), Chunk(2, 1, 10, 0, 10)])
    assert two.steps[0].duration_s == pytest.approx(one.steps[0].duration_s)
    assert two.steps[2].duration_s >= one.steps[2].duration_s


# --- contention mechanisms (issue 9): volumes, paths and connections by hand ---------------

def test_allgather_dispatch_bytes_per_token():
    from mfsched.workload.models import allgather_dispatch_bytes_per_token

    # Mixtral-8x7B: hidden 4096 x 2 bytes + top-2 x (4-byte weight + 4-byte id)
    assert allgather_dispatch_bytes_per_token(MODELS.get("mixtral-8x7b")) == 8192 + 16
    # DBRX: 6144 x 2 + 4 x 8
    assert allgather_dispatch_bytes_per_token(MODELS.get("dbrx")) == 12288 + 32
    assert allgather_dispatch_bytes_per_token(MODELS.get("llama-3-8b")) == 0


def _ring_planner(**comm):
    from mfsched.workload.comm import CommModel

    m = MODELS.get("mixtral-8x7b")
    d = build_deployment(m, Parallelism(tp=1, ep=8), 32, 4)
    return StagePlanner(d, ComputeModel(GPUS.get("rtx3090")), 12.6e9,
                        CommModel(ep_backend="allgather", **comm))


def test_allgather_ring_volumes_one_busy_unit():
    """Only unit 0 has tokens: its 100-token shard travels the ring 0 -> 1 -> ... -> 7 (the
    edge 7 -> 0 would carry only unit 0's own shard, so it is absent); the reduce-scatter
    carries unit 0's partial outputs from every other rank back, and edge 0 -> 1 carries
    nothing."""
    plan = _ring_planner(ring_channels=2).plan(0, [Chunk(1, 0, 100, 0, 100)])
    gather, scatter = plan.steps[1], plan.steps[3]
    assert (gather.name, scatter.name) == ("ep-allgather", "ep-reducescatter")
    assert gather.members == tuple((i, i + 1, 100 * 8208.0) for i in range(7))
    assert scatter.members == tuple((i, (i + 1) % 8, 100 * 8192.0) for i in range(1, 8))
    assert gather.connections == scatter.connections == 2


def test_allgather_ring_volumes_uneven_units():
    """Units 0..7 hold 10, 20, ..., 80 tokens: edge r -> r+1 carries every shard but the
    receiver's (all-gather) and every shard but the sender's (reduce-scatter)."""
    chunks = [Chunk(k, k, 10 * (k + 1), 0, 10 * (k + 1)) for k in range(8)]
    plan = _ring_planner().plan(0, chunks)
    gather, scatter = plan.steps[1], plan.steps[3]
    total = 360  # tokens
    assert [m[2] for m in gather.members] == [
        (total - 10 * ((i + 1) % 8 + 1)) * 8208.0 for i in range(8)]
    assert [m[2] for m in scatter.members] == [(total - 10 * (i + 1)) * 8192.0 for i in range(8)]
    # the ring's server crossings leave through the NIC of the last GPU of a server
    assert [(s, d) for s, d, _ in gather.members] == [(i, (i + 1) % 8) for i in range(8)]


def test_allgather_ring_with_tp_splits_tokens_over_every_gpu():
    """TP 2 x EP 4 (sequence-parallel MoE): one ring over the 8 GPUs, each holding half of its
    unit's tokens."""
    from mfsched.workload.comm import CommModel

    m = MODELS.get("mixtral-8x7b")
    d = build_deployment(m, Parallelism(tp=2, ep=4), 32, 4)
    p = StagePlanner(d, ComputeModel(GPUS.get("rtx3090")), 12.6e9,
                     CommModel(ep_backend="allgather"))
    gather = p.plan(0, [Chunk(1, 1, 100, 0, 100)]).steps[1]  # unit 1 = GPUs 2, 3
    shard = 50 * 8208.0
    # shards sit on GPUs 2 and 3; edge i -> i+1 carries all but GPU i+1's
    expected = {(i, (i + 1) % 8): 2 * shard - (shard if (i + 1) % 8 in (2, 3) else 0)
                for i in range(8)}
    assert {(s, d): b for s, d, b in gather.members} == expected


def test_kv_transfers_carry_the_engines_connections():
    from mfsched.workload.comm import CommModel

    m = MODELS.get("mixtral-8x7b")
    d = build_deployment(m, Parallelism(tp=1, ep=8), 32, 4)
    p = StagePlanner(d, ComputeModel(GPUS.get("rtx3090")), 12.6e9, CommModel(kv_connections=2))
    plan = p.plan(0, [Chunk(1, 5, 40, 24, 64, reuse_tokens=24, reuse_unit=d.instances[1][2])])
    assert plan.p2d[0].connections == plan.reuse[0].connections == 2
    assert plan.steps[1].connections == 1  # routed all-to-all: one connection per pair


def test_default_comm_per_hardware():
    from mfsched.workload.comm import default_comm

    geforce = default_comm(GPUS.get("rtx3090").gpudirect_rdma, nccl_rings=1)
    assert (geforce.ep_backend, geforce.ring_channels, geforce.kv_connections) == (
        "allgather", 2, 2)
    a100 = default_comm(GPUS.get("a100").gpudirect_rdma, nccl_rings=8)
    assert (a100.ep_backend, a100.ring_channels, a100.kv_connections) == ("alltoall", 16, 2)


def test_testbed_nic_traffic_crosses_both_gpus_pcie_links():
    """Without GPUDirect RDMA a NIC byte is staged through host memory: it still crosses the
    sending GPU's PCIe link once and the receiving GPU's once, and one NIC up and one down
    (GPU g of a server uses NIC (g mod 4) // 2)."""
    from mfsched.sim.topology import TestbedConfig, build_topology

    t = build_topology(TestbedConfig())
    names = [t.link_names[i] for i in t.path(3, 4)]
    assert names == ["gpu3.pcie.out", "s0.nic1.up", "s1.nic0.down", "gpu4.pcie.in"]
    assert [t.link_names[i] for i in t.path(0, 2)] == ["gpu0.pcie.out", "gpu2.pcie.in"]
    # payload rates: PCIe 3.0 x16 (15.75 GB/s) x 0.8; 100 Gb/s x 1448/1502
    assert t.capacity_bps[t.path(3, 4)[0]] == pytest.approx(15.75e9 * 8 * 0.8)
    assert t.capacity_bps[t.path(3, 4)[1]] == pytest.approx(100e9 * 1448 / 1502)


def test_allgather_as_a_mesh_when_rings_are_off():
    """The mesh reading: unit 0's 100-token shard goes straight to each of the 7 others, and
    each of them returns its partial outputs for those tokens straight to unit 0."""
    plan = _ring_planner(ring_collectives=False).plan(0, [Chunk(1, 0, 100, 0, 100)])
    gather, scatter = plan.steps[1], plan.steps[3]
    assert gather.members == tuple((0, j, 100 * 8208.0) for j in range(1, 8))
    assert scatter.members == tuple((j, 0, 100 * 8192.0) for j in range(1, 8))
    assert gather.connections == 1
