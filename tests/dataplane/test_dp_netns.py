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
RESTART_AT_FLOW = 100  # the short scenario submits about 500 flows


def _until(cond, timeout_s: float = 30.0) -> bool:
    """Poll a condition (another process makes it true) until it holds or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_fabric_is_built_and_cleaned_up():
    spec = FabricSpec(servers=2, nics_per_server=2, nic_rate_bps=100e6)
    with fabric(spec) as fab:
        assert set(fab.namespaces) <= set(list_namespaces())
        assert set(class_stats(fab.switch_ns, fab.port_dev(1, 1))) >= {"2:1", "2:10", "2:17"}
    assert not set(fab.namespaces) & set(list_namespaces())
    with fabric(replace(spec, tag="lft")):  # a leftover, as a killed run would leave it
        pass
    subprocess.run(["ip", "netns", "add", "mfs-lft-h9"], check=True)
    assert "mfs-lft-h9" in clean("mfs-lft-").kept  # no owner recorded: kept without --force
    assert "mfs-lft-h9" in clean("mfs-lft-", force=True).deleted
    assert not [n for n in list_namespaces() if n.startswith("mfs-lft-")]


def test_broken_tcp_connection_resumes_and_every_byte_arrives_once(tmp_path):
    with fabric(FabricSpec(servers=2, nic_rate_bps=payload_to_htb_rate(200e6, 9000))) as fab, \
            processes(fab, netns_layout(2), EmulationConfig(coordinator=False), tmp_path):
        c = driver(str(tmp_path / "daemon0.sock"))
        size = 24 * MB  # about 1 s at 200 Mbit/s
        c.send(protocol.flow_msg(flow_info(1, size), [(0, 0, 4, float(size))]))
        # break the connection once bytes flow on it (a condition, not a guess of the time)
        assert _until(lambda: daemon_stats(str(tmp_path / "daemon1.sock"))
                      ["transport.bytes_delivered"] > 0)
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


@pytest.mark.alone
def test_testbed_agrees_with_the_simulator(tmp_path):
    """The agreement docs/results.md section 6.2 claims, on its scenario (the paper's testbed,
    agent workload, 8 warm-up + 32 evaluated requests, seed 0, scale 20; about 3 minutes):
    per seed, mean TTFT within 13% and mean Stage-2 CCT within 20% of the simulator's.

    The claim was measured on an idle machine, and the emulation is only as faithful as the
    machine is idle: the runner, the daemons and the coordinator run at nice -20 here, and the
    test runs with no other test beside it (marked ``alone``, tests/conftest.py). FS meets the
    claim (measured, on this shared 2-core machine at load 2-9: TTFT 3-11%, CCT 8-21%, the 21%
    at nice -10).

    MFS does not, named here rather than hidden: docs/results.md section 6.2 (regenerated by
    bench/testbed_compare.py with each run's load) has its simulated TTFT 7-12% and its Stage-2
    CCT 21-33% below the testbed's at load 1.4-2.9 (seeds 0-2; seed 0: 6.8% and 21.3%), growing
    with the machine's load (MFS's advantage is the fine-grained ordering that the emulation's
    control path, milliseconds of wall time per hop, blurs). Bounds for MFS: TTFT 20%, CCT 35%.
    Attainment is not bounded: identical 32-request runs differ by up to 16 points.
    """
    from mfsched.dataplane.testbed import run_testbed
    from mfsched.experiments.config import SimConfig
    from mfsched.experiments.runner import prepare, run

    p = prepare(SimConfig(requests=32, warmup=8, seed=0))
    sim = {r.scheduler: r.summary for r in run(p, ["fs", "mfs"])}
    runs = run_testbed(p, ["fs", "mfs"], EmulationConfig(nice=-20, stall_timeout_s=60,
                                                         log_dir=str(tmp_path)))
    for r in runs:
        name, tb = r.result.scheduler, r.result.summary
        s = sim[name]
        ttft = (s.ttft_mean_s - tb.ttft_mean_s) / tb.ttft_mean_s
        cct = (s.stage2_cct_mean_s - tb.stage2_cct_mean_s) / tb.stage2_cct_mean_s
        where = f"{name}: TTFT err {ttft:+.1%}, CCT err {cct:+.1%}, load {r.load_avg}"
        assert tb.requests_evaluated == 32 and not r.errors, where
        assert abs(ttft) <= (0.20 if name == "mfs" else 0.13), where
        assert abs(cct) <= (0.35 if name == "mfs" else 0.20), where
        assert sum(d["transport.chunks_bad"] for d in r.daemons) == 0


def test_daemon_restarted_mid_run_gets_its_flows_again_without_loss(scenario, tmp_path):
    members: list[tuple[int, int, float]] = []
    restarted = 1

    def hook(cluster, engine):
        submit = engine.submit

        def logged(info, transfer, on_done):
            members.extend(transfer.member_list)
            submit(info, transfer, on_done)
            if info.flow_id == RESTART_AT_FLOW:  # mid-run, whatever the machine's speed
                threading.Thread(target=cluster.restart_daemon, args=(restarted,)).start()

        engine.submit = logged

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
        submit = engine.submit

        def counted(info, transfer, on_done):
            submit(info, transfer, on_done)
            if info.flow_id == RESTART_AT_FLOW:  # gone for a stretch of the run ...
                threading.Thread(target=cluster.stop_coordinator).start()
            elif info.flow_id == 3 * RESTART_AT_FLOW:  # ... and back before its end
                threading.Thread(target=cluster.start_coordinator).start()

        engine.submit = counted

    res = _run(scenario, "mfs", tmp_path, hook)
    assert res.result.summary.requests_evaluated == 4 and not res.errors
    assert all(d["coordinator.connected"] == 1 for d in res.daemons)  # reconnected
