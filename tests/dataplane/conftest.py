"""Harness for data-plane tests: in-process daemons on a background event loop, a blocking
control-socket client, the netns gate (root + a kernel with namespaces, veth, bridge, HTB) and
small helpers of the namespace tests (layout, driver, flows, stats)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from mfsched.dataplane import protocol
from mfsched.dataplane.coordinator import Coordinator
from mfsched.dataplane.daemon import Daemon, DaemonConfig
from mfsched.dataplane.engine import Placement
from mfsched.dataplane.limits import ControlLimits
from mfsched.dataplane.memtransport import MemoryFabric, MemoryTransport
from mfsched.dataplane.netns import payload_to_htb_rate
from mfsched.dataplane.testbed import Layout
from mfsched.policy.types import BatchInfo, FlowInfo, RequestInfo, Stage


class Client(protocol.BlockingClient):
    """The package's blocking client plus: wait for a message of one type."""

    def recv_type(self, kind: str, limit: int = 100_000) -> dict:
        for _ in range(limit):
            msg = self.recv()
            if msg["type"] == kind:
                return msg
        raise AssertionError(f"no {kind} message")


class MemoryCluster:
    """n daemons (and optionally a coordinator) with in-memory transports, on one background
    event loop. Addresses are m.<server>.<10+nic>."""

    def __init__(self, tmp: Path, servers: int, nics: int = 1, gpus_per_server: int = 4,
                 coordinator: bool = False, delay_s: float = 0.0, pcie: float = 1e9,
                 control_limits: ControlLimits | None = None, **config) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fabric = MemoryFabric(delay_s)
        self.coord_path = str(tmp / "coord.sock") if coordinator else None
        self.coordinator = Coordinator(self.coord_path) if coordinator else None
        self.paths = [str(tmp / f"d{h}.sock") for h in range(servers)]
        self.daemons = [
            Daemon(DaemonConfig(h, self.paths[h], nics=nics, gpus_per_server=gpus_per_server,
                                address_base="m", pcie_bytes_per_s=pcie,
                                coordinator_path=self.coord_path,
                                control_limits=control_limits or ControlLimits(), **config),
                   lambda addrs, ev: MemoryTransport(self.fabric, addrs, ev))
            for h in range(servers)]
        if self.coordinator is not None:
            self.call(self.coordinator.start())
        for d in self.daemons:
            self.call(d.start())

    def call(self, coro, timeout_s: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        async def stop():
            for d in self.daemons:
                await d.stop()
            if self.coordinator is not None:
                self.coordinator.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def memory_cluster(tmp_path):
    made: list[MemoryCluster] = []

    def make(**kw) -> MemoryCluster:
        c = MemoryCluster(tmp_path, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


_NETNS_REASON: list[str | None] = []


def netns_unavailable() -> str | None:
    if not _NETNS_REASON:
        from mfsched.dataplane.netns import have_netns

        _NETNS_REASON.append(have_netns())
    return _NETNS_REASON[0]


@pytest.fixture
def netns_ok():
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)


# --- helpers of the namespace tests -----------------------------------------------------------


def netns_layout(servers: int, rate_bps: float = 200e6) -> Layout:
    """``servers`` emulated servers with one NIC of ``rate_bps`` payload and 4 GPUs each."""
    return Layout(servers, 1, 4, rate_bps, payload_to_htb_rate(rate_bps, 9000), 1e9,
                  Placement(servers, 4, (0,)))


def driver(path: str, hello: bool = True, timeout_s: float = 30) -> Client:
    """A client of a daemon's control socket, greeted as the driver of an fs run."""
    c = Client(path, timeout_s=timeout_s)
    if hello:
        c.send({"type": "hello", "role": "driver", "run_id": "t", "scheduler": "fs",
                "num_levels": 8, "epoch_s": time.monotonic(), "time_scale": 1.0,
                "byte_scale": 1.0})
        c.recv_type("welcome")
        start_batch_one(c)
    return c


def start_batch_one(c) -> None:
    """Request 1 and batch 1, which :func:`flow_info`'s flows belong to (a daemon refuses flows
    of a batch it does not know)."""
    c.send(protocol.request_msg(RequestInfo(1, 0.0, 1e6, 100)))
    c.send(protocol.batch_msg(BatchInfo(1, 0, (1,), 8, 0.0, 1e-3)))


def flow_info(fid: int, size: float) -> FlowInfo:
    return FlowInfo(fid, Stage.COLLECTIVE, 1, (1,), 0, 0, size, size, 1, ((0, size),), 2e8,
                    None, 0.0)


def daemon_stats(path: str) -> dict[str, float]:
    c = Client(path)
    c.send({"type": "hello", "role": "probe", "run_id": "p"})
    c.send({"type": "stats"})
    out = dict(c.recv_type("stats_reply")["stats"])
    c.close()
    return out
