"""Root + network namespaces: the real fabric, real daemons, real TCP, fault injection.

Every test builds its own fabric (a random tag, addresses in 198.18.0.0/15), which is deleted
when the test ends, whatever happens. Skipped only where namespaces/veth/bridges/HTB do not
work (the skip says which), e.g. without root.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import daemon_stats, driver, flow_info, netns_layout

from mfsched.dataplane import protocol
from mfsched.dataplane.netns import (
    FabricSpec,
    class_stats,
    clean,
    fabric,
    list_namespaces,
    payload_to_htb_rate,
)
from mfsched.dataplane.testbed import EmulationConfig, processes, run_one

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("netns_ok")]

MB = 1 << 20


def test_fabric_is_built_and_cleaned_up():
    spec = FabricSpec(servers=2, nics_per_server=2, nic_rate_bps=100e6)
    with fabric(spec) as fab:
        assert set(fab.namespaces) <= set(list_namespaces())
        assert set(class_stats(fab.switch_ns, fab.port_dev(1, 1))) >= {"2:1", "2:10", "2:17"}
    assert not set(fab.namespaces) & set(list_namespaces())
    with fabric(replace(spec, tag="lft")):  # a leftover, as a killed run would leave it
        pass
    subprocess.run(["ip", "netns", "add", "mfs-lft-h9"], check=True)
    assert "mfs-lft-h9" in clean("mfs-lft-")
    assert not [n for n in list_namespaces() if n.startswith("mfs-lft-")]


def test_broken_tcp_connection_resumes_and_every_byte_arrives_once(tmp_path):
    with fabric(FabricSpec(servers=2, nic_rate_bps=payload_to_htb_rate(200e6, 9000))) as fab, \
            processes(fab, netns_layout(2), EmulationConfig(coordinator=False), tmp_path):
        c = driver(str(tmp_path / "daemon0.sock"))
        size = 24 * MB  # about 1 s at 200 Mbit/s
        c.send(protocol.flow_msg(flow_info(1, size), [(0, 0, 4, float(size))]))
        time.sleep(0.4)
        killed = subprocess.run(["ip", "netns", "exec", fab.host_ns(0), "ss", "-K", "dst",
                                 fab.address(1, 0), "dport", "=", "7411"],
                                capture_output=True, text=True)
        assert fab.address(1, 0) in killed.stdout  # a live connection was destroyed
        assert c.recv_type("completion")["flow_id"] == 1
        sender, receiver = daemon_stats(str(tmp_path / "daemon0.sock")), \
            daemon_stats(str(tmp_path / "daemon1.sock"))
    assert sender["transport.reconnects"] >= 1 and sender["transport.chunks_resent"] >= 1
    assert receiver["transport.bytes_delivered"] == size  # every byte, once
    assert receiver["transport.members_complete"] == 1 and receiver["transport.chunks_bad"] == 0


def test_malformed_and_oversized_control_messages_are_rejected(tmp_path):
    with fabric(FabricSpec(servers=1)) as fab, \
            processes(fab, netns_layout(1), EmulationConfig(coordinator=False), tmp_path):
        path = str(tmp_path / "daemon0.sock")
        c = driver(path, hello=False)
        c.send_raw(b"\x00\x00\x00\x03abc")
        assert "not valid UTF-8 JSON" in c.recv_type("error")["reason"]
        c.send({"type": "submit", "flow_id": "x"})
        assert "submit.flow_id: input should be a valid integer" in c.recv_type("error")["reason"]
        big = protocol.MAX_MESSAGE_BYTES * 2
        c.send_raw(big.to_bytes(4, "big") + b"a" * big)
        assert "exceeds" in c.recv_type("error")["reason"]
        c.send({"type": "stats"})  # same connection, still in sync
        assert c.recv_type("stats_reply")
        assert daemon_stats(path)["errors"] == 3


def test_one_thousand_concurrent_flows_through_one_daemon(tmp_path):
    with fabric(FabricSpec(servers=4, nic_rate_bps=payload_to_htb_rate(400e6, 9000))) as fab, \
            processes(fab, netns_layout(4, 400e6), EmulationConfig(coordinator=False), tmp_path):
        c = driver(str(tmp_path / "daemon0.sock"))
        size = 40_000
        started = time.monotonic()
        for fid in range(1, 1001):
            c.send(protocol.flow_msg(flow_info(fid, size), [(0, fid % 4, 4 + fid % 12, size)]))
        done = {c.recv_type("completion")["flow_id"] for _ in range(1000)}
        elapsed = time.monotonic() - started
        delivered = sum(daemon_stats(str(tmp_path / f"daemon{h}.sock"))["transport.bytes_delivered"]
                        for h in (1, 2, 3))
    assert done == set(range(1, 1001))
    assert delivered == 1000 * size
    assert elapsed < 30  # 40 MB at 400 Mbit/s is about 1 s of wire time


# --- short runs of the emulated testbed ------------------------------------------------------


@pytest.fixture(scope="module")
def scenario():
    from mfsched.dataplane.testbed import warm_slos
    from mfsched.experiments.config import SimConfig
    from mfsched.experiments.runner import prepare

    p = prepare(SimConfig(requests=4, warmup=1, tail=1))
    warm_slos(p)
    return p


def _run(p, scheduler, tmp_path, hook=None, drain=False):
    from mfsched.dataplane.testbed import emulated_layout, fabric_spec

    emu = EmulationConfig(stall_timeout_s=40)
    layout = emulated_layout(p.config, p, emu)
    with fabric(fabric_spec(layout, emu)) as fab:
        return run_one(p, scheduler, fab, layout, emu, Path(tmp_path), on_cluster=hook,
                       drain=drain)


@pytest.mark.parametrize("scheduler", ["fs", "mfs"])
def test_short_testbed_scenario(scenario, scheduler, tmp_path):
    from mfsched.experiments.runner import run

    res = _run(scenario, scheduler, tmp_path)
    row, sim = res.result.to_json(), run(scenario, [scheduler])[0].to_json()
    assert row.keys() == sim.keys() and row["requests_evaluated"] == 4
    assert 0.0 <= row["slo_attainment"] <= 1.0 and not res.errors
    # same scenario, same serving logic: TTFT and CCT of the same order as the simulator's
    assert 0.5 < row["ttft_mean_s"] / sim["ttft_mean_s"] < 2.0
    assert 0.5 < row["stage2_cct_mean_s"] / sim["stage2_cct_mean_s"] < 3.0
    assert sum(d["transport.chunks_bad"] for d in res.daemons) == 0


def test_daemon_restarted_mid_run_gets_its_flows_again_without_loss(scenario, tmp_path):
    members: list[tuple[int, int, float]] = []
    restarted = 1

    def hook(cluster, engine):
        submit = engine.submit

        def logged(info, transfer, on_done):
            members.extend(transfer.member_list)
            submit(info, transfer, on_done)

        engine.submit = logged
        threading.Timer(3.0, cluster.restart_daemon, args=(restarted,)).start()

    res = _run(scenario, "fs", tmp_path, hook, drain=True)
    assert res.engine_reconnects >= 1
    assert res.result.summary.requests_evaluated == 4
    # every receiver except the restarted one got exactly the bytes of all flows sent to it
    expected = [0] * 8
    for src, dst, size in members:
        if src // 4 != dst // 4:
            expected[dst // 4] += max(1, -(-int(size) // 20))
    for server, stats in enumerate(res.daemons):
        if server != restarted:
            assert stats["transport.bytes_delivered"] == pytest.approx(expected[server], abs=8)


def test_run_completes_with_the_coordinator_stopped_and_catches_up(scenario, tmp_path):
    def hook(cluster, engine):
        threading.Timer(2.0, cluster.stop_coordinator).start()
        threading.Timer(6.0, cluster.start_coordinator).start()

    res = _run(scenario, "mfs", tmp_path, hook)
    assert res.result.summary.requests_evaluated == 4 and not res.errors
    assert all(d["coordinator.connected"] == 1 for d in res.daemons)  # reconnected
