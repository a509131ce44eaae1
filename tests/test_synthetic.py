"""The synthetic presets hit the paper's workload statistics."""

import statistics

import numpy as np
import pytest

from mfsched.workload.requests import ideal_reuse_ratio
from mfsched.workload.synthetic import SessionTiming, _BlockInterner, generate, history_requests

# the testbed's rate at 1 request/s per prefill GPU; Mixtral-8x7B decodes a token in ~19 ms
TIMING = SessionTiming(16.0, 0.019)


@pytest.mark.parametrize("name,mean_tokens,reuse", [
    ("conv", 2000, 0.50), ("agent", 1000, 0.65),
    # the paper's Mooncake statistics for Llama-3-8B with SP (§6.1)
    ("mooncake-conv", 15000, 0.40), ("mooncake-agent", 9000, 0.65)])
def test_presets_match_targets(name, mean_tokens, reuse):
    """Steady state: the statistics of the requests that follow the stream's history."""
    means, reuses = [], []
    burn = history_requests(name, TIMING)
    for seed in range(4):
        reqs = generate(name, burn + 1500, np.random.default_rng(seed), TIMING)
        seen = {h for r in reqs[:burn] for h in r.block_hashes}
        means.append(statistics.mean(r.input_tokens for r in reqs[burn:]))
        reuses.append(ideal_reuse_ratio(reqs[burn:], seen))
    assert statistics.mean(means) == pytest.approx(mean_tokens, rel=0.1)
    assert statistics.mean(reuses) == pytest.approx(reuse, abs=0.04)


def test_agent_prefixes_are_skewed():
    reqs = generate("agent", 2000, np.random.default_rng(0), TIMING)
    first = [r.block_hashes[0] for r in reqs]
    counts = sorted((first.count(h) for h in set(first)), reverse=True)
    assert counts[0] > 5 * statistics.median(counts)  # a hot prefix dominates


def test_generation_is_seeded():
    a = generate("conv", 200, np.random.default_rng(3), TIMING)
    b = generate("conv", 200, np.random.default_rng(3), TIMING)
    c = generate("conv", 200, np.random.default_rng(4), TIMING)
    assert a == b and a != c


def test_block_interner_prefix_semantics():
    it = _BlockInterner()
    x = it.hashes([(1, 40)], 16)  # 16 + 16 + 8
    y = it.hashes([(1, 32), (2, 5)], 16)  # same first two blocks, different third
    z = it.hashes([(3, 16), (1, 16)], 16)  # same content in block 2, different parent
    assert len(x) == 3 and x[:2] == y[:2] and x[2] != y[2]
    assert z[1] != x[1]


@pytest.mark.parametrize("name", ["conv", "agent"])
def test_no_turn_before_its_answer(name):
    """A follow-up turn comes at least (its predecessor's output x time per token + think
    time) x rate requests after the predecessor: conv at 16 req/s, 250 tokens x 19 ms + 7.2 s
    is about 190 requests."""
    reqs = generate(name, 3000, np.random.default_rng(0), TIMING)
    think = {"conv": 7.2, "agent": 1.6}[name]
    by_prompt = {}  # full blocks of each prompt -> its index
    follow_ups = 0
    for i, r in enumerate(reqs):
        for k in range(len(r.block_hashes) - 1, 1, -1):
            j = by_prompt.get(r.block_hashes[:k])
            if j is not None and reqs[j].input_tokens < r.input_tokens:
                # r extends request j's whole prompt: it is j's session's next turn
                assert i - j >= TIMING.gap_requests(reqs[j].output_tokens, think)
                follow_ups += 1
                break
        by_prompt[r.block_hashes[: r.input_tokens // r.block_tokens]] = i
    assert follow_ups > 3000 * 0.3  # conv: 1 - 1/1.8 of turns follow a predecessor


@pytest.mark.parametrize("name", ["mooncake-conv", "mooncake-agent"])
def test_mooncake_presets_use_mooncake_blocks(name):
    reqs = generate(name, 50, np.random.default_rng(0), TIMING)
    assert {r.block_tokens for r in reqs} == {512}
    assert all(len(r.block_hashes) == -(-r.input_tokens // 512) for r in reqs)
