"""The compiled feasibility check against a plain walk of Algorithm 1 (issue 11 part B).

``_reference`` is the Python walk of Algorithm 1 (a test oracle, not used by the package):
dictionaries per port, the bottleneck port the lowest id among those of the largest time.
Random cases are built to tie (few ports with ids spread out, loads and capacities from short
lists), so the order-dependent choices are exercised: scanning the ports in the iteration
order of a set (the rule before the check's state moved into arrays) makes this test fail.
"""

from __future__ import annotations

import random

import pytest

from mfsched.policy.red import BatchLoad, feasibility_prune, loose_deadline


def _add(acc, loads, sign):
    for port, size in loads.items():
        acc[port] = acc.get(port, 0.0) + sign * size


def _bottleneck(above, load, capacity, ports):
    best_port, best_t = None, 0.0
    for port in ports:
        t = (above.get(port, 0.0) + load.get(port, 0.0)) / capacity[port]
        if best_port is None or t > best_t:
            best_port, best_t = port, t
    return best_port, best_t


def _reference(batches, capacity, now_s, budget):
    above_early, above_all, pruned, pool = {}, {}, [], {}
    for b in batches:
        early, load = dict(b.early), dict(b.early)
        for r, per_port in b.prunable.items():
            pool[r] = per_port
            _add(load, per_port, 1.0)
        own = set(b.prunable)
        p2d_ports = sorted({port for per_port in b.prunable.values() for port in per_port})
        target = loose_deadline(b.deadlines)
        early_finish = b.compute_end_s + _bottleneck(above_early, early, capacity, early)[1]
        while len(pruned) < budget and pool and early_finish <= target:
            port, t_all = _bottleneck(above_all, load, capacity, p2d_ports)
            if port is None or now_s + t_all <= target:
                break
            victim = max(pool, key=lambda r: (pool[r].get(port, 0.0), -r))
            if pool[victim].get(port, 0.0) <= 0.0:
                break
            pruned.append(victim)
            _add(load if victim in own else above_all, pool.pop(victim), -1.0)
        _add(above_early, early, 1.0)
        _add(above_all, load, 1.0)
    return pruned


def _case(rng: random.Random):
    # port ids spread out, so that a set's iteration order is not their sorted order
    ports = rng.sample(range(1000), rng.choice([3, 4, 6, 20]))
    capacity = {p: rng.choice([1.0, 2.0, 4.0]) for p in ports}
    batches, rid = [], 0
    for b in range(rng.randint(0, 12)):
        deadlines = [rng.choice([0.5, 1.0, 2.0, 3.0, rng.uniform(0.1, 5)])
                     for _ in range(rng.randint(1, 4))]
        early = {p: rng.choice([0.0, 0.5, 1.0, rng.uniform(0, 2)])
                 for p in rng.sample(ports, rng.randint(0, min(8, len(ports))))}
        prunable = {}
        for _ in range(rng.randint(0, 4)):
            rid += 1
            prunable[rid] = {p: rng.choice([0.5, 1.0, rng.uniform(0, 2)])
                             for p in rng.sample(ports, rng.randint(0, min(4, len(ports))))}
        batches.append(BatchLoad(b, deadlines, rng.uniform(0, 1), early, prunable))
    return batches, capacity, rng.choice([0, 1, 2, 5])


@pytest.mark.parametrize("seed", range(4))
def test_compiled_pass_prunes_what_the_plain_walk_prunes(seed):
    rng = random.Random(seed)
    pruned_any = 0
    for _ in range(500):
        batches, capacity, budget = _case(rng)
        expected = _reference(batches, capacity, 0.0, budget)
        assert feasibility_prune(batches, capacity, 0.0, budget) == expected
        pruned_any += bool(expected)
    assert pruned_any > 50  # the cases do prune
