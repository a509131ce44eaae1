"""(c) and (d): the worker side under vLLM's real ExampleConnector on CPU tensors.

(c) the per-layer hooks see the layer indices in order and report them to the gate's policy;
(d) KV saved by a producer engine and loaded by a fresh consumer engine through the wrapped
ExampleConnector is byte-identical, and both the saves and the loads run in MFS order, which
differs from the order the requests arrived in.
"""

from __future__ import annotations

from types import SimpleNamespace

import safetensors.torch
import torch

from mfsched.integrations.vllm.connector import MFSConnectorMetadata
from mfsched.policy import Stage

# The tiny model of conftest.py: 2 layers, 16-token blocks, head size 64.
LAYERS = ("model.layers.0.self_attn.attn", "model.layers.1.self_attn.attn")
BLOCK = 16
HEAD_DIM = 64
T0 = 2_000_000.0
PROMPT = 40  # ExampleConnector stores whole blocks: 32 tokens
STORED = 32
NUM_BLOCKS = 200
MFS = {"link_gbps": 0.001, "default_slo_s": 20.0}


def _example(tmp_path) -> dict:
    return {"kv_connector": "ExampleConnector",
            "kv_connector_extra_config": {"shared_storage_path": str(tmp_path)}}


def _kv_layer(seed: int | None) -> torch.Tensor:
    """A paged KV layer in the standardized [blocks, H, block_size, C] view."""
    shape = (NUM_BLOCKS, 2, BLOCK, HEAD_DIM)
    if seed is None:
        return torch.zeros(shape, dtype=torch.float16)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(torch.float16)


def _slots(block_ids: list[int], tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.arange(tokens)
    return torch.tensor(block_ids)[pos // BLOCK], pos % BLOCK


def _run_step(worker, meta, kv_layers: dict[str, torch.Tensor], forward_context) -> None:
    """What vLLM's model runner and attention layers do with a connector in one step."""
    worker.bind_connector_metadata(meta)
    worker.start_load_kv(forward_context)
    attn_metadata = object()  # not MLA metadata: ExampleConnector's paged layout
    for name in LAYERS:
        worker.wait_for_layer_load(name)
        worker.save_kv_layer(name, kv_layers[name], attn_metadata)
    worker.wait_for_save()
    worker.get_finished(set())
    worker.clear_connector_metadata()


def _record(monkeypatch, name: str) -> list[str]:
    calls: list[str] = []
    original = getattr(safetensors.torch, name)

    def wrapper(*args, **kwargs):
        calls.append(args[1] if name == "save_file" else args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, name, wrapper)
    return calls


def _requests(vllm_env):
    # "late" arrives first with a lax SLO, "early" second with a tight one.
    return [vllm_env.request("late", PROMPT, T0, seed=11, kv_transfer_params={"ttft_slo_s": 60}),
            vllm_env.request("early", PROMPT, T0, seed=12,
                             kv_transfer_params={"ttft_slo_s": 0.5})]


def test_model_matches_conftest(vllm_env):
    assert (vllm_env.layers, vllm_env.block, vllm_env.head_dim) == (LAYERS, BLOCK, HEAD_DIM)


def test_worker_hooks_see_layers_in_order(vllm_env, tmp_path, fake_clock):
    config = vllm_env.config(_example(tmp_path), "kv_both", MFS)
    sched = vllm_env.scheduler(config)
    sched.connector.clock = fake_clock(T0)
    for r in _requests(vllm_env):
        sched.add_request(r)
    meta = sched.schedule().kv_connector_metadata
    assert isinstance(meta, MFSConnectorMetadata) and meta.order == ("early", "late")

    worker = vllm_env.worker_connector(config)
    worker.clock = fake_clock(T0)
    policy = worker.gate.driver.policy
    seen: list[tuple[str, int]] = []
    for hook in ("on_layer_start", "on_batch_compute_done", "on_batch_start"):
        original = getattr(policy, hook)

        def spy(batch, *args, _original=original, _hook=hook):
            seen.append((_hook, args[0] if _hook == "on_layer_start" else -1))
            return _original(batch, *args)

        setattr(policy, hook, spy)
    kv = {name: _kv_layer(i) for i, name in enumerate(LAYERS)}
    _run_step(worker, meta, kv, SimpleNamespace(no_compile_layers={}, attn_metadata={}))

    assert list(worker.layer_events) == [("wait_for_layer_load", 0), ("save_kv_layer", 0),
                                         ("wait_for_layer_load", 1), ("save_kv_layer", 1)]
    assert seen == [("on_batch_start", -1), ("on_layer_start", 0), ("on_layer_start", 1),
                    ("on_batch_compute_done", -1)]
    # One P2D save per request and layer, permitted in MFS order, layer by layer.
    permits = [(step, rid, kind, layer) for step, rid, kind, layer, _ in worker.permit_log]
    assert permits == [(1, "early", "save", 0), (1, "late", "save", 0),
                       (1, "early", "save", 1), (1, "late", "save", 1)]
    prio = {(rid, layer): p for _, rid, _, layer, p in worker.permit_log}
    assert prio["early", 0] < prio["late", 0]
    # The saves completed at wait_for_save: nothing is in flight in the gate any more.
    assert not worker.gate.driver.live_flows("early")
    assert not worker.gate.driver.live_flows("late")


def test_kv_round_trip_through_example_connector_in_mfs_order(vllm_env, tmp_path, fake_clock,
                                                              monkeypatch):
    saved = _record(monkeypatch, "save_file")
    loaded = _record(monkeypatch, "load_file")

    # Producer engine: prefill computes the KV; the wrapped ExampleConnector stores it.
    config = vllm_env.config(_example(tmp_path), "kv_both", MFS)
    producer = vllm_env.scheduler(config)
    producer.connector.clock = fake_clock(T0)
    for r in _requests(vllm_env):
        producer.add_request(r)
    out = producer.schedule()
    assert out.kv_connector_metadata.order == ("early", "late")
    src_blocks = {r.req_id: r.block_ids[0] for r in out.scheduled_new_reqs}
    src = {name: _kv_layer(100 + i) for i, name in enumerate(LAYERS)}
    worker = vllm_env.worker_connector(config)
    worker.clock = fake_clock(T0)
    _run_step(worker, out.kv_connector_metadata, src,
              SimpleNamespace(no_compile_layers={}, attn_metadata={}))

    folder = {rid: worker.inner._generate_foldername_debug(
        torch.tensor(r.prompt_token_ids[:STORED]), []) for rid, r in
        ((r.request_id, r) for r in _requests(vllm_env))}
    owner = {path: rid for rid, path in folder.items()}
    assert [owner[f.rsplit("/", 1)[0]] for f in saved] == ["early", "late", "early", "late"]

    # Consumer engine (fresh prefix cache): the same prompts hit the stored KV and load it.
    config2 = vllm_env.config(_example(tmp_path), "kv_both", MFS)
    consumer = vllm_env.scheduler(config2)
    consumer.connector.clock = fake_clock(T0)
    for r in _requests(vllm_env):
        consumer.add_request(r)
    out2 = consumer.schedule()
    meta2 = out2.kv_connector_metadata
    by_id = {r.req_id: r for r in meta2.plan.requests}
    assert by_id["early"].load_tokens == by_id["late"].load_tokens == STORED
    assert by_id["early"].load_stage == Stage.KV_REUSE and not by_id["early"].load_async
    assert meta2.order == ("early", "late")
    dst_blocks = {r.req_id: r.block_ids[0] for r in out2.scheduled_new_reqs}
    dst = {name: _kv_layer(None) for name in LAYERS}
    layers = {name: SimpleNamespace(kv_cache=dst[name]) for name in LAYERS}
    worker2 = vllm_env.worker_connector(config2)
    worker2.clock = fake_clock(T0)
    _run_step(worker2, meta2, {name: dst[name] for name in LAYERS},
              SimpleNamespace(no_compile_layers=layers,
                              attn_metadata={name: object() for name in LAYERS}))

    # Loads ran request by request in MFS order (all layers of "early" first).
    assert [owner[f.rsplit("/", 1)[0]] for f in loaded] == ["early", "early", "late", "late"]
    load_permits = [(rid, layer) for _, rid, kind, layer, _ in worker2.permit_log
                    if kind == "load"]
    assert load_permits == [("early", 0), ("late", 0), ("early", 1), ("late", 1)]
    # Byte-exact: every stored token slot of every layer equals the producer's.
    for rid in ("early", "late"):
        sb, so = _slots(src_blocks[rid], STORED)
        db, do = _slots(dst_blocks[rid], STORED)
        for name in LAYERS:
            want = src[name][sb, :, so]
            got = dst[name][db, :, do]
            assert got.abs().sum() > 0
            assert torch.equal(got.view(torch.int16), want.view(torch.int16)), (rid, name)
