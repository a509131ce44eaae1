"""The oracle's compiled walk against the Python walk it replaced (issue 11).

``_Reference`` is the oracle as it was before its decision became one compiled pass (a test
oracle, not used by the package): dictionaries per request and batch, a Python loop over every
flow. The one deliberate difference: a request's remaining P2D bytes are summed in the
network's slot order (the compiled pass's order) instead of the iteration order of a set.
Both policies are told every event of small simulated runs and answer every decision; the
answers must be identical, priority for priority.
"""

from __future__ import annotations

import pytest

from mfsched.experiments import runner
from mfsched.experiments.config import SimConfig
from mfsched.policy import make_policy
from mfsched.policy.base import Policy
from mfsched.policy.oracle import OracleConfig
from mfsched.policy.types import Decision, Priority, Stage
from mfsched.sim.serving import Serving

_OFFSET_S = 1e4
_CRITICAL, _BLOCKING, _P2D, _HOPELESS = 0, 1, 2, 3


def _rank(laxity_s):
    return int((min(max(laxity_s, -_OFFSET_S), _OFFSET_S) + _OFFSET_S) * 1e6)


class _Batch:
    def __init__(self, info):
        self.info, self.layer, self.compute_done = info, 0, False
        self.p2d_layers, self.p2d_layer_bytes = {}, {}


class _Reference(Policy):
    config_cls = OracleConfig

    def __init__(self):
        super().__init__(OracleConfig())
        self.deadline, self.batches, self.flows, self.p2d_of, self.prio = {}, {}, {}, {}, {}

    def on_request(self, request, now_s):
        self.deadline[request.request_id] = request.deadline_s
        self.p2d_of[request.request_id] = set()

    def on_request_done(self, request_id, now_s):
        self.deadline.pop(request_id, None)
        self.p2d_of.pop(request_id, None)

    def on_batch_start(self, batch, now_s):
        self.batches[batch.batch_id] = _Batch(batch)

    def on_batch_end(self, batch_id, now_s):
        self.batches.pop(batch_id, None)

    def on_layer_start(self, batch_id, layer, now_s):
        self.batches[batch_id].layer = layer

    def on_batch_compute_done(self, batch_id, now_s):
        self.batches[batch_id].compute_done = True

    def on_flow_submit(self, flow, now_s):
        self.flows[flow.flow_id] = flow
        if flow.stage == Stage.P2D:
            rid = flow.request_ids[0]
            self.p2d_of[rid].add(flow.flow_id)
            b = self.batches[flow.batch_id]
            layers = b.p2d_layers.setdefault(rid, set())
            if flow.layer not in layers:
                layers.add(flow.layer)
                b.p2d_layer_bytes[rid] = 0.0
            b.p2d_layer_bytes[rid] += flow.total_bytes

    def on_flow_complete(self, flow_id, now_s):
        flow = self.flows.pop(flow_id)
        self.prio.pop(flow_id, None)
        if flow.stage == Stage.P2D:
            self.p2d_of.get(flow.request_ids[0], set()).discard(flow_id)

    def _p2d_time(self, rid, b, bw, progress, slot):
        own = sorted(self.p2d_of.get(rid, ()), key=slot.__getitem__)  # the network's order
        remaining = sum(progress.remaining_bytes(f) * self.flows[f].total_bytes
                        / self.flows[f].size_bytes for f in own)
        if not b.compute_done:
            future = b.info.num_layers - len(b.p2d_layers.get(rid, ()))
            remaining += future * b.p2d_layer_bytes.get(rid, 0.0)
        return remaining / bw

    def _priority(self, flow, now_s, progress, slot):
        b = self.batches[flow.batch_id]
        bw = flow.members * flow.bottleneck_bps / 8
        if flow.stage == Stage.P2D:
            left = flow.deadline_s - now_s
            need = self._p2d_time(flow.request_ids[0], b, bw, progress, slot)
            if need > left:
                return Priority(_HOPELESS)
            if need >= self.config.critical_share * left:
                return Priority(_CRITICAL, _rank(left - need))
            return Priority(_P2D, _rank(left - need))
        consumer = max(flow.target_layer, b.layer)
        compute = (b.info.num_layers - consumer) * b.info.layer_compute_s
        own = progress.remaining_bytes(flow.flow_id) / (flow.bottleneck_bps / 8)
        best = float("inf")
        for rid in b.info.request_ids:
            if rid in self.deadline:
                tail = b.p2d_layer_bytes.get(rid, 0.0) / bw
                best = min(best, self.deadline[rid] - compute - tail)
        return Priority(_BLOCKING, _rank(best - now_s - own))

    def decide(self, now_s, progress):
        slot = {fid: i for i, fid in enumerate(progress.flow_arrays()[0].tolist())}
        out = {}
        for fid, flow in self.flows.items():
            prio = self._priority(flow, now_s, progress, slot)
            if self.prio.get(fid) != prio:
                self.prio[fid] = prio
                out[fid] = prio
        return Decision(priorities=out)


class _Both(Policy):
    """Tells both oracles everything; answers with the compiled one after comparing."""

    def __init__(self):
        super().__init__()
        self.new, self.ref = make_policy("oracle"), _Reference()
        self.decisions = 0
        self.levels: set[int] = set()

    def decide(self, now_s, progress):
        d = self.new.decide(now_s, progress)
        assert d.priorities == self.ref.decide(now_s, progress).priorities, now_s
        self.decisions += 1
        self.levels |= {p.level for p in d.priorities.values()}
        return d


for _name in ("on_request", "on_request_done", "on_batch_start", "on_batch_end",
              "on_layer_start", "on_batch_compute_done", "on_flow_submit", "on_flow_complete"):
    setattr(_Both, _name, lambda self, *a, _n=_name: (getattr(self.ref, _n)(*a),
                                                      getattr(self.new, _n)(*a))[1])


@pytest.mark.parametrize("cfg", [
    SimConfig(requests=40, warmup=10, tail=10, rate_per_gpu=1.5, bandwidth_scale=0.5, seed=1),
    SimConfig(workload="conv", requests=40, warmup=10, tail=10, rate_per_gpu=0.6),
    SimConfig(scenario="fattree", servers=16, workload="conv", requests=30, warmup=10, tail=5,
              rate_per_gpu=0.7),
], ids=["testbed-agent-loaded", "testbed-conv", "fattree-conv"])
def test_compiled_walk_decides_as_the_python_walk(cfg):
    p = runner.prepare(cfg)
    both = _Both()
    records, _ = Serving(p.cluster, both, p.requests, p.slo_fn, warmup=p.warmup,
                         evaluated=p.evaluated, warm=p.warm).run()
    # the runs exercise every branch: many decisions, P2D flows hopeless and critical
    assert records.requests and both.decisions > 1000
    assert both.levels >= {_CRITICAL, _BLOCKING, _P2D, _HOPELESS}, both.levels
