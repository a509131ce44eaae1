"""KV flows: real bytes staged in shared memory, sent by one daemon, stored by the other until
a runtime takes them (in-memory transports, no root). Byte-exact delivery, exactly once, and
every buffer freed: after release, after the store's TTL, when the claiming runtime
disconnects, when the sender cancels; a full store holds new flows back until room is made."""

from __future__ import annotations

import os
import time

import pytest

from mfsched.dataplane.client import DaemonClient
from mfsched.dataplane.kvstore import KV_FLOW_BIT, Segment, kv_flow_id, kv_request_key

GPUS = 4  # the memory cluster's GPUs per server: server 1 is GPU 4


def _segments(mc) -> set[str]:
    """Segments of this test and of these daemons' receive stores (other processes on the
    machine may have segments of their own)."""
    prefixes = (f"mfskv-test{os.getpid()}-", *(d.kv_store.prefix for d in mc.daemons))
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefixes)}


def _stats(mc, h):
    async def get():
        return dict(mc.daemons[h]._stats_pairs())
    return mc.call(get())


def _sender(path: str) -> DaemonClient:
    c = DaemonClient(path)
    c.hello("fs", 8)
    c.send({"type": "request", "request_id": 1, "arrival_s": 0.0, "slo_s": 10.0,
            "input_tokens": 100})
    c.send({"type": "batch_start", "batch_id": 1, "instance": 0, "request_ids": [1],
            "num_layers": 2, "start_s": 0.0, "layer_compute_s": 0.0})
    return c


def _submit(c: DaemonClient, fid: int, seg: Segment, dst_server: int = 1) -> None:
    size = float(seg.size)
    c.send({"type": "submit", "flow_id": fid, "stage": 3, "batch_id": 1, "request_ids": [1],
            "layer": 0, "target_layer": 2, "size_bytes": size, "total_bytes": size,
            "members": 1, "port_bytes": [[0, size]], "bottleneck_bps": 1e9,
            "deadline_s": 10.0, "submit_s": 0.0, "local": [[0, 0, dst_server * GPUS, size]],
            "payload": seg.name})


def _staged(fid: int, size: int) -> tuple[Segment, bytes]:
    data = os.urandom(size)
    seg = Segment.create(f"mfskv-test{os.getpid()}-{fid:x}", size)
    seg.buf[:] = data
    return seg, data


def _wait(pred, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def _claim(c: DaemonClient, fids) -> list:
    c.send({"type": "kv_claim", "flow_ids": list(fids)})
    return c.wait_for("kv_ready")["flows"]


def test_flow_ids_are_kv_flows_and_distinct():
    key = kv_request_key("engine-a", "req-1")
    ids = {kv_flow_id(key, c, layer) for c in range(3) for layer in range(40)}
    assert len(ids) == 120 and all(i & KV_FLOW_BIT for i in ids)
    assert kv_request_key("engine-b", "req-1") != key
    with pytest.raises(ValueError):
        kv_flow_id(key, 0, 1 << 12)


def test_real_bytes_arrive_exactly_once_and_every_buffer_is_freed(memory_cluster):
    mc = memory_cluster(servers=2)
    tx = _sender(mc.paths[0])
    rx = DaemonClient(mc.paths[1])
    sizes = [300_000, 70_001, 1]  # several chunks, an odd tail, a single byte
    flows = {}
    for i, size in enumerate(sizes):
        fid = kv_flow_id(kv_request_key("e", "r"), 0, i)
        flows[fid] = _staged(fid, size)
        _submit(tx, fid, flows[fid][0])
    _wait(lambda: tx.poll() >= 0 and set(flows) <= set(tx.completions))
    assert [tx.completions[f]["bytes"] for f in flows] == sizes
    ready = _claim(rx, flows)
    assert sorted(r[0] for r in ready) == sorted(flows)
    for fid, name, size, arrived_s in ready:
        got = Segment.attach(name, int(size))
        assert bytes(got.buf) == flows[fid][1]  # byte-exact
        assert 0 < arrived_s <= time.time()
        got.close()
    st = _stats(mc, 1)
    assert st["transport.bytes_delivered"] == sum(sizes)
    assert st["kv.bytes_stored"] == sum(sizes) and st["kv.held_bytes"] == sum(sizes)
    rx.send({"type": "kv_release", "flow_ids": list(flows)})
    _wait(lambda: _stats(mc, 1)["kv.held_flows"] == 0)
    assert _stats(mc, 0)["kv.staged_flows"] == 0  # the sender unmapped the staged segments
    for seg, _ in flows.values():
        seg.free()
    assert not _segments(mc)  # nothing left in /dev/shm
    tx.close()
    rx.close()


def test_unclaimed_flows_expire_and_a_vanished_runtime_frees_its_claims(memory_cluster):
    mc = memory_cluster(servers=2, kv_ttl_s=0.3)
    tx = _sender(mc.paths[0])
    seg_a, _ = _staged(KV_FLOW_BIT | 1, 50_000)
    seg_b, _ = _staged(KV_FLOW_BIT | 2, 50_000)
    _submit(tx, KV_FLOW_BIT | 1, seg_a)
    _submit(tx, KV_FLOW_BIT | 2, seg_b)
    _wait(lambda: tx.poll() >= 0 and len(tx.completions) == 2)
    rx = DaemonClient(mc.paths[1])
    assert len(_claim(rx, [KV_FLOW_BIT | 2])) == 1  # b is claimed, a never is
    _wait(lambda: _stats(mc, 1)["kv.flows_expired"] == 1)
    st = _stats(mc, 1)
    assert st["kv.held_flows"] == 1  # a claimed flow does not expire
    rx.close()  # the decode engine is gone without releasing
    _wait(lambda: _stats(mc, 1)["kv.held_flows"] == 0)
    assert _stats(mc, 1)["kv.flows_orphaned"] == 1
    seg_a.free()
    seg_b.free()
    assert not _segments(mc)
    tx.close()


def test_a_full_store_holds_new_flows_back_until_room_is_made(memory_cluster):
    mc = memory_cluster(servers=2, kv_store_bytes=100_000)
    tx = _sender(mc.paths[0])
    rx = DaemonClient(mc.paths[1])
    first, _ = _staged(KV_FLOW_BIT | 1, 80_000)
    second, data2 = _staged(KV_FLOW_BIT | 2, 80_000)
    _submit(tx, KV_FLOW_BIT | 1, first)
    _wait(lambda: tx.poll() >= 0 and KV_FLOW_BIT | 1 in tx.completions)
    _submit(tx, KV_FLOW_BIT | 2, second)
    _wait(lambda: _stats(mc, 1)["kv.full_refusals"] >= 2)
    tx.poll()
    assert KV_FLOW_BIT | 2 not in tx.completions
    assert _stats(mc, 1)["kv.held_bytes"] == 80_000
    assert len(_claim(rx, [KV_FLOW_BIT | 1])) == 1
    rx.send({"type": "kv_release", "flow_ids": [KV_FLOW_BIT | 1]})
    _wait(lambda: tx.poll() >= 0 and KV_FLOW_BIT | 2 in tx.completions)
    (fid, name, size, _), = _claim(rx, [KV_FLOW_BIT | 2])
    got = Segment.attach(name, int(size))
    assert bytes(got.buf) == data2
    got.close()
    rx.send({"type": "kv_release", "flow_ids": [fid]})
    for s in (first, second):
        s.free()
    tx.close()
    rx.close()


def test_a_cancelled_flow_stops_and_is_unmapped(memory_cluster):
    mc = memory_cluster(servers=2)
    tx = _sender(mc.paths[0])
    seg, _ = _staged(KV_FLOW_BIT | 7, 200_000)
    _submit(tx, KV_FLOW_BIT | 7, seg, dst_server=3)  # server 3 does not exist: never delivered
    _wait(lambda: _stats(mc, 0)["kv.staged_flows"] == 1)
    tx.send({"type": "kv_cancel", "flow_ids": [KV_FLOW_BIT | 7]})
    _wait(lambda: _stats(mc, 0)["kv.staged_flows"] == 0)
    st = _stats(mc, 0)
    assert st["flows_cancelled"] == 1 and st["active_flows"] == 0 and st["sender.members"] == 0
    tx.poll()
    assert not tx.completions
    seg.free()
    tx.close()


def test_a_bad_payload_is_refused_with_a_reason(memory_cluster):
    mc = memory_cluster(servers=2)
    tx = _sender(mc.paths[0])
    seg, _ = _staged(5, 1000)  # not a KV flow id
    _submit(tx, 5, seg)
    _wait(lambda: tx.poll() >= 0 and tx.errors)
    assert "only KV flows" in tx.errors[-1]
    seg.free()
    tx.close()
