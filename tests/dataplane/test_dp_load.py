"""Load on one daemon, as root on the emulated fabric: 10,000 flows in flight at once and
100,000 queued, every byte exactly once, memory bounded per flow and released afterwards.

The flows are submitted while their receivers are down (their daemons stopped), so that all of
them are in the sending daemon at once whatever the machine's speed; then the receivers start,
the sender's connections come up, and everything drains. Memory is the sending daemon's
resident set (``/proc/self/statm``), before and after the submissions.
"""

from __future__ import annotations

import pytest
from conftest import daemon_stats, driver, flow_info, netns_layout

from mfsched.dataplane import protocol
from mfsched.dataplane.netns import FabricSpec, fabric, payload_to_htb_rate
from mfsched.dataplane.sender import SenderConfig
from mfsched.dataplane.testbed import EmulationConfig, processes

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("netns_ok")]

CHUNK = 1024
WINDOW = 256 * 1024
RSS_PER_FLOW_BYTES = 2048  # measured: 1.4 KB per queued flow at 100,000 (Python objects)


@pytest.mark.parametrize(("flows", "size"), [(10_000, 2 * CHUNK), (100_000, 256)],
                         ids=["10k-in-flight", "100k-queued"])
def test_one_daemon_carries_many_flows_at_once(tmp_path, flows, size):
    emu = EmulationConfig(coordinator=False, sender=SenderConfig(CHUNK, WINDOW))
    with fabric(FabricSpec(servers=4, nic_rate_bps=payload_to_htb_rate(400e6, 9000))) as fab, \
            processes(fab, netns_layout(4, 400e6), emu, tmp_path) as cl:
        src = cl.sockets[0]
        c = driver(src, timeout_s=300)
        for h in (1, 2, 3):
            cl.stop_daemon(h)
        base = daemon_stats(src)
        for fid in range(1, flows + 1):
            c.send(protocol.flow_msg(flow_info(fid, size),
                                     [(0, fid % 4, 4 + fid % 12, float(size))]))
        c.send({"type": "stats"})  # answered after every submit before it was handled
        queued = dict(c.recv_type("stats_reply")["stats"])
        for h in (1, 2, 3):
            cl.start_daemon(h)
        done = set()
        while len(done) < flows:
            msg = c.recv()
            assert msg["type"] != "error", msg
            if msg["type"] == "completion":
                done.add(msg["flow_id"])
        after = daemon_stats(src)
        rx = [daemon_stats(cl.sockets[h]) for h in (1, 2, 3)]
    assert done == set(range(1, flows + 1))
    assert queued["active_flows"] == queued["active_flows_peak"] == flows  # all at once
    per_flow = (queued["rss_bytes"] - base["rss_bytes"]) / flows
    assert 0 < per_flow <= RSS_PER_FLOW_BYTES
    # everything released: no flow, member or ledger entry left behind
    assert after["active_flows"] == after["sender.members"] == after["sender.queued_bytes"] == 0
    assert sum(r["transport.bytes_delivered"] for r in rx) == flows * size  # exactly once
    assert sum(r["transport.members_complete"] for r in rx) == flows
    assert sum(r["ledger.open_members"] for r in rx) == 0
    assert sum(r["ledger.completed_remembered"] for r in rx) == flows
    if size > CHUNK:  # all first chunks go before any second one, except those of the first
        # flows, which were alone in the queue while the window filled
        assert sum(r["ledger.open_members_peak"] for r in rx) >= flows - WINDOW // CHUNK
