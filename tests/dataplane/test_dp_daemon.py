"""Daemons with in-memory transports: the local API, policies, completions, bad input, load,
the coordinator, and Serving driven through the wall-clock engine (no root needed)."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
from pathlib import Path

from conftest import Client

from mfsched.dataplane import protocol
from mfsched.dataplane.coordinator import CoordinatorState
from mfsched.dataplane.scale import Scale
from mfsched.policy.types import BatchInfo, FlowInfo, RequestInfo, Stage

HELLO = {"type": "hello", "role": "driver", "run_id": "t1", "scheduler": "fs",
         "num_levels": 8, "epoch_s": time.monotonic(), "time_scale": 1.0, "byte_scale": 1.0}


def _flow(fid, batch=1, stage=Stage.COLLECTIVE, size=64 * 1024.0, deadline=None, rid=1):
    return FlowInfo(fid, stage, batch, (rid,), 0, 0, size, size, 1, ((0, size),), 8e9,
                    deadline, 0.0)


def _driver(path, **hello):
    c = Client(path)
    c.send({**HELLO, "epoch_s": time.monotonic(), **hello})
    assert c.recv_type("welcome")["server"] >= 0
    return c


def _start_batch(c, batch=1, rids=(1,)):
    for rid in rids:
        c.send(protocol.request_msg(RequestInfo(rid, 0.0, 10.0, 100)))
    c.send(protocol.batch_msg(BatchInfo(batch, 0, tuple(rids), 4, 0.0, 1e-3)))


def test_flows_complete_with_every_byte_delivered(memory_cluster):
    mc = memory_cluster(servers=3)
    c = _driver(mc.paths[0])
    _start_batch(c)
    # GPUs 0..3 live on server 0; 4.. on server 1; 8.. on server 2; one intra-server member
    members = [(0, 0, 4, 100_000.0), (1, 1, 9, 50_000.0), (2, 2, 3, 10_000.0)]
    c.send(protocol.flow_msg(_flow(1, size=100_000.0), members))
    done = c.recv_type("completion")
    assert done["flow_id"] == 1 and done["bytes"] == 160_000
    stats = [mc.call(_stats(d)) for d in mc.daemons]
    assert stats[1]["transport.bytes_delivered"] == 100_000
    assert stats[2]["transport.bytes_delivered"] == 50_000
    assert stats[0]["transport.bytes_sent"] == 150_000


async def _stats(d):
    return dict(d._stats_pairs())


def test_bad_messages_get_errors_and_the_daemon_keeps_serving(memory_cluster):
    mc = memory_cluster(servers=2)
    c = Client(mc.paths[0])
    c.send({"type": "layer_start", "batch_id": 1, "layer": 0})  # before hello
    assert "send hello first" in c.recv_type("error")["reason"]
    c.send_raw(struct.pack("!I", 5) + b"{oops")
    assert "not valid UTF-8 JSON" in c.recv_type("error")["reason"]
    c.send({"type": "submit", "flow_id": 1})
    assert "submit.stage: missing" in c.recv_type("error")["reason"]
    c.send_raw(struct.pack("!I", protocol.MAX_MESSAGE_BYTES + 1)
               + b" " * (protocol.MAX_MESSAGE_BYTES + 1))
    assert "exceeds" in c.recv_type("error")["reason"]
    c.send({**HELLO})
    c.recv_type("welcome")
    c.send(protocol.flow_msg(_flow(9, batch=99), [(0, 0, 4, 10.0)]))  # no such batch
    assert "batch 99 is not live" in c.recv_type("error")["reason"]
    _start_batch(c, batch=99)
    c.send(protocol.flow_msg(_flow(9, batch=99), [(0, 0, 4, 10.0)]))
    assert c.recv_type("completion")["flow_id"] == 9
    c.send(protocol.flow_msg(_flow(10), [(0, 5, 4, 10.0)]))  # member of another server
    assert "starts on server 1" in c.recv_type("error")["reason"]
    c.send_raw(struct.pack("!I", 0xFFFFFFF0))  # hopeless length: error, then the daemon hangs up
    assert "exceeds" in c.recv_type("error")["reason"]
    c2 = _driver(mc.paths[0])  # a fresh connection is served
    c2.send({"type": "stats"})
    stats = dict(c2.recv_type("stats_reply")["stats"])
    assert stats["errors"] >= 7 and stats["completions"] == 1


def test_pending_flows_per_client_are_limited(memory_cluster):
    from mfsched.dataplane.limits import ControlLimits

    mc = memory_cluster(servers=2, delay_s=0.5,
                        control_limits=ControlLimits(max_pending_flows_per_client=3))
    c = _driver(mc.paths[0])
    _start_batch(c)
    for fid in range(1, 5):  # each takes 0.5 s to be acknowledged: the 4th is one too many
        c.send(protocol.flow_msg(_flow(fid), [(0, 0, 4, 1000.0)]))
    err = c.recv_type("error")
    assert err["in_reply_to"] == "submit"
    assert "3 flows of this client are pending (limit 3)" in err["reason"]
    assert {c.recv_type("completion")["flow_id"] for _ in range(3)} == {1, 2, 3}
    c.send(protocol.flow_msg(_flow(4), [(0, 0, 4, 1000.0)]))  # room again
    assert c.recv_type("completion")["flow_id"] == 4
    c.send({"type": "stats"})
    stats = dict(c.recv_type("stats_reply")["stats"])
    assert stats["guard.flows_refused"] == 1 and stats["completions"] == 4


def test_policy_decides_priorities_mfs_needs_its_context(memory_cluster):
    mc = memory_cluster(servers=2)
    c = _driver(mc.paths[0], scheduler="mfs")
    c.send(protocol.flow_msg(_flow(1, batch=5), [(0, 0, 4, 10.0)]))  # unknown batch
    err = c.recv_type("error")
    assert err["in_reply_to"] == "submit" and "batch 5 is not live" in err["reason"]
    _start_batch(c, batch=5, rids=(7,))
    c.send(protocol.flow_msg(_flow(2, batch=5, stage=Stage.P2D, deadline=5.0, rid=7),
                             [(0, 0, 4, 4096.0)]))
    c.send(protocol.flow_msg(_flow(3, batch=5), [(0, 1, 5, 4096.0)]))
    got = {c.recv_type("completion")["flow_id"] for _ in range(2)}
    assert got == {2, 3}


def test_one_thousand_concurrent_flows_through_one_daemon(memory_cluster):
    mc = memory_cluster(servers=4)
    c = _driver(mc.paths[0])
    _start_batch(c)
    for fid in range(1, 1001):
        c.send(protocol.flow_msg(_flow(fid, size=40_000.0),
                                 [(0, fid % 4, 4 + fid % 12, 40_000.0)]))
    done = {c.recv_type("completion")["flow_id"] for _ in range(1000)}
    assert done == set(range(1, 1001))
    delivered = sum(mc.call(_stats(d))["transport.bytes_delivered"] for d in mc.daemons[1:])
    assert delivered == 1000 * 40_000


def test_coordinator_orders_batches_by_red_and_prunes_hopeless_requests():
    st = CoordinatorState()
    st.reset("r", drop_budget=2)
    for rid, deadline in ((1, 1.0), (2, 0.2), (3, 0.21)):
        st.apply({"type": "request", "request_id": rid, "arrival_s": 0.0, "slo_s": deadline,
                  "input_tokens": 10}, 0)
    ports = {0: 8e9}
    early = BatchInfo(10, 0, (1,), 4, 0.0, 1e-3, {1: {0: 1e6}}, {0: 1e6}, ports)
    tight = BatchInfo(11, 1, (2, 3), 4, 0.0, 1e-3, {2: {0: 1e8}, 3: {0: 1e6}}, {}, ports)
    assert st.apply(protocol.batch_msg(early), 0) and st.recompute(0.0)
    assert list(st.ranks) == [10] and not st.pruned
    assert st.apply(protocol.batch_msg(tight), 1) and st.recompute(0.0)
    assert sorted(st.ranks, key=st.ranks.get) == [11, 10]  # tighter deadlines first
    assert st.pruned == {2}  # 400 MB of P2D at 1 GB/s cannot meet 0.2 s; request 3 can
    assert st.decision()["pruned"] == [2]


def test_daemons_apply_coordinator_decisions(memory_cluster):
    mc = memory_cluster(servers=2, coordinator=True)
    c = _driver(mc.paths[0], scheduler="mfs", coordinated=True)
    c.send({**protocol.request_msg(RequestInfo(1, 0.0, 2.0, 10)), "report": True})
    batch = BatchInfo(3, 0, (1,), 4, 0.0, 1e-3, {1: {0: 1e9}}, {}, {0: 8e9})
    c.send({**protocol.batch_msg(batch), "report": True})
    # the coordinator's decision (rank and pruned request) reached the daemon's policy, whose
    # next decision reported the pruned request
    pruned = c.recv_type("pruned")
    assert pruned["request_ids"] == [1]
    assert list(mc.coordinator.state.ranks) == [3] and mc.coordinator.state.drop_budget == 2
    # ... and the policy puts the pruned request's P2D on the scavenger level (K = 8)
    c.send(protocol.flow_msg(_flow(7, batch=3, stage=Stage.P2D, deadline=2.0, rid=1),
                             [(0, 0, 4, 4096.0)]))
    done = c.recv_type("completion")
    assert (done["flow_id"], done["first_level"], done["last_level"]) == (7, 8, 8)


def test_serving_runs_unchanged_on_the_wall_clock_engine(tmp_path, small_testbed_cfg):
    from dataclasses import replace

    from mfsched.dataplane.engine import Placement, RunSpec, WallClockEngine
    from mfsched.experiments.runner import prepare, run
    from mfsched.metrics import summarize
    from mfsched.policy import make_policy
    from mfsched.sim.serving import Serving

    cfg = replace(small_testbed_cfg, requests=4, warmup=1, tail=1)
    p = prepare(cfg)
    sim = run(p, ["mfs"])[0]  # also fills the SLO memo, as the testbed runner does
    child = subprocess.Popen([sys.executable, str(Path(__file__).with_name("memcluster.py")),
                              str(tmp_path), "8", "2"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        paths = [str(tmp_path / f"d{h}.sock") for h in range(8)]
        # time runs 5x slower than the model (control messages take ~ms on a busy machine);
        # bytes shrink 1000x so that Python moves them quickly
        engine = WallClockEngine(paths, Placement(8, 4, (0, 2)), Scale(5.0),
                                 RunSpec("e2e", "mfs", 8, (), True), record_flows=True,
                                 byte_scale=Scale(1000.0))
        try:
            engine.connect()
            serving = Serving(p.cluster, make_policy("mfs"), p.requests, p.slo_fn,
                              warmup=p.warmup, evaluated=p.evaluated, engine=engine)
            records, stats = serving.run()
            assert engine.drain()  # flows of the tail still in flight finish (condition, no sleep)
        finally:
            engine.close()
    finally:
        child.stdin.close()
        child.wait(10)
    ev = [r for r in records.requests if r.evaluated]
    assert len(ev) == 4 and all(r.ttft_s > 0 for r in ev)
    assert len(records.flows) > 100 and stats.submitted_bytes == engine.network.delivered_bytes > 0
    # the same requests went through the same serving logic. (The in-memory network moves
    # bytes for free and routing follows the queues' timing, so TTFTs are not comparable here;
    # the agreement with the simulator is test_dp_netns's, on the real fabric.)
    assert {(r.request_id, r.input_tokens) for r in ev} == \
        {(r.request_id, r.input_tokens) for r in sim.records.requests if r.evaluated}
    assert summarize(records).requests_evaluated == 4
