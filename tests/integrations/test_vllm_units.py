"""The vLLM-free parts of the integration: options, deadlines, transport knobs, ordering, gate."""

from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from mfsched.errors import UserError
from mfsched.integrations.vllm.gate import (
    InProcessGate,
    TransferTicket,
    make_gate,
)
from mfsched.integrations.vllm.options import MFSOptions, parse_options
from mfsched.integrations.vllm.ordering import ordered_view, reorder_metadata, snapshot, write_back
from mfsched.integrations.vllm.planner import (
    ModelShape,
    ScheduledRequest,
    StepPlanner,
    kv_bytes_per_token_per_layer,
    request_deadline_s,
)
from mfsched.integrations.vllm.transport import (
    DEFAULT_DSCP,
    apply_socket_class,
    nccl_env,
    nixl_engine_config,
    stage2_nccl_env,
    transport_class,
    ucx_env,
)
from mfsched.policy import Stage
from mfsched.traffic_classes import ClassTable

# --- options and deadlines --------------------------------------------------------------------


def test_options_parse_and_validate():
    o = parse_options({"default_slo_s": 2, "slo_by_priority_s": {"0": 1.5, "3": 9},
                       "policy_options": {"drop_budget": 1}, "gate": "daemon:/tmp/x.sock"})
    assert o.slo_for_priority_s(3) == 9.0 and o.slo_for_priority_s(1) is None
    assert o.policy_options == (("drop_budget", "1"),)
    assert o.link_bps == 100e9
    for bad in ({"nope": 1}, {"default_slo_s": 0}, {"gate": "tcp:1"}, {"link_gbps": -1}):
        with pytest.raises(UserError):
            parse_options(bad)


def test_deadline_precedence():
    o = MFSOptions(default_slo_s=4.0, slo_by_priority_s=((2, 1.0),))
    assert request_deadline_s(10.0, 0, None, o) == (14.0, "default")
    assert request_deadline_s(10.0, 2, {}, o) == (11.0, "priority")
    assert request_deadline_s(10.0, 2, {"ttft_slo_s": 0.25}, o) == (10.25, "ttft_slo_s")
    assert request_deadline_s(10.0, 2, {"ttft_slo_s": 0.25, "deadline": 12}, o) == \
        (12.0, "deadline")
    assert request_deadline_s(10.0, 0, {"mfs_deadline_s": 10.5}, o) == (10.5, "mfs_deadline_s")
    assert request_deadline_s(10.0, 0, {"deadline": "soon"}, o) == (14.0, "default")


def test_kv_bytes_per_token_per_layer():
    # Llama-3-8B per TP rank at TP 1: 8 KV heads x 128 x fp16, K and V.
    assert kv_bytes_per_token_per_layer(8, 128, 2) == 4096
    assert kv_bytes_per_token_per_layer(1, 576, 2, mla=True) == 1152


# --- transport knobs --------------------------------------------------------------------------


def test_default_table_with_eight_levels():
    # the one table of mfsched.traffic_classes: class 0 is control, level 0 (urgent P2D) is
    # class 1 = EF, the early-stage levels 1..4 classes 2..5, the P2D bands share class 6, the
    # scavenger is class 7 = LE
    got = [(c.index, c.dscp, c.ip_tos, c.so_priority, c.ib_sl)
           for c in (transport_class(lv, 8) for lv in range(9))]
    assert got == [(1, 46, 184, 5, 6), (2, 40, 160, 4, 5), (3, 32, 128, 3, 4),
                   (4, 24, 96, 2, 3), (5, 16, 64, 1, 2), (6, 8, 32, 0, 1),
                   (6, 8, 32, 0, 1), (6, 8, 32, 0, 1), (7, 1, 4, 0, 0)]
    assert len(DEFAULT_DSCP) == 8


def test_transport_environments():
    urgent = transport_class(0, 8)
    assert ucx_env(urgent) == {"UCX_IB_TRAFFIC_CLASS": "184", "UCX_IB_SL": "6"}
    assert nccl_env(urgent) == {"NCCL_IB_TC": "184", "NCCL_IB_SL": "6"}
    assert nixl_engine_config(urgent, "RCACHE_ENABLE=n") == \
        "RCACHE_ENABLE=n,IB_TRAFFIC_CLASS=184,IB_SL=6"
    assert stage2_nccl_env(8) == nccl_env(transport_class(1, 8))
    # a fabric with two classes and nothing reserved: everything but the scavenger shares one
    two = ClassTable(dscp=(26, 0), reserved=0)
    assert [transport_class(lv, 8, two).dscp for lv in (0, 7, 8)] == [26, 26, 0]
    with pytest.raises(ValueError):
        ClassTable(dscp=(64,))


def test_apply_socket_class_marks_a_socket():
    cls = transport_class(1, 8)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        apply_socket_class(s, cls)
        assert s.getsockopt(socket.IPPROTO_IP, socket.IP_TOS) == cls.ip_tos
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY) == cls.so_priority


# --- ordering of the inner connector's work ---------------------------------------------------


@dataclass
class _Cached:
    req_ids: list
    num_computed_tokens: list
    new_block_ids: list
    resumed_req_ids: set = field(default_factory=set)


def test_ordered_view_and_write_back():
    output = SimpleNamespace(
        scheduled_new_reqs=[SimpleNamespace(req_id=r) for r in "xyz"],
        scheduled_cached_reqs=_Cached(["p", "q"], [1, 2], [[10], [20]]),
        new_block_ids_to_zero=[1, 2])
    view = ordered_view(output, ["z", "q", "x"])
    assert [r.req_id for r in view.scheduled_new_reqs] == ["z", "x", "y"]
    assert view.scheduled_cached_reqs == _Cached(["q", "p"], [2, 1], [[20], [10]])
    assert [r.req_id for r in output.scheduled_new_reqs] == ["x", "y", "z"]
    before = snapshot(view)
    view.new_block_ids_to_zero = [2]  # an inner connector trims the list
    write_back(view, before, output)
    assert output.new_block_ids_to_zero == [2]
    assert [r.req_id for r in output.scheduled_new_reqs] == ["x", "y", "z"]


def test_reorder_metadata_by_request():
    meta = SimpleNamespace(recv={"a": 1, "b": 2, "c": 3}, items=[{"req_id": "a"}, {"req_id": "c"}],
                           anonymous=[1, 2], engines={"e1": 0, "e2": 1})
    reorder_metadata(meta, ["c", "a"])
    assert list(meta.recv) == ["c", "a", "b"]
    assert meta.items == [{"req_id": "c"}, {"req_id": "a"}]
    assert meta.anonymous == [1, 2] and list(meta.engines) == ["e1", "e2"]


# --- planner and gate without vLLM ------------------------------------------------------------


def _planner(**kw) -> StepPlanner:
    return StepPlanner(MFSOptions(link_gbps=0.001, **kw), ModelShape(4, 256, 2),
                       produces_kv=True)


def test_planner_saves_are_p2d_per_layer_and_complete_next_step():
    p = _planner()
    p.add_request("r", 0.0, 0, 100, {"ttft_slo_s": 1.0}, 0.0)
    plan = p.plan_step(0.0, [ScheduledRequest("r", 0, 60)])
    (r,) = plan.requests
    assert (r.save_tokens, r.load_tokens, r.level is not None) == (60, 0, True)
    flows = [p.driver.flow(f) for f in p.driver.live_flows("r")]
    assert sorted(f.layer for f in flows) == [0, 1, 2, 3]
    assert {(f.stage, f.members, f.size_bytes, f.total_bytes) for f in flows} == \
        {(Stage.P2D, 2, 60 * 256, 2 * 60 * 256)}
    plan = p.plan_step(0.01, [ScheduledRequest("r", 60, 40)])
    assert plan.requests[0].save_tokens == 40 and len(p.driver.live_flows("r")) == 4
    p.plan_step(0.02, [ScheduledRequest("r", 100, 1)])
    assert not p.driver.live_flows("r")
    p.finish_request("r", async_send=False, now_s=0.03)
    assert not p.driver.has_request("r")


def test_planner_async_send_waits_for_report():
    p = _planner()
    p.add_request("r", 0.0, 0, 10, None, 0.0)
    p.plan_step(0.0, [ScheduledRequest("r", 0, 10)])
    p.finish_request("r", async_send=True, now_s=0.01)
    p.plan_step(0.02, [])
    assert p.driver.live_flows("r")
    p.transfers_done((), ("r",), 0.03)
    assert not p.driver.has_request("r")


def test_gate_orders_stage1_by_rli_and_promotes_at_layer_boundaries():
    p = _planner()
    p.add_request("r", 0.0, 0, 64, None, 0.0)
    p.note_load("r", 64, is_async=False)
    plan = p.plan_step(0.0, [ScheduledRequest("r", 64, 0)])
    gate = InProcessGate(p.options)
    gate.begin_step(plan, 0.0)
    for layer in (3, 1, 0, 2):
        gate.submit(TransferTicket("r", "load", Stage.KV_REUSE, layer, layer, 1e4, 2, None), 0.0)
    gate.layer_start(0, 0.0)
    permits = gate.permit(0.0)
    assert [pm.ticket.layer for pm in permits] == [0, 1, 2, 3]
    levels = [pm.priority.level for pm in permits]
    assert levels == sorted(levels) and levels[0] < levels[-1]
    by_layer = {pm.ticket.layer: pm.flow_id for pm in permits}
    gate.complete(by_layer[0], 0.001)
    gate.layer_start(3, 0.002)  # RLI of layer 3's load drops to 0: promoted to the top early level
    assert gate.driver.priority(by_layer[3]).level == levels[0]
    gate.end_step(0.003)
    for layer in (1, 2, 3):
        gate.complete(by_layer[layer], 0.004)
    assert gate.driver.has_batch(plan.step)  # the driver departs batches when it decides next
    assert gate.permit(0.005) == []
    assert not gate.driver.has_batch(plan.step)


def test_gate_choice():
    assert isinstance(make_gate(MFSOptions()), InProcessGate)
    from mfsched.dataplane.client import DaemonUnavailable

    with pytest.raises(DaemonUnavailable, match=r"/run/mfs\.sock"):  # no daemon there
        make_gate(MFSOptions(gate="daemon:/run/mfs.sock"))


def test_core_and_pure_modules_do_not_import_vllm():
    code = ("import sys, mfsched, mfsched.policy, mfsched.integrations.vllm as m\n"
            "from mfsched.integrations.vllm import gate, options, ordering, planner, transport\n"
            "assert 'vllm' not in sys.modules, 'vllm imported'\n"
            "assert 'MFSConnector' in m.__all__\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
