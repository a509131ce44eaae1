"""Data-plane benchmark on the emulated fabric: goodput and CPU with and without
authentication, priority isolation, promotion delay, a daemon's memory at 10,000 flows.

    sudo python bench/bench_dataplane.py [--repeat 3] [--rate-mbps 200] [--write FILE]

Builds a 3-host fabric (:mod:`mfsched.dataplane.netns`: one switch namespace with a bridge,
strict-priority HTB on every NIC uplink and switch port), starts real daemons in the host
namespaces and drives them through their control sockets, as the wall-clock engine does.
Policies and sizes are in real units here (time and byte scale 1). Every figure is the median
over ``--repeat`` runs; link rates are TCP payload rates (HTB is set so that full-size 9000-byte
segments carry exactly that much payload).

1. **Goodput and CPU, authentication on and off**: one 25 MB flow h0 -> h1, and four flows of
   8 MB in parallel, under ``fs``; bytes / (completion - submit) as a fraction of the link's
   payload rate (target >= 90%), and the CPU seconds of the sending and the receiving daemon
   per GB moved (``cpu_s`` of their stats, before and after). The runs with
   and without authentication alternate within each repeat; the ratio on / off is the cost
   (target: within 10%). Then the transport alone, in one process on loopback (no fabric, no
   other process), as fast as it goes: its goodput and CPU per GB are the protocol's cost
   without the machine's other jobs, which on a shared two-core machine made CPU-bound runs on
   the fabric vary by +-40% from run to run.
2. **Isolation** (``edf``: a P2D flow with a deadline is level 0 = hardware class 1; a
   collective without one is level 1 = class 2): a 60 MB low-priority flow saturates the
   link, a 12 MB high-priority flow starts 0.4 s later; its throughput as a fraction of the
   link. Two cases: both flows from h0 (host queues), and an incast, low from h2 and high from
   h0 into h1 (switch port). Target >= 90%.
3. **Promotion** (``mfs``): a 4 MB Stage-1 flow h0 -> h1 with RLI 3 (level 4, class 5) is
   starved on h0's uplink by a saturating Stage-1 flow h0 -> h2 of another batch with RLI 1
   (level 2, class 3); 0.5 s later its batch reaches the target layer and MFS promotes it to
   level 1 (class 2). Reported: the time from the layer_start message until h1 has received
   64 KB more (the promotion takes effect), and the completion time minus the time the
   remaining bytes need alone (the promotion delay), with the daemon's copies of starved
   chunks (default) and without. Without them the chunks already queued in the low class wait
   for the competitor to finish (ns-3 scenario e1); with them only the next chunk matters.
   Also reported: from the layer_start message to the first byte of the promoted flow that
   reaches h1 in the new class (``rx.class2.first_s`` of h1's daemon, the receiver's clock,
   CLOCK_MONOTONIC like the benchmark's; target < 2 ms).
4. **Memory**: the resident set of a daemon before and after 10,000 flows were submitted to
   it (their receivers stopped, so all of them stay queued).

Results are printed, go to ``bench/results/dataplane.json`` and, with ``--write FILE``, replace
the bench-dataplane section of a Markdown file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _report import save  # noqa: E402

from mfsched.dataplane import protocol  # noqa: E402
from mfsched.dataplane.engine import Placement  # noqa: E402
from mfsched.dataplane.netns import FabricSpec, fabric, payload_to_htb_rate  # noqa: E402
from mfsched.dataplane.sender import SenderConfig  # noqa: E402
from mfsched.dataplane.testbed import EmulationConfig, Layout, processes  # noqa: E402
from mfsched.policy.types import BatchInfo, FlowInfo, RequestInfo, Stage  # noqa: E402

MB = 1_000_000
GPU = {0: 0, 1: 4, 2: 8}  # first GPU of each host (4 GPUs per host)


class Control(protocol.BlockingClient):
    """A daemon's control socket, greeted as a driver (or a probe) of a benchmark run."""

    def __init__(self, path: str, scheduler: str | None) -> None:
        super().__init__(path, timeout_s=60)
        self.early: list[dict] = []
        if scheduler is None:
            self.send({"type": "hello", "role": "probe", "run_id": "probe"})
            self.wait("welcome")
            return
        self.send({"type": "hello", "role": "driver", "run_id": f"bench-{scheduler}",
                   "scheduler": scheduler, "num_levels": 8, "epoch_s": time.monotonic(),
                   "time_scale": 1.0, "byte_scale": 1.0})
        self.wait("welcome")

    @classmethod
    def probe(cls, path: str) -> Control:
        return cls(path, None)

    def wait(self, kind: str, flow_id: int | None = None) -> dict:
        """The next message of ``kind`` (for ``flow_id``); other completions are kept."""
        if kind == "completion":
            for i, msg in enumerate(self.early):
                if flow_id is None or msg["flow_id"] == flow_id:
                    return self.early.pop(i)
        while True:
            msg = self.recv()
            if msg["type"] == "error":
                raise RuntimeError(msg["reason"])
            if msg["type"] == kind and (flow_id is None or msg.get("flow_id") == flow_id):
                return msg
            if msg["type"] == "completion":
                self.early.append(msg)


def flow(fid: int, stage: Stage, batch: int, size: int, *, layer: int = 0, target: int = 0,
         deadline: float | None = None, rid: int = 1) -> FlowInfo:
    return FlowInfo(fid, stage, batch, (rid,), layer, target, float(size), float(size), 1,
                    ((0, float(size)),), 1e9, deadline, 0.0)


def submit(c: Control, f: FlowInfo, src_host: int, dst_host: int) -> float:
    c.send(protocol.flow_msg(f, [(0, GPU[src_host], GPU[dst_host], f.size_bytes)]))
    return time.monotonic()


def layout(rate_bps: float) -> Layout:
    return Layout(3, 1, 4, rate_bps, payload_to_htb_rate(rate_bps, 9000), 1e9,
                  Placement(3, 4, (0,)))


def _cpu_s(cl) -> float:
    """CPU seconds of the sending (h0) and the receiving (h1) daemon so far."""
    return stats(cl.sockets[0])["cpu_s"] + stats(cl.sockets[1])["cpu_s"]


def goodput(fab, lay, tmp: Path, rate_bps: float, auth: bool) -> dict:
    name = "goodput-auth" if auth else "goodput-plain"
    with processes(fab, lay, EmulationConfig(coordinator=False, authenticate=auth),
                   tmp / name) as cl:
        c = Control(cl.sockets[0], "fs")
        cpu0 = _cpu_s(cl)
        t0 = submit(c, flow(1, Stage.COLLECTIVE, 1, 25 * MB), 0, 1)
        c.wait("completion", 1)
        single = 25 * MB * 8 / (time.monotonic() - t0) / rate_bps
        t0 = time.monotonic()
        for fid in range(2, 6):
            submit(c, flow(fid, Stage.COLLECTIVE, 1, 8 * MB), 0, 1)
        for _ in range(4):
            c.wait("completion")
        parallel = 32 * MB * 8 / (time.monotonic() - t0) / rate_bps
        cpu = _cpu_s(cl) - cpu0
    return {"single_flow": single, "four_flows": parallel, "cpu_s_per_gb": cpu / 0.057}


def loopback_goodput(auth: bool, size: int = 400 << 20) -> dict:
    """The transport alone, as fast as it goes: a sender and a receiver TcpTransport in this
    process (one core), on 127.0.0.1/127.0.0.2, no fabric. Goodput and CPU per GB here are
    the cost of the protocol itself, without the machine's other jobs or HTB in the way."""
    import asyncio
    import socket

    from mfsched.dataplane.auth import RunKey
    from mfsched.dataplane.transport import TcpTransport
    from mfsched.dataplane.wire import ChunkKey, Route

    class Events:
        def __init__(self, n: int, done: asyncio.Event) -> None:
            self.left, self.done = n, done

        def chunk_acked(self, route, key) -> None:
            self.left -= 1
            if not self.left:
                self.done.set()

        def chunk_failed(self, route, key, reason) -> None:
            raise RuntimeError(reason)

        def member_received(self, *args) -> None:
            pass

    async def run() -> dict:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        key = RunKey.generate() if auth else None
        chunk = SenderConfig().chunk_bytes
        n = size // chunk
        done = asyncio.Event()
        rx = TcpTransport(["127.0.0.1"], port, Events(0, done), key=key, congestion=None)
        tx = TcpTransport(["127.0.0.2"], port, Events(n, done), key=key, congestion=None)
        await rx.start()
        await tx.start()
        route = Route("127.0.0.2", "127.0.0.1", 1)
        t0, cpu0 = time.monotonic(), time.process_time()
        window = SenderConfig().window_bytes // chunk  # as the daemon's send scheduler does
        sent = 0
        while sent < n:
            while sent < n and sent - (n - tx.events.left) < window:
                tx.send(route, ChunkKey(1, 0, sent * chunk, chunk), n * chunk)
                sent += 1
            await asyncio.sleep(0)
        await done.wait()
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        assert rx.stats.bytes_delivered == n * chunk
        await tx.close()
        await rx.close()
        return {"goodput_mbps": n * chunk * 8 / wall / 1e6, "cpu_s_per_gb": cpu / (n * chunk / 1e9)}

    return asyncio.run(run())


def memory(fab, lay, tmp: Path, flows: int = 10_000) -> dict:
    """A daemon's resident set before and after ``flows`` one-chunk flows were queued in it."""
    with processes(fab, lay, EmulationConfig(coordinator=False), tmp / "memory") as cl:
        c = Control(cl.sockets[0], "fs")
        for h in (1, 2):
            cl.stop_daemon(h)
        before = stats(cl.sockets[0])
        for fid in range(1, flows + 1):
            submit(c, flow(fid, Stage.COLLECTIVE, 1, 4096), 0, 1 + fid % 2)
        while (after := stats(cl.sockets[0]))["active_flows"] < flows:
            time.sleep(0.1)
    return {"flows": flows, "rss_before_bytes": before["rss_bytes"],
            "rss_after_bytes": after["rss_bytes"],
            "per_flow_bytes": (after["rss_bytes"] - before["rss_bytes"]) / flows}


def isolation(fab, lay, tmp: Path, rate_bps: float, incast: bool) -> float:
    name = "incast" if incast else "same_host"
    with processes(fab, lay, EmulationConfig(coordinator=False), tmp / name) as cl:
        hi_c = Control(cl.sockets[0], "edf")
        lo_c = Control(cl.sockets[2], "edf") if incast else hi_c
        submit(lo_c, flow(1, Stage.COLLECTIVE, 1, 60 * MB), 2 if incast else 0, 1)
        time.sleep(0.4)
        t0 = submit(hi_c, flow(2, Stage.P2D, 1, 12 * MB, deadline=1e9), 0, 1)
        hi_c.wait("completion", 2)
        share = 12 * MB * 8 / (time.monotonic() - t0) / rate_bps
        lo_c.wait("completion", 1)
    return share


def stats(path: str) -> dict[str, float]:
    c = Control.probe(path)
    c.send({"type": "stats"})
    value = dict(c.wait("stats_reply")["stats"])
    c.sock.close()
    return value


def delivered(path: str) -> float:
    return stats(path)["transport.bytes_delivered"]


def promotion(fab, lay, tmp: Path, rate_bps: float, copies: bool, nice: int = 0) -> dict:
    """The competitor goes h0 -> h2 and the promoted flow h0 -> h1: they meet on h0's uplink,
    and h1's byte counter is the promoted flow's progress. ``nice``: the daemons' niceness
    (-10 puts them ahead of the machine's other jobs, as ``mfsched testbed --nice`` does)."""
    sender = SenderConfig(promote_copy_after_s=0.010 if copies else float("inf"))
    name = ("promotion-copies" if copies else "promotion-plain") + f"{nice}"
    size = 4 * MB
    with processes(fab, lay, EmulationConfig(coordinator=False, sender=sender, nice=nice),
                   tmp / name) as cl:
        c = Control(cl.sockets[0], "mfs")
        for rid, batch in ((1, 1), (2, 2)):
            c.send(protocol.request_msg(RequestInfo(rid, 0.0, 1e6, 100)))
            c.send(protocol.batch_msg(BatchInfo(batch, 0, (rid,), 8, 0.0, 1e-3)))
        submit(c, flow(1, Stage.KV_REUSE, 1, 60 * MB, target=1, rid=1), 0, 2)  # RLI 1
        time.sleep(0.2)
        submit(c, flow(2, Stage.KV_REUSE, 2, size, target=3, rid=2), 0, 1)  # RLI 3, starved
        time.sleep(0.5)
        before = delivered(cl.sockets[1])
        t0 = time.monotonic()
        c.send({"type": "layer_start", "batch_id": 2, "layer": 3})  # RLI 0: promoted
        first = None
        while first is None and time.monotonic() - t0 < 5:
            if delivered(cl.sockets[1]) >= before + 64 * 1024:
                first = time.monotonic() - t0
        c.wait("completion", 2)
        after = time.monotonic() - t0
        c.wait("completion", 1)
        c.send({"type": "stats"})
        sent = dict(c.wait("stats_reply")["stats"])
        # class 2 carries nothing to h1 before the promotion (its connection is open, idle)
        first_byte = stats(cl.sockets[1])["rx.class2.first_s"] - t0
    alone = (size - before) * 8 / rate_bps
    return {"delivered_before_promotion_bytes": before, "first_byte_new_class_s": first_byte,
            "first_64k_after_promotion_s": first,
            "completion_after_promotion_s": after, "remaining_alone_s": alone,
            "promotion_delay_s": after - alone, "chunks_copied": sent["sender.copies"]}


def _median(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def _ratios(on: list[dict], off: list[dict]) -> dict:
    """Median over repeats of on / off, run by run (each pair ran in the same repeat)."""
    return {k: statistics.median(a[k] / b[k] for a, b in zip(on, off, strict=True))
            for k in on[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rate-mbps", type=float, default=200.0)
    ap.add_argument("--write", type=Path, help="replace the bench-dataplane section of this "
                                               "Markdown file")
    a = ap.parse_args()
    rate = a.rate_mbps * 1e6
    lay = layout(rate)
    runs: dict[str, list] = {k: [] for k in (
        "goodput_auth", "goodput_plain", "loopback_auth", "loopback_plain", "isolation",
        "promotion_with_copies", "promotion_without_copies", "promotion_nice", "memory")}
    started, load_start = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mfs-bench-") as tmp, \
            fabric(FabricSpec(servers=3, nic_rate_bps=lay.htb_rate_bps)) as fab:
        for i in range(a.repeat):
            t = Path(tmp) / str(i)
            for auth in (True, False) if i % 2 == 0 else (False, True):
                key = "goodput_auth" if auth else "goodput_plain"
                runs[key].append(goodput(fab, lay, t, rate, auth))
            runs["isolation"].append({"same_host": isolation(fab, lay, t, rate, False),
                                      "incast": isolation(fab, lay, t, rate, True)})
            runs["promotion_with_copies"].append(promotion(fab, lay, t, rate, True))
            runs["promotion_without_copies"].append(promotion(fab, lay, t, rate, False))
            runs["promotion_nice"].append(promotion(fab, lay, t, rate, True, nice=-10))
            runs["memory"].append(memory(fab, lay, t))
    for i in range(a.repeat):
        for auth in (True, False) if i % 2 == 0 else (False, True):
            runs["loopback_auth" if auth else "loopback_plain"].append(loopback_goodput(auth))
    result = {
        "link_payload_mbps": a.rate_mbps,
        "mtu": 9000, "repeats": a.repeat, "wall_s": time.monotonic() - started,
        "goodput_auth": _median(runs["goodput_auth"]),
        "goodput_plain": _median(runs["goodput_plain"]),
        "goodput_auth_over_plain": _ratios(runs["goodput_auth"], runs["goodput_plain"]),
        "loopback_auth": _median(runs["loopback_auth"]),
        "loopback_plain": _median(runs["loopback_plain"]),
        "loopback_auth_over_plain": _ratios(runs["loopback_auth"], runs["loopback_plain"]),
        "high_priority_share": _median(runs["isolation"]),
        "promotion_with_copies": _median(runs["promotion_with_copies"]),
        "promotion_without_copies": _median(runs["promotion_without_copies"]),
        "promotion_nice": _median(runs["promotion_nice"]),
        "load_avg_1min": (load_start, os.getloadavg()[0]),
        "memory": _median(runs["memory"]),
        "runs": runs,
    }
    save("dataplane", result, _markdown(result), a.write, "bench-dataplane")


def _markdown(r: dict) -> str:
    g, gp, gr = r["goodput_auth"], r["goodput_plain"], r["goodput_auth_over_plain"]
    f, fp, fr = r["loopback_auth"], r["loopback_plain"], r["loopback_auth_over_plain"]
    h, m = r["high_priority_share"], r["memory"]
    p1, p0, pn = r["promotion_with_copies"], r["promotion_without_copies"], r["promotion_nice"]
    spread = [1e3 * x["first_byte_new_class_s"] for x in r["runs"]["promotion_with_copies"]]
    spread_n = [1e3 * x["first_byte_new_class_s"] for x in r["runs"]["promotion_nice"]]
    rows = [
        ("goodput, one 25 MB flow, fraction of the link's payload rate",
         f"{g['single_flow']:.1%}", f"{gp['single_flow']:.1%}", f"{gr['single_flow']:.3f}",
         ">= 90%"),
        ("goodput, four 8 MB flows in parallel", f"{g['four_flows']:.1%}",
         f"{gp['four_flows']:.1%}", f"{gr['four_flows']:.3f}", ">= 90%"),
        ("CPU of sender + receiver daemon per GB (the 57 MB above)",
         f"{g['cpu_s_per_gb']:.2f} s", f"{gp['cpu_s_per_gb']:.2f} s",
         f"{gr['cpu_s_per_gb']:.3f}", "ratio <= 1.10"),
        ("transport alone, one process on loopback (CPU-bound): goodput of 400 MiB",
         f"{f['goodput_mbps']:.0f} Mbit/s", f"{fp['goodput_mbps']:.0f} Mbit/s",
         f"{fr['goodput_mbps']:.3f}", "ratio >= 0.90"),
        ("... CPU of sender + receiver per GB", f"{f['cpu_s_per_gb']:.2f} s",
         f"{fp['cpu_s_per_gb']:.2f} s", f"{fr['cpu_s_per_gb']:.3f}", "ratio <= 1.10"),
    ]
    others = [
        ("high-priority share of the link against a saturating low-priority flow, same sender "
         "(host HTB)", f"{h['same_host']:.1%}", ">= 90%"),
        ("the same, incast from two hosts (switch-port HTB)", f"{h['incast']:.1%}", ">= 90%"),
        ("promotion: from layer_start to the first byte in the new class at the receiver "
         f"(runs: {min(spread):.2f} to {max(spread):.2f} ms)",
         f"{1e3 * p1['first_byte_new_class_s']:.2f} ms", "< 2 ms"),
        ("the same, daemons at niceness -10, ahead of the machine's other jobs "
         f"(runs: {min(spread_n):.2f} to {max(spread_n):.2f} ms)",
         f"{1e3 * pn['first_byte_new_class_s']:.2f} ms", "< 2 ms"),
        ("promotion: from layer_start to 64 KB more delivered, with copies of starved chunks",
         f"{1e3 * p1['first_64k_after_promotion_s']:.1f} ms", ""),
        ("promotion delay (completion minus the time the rest needs alone), with copies",
         f"{1e3 * p1['promotion_delay_s']:.1f} ms", ""),
        ("promotion delay without copies (chunks stuck in the low class, ns-3 e1)",
         f"{1e3 * p0['promotion_delay_s']:.0f} ms", ""),
        (f"daemon resident memory: idle / with {m['flows']:,} flows queued",
         f"{m['rss_before_bytes'] / 2**20:.0f} / {m['rss_after_bytes'] / 2**20:.0f} MiB", ""),
        ("... per queued flow", f"{m['per_flow_bytes'] / 1024:.2f} KiB", ""),
    ]
    n = r["repeats"]
    return "\n".join(
        [f"Links of {r['link_payload_mbps']:g} Mbit/s payload, MTU {r['mtu']}; medians of {n} "
         "runs (1-minute load average of the shared two-core machine at the start and the "
         f"end: {r['load_avg_1min'][0]:.1f}, {r['load_avg_1min'][1]:.1f}). Authentication: "
         "per-connection handshake and AES-256-GCM on every chunk and ack "
         "(`docs/dataplane.md` section 11); plain: CRC-32 only. Ratios are on / plain, "
         "run by run.", "",
         "| figure | authenticated | plain | ratio | target |", "|---|---:|---:|---:|---:|"]
        + [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
        + ["", f"| figure | median of {n} | target |", "|---|---:|---:|"]
        + [f"| {a} | {b} | {c} |" for a, b, c in others])


if __name__ == "__main__":
    main()
