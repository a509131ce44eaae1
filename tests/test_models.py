"""Hand-computed checks of every per-token formula in mfsched.workload.models."""

import pytest

from mfsched.workload.models import (
    MODELS,
    ModelSpec,
    a2a_bytes_per_token,
    attention_flops,
    attention_weight_bytes,
    causal_context_sum,
    expert_weight_bytes,
    ffn_flops_per_token,
    flops_per_token_per_layer,
    kv_bytes_per_token_per_layer,
)

TINY = ModelSpec("tiny", num_layers=2, hidden_size=8, num_attention_heads=4, num_kv_heads=2,
                 head_dim=2, ffn_intermediate_size=16, vocab_size=10, max_context_tokens=1024,
                 num_experts=4, experts_per_token=2, shared_ffn_intermediate_size=4)


def test_kv_bytes_mixtral():
    # 2 (K and V) x 8 KV heads x 128 x 2 bytes
    assert kv_bytes_per_token_per_layer(MODELS.get("mixtral-8x7b")) == 4096


def test_kv_bytes_tiny():
    assert kv_bytes_per_token_per_layer(TINY) == 2 * 2 * 2 * 2


def test_causal_context_sum():
    # 3 new tokens after 5 cached: they attend to 6, 7 and 8 keys
    assert causal_context_sum(3, 5) == 6 + 7 + 8
    assert causal_context_sum(1, 0) == 1


def test_attention_flops_tiny():
    # q_dim = 4*2 = 8, kv_dim = 2*2 = 4; projections 2*n*h*(2*8 + 2*4) = 2*3*8*24 = 1152
    # scores: 4 * heads(4) * head_dim(2) * (6+7+8=21) = 672
    assert attention_flops(TINY, 3, 5) == 1152 + 672


def test_ffn_flops_tiny_moe():
    # experts: 2 x (2*3*8*16 = 768) = 1536; router 2*8*4 = 64; shared 2*3*8*4 = 192
    assert ffn_flops_per_token(TINY) == 1536 + 64 + 192


def test_ffn_flops_dense_llama3_8b():
    m = MODELS.get("llama-3-8b")
    assert ffn_flops_per_token(m) == 2 * 3 * 4096 * 14336


def test_flops_per_token_per_layer_tiny():
    # one token attending to 10 keys: proj 2*8*24 = 384, scores 4*4*2*10 = 320, ffn 1792
    assert flops_per_token_per_layer(TINY, 10) == 384 + 320 + 1792


def test_a2a_bytes():
    assert a2a_bytes_per_token(MODELS.get("mixtral-8x7b")) == 4096 * 2 * 2
    assert a2a_bytes_per_token(MODELS.get("llama-3-8b")) == 0


@pytest.mark.parametrize("name,params_b", [
    ("mixtral-8x7b", 46.7), ("mixtral-8x22b", 140.6), ("dbrx", 131.6), ("grok-2", 269.5),
    ("qwen3-coder-480b-a35b", 480.2), ("llama-3-8b", 8.0), ("llama-3-70b", 70.6),
])
def test_parameter_counts_match_published_sizes(name, params_b):
    """Weights implied by the specs (attention + FFN/experts + embeddings, no norms) match the
    published parameter counts to 1%, which checks every architecture field together."""
    m = MODELS.get(name)
    per_layer = attention_weight_bytes(m) + (m.num_experts or 1) * expert_weight_bytes(m)
    per_layer += 3 * m.hidden_size * m.shared_ffn_intermediate_size * m.dtype_bytes
    total = (m.num_layers * per_layer + 2 * m.vocab_size * m.hidden_size * m.dtype_bytes)
    assert total / m.dtype_bytes / 1e9 == pytest.approx(params_b, rel=0.01)


def test_invalid_specs_rejected():
    with pytest.raises(ValueError):
        ModelSpec("bad", 1, 8, 3, 2, 2, 16, 10, 1024)  # heads not a multiple of KV heads
    with pytest.raises(ValueError):
        ModelSpec("bad", 1, 8, 4, 2, 2, 16, 10, 1024, num_experts=4, experts_per_token=5)


@pytest.mark.parametrize("name,context", [
    ("mixtral-8x7b", 32768), ("mixtral-8x22b", 65536), ("dbrx", 32768), ("grok-2", 131072),
    ("qwen3-coder-480b-a35b", 262144), ("llama-3-8b", 8192), ("llama-3-70b", 8192)])
def test_context_windows_from_the_public_configs(name, context):
    spec = MODELS.get(name)
    assert spec.max_context_tokens == context
    assert str(context) in spec.source  # the config field it was read from is cited
