"""vLLM's real v1 Scheduler drives the MFS connector (wrapping vLLM's NixlConnector, whose
scheduler half needs no NIXL library) through its scheduler-side hooks; MFS's per-request
priorities, order and pruned set are visible in the metadata of each step."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from mfsched.integrations.vllm.connector import MFSConnector, MFSConnectorMetadata
from mfsched.policy import Stage

T0 = 1_000_000.0
PROMPT = 64
SCHEDULER_HOOKS = ("on_new_request", "get_num_new_matched_tokens", "update_state_after_alloc",
                   "build_connector_meta", "update_connector_output", "request_finished",
                   "get_external_cache_hit_sources", "get_loaded_kv_cache_group_ids",
                   "take_events", "has_pending_block_frees")

# 1 Mbit/s lanes: one layer of a 64-token request's KV (16 KiB) needs ~0.13 s, so deadlines
# of 0.5 s, 2 s and 50 s land in different MLU bands and 0.05 s is out of reach.
MFS = {"link_gbps": 0.001, "default_slo_s": 20.0, "slo_by_priority_s": {"1": 2.0}}


def _remote_prefill(i: int, **extra) -> dict:
    return {"do_remote_prefill": True, "do_remote_decode": False,
            "remote_engine_id": "prefill-engine", "remote_request_id": f"p-{i}",
            "remote_block_ids": list(range(PROMPT // 16)), "remote_host": "localhost",
            "remote_port": 5601, "tp_size": 1, **extra}


def _spy(connector: MFSConnector) -> Counter:
    calls: Counter = Counter()
    for name in SCHEDULER_HOOKS:
        method = getattr(connector, name)

        def wrapper(*args, _method=method, _name=name, **kwargs):
            calls[_name] += 1
            return _method(*args, **kwargs)

        setattr(connector, name, wrapper)
    return calls


def test_decode_side_remote_loads_are_planned_by_mfs(vllm_env, fake_clock):
    sched = vllm_env.scheduler(vllm_env.config({"kv_connector": "NixlConnector"}, "kv_consumer",
                                               MFS))
    conn = sched.connector
    assert isinstance(conn, MFSConnector)
    assert conn.inner._kv_transfer_config.engine_id == conn._kv_transfer_config.engine_id
    conn.clock = fake_clock(T0)
    calls = _spy(conn)

    # Step 1: a request whose deadline cannot be met even alone is pruned to the scavenger.
    hopeless = vllm_env.request("d", PROMPT, T0, seed=4,
                                kv_transfer_params=_remote_prefill(4, deadline=T0 + 0.05))
    sched.add_request(hopeless)
    out = sched.schedule()
    meta = out.kv_connector_metadata
    assert isinstance(meta, MFSConnectorMetadata)
    assert meta.order == ("d",) and meta.pruned == frozenset({"d"})
    assert meta.priorities["d"].level == conn.options.num_levels
    assert list(meta.inner.reqs_to_recv) == ["d"]
    sched.update_from_output(out, vllm_env.model_output([]))

    # Step 2: three requests, SLOs from kv_transfer_params (relative and absolute) and from
    # the request priority; they arrive lax-first but MFS orders them by MLU band.
    reqs = [
        vllm_env.request("a", PROMPT, T0, seed=1,
                         kv_transfer_params=_remote_prefill(1, ttft_slo_s=50)),
        vllm_env.request("b", PROMPT, T0, seed=2,
                         kv_transfer_params=_remote_prefill(2, deadline=T0 + 0.5)),
        vllm_env.request("c", PROMPT, T0, seed=3, kv_transfer_params=_remote_prefill(3),
                         priority=1),
    ]
    for r in reqs:
        sched.add_request(r)
    out = sched.schedule()
    meta = out.kv_connector_metadata
    by_id = {r.req_id: r for r in meta.plan.requests}
    assert {r: by_id[r].deadline_s - T0 for r in "abc"} == pytest.approx(
        {"a": 50.0, "b": 0.5, "c": 2.0})
    assert all(by_id[r].load_stage == Stage.P2D and by_id[r].load_async for r in "abc")
    assert all(by_id[r].load_tokens > 0 for r in "abc")
    levels = {r: meta.priorities[r].level for r in "abc"}
    assert levels["b"] < levels["c"] < levels["a"] < conn.options.num_levels
    assert meta.order == ("b", "c", "a")
    assert meta.pruned == frozenset({"d"})
    # The inner NixlConnector's own metadata lists its reads in MFS order.
    assert list(meta.inner.reqs_to_recv) == ["b", "c", "a"]

    # The workers report the reads done; the requests run and finish (max_tokens=1).
    sched.update_from_output(out, vllm_env.model_output([], finished_recving=set("abcd")))
    assert conn.planner.driver.live_flows("b") == frozenset()
    out = sched.schedule()
    assert sorted(out.num_scheduled_tokens) == ["a", "b", "c", "d"]
    assert all(p is None for p in out.kv_connector_metadata.priorities.values())
    sched.update_from_output(out, vllm_env.model_output([hopeless, *reqs]))
    sched.schedule()

    for hook in ("on_new_request", "get_num_new_matched_tokens", "update_state_after_alloc",
                 "build_connector_meta", "update_connector_output", "request_finished",
                 "get_loaded_kv_cache_group_ids"):
        assert calls[hook] > 0, hook
    assert calls["request_finished"] == 4
    assert calls["update_state_after_alloc"] >= 8  # once to load, once after the load
    assert not any(conn.planner.driver.has_request(r) for r in "abcd")


def test_prefill_side_saves_and_deadline_handoff(vllm_env, fake_clock, tmp_path):
    trace = tmp_path / "mfs.jsonl"
    sched = vllm_env.scheduler(vllm_env.config({"kv_connector": "NixlConnector"}, "kv_producer",
                                               {**MFS, "trace_path": str(trace)}))
    conn = sched.connector
    conn.clock = fake_clock(T0)
    calls = _spy(conn)
    tight = vllm_env.request("p1", PROMPT, T0, seed=5,
                             kv_transfer_params={"do_remote_decode": True, "ttft_slo_s": 0.6})
    lax = vllm_env.request("p2", PROMPT, T0, seed=6,
                           kv_transfer_params={"do_remote_decode": True, "ttft_slo_s": 30})
    sched.add_request(lax)
    sched.add_request(tight)

    out = sched.schedule()
    meta = out.kv_connector_metadata
    by_id = {r.req_id: r for r in meta.plan.requests}
    assert by_id["p1"].save_tokens == by_id["p2"].save_tokens == PROMPT
    assert meta.order == ("p1", "p2")
    assert meta.priorities["p1"] < meta.priorities["p2"]
    assert not meta.pruned

    # Prefill is done after one token; NixlConnector keeps the blocks for the decode side's
    # read and returns the parameters for it, to which MFS adds the original deadline.
    outputs = sched.update_from_output(out, vllm_env.model_output([lax, tight]))
    params = {o.request_id: o.kv_transfer_params for eo in outputs.values() for o in eo.outputs}
    assert params["p1"]["mfs_deadline_s"] == pytest.approx(T0 + 0.6)
    assert params["p2"]["mfs_deadline_s"] == pytest.approx(T0 + 30)
    assert params["p1"]["do_remote_prefill"] is True
    # The P2D flows stay in flight until vLLM reports the KV sent.
    assert conn.planner.driver.live_flows("p1")
    out = sched.schedule()
    sched.update_from_output(out, vllm_env.model_output([], finished_sending={"p1", "p2"}))
    assert not conn.planner.driver.live_flows("p1")
    assert not conn.planner.driver.has_request("p1")
    assert calls["request_finished"] == 2
    assert calls["update_connector_output"] >= 1
    # The decision log has the step's plan, as JSON lines.
    plans = [json.loads(line) for line in trace.read_text().splitlines()]
    assert plans[0]["event"] == "plan" and plans[0]["role"] == "scheduler"
    assert plans[0]["order"] == ["p1", "p2"]
    assert plans[0]["requests"]["p1"]["save_tokens"] == PROMPT
