"""How evenly the router spreads requests without reuse: the check behind issue 9's router.

:func:`instance_balance` runs a stream of requests that share no prefix through the serving
model under fair sharing and reports the largest relative deviation of any instance's share
from an even split, of the requests and of their new tokens. Called by
``tests/test_routing_balance.py`` (bounds) and ``bench/router_balance.py`` (the table in
``docs/results.md``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..policy.fair import FairSharing
from ..sim.serving import Serving
from ..workload.requests import Request, poisson_retime
from .config import SimConfig
from .runner import build_cluster

__all__ = ["Balance", "instance_balance"]


@dataclass(frozen=True, slots=True)
class Balance:
    instances: int
    request_deviation: float  # max over instances of |share x instances - 1|
    token_deviation: float  # the same for new tokens


def _requests(n: int, seed: int, equal: bool) -> list[Request]:
    """Requests without prefix information: 800 tokens each, or lognormal around 800."""
    if equal:
        return [Request(i, 0.0, 800, 1) for i in range(n)]
    sizes = np.random.default_rng(seed).lognormal(np.log(800), 0.8, size=n).astype(int) + 1
    return [Request(i, 0.0, int(s), 1) for i, s in enumerate(sizes)]


def instance_balance(servers: int, rate_per_gpu: float, equal_sizes: bool, n: int = 400,
                     seed: int = 1) -> Balance:
    """The testbed with ``servers`` servers (two per prefill instance), ``n`` no-reuse requests
    arriving as a Poisson process at ``rate_per_gpu`` per prefill GPU."""
    cluster = build_cluster(SimConfig(servers=servers))
    n_inst = len(cluster.deployment.instances)
    reqs = poisson_retime(_requests(n, servers, equal_sizes),
                          rate_per_gpu * cluster.deployment.prefill_gpus,
                          np.random.default_rng(seed))
    sim = Serving(cluster, FairSharing(), reqs, lambda _r, _p: 10.0, warmup=0, evaluated=n)
    records, _ = sim.run()
    count, tokens = Counter(), Counter()
    for r in records.requests:
        count[r.instance] += 1
        tokens[r.instance] += r.new_tokens
    total = sum(tokens.values())
    return Balance(n_inst, max(abs(count[i] * n_inst / n - 1) for i in range(n_inst)),
                   max(abs(tokens[i] * n_inst / total - 1) for i in range(n_inst)))
