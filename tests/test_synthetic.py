"""The synthetic presets hit the paper's workload statistics."""

import statistics

import numpy as np
import pytest

from mfsched.workload.requests import ideal_reuse_ratio
from mfsched.workload.synthetic import _BlockInterner, generate


@pytest.mark.parametrize("name,mean_tokens,reuse", [
    ("conv", 2000, 0.50), ("agent", 1000, 0.65),
    # the paper's Mooncake statistics for Llama-3-8B with SP (§6.1)
    ("mooncake-conv", 15000, 0.40), ("mooncake-agent", 9000, 0.65)])
def test_presets_match_targets(name, mean_tokens, reuse):
    means, reuses = [], []
    for seed in range(4):
        reqs = generate(name, 1500, np.random.default_rng(seed))
        means.append(statistics.mean(r.input_tokens for r in reqs))
        reuses.append(ideal_reuse_ratio(reqs))
    assert statistics.mean(means) == pytest.approx(mean_tokens, rel=0.1)
    assert statistics.mean(reuses) == pytest.approx(reuse, abs=0.04)


def test_agent_prefixes_are_skewed():
    reqs = generate("agent", 2000, np.random.default_rng(0))
    first = [r.block_hashes[0] for r in reqs]
    counts = sorted((first.count(h) for h in set(first)), reverse=True)
    assert counts[0] > 5 * statistics.median(counts)  # a hot prefix dominates


def test_generation_is_seeded():
    a = generate("conv", 200, np.random.default_rng(3))
    b = generate("conv", 200, np.random.default_rng(3))
    c = generate("conv", 200, np.random.default_rng(4))
    assert a == b and a != c


def test_block_interner_prefix_semantics():
    it = _BlockInterner()
    x = it.hashes([(1, 40)], 16)  # 16 + 16 + 8
    y = it.hashes([(1, 32), (2, 5)], 16)  # same first two blocks, different third
    z = it.hashes([(3, 16), (1, 16)], 16)  # same content in block 2, different parent
    assert len(x) == 3 and x[:2] == y[:2] and x[2] != y[2]
    assert z[1] != x[1]


@pytest.mark.parametrize("name", ["mooncake-conv", "mooncake-agent"])
def test_mooncake_presets_use_mooncake_blocks(name):
    reqs = generate(name, 50, np.random.default_rng(0))
    assert {r.block_tokens for r in reqs} == {512}
    assert all(len(r.block_hashes) == -(-r.input_tokens // 512) for r in reqs)
