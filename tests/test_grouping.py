"""Grouped flows (the fast mode) against the per-flow reference mode."""

from dataclasses import replace

import pytest

from mfsched.experiments import runner
from mfsched.experiments.config import SimConfig
from mfsched.policy.fair import FairSharing
from mfsched.sim.serving import Serving, ServingConfig
from mfsched.workload.requests import Request
from mfsched.workload.router import Routing


def _cluster(grouped: bool):
    return runner.build_cluster(SimConfig(ep_backend="alltoall",
                                          serving=ServingConfig(grouped_flows=grouped)))


def test_symmetric_batch_is_identical():
    """One request of the same size on every unit of an instance: every member of the
    all-to-all is equal and crosses equal links, so a group behaves exactly like its members.
    (A ring's edges cross links of different speeds: as one group they advance at the pace of
    the slowest edge, as a pipelined ring does; as separate flows the fast edges would finish
    early, which a ring cannot. The group is the faithful mode there.)"""
    reqs = [Request(i, 0.0, 700, 1) for i in range(8)]
    routes = {i: Routing(unit=i, local_tokens=0, remote_unit=-1, remote_tokens=0)
              for i in range(8)}
    ttfts = {}
    for grouped in (True, False):
        sim = Serving(_cluster(grouped), FairSharing(), reqs, lambda r, rt: 1.0, warmup=0,
                      evaluated=8, forced_routes=routes, record_flows=True)
        records, _stats = sim.run()
        ttfts[grouped] = sorted(r.ttft_s for r in records.requests)
        if not grouped:
            assert max(row[4] for row in records.flows) == 1  # really one member per flow
    assert ttfts[True] == pytest.approx(ttfts[False], rel=1e-9)


@pytest.mark.parametrize("workload,seed", [("agent", 0), ("agent", 1), ("conv", 0)])
def test_light_load_summaries_match(workload, seed):
    """Asymmetric batches at light load: means agree to 1% (measured: <= 0.3%)."""
    base = SimConfig(requests=120, warmup=30, tail=10, rate_per_gpu=0.5, workload=workload,
                     seed=seed)
    out = {}
    for grouped in (True, False):
        cfg = replace(base, serving=ServingConfig(grouped_flows=grouped))
        out[grouped] = runner.run(cfg, ["fs"])[0].summary
    assert out[True].ttft_mean_s == pytest.approx(out[False].ttft_mean_s, rel=0.01)
    assert out[True].stage2_cct_mean_s == pytest.approx(out[False].stage2_cct_mean_s, rel=0.01)
    assert out[True].slo_attainment == pytest.approx(out[False].slo_attainment, abs=0.02)
