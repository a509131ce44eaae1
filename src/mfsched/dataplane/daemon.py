"""The host daemon: one per (emulated) server, gating every transfer that leaves it.

Started by the testbed runner inside the server's namespace
(``ip netns exec mfs-<tag>-h3 python -m mfsched.dataplane.daemon --server 3 --socket ...``;
the command line is :mod:`.daemon_cli`). The runtime (here: the wall-clock engine in
:mod:`mfsched.dataplane.engine`) talks to it over a Unix socket with the messages of
:mod:`mfsched.dataplane.protocol`:

* ``hello`` configures a run: scheduler name, levels, options, the shared clock (``epoch_s``
  on CLOCK_MONOTONIC) and the scale factors. The daemon builds a :class:`.runstate.RunState`,
  which runs the policy (the very classes the simulator runs, behind the simulator's own
  :class:`~mfsched.policy.driver.PolicyDriver`).
* ``request``, ``batch_start``, ``layer_start``, ``batch_compute_done``, ``batch_end``,
  ``request_done`` and ``submit`` go to the run state (paper: *submit*; the software queues of
  :mod:`.sender` then *permit* chunks in priority order, and when the receivers have
  acknowledged every byte the run state answers ``completion``, paper: *completion*).

What lives where: this module is the socket server, the transport's event sink, the life cycle
and the statistics; :mod:`.runstate` is one run's state and policy driving; :mod:`.coordlink`
the link to the coordinator (reports, decisions, reconnects); :mod:`.pcie` the intra-server
lanes; :mod:`.sender` the software queues. Policy times, sizes and rates stay in model units;
bytes on the wire are divided by the byte scale (:mod:`.scale`).

Bad messages get an ``error`` reply and a log line; the daemon never exits because of one.
The control socket is private to the daemon's user (:mod:`.control`, :mod:`.localsock`); data
connections must prove they know the run's key (:mod:`.auth`, :mod:`.receiver`); what clients
and peers can make the daemon hold is bounded (:mod:`.limits`), and every refusal is counted in
the ``guard.*`` statistics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..policy.types import Priority
from .auth import RunKey
from .control import ControlClient, ControlServer
from .coordlink import CoordinatorLink
from .kvstore import PayloadSource, ReceiveStore
from .limits import ControlLimits, DataLimits, GuardStats
from .localsock import SocketAccess
from .pcie import PcieLanes
from .protocol import ProtocolError
from .runstate import RUNTIME_EVENTS, RunState, TooManyFlows, hw_class_of
from .sender import MemberTx, SenderConfig, SendScheduler
from .transport import ChunkKey, Route, TcpTransport

__all__ = ["Daemon", "DaemonConfig", "main"]

log = logging.getLogger("mfsched.daemon")

KV_TYPES = frozenset({"kv_claim", "kv_release"})  # a runtime taking KV flows it received
DRIVER_TYPES = RUNTIME_EVENTS | KV_TYPES | {"hello", "stats", "shutdown"}


@dataclass(frozen=True)
class DaemonConfig:
    server: int
    socket_path: str
    data_port: int = 7411
    nics: int = 1
    gpus_per_server: int = 4
    address_base: str = "198.18"  # NIC k of server h is <base>.<h>.<10 + k>
    pcie_bytes_per_s: float = 31.5e6  # real bytes/s of a GPU's PCIe path (intra-server)
    coordinator_path: str | None = None
    sender: SenderConfig = field(default_factory=SenderConfig)
    key: RunKey | None = None  # None: data connections are not authenticated (--no-auth)
    data_limits: DataLimits = field(default_factory=DataLimits)
    control_limits: ControlLimits = field(default_factory=ControlLimits)
    socket_group: str | None = None  # None: the control socket is 0600
    kv_store_bytes: int = 1 << 30  # received KV flows held until a local runtime takes them
    kv_ttl_s: float = 60.0  # unclaimed (or stalled) received KV flows are freed after this

    def address(self, server: int, nic: int) -> str:
        # interned: every member keeps its two addresses, and there may be 100,000 members
        return sys.intern(f"{self.address_base}.{server}.{10 + nic}")

    def locate(self, gpu: int) -> tuple[int, int]:
        """GPU -> (server, NIC): GPUs are split evenly over the NICs, as in the simulator."""
        server, local = divmod(gpu, self.gpus_per_server)
        per_nic = -(-self.gpus_per_server // self.nics)
        return server, local // per_nic

    @property
    def addresses(self) -> list[str]:
        return [self.address(self.server, k) for k in range(self.nics)]


class Daemon:
    def __init__(self, config: DaemonConfig,
                 transport_factory: Callable[[list[str], Any], Any] | None = None) -> None:
        self.config = config
        self._transport_factory = transport_factory
        self.run: RunState | None = None
        self.driver: ControlClient | None = None
        self.stats: dict[str, float] = {"flows": 0, "decisions": 0, "completions": 0,
                                        "bytes_submitted": 0, "decide_s": 0.0}
        self.guard = GuardStats()
        self.active_flows_peak = 0
        self._policy_errors = 0  # of runs that ended
        self._stopped: asyncio.Event | None = None

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        cfg = self.config
        self.control = ControlServer(cfg.socket_path, DRIVER_TYPES, self._handle,
                                     guard=self.guard, limits=cfg.control_limits,
                                     access=SocketAccess(cfg.socket_group),
                                     on_close=self._client_gone)
        factory = self._transport_factory or (
            lambda addrs, events: TcpTransport(addrs, cfg.data_port, events, key=cfg.key,
                                               limits=cfg.data_limits, guard=self.guard))
        self.transport = factory(cfg.addresses, self)
        self.payloads = PayloadSource()
        self.kv_store = ReceiveStore(cfg.kv_store_bytes, cfg.kv_ttl_s,
                                     on_forget=self.transport.ledger.forget)
        self.transport.use_payloads(self.payloads, self.kv_store)
        await self.transport.start()
        self._sweep_handle = self.loop.call_later(self._sweep_every_s(), self._sweep)
        self.sender = SendScheduler(self.transport, cfg.sender, self._hw_class,
                                    self._member_done)
        PcieLanes(cfg.pcie_bytes_per_s, cfg.gpus_per_server).warm_up()
        self.coordinator = CoordinatorLink(self) if cfg.coordinator_path else None
        await self.control.start()
        log.info("daemon %d listening on %s, data on %s:%d (%s)", cfg.server, cfg.socket_path,
                 ",".join(cfg.addresses), cfg.data_port,
                 "authenticated" if cfg.key else "NOT authenticated")

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.stop()

    def request_stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    async def stop(self) -> None:
        self.control.close()
        self._sweep_handle.cancel()
        if self.run is not None:
            self.run.close()
        if self.coordinator is not None:
            self.coordinator.close()
        await self.transport.close()
        self.payloads.close()
        self.kv_store.close()

    def _sweep_every_s(self) -> float:
        return min(1.0, self.config.kv_ttl_s / 4)

    def _sweep(self) -> None:
        self.kv_store.sweep()
        self._sweep_handle = self.loop.call_later(self._sweep_every_s(), self._sweep)

    # --- the local API ---------------------------------------------------------------------------

    def _client_gone(self, client: ControlClient) -> None:
        if client is self.driver:
            self.driver = None
        self.kv_store.owner_gone(client)

    def _handle(self, msg: dict, client: ControlClient) -> None:
        kind = msg["type"]
        if kind == "hello":
            self._hello(msg, client)
        elif kind == "stats":
            self.control.send(client, {"type": "stats_reply", "stats": self._stats_pairs()})
        elif kind == "shutdown":
            self.request_stop()
        elif kind == "kv_claim":
            self.control.send(client, {"type": "kv_ready",
                                       "flows": self.kv_store.claim(msg["flow_ids"], client)})
        elif kind == "kv_release":
            self.kv_store.release(msg["flow_ids"], client)
        elif self.run is None:
            raise ProtocolError("no run configured: send hello first")
        else:
            try:
                self.run.handle(msg, client)
            except TooManyFlows:
                self.guard.flows_refused += 1
                raise
            self.active_flows_peak = max(self.active_flows_peak, len(self.run.flows))

    def _hello(self, msg: dict, client: ControlClient) -> None:
        if msg["role"] == "driver":
            if self.run is None or self.run.run_id != msg["run_id"]:
                if self.run is not None and self.run.flows:
                    raise ProtocolError("a different run is still moving flows")
                self._new_run(msg)
            self.driver = client
        self.control.send(client, {"type": "welcome", "server": self.config.server,
                                   "gpus_per_server": self.config.gpus_per_server,
                                   "pid": os.getpid(),
                                   "run_id": self.run.run_id if self.run else ""})

    def _new_run(self, msg: dict) -> None:
        if self.run is not None:
            self._policy_errors += self.run.policy_errors
            self.run.close()
        self.run = RunState(msg, self.config, self.sender, self.loop,
                            to_runtime=self._to_driver, coordinator=self.coordinator,
                            stats=self.stats, payloads=self.payloads)
        if self.coordinator is not None:
            self.coordinator.reset()
        log.info("run %s: scheduler %s", self.run.run_id, msg.get("scheduler"))

    def apply_coordinator(self, ranks: dict[int, int], pruned: set[int]) -> None:
        """A decision the coordinator pushed (from :mod:`.coordlink`)."""
        if self.run is not None:
            self.run.global_order(ranks, pruned)

    # --- transport and sender events (the daemon is the transport's TransportEvents) ----------

    def _hw_class(self, prio: Priority) -> int:
        return hw_class_of(prio, self.run.num_levels if self.run else 8)

    def _member_done(self, m: MemberTx) -> None:
        if self.run is not None:
            self.run.member_done(m.flow_id)

    def chunk_acked(self, route: Route, key: ChunkKey) -> None:
        self.sender.chunk_acked(route, key)
        self.sender.pump()

    def chunk_failed(self, route: Route, key: ChunkKey, reason: str) -> None:
        log.warning("chunk %s to %s failed: %s (will retry)", key, route.dst_addr, reason)
        self.sender.chunk_failed(route, key)
        self.sender.pump()

    def member_received(self, flow_id: int, member: int, new_bytes: int, total: int,
                        complete: bool) -> None:
        self.stats["bytes_received"] = self.stats.get("bytes_received", 0) + new_bytes
        if complete:
            self.stats["members_received"] = self.stats.get("members_received", 0) + 1

    # --- the runtime --------------------------------------------------------------------------

    def now_s(self) -> float:
        """Model time on the shared clock."""
        return self.run.now_s() if self.run else 0.0

    def _to_driver(self, msg: dict) -> None:
        if self.driver is not None and not self.control.send(self.driver, msg):
            self.driver = None

    @property
    def policy_errors(self) -> int:
        return self._policy_errors + (self.run.policy_errors if self.run else 0)

    def _stats_pairs(self) -> list[tuple[str, float]]:
        pairs = [(k, float(v)) for k, v in self.stats.items()]
        pairs += [("messages", float(self.control.messages)),
                  ("errors", float(self.control.errors + self.policy_errors))]
        pairs += self.transport.as_pairs()
        pairs += self.guard.as_pairs()
        pairs += self.kv_store.as_pairs()
        pairs.append(("kv.staged_flows", float(len(self.payloads.segments))))
        pairs.append(("sender.copies", float(self.sender.copies)))
        pairs.append(("sender.promotions", float(self.sender.promotions)))
        pairs.append(("sender.queued_bytes", float(self.sender.queued_bytes())))
        pairs.append(("sender.members", float(len(self.sender.members))))
        pairs.append(("active_flows", float(len(self.run.flows) if self.run else 0)))
        pairs.append(("active_flows_peak", float(self.active_flows_peak)))
        pairs.append(("cpu_s", time.process_time()))
        pairs += _memory_pairs()
        pairs.append(("coordinator.connected",
                      float(bool(self.coordinator and self.coordinator.connected))))
        return pairs


def _memory_pairs() -> list[tuple[str, float]]:
    """Resident memory now and at its peak (the load tests bound them)."""
    pairs = [("rss_peak_bytes", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0)]
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/statm") as f:
        pairs.append(("rss_bytes", float(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")))
    return pairs


def main(argv: list[str] | None = None) -> None:
    """``python -m mfsched.dataplane.daemon``: see :mod:`.daemon_cli`."""
    from .daemon_cli import main as cli_main

    cli_main(argv)


if __name__ == "__main__":
    main()
