"""Fixtures for the vLLM integration tests: vLLM's real classes on the CPU, no weights, offline.

vLLM is a hard requirement of this directory: if it cannot be imported, collection fails with
the install command (``sh scripts/install-test-deps.sh``) instead of skipping, so a CI run
without vLLM goes red. The served model is a tiny Llama described by a ``config.json`` written
at test time (no weights are ever loaded: only the scheduler and the connector run).
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

try:
    import torch
    import vllm
except ImportError as e:  # fail the run, never skip: CI must test against real vLLM
    raise ImportError(
        f"tests/integrations need vLLM (pinned 0.33.0) and the CPU torch: {e}. "
        "Install them with `sh scripts/install-test-deps.sh` in this environment.") from e

MODULE = "mfsched.integrations.vllm.connector"
BLOCK = 16
LAYERS = ("model.layers.0.self_attn.attn", "model.layers.1.self_attn.attn")
HEAD_DIM = 64
KV_HEADS = 1
# 2 (K and V) x 1 KV head x 64 x 2 bytes (float16)
KV_BYTES_PER_TOKEN_PER_LAYER = 2 * KV_HEADS * HEAD_DIM * 2

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128,
    "intermediate_size": 256, "num_attention_heads": 2, "num_key_value_heads": KV_HEADS,
    "head_dim": HEAD_DIM, "num_hidden_layers": len(LAYERS), "vocab_size": 512,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "torch_dtype": "float16",
    "bos_token_id": 1, "eos_token_id": 2,
}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("tiny-llama")
    (path / "config.json").write_text(json.dumps(TINY_LLAMA))
    return str(path)


@pytest.fixture(scope="session")
def vllm_version() -> str:
    return vllm.__version__


def _vllm_config(model_dir: str, inner: dict, kv_role: str, mfs: dict | None = None,
                 connector: str = "MFSConnector", module: str = MODULE):
    from vllm.config import (
        CacheConfig,
        DeviceConfig,
        KVTransferConfig,
        ModelConfig,
        SchedulerConfig,
        VllmConfig,
    )

    model = ModelConfig(model=model_dir, dtype="float16", seed=0, skip_tokenizer_init=True)
    sched = SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=2048, max_model_len=4096,
                            is_encoder_decoder=False, enable_chunked_prefill=True)
    cache = CacheConfig(block_size=BLOCK, cache_dtype="auto", enable_prefix_caching=True)
    transfer = KVTransferConfig(
        kv_connector=connector, kv_connector_module_path=module, kv_role=kv_role,
        kv_connector_extra_config={"inner": inner, "mfs": mfs or {}})
    return VllmConfig(model_config=model, scheduler_config=sched, cache_config=cache,
                      kv_transfer_config=transfer, device_config=DeviceConfig("cpu"))


def _kv_cache_config(num_blocks: int = 200):
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec

    spec = FullAttentionSpec(block_size=BLOCK, num_kv_heads=KV_HEADS, head_size=HEAD_DIM,
                             dtype=torch.float16)
    return KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[],
                         kv_cache_groups=[KVCacheGroupSpec(list(LAYERS), spec)])


@pytest.fixture
def vllm_env(tiny_model_dir):
    """Builders for configs, schedulers, connectors and requests of the tiny model."""
    from vllm import SamplingParams
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.outputs import KVConnectorOutput, ModelRunnerOutput
    from vllm.v1.request import Request
    from vllm.v1.structured_output import StructuredOutputManager

    init_none_hash(sha256)

    def config(inner: dict, kv_role: str = "kv_both", mfs: dict | None = None, **connector):
        return _vllm_config(tiny_model_dir, inner, kv_role, mfs, **connector)

    def scheduler(vllm_config, num_blocks: int = 200):
        vllm_config.cache_config.num_gpu_blocks = num_blocks
        return Scheduler(vllm_config=vllm_config, kv_cache_config=_kv_cache_config(num_blocks),
                         structured_output_manager=StructuredOutputManager(vllm_config),
                         block_size=BLOCK, log_stats=False)

    def worker_connector(vllm_config):
        from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole

        return KVConnectorFactory.create_connector(vllm_config, KVConnectorRole.WORKER,
                                                   _kv_cache_config())

    def request(req_id: str, prompt_tokens: int, arrival_s: float, seed: int = 0,
                kv_transfer_params: dict | None = None, max_tokens: int = 1, priority: int = 0):
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        params.update_from_generation_config({}, TINY_LLAMA["eos_token_id"])
        tokens = [(seed * 131 + 7 * i) % 500 + 3 for i in range(prompt_tokens)]
        req = Request(request_id=req_id, prompt_token_ids=tokens, sampling_params=params,
                      pooling_params=None, arrival_time=arrival_s, priority=priority,
                      block_hasher=get_request_block_hasher(BLOCK, sha256))
        req.kv_transfer_params = kv_transfer_params
        return req

    def model_output(reqs, finished_sending=None, finished_recving=None, token: int = 5):
        ids = [r.request_id for r in reqs]
        kv = None
        if finished_sending is not None or finished_recving is not None:
            kv = KVConnectorOutput(finished_sending=finished_sending,
                                   finished_recving=finished_recving)
        return ModelRunnerOutput(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
                                 sampled_token_ids=[[token] for _ in ids], logprobs=None,
                                 prompt_logprobs_dict={}, pooler_output=None,
                                 kv_connector_output=kv)

    return SimpleNamespace(config=config, scheduler=scheduler, worker_connector=worker_connector,
                           request=request, model_output=model_output,
                           kv_cache_config=_kv_cache_config, factory=KVConnectorFactory,
                           layers=LAYERS, block=BLOCK, head_dim=HEAD_DIM)


class FakeClock:
    """A settable clock for the connector (``connector.clock = FakeClock(t0)``)."""

    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def fake_clock():
    return FakeClock
