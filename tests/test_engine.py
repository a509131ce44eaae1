"""Event order, determinism and the simulator's invariants."""

import numpy as np
import pytest

from mfsched.experiments import runner
from mfsched.experiments.config import SimConfig
from mfsched.policy import SCHEDULERS, Stage
from mfsched.policy.fair import FairSharing
from mfsched.sim.engine import Engine, EventKind
from mfsched.sim.serving import Serving


def test_same_time_events_run_in_kind_then_submission_order():
    eng = Engine(np.array([1.0]), FairSharing())
    seen = []
    for kind, tag in [(EventKind.WAKE, "w"), (EventKind.ARRIVAL, "a1"),
                      (EventKind.COMPUTE, "c1"), (EventKind.ARRIVAL, "a2"),
                      (EventKind.COMPUTE, "c2")]:
        eng.schedule(1.0, kind, tag)
    eng.schedule(0.5, EventKind.ARRIVAL, "early")
    eng.run(lambda kind, payload: seen.append(payload), lambda: False)
    assert seen == ["early", "c1", "c2", "a1", "a2"]  # the wake-up is the engine's own
    with pytest.raises(ValueError):
        eng.schedule(0.1, EventKind.ARRIVAL, "past")


class Recorder(FairSharing):
    """FS that checks the layer dependencies from what the driver tells every policy."""

    name = "recorder"

    def __init__(self, config=None):
        super().__init__(config)
        self.flows = {}
        self.done = set()
        self.layer_starts = []

    def on_flow_submit(self, flow, now_s):
        super().on_flow_submit(flow, now_s)
        self.flows[flow.flow_id] = flow

    def on_flow_complete(self, flow_id, now_s):
        self.done.add(flow_id)

    def on_layer_start(self, batch_id, layer, now_s):
        self.layer_starts.append((batch_id, layer))
        for f in self.flows.values():
            if f.batch_id != batch_id:
                continue
            if f.stage == Stage.KV_REUSE and f.target_layer == layer:
                assert f.flow_id in self.done, "layer started before its Stage-1 blocks"
            if f.stage == Stage.COLLECTIVE and f.layer < layer:
                assert f.flow_id in self.done, "layer started before the previous Stage 2"


def _run(cfg, policy, **kw):
    p = runner.prepare(cfg)
    sim = Serving(p.cluster, policy, p.requests, p.slo_fn, warmup=p.warmup,
                  evaluated=p.evaluated, history=p.history, **kw)
    return sim.run()


def test_layer_dependencies_and_invariants(small_testbed_cfg):
    rec = Recorder()
    records, stats = _run(small_testbed_cfg, rec, check_invariants=True)
    assert len(rec.layer_starts) > 32
    assert any(f.stage == Stage.KV_REUSE for f in rec.flows.values())
    # every byte submitted was delivered (flows still in flight at the stop are excluded)
    in_flight = set(rec.flows) - rec.done
    assert stats.delivered_bytes == pytest.approx(
        stats.submitted_bytes - sum(rec.flows[f].size_bytes for f in in_flight))
    # every evaluated request got its first token after all of its P2D bytes arrived
    for r in records.requests:
        assert r.first_token_s > r.p2d_done_s >= r.first_batch_s >= r.arrival_s
        assert r.ttft_s == pytest.approx(r.first_token_s - r.arrival_s)


def test_runs_are_deterministic(small_testbed_cfg):
    a, _ = _run(small_testbed_cfg, FairSharing(), record_flows=True)
    b, _ = _run(small_testbed_cfg, FairSharing(), record_flows=True)
    assert a.requests == b.requests and a.flows == b.flows and a.collectives == b.collectives


def test_seed_changes_the_run(small_testbed_cfg):
    from dataclasses import replace

    a, _ = _run(small_testbed_cfg, FairSharing())
    b, _ = _run(replace(small_testbed_cfg, seed=1), FairSharing())
    assert [r.ttft_s for r in a.requests] != [r.ttft_s for r in b.requests]


def test_isolated_slo_is_the_solo_ttft():
    """A single request's TTFT equals the isolated TTFT its SLO is based on."""
    cfg = SimConfig(requests=1, warmup=0, tail=0)
    res = runner.run(cfg, ["fs"])[0]
    (r,) = res.records.requests
    assert r.slo_s == pytest.approx(3 * r.ttft_s)
    assert r.met


def test_constant_slo():
    cfg = SimConfig(requests=5, warmup=0, tail=0, slo_s=0.123)
    res = runner.run(cfg, ["fs"])[0]
    assert {r.slo_s for r in res.records.requests} == {0.123}


def test_fattree_small_runs():
    cfg = SimConfig(scenario="fattree", servers=8, requests=20, warmup=5, tail=0)
    res = runner.run(cfg, ["fs"])[0]
    assert res.summary.requests_evaluated == 20
    assert res.summary.stage2_cct_mean_s > 0


def test_dense_sp_model_runs():
    cfg = SimConfig(scenario="fattree", servers=4, model="llama-3-8b", workload="conv",
                    requests=10, warmup=2, tail=0)
    res = runner.run(cfg, ["fs"])[0]
    assert res.summary.requests_evaluated == 10
    assert any(c.name == "sp-allgather" for c in res.records.collectives)


def test_fs_is_registered():
    assert "fs" in SCHEDULERS.names()
