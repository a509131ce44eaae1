"""The router spreads load over lockstep instances (and a hot prefix still attracts its holder).

Before the router counted an instance's lockstep work, an idle unit of a busy instance won
every tie and one instance of the testbed served 87% of the requests (issue 9).
"""

import numpy as np
import pytest

from mfsched.experiments import runner
from mfsched.experiments.balance import instance_balance
from mfsched.experiments.config import SimConfig
from mfsched.policy.fair import FairSharing
from mfsched.sim.serving import Serving
from mfsched.workload.requests import Request, poisson_retime


@pytest.mark.parametrize("servers", [8, 16])
@pytest.mark.parametrize("rate", [0.05, 0.5, 1.5, 3.0])
def test_no_reuse_workload_spreads_over_instances(servers, rate):
    """From idle to overload (2 and 4 instances): equal requests split within 10% of even
    (measured: within 1%); with lognormal sizes the new tokens split within 15% (measured:
    12% at most). Request *counts* may then differ more, by design: a unit's wait is set by
    the largest chunk of its instance, so large requests pack under an instance that already
    runs a large chunk and small ones go where chunks are small."""
    assert instance_balance(servers, rate, equal_sizes=True).request_deviation <= 0.10
    assert instance_balance(servers, rate, equal_sizes=False).token_deviation <= 0.15


def test_hot_prefix_attracts_its_holder():
    """Requests sharing a long prefix go to the unit that holds it while it is not swamped."""
    cluster = runner.build_cluster(SimConfig())
    prefix = tuple(range(1000, 1060))  # 60 blocks of 16 tokens
    reqs = [Request(0, 0.0, 60 * 16 + 40, 1, (*prefix, 5000, 5001, 5002), 16)]
    reqs += [Request(i, 0.0, 60 * 16 + 40, 1, (*prefix, 6000 + i, 7000 + i, 8000 + i), 16)
             for i in range(1, 12)]
    reqs = poisson_retime(reqs, 2.0, np.random.default_rng(0))  # one every 0.5 s: no queue
    sim = Serving(cluster, FairSharing(), reqs, lambda _r, _p: 10.0, warmup=0, evaluated=12)
    records, _ = sim.run()
    by_id = sorted(records.requests, key=lambda r: r.request_id)
    holder = by_id[0].unit
    assert all(r.unit == holder and r.local_hit_tokens == 960 for r in by_id[1:])
