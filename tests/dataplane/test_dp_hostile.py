"""A hostile host on the emulated fabric, while a legitimate run moves bytes past it (root).

Three namespaces on one switch: h0 sends, h1 receives (the victim), h2 is hostile and runs
``hostile.py``: it sniffs h0's traffic (the switch mirrors h0's port to h2's, as a monitoring
port would) and replays it, forges handshakes and chunks, sends raw frames, garbage and
truncated handshakes, floods h1 with 2000 idle connections from nine addresses, trickles a
handshake one byte at a time, and, holding the run key as a compromised peer would, sends a
replayed frame, a forged one, a frame of another connection, an oversize, a truncated and a
stalled frame. Meanwhile h0 keeps sending flows to h1 until the attack is over. The run must
lose nothing, deliver nothing twice, and count every refusal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import daemon_stats, driver, flow_info, netns_layout

from mfsched.dataplane import protocol
from mfsched.dataplane.auth import RunKey
from mfsched.dataplane.limits import DataLimits
from mfsched.dataplane.netns import FabricSpec, fabric, payload_to_htb_rate
from mfsched.dataplane.testbed import EmulationConfig, processes

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("netns_ok")]

HOSTILE = Path(__file__).with_name("hostile.py")
ROUND_BYTES = 2 << 20
LIMITS = DataLimits(handshake_timeout_s=1.0, frame_timeout_s=1.0, frame_min_bytes_per_s=1e6,
                    max_connections_per_peer=32, max_preauth_connections=64)


def test_a_hostile_host_is_refused_and_counted_and_the_run_loses_nothing(tmp_path):
    key_file = tmp_path / "run.key"
    secret = RunKey.generate().export_hex()
    key_file.write_text(secret)
    key_file.chmod(0o600)
    emu = EmulationConfig(coordinator=False, key_file=str(key_file), data_limits=LIMITS)
    extra = [f"198.18.2.{20 + i}" for i in range(8)]
    with fabric(FabricSpec(servers=3, nic_rate_bps=payload_to_htb_rate(200e6, 9000))) as fab, \
            processes(fab, netns_layout(2), emu, tmp_path) as cl:
        for proc in cl.daemons:  # the key reached the daemons through a pipe, not argv
            argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert b"--key-fd" in argv and secret.encode() not in argv
        hns, sw = fab.host_ns(2), fab.switch_ns
        victim, legit = fab.address(1, 0), fab.address(0, 0)
        for addr in extra:
            subprocess.run(["ip", "-n", hns, "addr", "add", f"{addr}/16", "dev", "n0"],
                           check=True)
        # the switch copies everything h0 sends to h1 out of h2's port too
        subprocess.run(["tc", "-n", sw, "qdisc", "add", "dev", fab.port_dev(0, 0), "ingress"],
                       check=True)
        subprocess.run(["tc", "-n", sw, "filter", "add", "dev", fab.port_dev(0, 0), "parent",
                        "ffff:", "protocol", "ip", "u32", "match", "ip", "dst", f"{victim}/32",
                        "action", "mirred", "egress", "mirror", "dev", fab.port_dev(2, 0)],
                       check=True)
        attacker = subprocess.Popen(
            ["ip", "netns", "exec", hns, sys.executable, str(HOSTILE), "--target", victim,
             "--port", str(emu.data_port), "--key-file", str(key_file), "--capture-from",
             legit, "--bind", ",".join([fab.address(2, 0), *extra]), "--flood", "2000",
             "--trickle-s", "0.2"], stdout=subprocess.PIPE, text=True)
        try:
            assert attacker.stdout.readline().strip() == "ready"
            c = driver(cl.sockets[0])
            rounds = 0
            while attacker.poll() is None:  # legitimate flows until the attack is over
                rounds += 1
                c.send(protocol.flow_msg(flow_info(rounds, ROUND_BYTES),
                                         [(0, 0, 4, float(ROUND_BYTES))]))
                assert c.recv_type("completion")["flow_id"] == rounds
            report = json.loads(attacker.stdout.read().strip().splitlines()[-1])
        finally:
            if attacker.poll() is None:
                attacker.kill()
            attacker.wait(10)
        sender, victim_st = daemon_stats(cl.sockets[0]), daemon_stats(cl.sockets[1])
    assert attacker.returncode == 0 and rounds >= 3
    for log in tmp_path.glob("*.log"):
        assert secret not in log.read_text()
    # the run: every legitimate byte exactly once, plus the insider's one valid chunk
    insider = report["insider_delivered_bytes"]
    assert insider == 2048
    assert victim_st["transport.bytes_delivered"] == rounds * ROUND_BYTES + insider
    assert victim_st["transport.members_complete"] == rounds + 1
    assert victim_st["transport.chunks_bad"] == 0
    assert sender["transport.handshake_failures"] == 0 and sender["transport.peer_errors"] == 0
    # the capture and the refusals, as the attacker saw them
    assert report["captured_bytes"] == 64 * 1024
    assert report["replay"] == "the sender does not know the run key"
    assert report["forged"] == ["the sender does not know the run key"] * 3
    assert report["raw"] == "not an mfsched data-plane client hello"
    assert report["insider_replay"] == "frame 0 replayed (expected 1)"
    assert report["insider_bad_mac"] == "frame 0 does not authenticate"
    assert report["insider_foreign"] == "frame 0 does not authenticate"
    assert "outside 1..1048576" in report["insider_oversize"]
    sent, took_s, reason = report["trickle"]
    assert reason == "handshake not completed in time" and sent <= 7 and took_s < 3
    took_s, reason = report["insider_stall"]
    assert reason == "frame not completed in time" and took_s < 3
    flood = report["flood"]
    assert flood["established"] == 2000 and flood["still_open"] == 0 and flood["other"] == 0
    # ... and as the victim counted them
    g = {k[len("guard."):]: v for k, v in victim_st.items() if k.startswith("guard.")}
    assert g["handshake_failed"] == 3 + 1 + 1 + 1  # forged, raw, garbage, replayed capture
    assert g["truncated"] == 2  # half a hello; half a frame (insider)
    assert (g["replayed"], g["bad_mac"], g["oversize"], g["frame_timeouts"]) == (1, 2, 1, 1)
    assert g["connections_refused"] == flood["refused"]
    assert g["preauth_evicted"] == flood["evicted"] > 0
    assert g["handshake_timeouts"] == flood["timeout"] + 1  # + the trickle
    assert flood["refused"] + flood["evicted"] + flood["timeout"] == 2000
    assert victim_st["rx.connections_preauth"] == 0
