"""MFSKVConnector without root: vLLM's real schedulers (a prefill and a decode engine) and the
connector's worker halves over two in-process mfsched daemons on the memory transport.

What is checked: the KV of several requests and every layer arrives byte for byte in the
decode engine's blocks (the cache laid out as vLLM 0.33's CPU backend lays it out); the bytes
the daemons move are exactly layers x tokens x KV bytes per token per request, once; the
prefill blocks are freed when the request finishes; every staging and receive buffer is freed
afterwards (also for an aborted request); the decode side gets the deadline and the flows
from ``kv_transfer_params``; the daemon's MFS policy puts the tight request's flows in a
higher class than the lax one's.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from mfsched.dataplane.daemon import Daemon, DaemonConfig
from mfsched.dataplane.memtransport import MemoryFabric, MemoryTransport

KV_MODULE = "mfsched.integrations.vllm.kv_connector"
NUM_BLOCKS = 64
T_NOW = time.time()


class Daemons:
    """Two daemons (server 0: prefill host, server 1: decode host) on a background loop."""

    def __init__(self, tmp, delay_s: float = 0.0, **config) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        fabric = MemoryFabric(delay_s)
        self.paths = [str(tmp / f"d{h}.sock") for h in range(2)]
        self.daemons = [Daemon(DaemonConfig(h, self.paths[h], gpus_per_server=1,
                                            address_base="m", **config),
                               lambda addrs, ev: MemoryTransport(fabric, addrs, ev))
                        for h in range(2)]
        for d in self.daemons:
            self.call(d.start(), 120)  # (a daemon's start compiles its PCIe lanes: slow when
            #                             the namespace tests run beside this one)

    def call(self, coro, timeout_s: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stats(self, h: int) -> dict[str, float]:
        async def get():
            return dict(self.daemons[h]._stats_pairs())
        return self.call(get())

    def close(self) -> None:
        async def stop():
            for d in self.daemons:
                await d.stop()
        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def daemons(tmp_path):
    made = []

    def make(**kw):
        made.append(Daemons(tmp_path, **kw))
        return made[-1]
    yield make
    for d in made:
        d.close()


def _segments(ds, *workers) -> set[str]:
    """Shared-memory segments of these daemons' receive stores and workers' staging areas
    (other processes on the machine may have segments of their own)."""
    prefixes = tuple([d.kv_store.prefix for d in ds.daemons]
                     + [w.kv._prefix for w in workers if w is not None])
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefixes)}


def _caches(vllm_env, fill: bool) -> dict[str, torch.Tensor]:
    """Per layer, vLLM 0.33's CPU layout: (blocks, KV heads, block size, 2 x head size)."""
    g = torch.Generator().manual_seed(1)
    shape = (NUM_BLOCKS, 1, vllm_env.block, 2 * vllm_env.head_dim)
    return {name: (torch.randn(shape, generator=g).to(torch.float16) if fill
                   else torch.zeros(shape, dtype=torch.float16)) for name in vllm_env.layers}


def _engine(vllm_env, role: str, path: str, policy: str = "mfs", **mfs):
    config = vllm_env.config({}, role, {"gate": f"daemon:{path}", "policy": policy,
                                        "link_gbps": 0.01, **mfs},
                             connector="MFSKVConnector", module=KV_MODULE)
    sched = vllm_env.scheduler(config, num_blocks=NUM_BLOCKS)
    from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole

    worker = vllm_env.factory.create_connector(config, KVConnectorRole.WORKER,
                                               vllm_env.kv_cache_config(NUM_BLOCKS))
    return sched, worker


def _run_prefill_step(vllm_env, sched, worker, caches, reqs):
    out = sched.schedule()
    worker.bind_connector_metadata(out.kv_connector_metadata)
    for name in vllm_env.layers:
        worker.save_kv_layer(name, caches[name], None)
    worker.wait_for_save()
    worker.get_finished(set())
    worker.clear_connector_metadata()
    outputs = sched.update_from_output(out, vllm_env.model_output(reqs))
    return out, {o.request_id: o.kv_transfer_params for eo in outputs.values()
                 for o in eo.outputs}


def _slots(block_ids, block: int, tokens: int) -> list[tuple[int, int]]:
    return [(block_ids[t // block], t % block) for t in range(tokens)]


def _wait(pred, timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_kv_round_trip_byte_exact_and_buffers_freed(vllm_env, daemons):
    ds = daemons()
    p_sched, p_worker = _engine(vllm_env, "kv_producer", ds.paths[0])
    d_sched, d_worker = _engine(vllm_env, "kv_consumer", ds.paths[1])
    p_caches, d_caches = _caches(vllm_env, True), _caches(vllm_env, False)
    p_worker.register_kv_caches(p_caches)
    d_worker.register_kv_caches(d_caches)

    prompts = {"lax": 70, "tight": 33, "third": 16}  # not block multiples, and one exactly
    slo = {"lax": 600.0, "tight": 0.5, "third": 60.0}
    reqs = [vllm_env.request(rid, n, T_NOW, seed=i, kv_transfer_params={
        "do_remote_decode": True, "mfs_decode_server": 1, "ttft_slo_s": slo[rid]})
        for i, (rid, n) in enumerate(prompts.items())]
    for r in reqs:
        p_sched.add_request(r)
    free_before = p_sched.kv_cache_manager.block_pool.get_num_free_blocks()
    out, params = _run_prefill_step(vllm_env, p_sched, p_worker, p_caches, reqs)
    p_blocks = {r.req_id: list(r.block_ids[0]) for r in out.scheduled_new_reqs}
    # The prefill blocks are free as soon as the requests finish (every layer was staged).
    assert p_sched.kv_cache_manager.block_pool.get_num_free_blocks() == free_before
    kvb = 2 * vllm_env.head_dim * 2  # K and V, one head, float16
    layers = len(vllm_env.layers)
    for rid, n in prompts.items():
        assert params[rid]["do_remote_prefill"] is True
        assert params[rid]["mfs_kv"]["chunks"] == [[0, n]]
        assert params[rid]["mfs_deadline_s"] == pytest.approx(T_NOW + slo[rid])
    # Every flow completes in the prefill daemon; nothing is staged afterwards.
    _wait(lambda: (p_worker.kv.reap(), not p_worker.kv.staged)[1])
    total = layers * kvb * sum(prompts.values())
    tx, rx = ds.stats(0), ds.stats(1)
    assert tx["transport.bytes_sent"] == total
    assert rx["transport.bytes_delivered"] == total and rx["transport.bytes_duplicate"] == 0
    assert rx["kv.bytes_stored"] == total and rx["kv.flows_stored"] == layers * len(prompts)

    # Decode: the requests as the proxy forwards them.
    d_reqs = [vllm_env.request(rid, n, T_NOW, seed=i, kv_transfer_params=params[rid],
                               max_tokens=2) for i, (rid, n) in enumerate(prompts.items())]
    for r in d_reqs:
        d_sched.add_request(r)
    out = d_sched.schedule()
    meta = out.kv_connector_metadata
    assert {ld.req_id for ld in meta.loads} == set(prompts)
    d_worker.bind_connector_metadata(meta)
    d_worker.start_load_kv(None)
    recv = set()
    _wait(lambda: recv.update(d_worker.get_finished(set())[1] or ()) or recv == set(prompts))
    d_worker.clear_connector_metadata()
    d_sched.update_from_output(out, vllm_env.model_output([], finished_recving=recv))
    d_blocks = {ld.req_id: ld.block_ids for ld in meta.loads}
    for name in vllm_env.layers:
        for rid, n in prompts.items():
            for (pb, po), (db, do) in zip(_slots(p_blocks[rid], vllm_env.block, n),
                                          _slots(d_blocks[rid], vllm_env.block, n), strict=True):
                assert torch.equal(d_caches[name][db, :, do], p_caches[name][pb, :, po])
    assert d_worker.kv.stats["bytes_loaded"] == total
    # The loaded requests run: only their last prompt token is computed again.
    out = d_sched.schedule()
    assert out.num_scheduled_tokens == {rid: 1 for rid in prompts}
    _wait(lambda: ds.stats(1)["kv.held_flows"] == 0)
    assert not _segments(ds, p_worker, d_worker)
    p_worker.shutdown()
    d_worker.shutdown()


URGENT = {"mlu_urgent": "0.3", "mlu_infeasible": "10", "mlu_per_request": "true"}


def test_mfs_puts_the_tight_request_in_a_higher_class(vllm_env, daemons):
    # The policy's link: 500 kbit/s. The tight request's 32 KB (2 layers x 64 tokens x 256 B)
    # need about half of it until its deadline (MLU 0.5: the urgent level from 0.3), the lax
    # one's a millionth (the lowest P2D band).
    ds = daemons(delay_s=0.002)
    p_sched, p_worker = _engine(vllm_env, "kv_producer", ds.paths[0], link_gbps=0.0005,
                                policy_options=URGENT)
    caches = _caches(vllm_env, True)
    p_worker.register_kv_caches(caches)
    now = time.time()  # arrivals: the deadlines are relative to them
    reqs = [vllm_env.request("lax", 64, now, seed=1, kv_transfer_params={
                "do_remote_decode": True, "mfs_decode_server": 1, "ttft_slo_s": 600.0}),
            vllm_env.request("tight", 64, now, seed=2, kv_transfer_params={
                "do_remote_decode": True, "mfs_decode_server": 1, "ttft_slo_s": 1.0})]
    for r in reqs:
        p_sched.add_request(r)
    t0 = time.time()
    _run_prefill_step(vllm_env, p_sched, p_worker, caches, reqs)
    _wait(lambda: (p_worker.kv.reap(), not p_worker.kv.staged)[1])
    assert time.time() - t0 < 1.0  # before the tight deadline (nothing else slows it here)
    levels = {}
    for _, rid, first, last in p_worker.kv.delivered:
        assert first == last  # no promotion needed later
        levels.setdefault(rid, set()).add(first)
    assert levels["tight"] == {0}  # the urgent level from the start
    assert min(levels["lax"]) >= 5  # a P2D band
    classes = {}
    for route in ds.daemons[0].transport.sent_routes:
        classes[route.hw_class] = classes.get(route.hw_class, 0) + 1
    assert set(classes) == {1, 6}, classes  # EF for the tight request, CS1 for the lax one
    p_worker.shutdown()


def test_an_aborted_request_frees_its_staged_bytes(vllm_env, daemons):
    ds = daemons(delay_s=5.0)  # slow fabric: the flows are still in flight at the abort
    from vllm.v1.request import RequestStatus

    p_sched, p_worker = _engine(vllm_env, "kv_producer", ds.paths[0])
    caches = _caches(vllm_env, True)
    p_worker.register_kv_caches(caches)
    req = vllm_env.request("gone", 300, T_NOW, seed=3, max_tokens=4, kv_transfer_params={
        "do_remote_decode": True, "mfs_decode_server": 1, "ttft_slo_s": 60.0})
    p_sched.add_request(req)
    _run_prefill_step(vllm_env, p_sched, p_worker, caches, [req])
    assert p_worker.kv.staged  # staged, not delivered yet
    p_sched.finish_requests("gone", RequestStatus.FINISHED_ABORTED)
    out = p_sched.schedule()
    assert out.kv_connector_metadata.cancels == ["gone"]
    p_worker.bind_connector_metadata(out.kv_connector_metadata)
    assert p_worker.kv.stats["flows_cancelled"] == 2
    # The segments are freed once the daemon answered the cancel.
    _wait(lambda: (p_worker.kv.reap(), not p_worker.kv.staged)[1])
    st = ds.stats(0)
    assert st["kv.staged_flows"] == 0 and st["active_flows"] == 0 and st["sender.members"] == 0
    p_worker.worker_side.gate.client.poll()
    assert st["flows_cancelled"] == 2, (st, p_worker.worker_side.gate.client.errors)
    p_worker.shutdown()
    ds.daemons[1].kv_store.close()  # what arrived of it would expire after kv_ttl_s
    assert not _segments(ds, p_worker)


def test_a_full_staging_area_fails_with_a_clear_error(vllm_env, daemons):
    from mfsched.dataplane.kvstore import KVStoreFull

    ds = daemons()
    p_sched, p_worker = _engine(vllm_env, "kv_producer", ds.paths[0], kv_staging_bytes=10_000)
    caches = _caches(vllm_env, True)
    p_worker.register_kv_caches(caches)
    req = vllm_env.request("big", 64, T_NOW, kv_transfer_params={
        "do_remote_decode": True, "mfs_decode_server": 1})
    p_sched.add_request(req)
    out = p_sched.schedule()
    p_worker.bind_connector_metadata(out.kv_connector_metadata)
    with pytest.raises(KVStoreFull, match="kv_staging_bytes=10000"):
        for name in vllm_env.layers:
            p_worker.save_kv_layer(name, caches[name], None)
    p_worker.shutdown()


def test_daemon_gate_admits_an_inner_connectors_transfers_in_the_daemons_order(
        vllm_env, daemons, tmp_path):
    """MFSConnector around ExampleConnector with "gate": "daemon:...": the saves are admission
    flows of the daemon's policy, permitted in its priority order and reported done."""
    ds = daemons()
    inner = {"kv_connector": "ExampleConnector",
             "kv_connector_extra_config": {"shared_storage_path": str(tmp_path / "kv")}}
    config = vllm_env.config(inner, "kv_both", {"gate": f"daemon:{ds.paths[0]}",
                                                "link_gbps": 0.0005, "policy_options": URGENT})
    sched = vllm_env.scheduler(config)
    worker = vllm_env.worker_connector(config)
    now = time.time()  # (after the slow set-up: the tight deadline is 1 s after this)
    for seed, (rid, slo) in enumerate((("lax", 600.0), ("tight", 1.0))):  # lax first
        sched.add_request(vllm_env.request(rid, 64, now, seed=seed,
                                           kv_transfer_params={"ttft_slo_s": slo}))
    out = sched.schedule()
    worker.bind_connector_metadata(out.kv_connector_metadata)
    caches = _caches(vllm_env, True)
    worker.start_load_kv(SimpleNamespace(no_compile_layers={}, attn_metadata={}))
    for name in vllm_env.layers:
        worker.wait_for_layer_load(name)
        worker.save_kv_layer(name, caches[name], object())
    worker.wait_for_save()
    order = [(rid, layer) for _, rid, kind, layer, _ in worker.permit_log]
    assert order == [("tight", 0), ("lax", 0), ("tight", 1), ("lax", 1)]
    prio = {(rid, layer): p for _, rid, _, layer, p in worker.permit_log}
    assert prio["tight", 0].level == 0 and prio["lax", 0].level >= 5  # the daemon's decision
    _wait(lambda: ds.stats(0)["active_flows"] == 0)  # flow_done for each
    assert ds.stats(0)["flows"] == 4 and ds.stats(0)["transport.bytes_sent"] == 0
    worker.shutdown()


def test_staged_flows_to_a_vanished_decode_host_are_cancelled_and_freed(vllm_env, daemons):
    ds = daemons()
    p_sched, p_worker = _engine(vllm_env, "kv_producer", ds.paths[0], kv_ttl_s=0.3)
    caches = _caches(vllm_env, True)
    p_worker.register_kv_caches(caches)
    req = vllm_env.request("orphan", 40, time.time(), kv_transfer_params={
        "do_remote_decode": True, "mfs_decode_server": 7})  # no daemon 7: never delivered
    p_sched.add_request(req)
    _run_prefill_step(vllm_env, p_sched, p_worker, caches, [req])
    assert len(p_worker.kv.staged) == 2
    _wait(lambda: (p_worker.kv.reap(), not p_worker.kv.staged)[1])
    assert p_worker.kv.stats["flows_cancelled"] == 2
    _wait(lambda: ds.stats(0)["kv.staged_flows"] == 0)
    assert ds.stats(0)["active_flows"] == 0
    assert not _segments(ds, p_worker)
    p_worker.shutdown()


@pytest.mark.parametrize("layout", ["logical", "flash"])
def test_token_views_gather_and_scatter_one_tokens_kv(layout):
    from mfsched.integrations.vllm.kv_layout import TokenView

    blocks, bs, heads, dim = 9, 16, 3, 8
    g = torch.Generator().manual_seed(0)
    if layout == "logical":  # [B, H, N, C]: vLLM 0.32+'s per-layer view (CPU: C = 2 x dim)
        cache = torch.randn(blocks, heads, bs, 2 * dim, generator=g)
        view = TokenView(cache, blocks, bs, dims=(0, 2))
        token = lambda b, o: cache[b, :, o]  # noqa: E731
    else:  # FlashAttention's (2, B, N, H, D), found from the sizes
        cache = torch.randn(2, blocks, bs, heads, dim, generator=g)
        view = TokenView(cache, blocks, bs)
        token = lambda b, o: cache[:, b, o]  # noqa: E731
    assert view.bytes_per_token == 2 * heads * dim * 4
    block_ids = [4, 1, 7]
    rows = view.gather(block_ids, 5, 40)  # tokens 5..39: blocks 4 (5..15), 1, 7 (32..39)
    assert rows.shape[0] == 35 and rows.is_contiguous()
    assert torch.equal(rows[0], token(4, 5)) and torch.equal(rows[-1], token(7, 7))
    other = TokenView(torch.zeros_like(cache), blocks, bs, dims=view_dims(layout))
    other.scatter([2, 0, 8], 5, 40, rows)
    assert torch.equal(other.gather([2, 0, 8], 5, 40), rows)
    raw = bytearray(rows.numpy().tobytes())
    assert torch.equal(view.rows_of(raw, 35), rows)


def view_dims(layout: str):
    return (0, 2) if layout == "logical" else (1, 2)


def test_an_ambiguous_layout_is_refused_with_its_shape():
    from mfsched.integrations.vllm.kv_layout import TokenView

    with pytest.raises(ValueError, match=r"\(64, 4, 128, 128\)"):
        TokenView(torch.zeros(64, 4, 128, 128), 64, 128)  # block size = 2 x head size
