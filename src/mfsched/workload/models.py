"""Transformer model specs and the per-token formulas derived from them.

Every formula lives in one function here, each with a hand-computed test in
``tests/test_models.py``:

* :func:`kv_bytes_per_token_per_layer` — K and V of one token in one layer.
* :func:`attention_flops` — QKV/O projections plus the causal quadratic score/value term.
* :func:`ffn_flops_per_token` — dense SwiGLU FFN, or routed experts + router + shared MLP.
* :func:`flops_per_token_per_layer` — the two above for one token at a given context length.
* :func:`a2a_bytes_per_token` — routed EP dispatch (or combine) volume of one token in one layer.
* :func:`allgather_dispatch_bytes_per_token` — what one token contributes to vLLM's
  all-gather dispatch (hidden state plus top-k weights and ids).

Specs are public model configs (Hugging Face ``config.json`` or the vendor's model card);
``source`` names where each came from. Callers: :mod:`mfsched.workload.compute` (layer time),
:mod:`mfsched.workload.stages` (flow bytes), the CLI (``mfsched list models``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry

__all__ = [
    "MODELS",
    "ModelSpec",
    "a2a_bytes_per_token",
    "allgather_dispatch_bytes_per_token",
    "attention_flops",
    "attention_weight_bytes",
    "causal_context_sum",
    "expert_weight_bytes",
    "ffn_flops_per_token",
    "flops_per_token_per_layer",
    "kv_bytes_per_token_per_layer",
]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Architecture of a decoder-only transformer (only what bytes and FLOPs depend on).

    ``ffn_intermediate_size`` is the dense FFN width, or the width of one routed expert for MoE.
    ``shared_ffn_intermediate_size`` is an always-on dense MLP next to the experts (Grok-2's
    residual MLP); 0 if absent. All FFNs are gated (SwiGLU: gate, up and down matrices).
    ``max_context_tokens`` is the context window (``max_position_embeddings`` of the config,
    DBRX's ``max_seq_len``): a request's prompt plus its output must fit in it, as a serving
    engine requires (vLLM's ``max_model_len`` defaults to it).
    """

    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_intermediate_size: int
    vocab_size: int
    max_context_tokens: int
    num_experts: int = 0
    experts_per_token: int = 0
    shared_ffn_intermediate_size: int = 0
    dtype_bytes: int = 2
    source: str = ""

    def __post_init__(self) -> None:
        for field in ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads",
                      "head_dim", "ffn_intermediate_size", "dtype_bytes", "max_context_tokens"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{self.name}: {field} must be positive")
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(f"{self.name}: attention heads must be a multiple of KV heads")
        if self.is_moe and not 0 < self.experts_per_token <= self.num_experts:
            raise ValueError(f"{self.name}: experts_per_token must be in 1..num_experts")

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim


# Gated FFN: gate, up (hidden -> inter) and down (inter -> hidden).
_FFN_MATRICES = 3


def kv_bytes_per_token_per_layer(m: ModelSpec) -> int:
    """Bytes of K and V for one token in one layer: 2 x kv_heads x head_dim x dtype_bytes."""
    return 2 * m.num_kv_heads * m.head_dim * m.dtype_bytes


def causal_context_sum(new_tokens: int, prefix_tokens: int) -> int:
    """Sum over the new tokens of how many keys each attends to (causal, incl. itself).

    Token i (1-based) of a chunk that follows ``prefix_tokens`` cached tokens attends to
    ``prefix_tokens + i`` keys, so the sum is ``n * prefix + n (n + 1) / 2``.
    """
    n = new_tokens
    return n * prefix_tokens + n * (n + 1) // 2


def attention_flops(m: ModelSpec, new_tokens: int, prefix_tokens: int) -> float:
    """FLOPs of one attention layer for a chunk of ``new_tokens`` after ``prefix_tokens``.

    Projections: 2 x tokens x hidden x (q + k + v + o widths). Scores and values: for every
    (query, key) pair 2 x head_dim FLOPs for QK^T and 2 x head_dim for PV, per query head.
    """
    proj = 2.0 * new_tokens * m.hidden_size * (2 * m.q_dim + 2 * m.kv_dim)
    pairs = causal_context_sum(new_tokens, prefix_tokens)
    scores = 4.0 * m.num_attention_heads * m.head_dim * pairs
    return proj + scores


def ffn_flops_per_token(m: ModelSpec) -> float:
    """FLOPs of the FFN for one token: dense SwiGLU, or top-k experts + router + shared MLP."""
    per_mlp = 2.0 * _FFN_MATRICES * m.hidden_size
    if not m.is_moe:
        return per_mlp * m.ffn_intermediate_size
    experts = m.experts_per_token * per_mlp * m.ffn_intermediate_size
    router = 2.0 * m.hidden_size * m.num_experts
    shared = per_mlp * m.shared_ffn_intermediate_size
    return experts + router + shared


def flops_per_token_per_layer(m: ModelSpec, context_tokens: int) -> float:
    """FLOPs one token costs in one layer when it attends to ``context_tokens`` keys."""
    proj = 2.0 * m.hidden_size * (2 * m.q_dim + 2 * m.kv_dim)
    scores = 4.0 * m.num_attention_heads * m.head_dim * context_tokens
    return proj + scores + ffn_flops_per_token(m)


def attention_weight_bytes(m: ModelSpec) -> int:
    """Bytes of one layer's attention projection weights (Q, K, V, O)."""
    return m.hidden_size * (2 * m.q_dim + 2 * m.kv_dim) * m.dtype_bytes


def expert_weight_bytes(m: ModelSpec) -> int:
    """Bytes of one routed expert (or of the dense FFN) in one layer."""
    return _FFN_MATRICES * m.hidden_size * m.ffn_intermediate_size * m.dtype_bytes


def a2a_bytes_per_token(m: ModelSpec) -> int:
    """EP dispatch volume of one token in one layer: hidden x top-k x dtype bytes.

    The token's activation is sent once to each of its top-k experts; combine returns the
    same volume. Dense models have no all-to-all (0).
    """
    if not m.is_moe:
        return 0
    return m.hidden_size * m.experts_per_token * m.dtype_bytes


# vLLM's fused top-k returns fp32 weights and int32 expert ids.
_TOPK_WEIGHT_BYTES = 4
_TOPK_ID_BYTES = 4


def allgather_dispatch_bytes_per_token(m: ModelSpec) -> int:
    """Bytes one token adds to vLLM's all-gather EP dispatch (``allgather_reducescatter``).

    ``AgRsAll2AllManager.dispatch`` gathers the token's hidden state (hidden x dtype bytes)
    with its top-k weights (fp32) and expert ids (int32); every EP rank receives it, whatever
    experts it picked. Combine reduce-scatters hidden x dtype bytes per token. Dense: 0.
    """
    if not m.is_moe:
        return 0
    return m.hidden_size * m.dtype_bytes + m.experts_per_token * (_TOPK_WEIGHT_BYTES
                                                                   + _TOPK_ID_BYTES)


MODELS: Registry[ModelSpec] = Registry("model")


def _add(spec: ModelSpec, help: str) -> None:
    MODELS.add(spec.name, spec, help)


_add(ModelSpec("mixtral-8x7b", num_layers=32, hidden_size=4096, num_attention_heads=32,
               num_kv_heads=8, head_dim=128, ffn_intermediate_size=14336, vocab_size=32000,
               max_context_tokens=32768, num_experts=8, experts_per_token=2,
               source="mistralai/Mixtral-8x7B-v0.1 config.json (max_position_embeddings "
                      "32768)"),
     "MoE 47B (8 experts, top-2), the paper's testbed model")
_add(ModelSpec("mixtral-8x22b", num_layers=56, hidden_size=6144, num_attention_heads=48,
               num_kv_heads=8, head_dim=128, ffn_intermediate_size=16384, vocab_size=32768,
               max_context_tokens=65536, num_experts=8, experts_per_token=2,
               source="mistralai/Mixtral-8x22B-v0.1 config.json (max_position_embeddings "
                      "65536)"),
     "MoE 141B (8 experts, top-2)")
_add(ModelSpec("dbrx", num_layers=40, hidden_size=6144, num_attention_heads=48,
               num_kv_heads=8, head_dim=128, ffn_intermediate_size=10752, vocab_size=100352,
               max_context_tokens=32768, num_experts=16, experts_per_token=4,
               source="databricks/dbrx-base config.json (max_seq_len 32768)"),
     "MoE 132B (16 experts, top-4)")
_add(ModelSpec("grok-2", num_layers=64, hidden_size=8192, num_attention_heads=64,
               num_kv_heads=8, head_dim=128, ffn_intermediate_size=16384, vocab_size=131072,
               max_context_tokens=131072, num_experts=8, experts_per_token=2,
               shared_ffn_intermediate_size=32768,
               source="xai-org/grok-2 config.json (residual MoE: shared 32768-wide MLP; "
                      "max_position_embeddings 131072)"),
     "MoE 270B (8 experts, top-2, plus a shared MLP)")
_add(ModelSpec("qwen3-coder-480b-a35b", num_layers=62, hidden_size=6144,
               num_attention_heads=96, num_kv_heads=8, head_dim=128,
               ffn_intermediate_size=2560, vocab_size=151936, max_context_tokens=262144,
               num_experts=160, experts_per_token=8,
               source="Qwen/Qwen3-Coder-480B-A35B-Instruct config.json "
                      "(max_position_embeddings 262144)"),
     "MoE 480B (160 experts, top-8)")
_add(ModelSpec("llama-3-8b", num_layers=32, hidden_size=4096, num_attention_heads=32,
               num_kv_heads=8, head_dim=128, ffn_intermediate_size=14336, vocab_size=128256,
               max_context_tokens=8192,
               source="meta-llama/Meta-Llama-3-8B config.json (max_position_embeddings 8192)"),
     "dense 8B")
_add(ModelSpec("llama-3-70b", num_layers=80, hidden_size=8192, num_attention_heads=64,
               num_kv_heads=8, head_dim=128, ffn_intermediate_size=28672, vocab_size=128256,
               max_context_tokens=8192,
               source="meta-llama/Meta-Llama-3-70B config.json (max_position_embeddings 8192)"),
     "dense 70B")
