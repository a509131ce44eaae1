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
