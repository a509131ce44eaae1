"""The host daemon: one per (emulated) server, gating every transfer that leaves it.

Started by the testbed runner inside the server's namespace
(``ip netns exec mfs-<tag>-h3 python -m mfsched.dataplane.daemon --server 3 --socket ...``).
The runtime (here: the wall-clock engine in :mod:`mfsched.dataplane.engine`) talks to it over
a Unix socket with the messages of :mod:`mfsched.dataplane.protocol`:

* ``hello`` configures a run: scheduler name, levels, options, the shared clock (``epoch_s``
  on CLOCK_MONOTONIC) and the scale factors. The daemon builds the policy with
  :func:`mfsched.policy.make_policy`: the very classes the simulator runs.
* ``request``, ``batch_start``, ``layer_start``, ``batch_compute_done``, ``batch_end`` and
  ``request_done`` are passed to the policy (and, when marked ``report``, to the coordinator).
* ``submit`` registers a flow with this server's members (paper: *submit*). The policy assigns
  its priority at the next decision; then the software queues of :mod:`.sender` *permit* its
  chunks in priority order; when the receivers have acknowledged every byte, the daemon answers
  ``completion`` (paper: *completion*).

The daemon calls ``policy.decide`` once after each batch of messages and at the policy's wake
times, with a progress view of its own members. Policy times, sizes and rates stay in model
units; bytes on the wire are divided by the byte scale (:mod:`.scale`).

With a coordinator (:mod:`.coordinator`), the daemon sends it request and batch events and P2D
flow loads, and applies what it pushes back: the RED rank of each batch (for policies that break
ties by RED) and the pruned requests (whose P2D flows go to the scavenger level). Pruning is then
the coordinator's job, so the local policy runs with ``pruning=false``. If the coordinator is
unreachable the daemon keeps scheduling with its local policy and reconnects in the background,
replaying the state the coordinator needs to catch up.

Bad messages get an ``error`` reply and a log line; the daemon never exits because of one.
The control socket is private to the daemon's user (:mod:`.control`, :mod:`.localsock`); data
connections must prove they know the run's key (:mod:`.auth`, :mod:`.receiver`); what clients
and peers can make the daemon hold is bounded (:mod:`.limits`), and every refusal is counted in
the ``guard.*`` statistics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import UserError
from ..policy import Priority, Stage, make_policy
from ..policy.base import Policy
from ..policy.types import FlowInfo
from ..sim.allocation import priority_key
from .auth import RunKey
from .clock import serve_until_signalled
from .control import ControlClient, ControlServer
from .coordlink import CoordinatorLink
from .limits import ControlLimits, DataLimits, GuardStats, parse_limit_options
from .localsock import SocketAccess
from .pcie import PcieLanes
from .protocol import (
    ProtocolError,
    batch_from,
    flow_from,
    request_from,
)
from .scale import Scale
from .sender import MemberTx, SenderConfig, SendScheduler
from .transport import ChunkKey, Route, TcpTransport

__all__ = ["Daemon", "DaemonConfig", "hw_class_of_level", "main"]

log = logging.getLogger("mfsched.daemon")

DRIVER_TYPES = frozenset({"hello", "request", "request_done", "batch_start", "layer_start",
                          "batch_compute_done", "batch_end", "submit", "stats", "shutdown"})
_DATA_CLASSES = 6  # hardware classes 1..6 carry policy levels; 7 is the scavenger


def hw_class_of_level(level: int, num_levels: int) -> int:
    """Policy level -> hardware class: 0 is control traffic; levels 0..4 get classes 1..5,
    the remaining levels share class 6, the scavenger level (K) gets class 7. The host's
    software queues keep the full (level, rank) order inside a class."""
    if level >= num_levels:
        return 7
    return 1 + min(level, _DATA_CLASSES - 1)


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


class _Flow:
    __slots__ = ("client", "done", "first", "info", "last", "left", "members", "pcie", "prio",
                 "wall_s")

    def __init__(self, info: FlowInfo, client: ControlClient | None) -> None:
        self.info = info
        self.client = client  # who submitted it (pending-flow limit)
        self.members: list[MemberTx] = []
        self.pcie: list[tuple[int, int, int, int]] = []  # intra-server: (index, src, dst, bytes)
        self.left = 0
        self.prio: Priority | None = None
        self.first: Priority | None = None
        self.last: Priority | None = None
        self.done = False
        self.wall_s = 0.0


class _Run:
    """Everything that belongs to one run (one hello)."""

    def __init__(self, msg: dict, coordinated: bool) -> None:
        self.run_id: str = msg["run_id"]
        self.scale_t = Scale(msg.get("time_scale", 1.0))
        self.scale_b = Scale(msg.get("byte_scale", 1.0))
        self.epoch_s: float = msg.get("epoch_s", 0.0)
        name = msg.get("scheduler", "fs")
        levels = msg.get("num_levels", 8)
        options = dict(msg.get("options", []))
        self.policy, self.coord_prunes = _make_policy(name, levels, options, coordinated)
        self.uses_red = bool(getattr(self.policy.config, "red_tiebreak", False))
        self.num_levels = levels
        self.flows: dict[int, _Flow] = {}
        self.ranks: dict[int, int] = {}  # coordinator: batch -> RED rank
        self.pruned: set[int] = set()  # coordinator (or local policy) pruned requests
        self.reported_pruned: set[int] = set()


def _make_policy(name: str, levels: int, options: dict[str, str],
                 coordinated: bool) -> tuple[Policy, bool]:
    """The scheduler by name; with a coordinator, its pruning moves to the coordinator."""
    from ..policy import SCHEDULERS

    cls = SCHEDULERS.get(name)
    names = {f.name for f in fields(cls.config_cls)}
    coord_prunes = False
    if coordinated and "pruning" in names:
        coord_prunes = options.get("pruning", "true").lower() in ("true", "1", "yes", "on")
        options = {**options, "pruning": "false"}
    return make_policy(name, levels, options), coord_prunes


class _Progress:
    """The policy's view of this daemon's flows (model units: bytes and bytes/s)."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def remaining_bytes(self, flow_id: int) -> float:
        run = self.d.run
        f = run.flows.get(flow_id) if run else None
        if f is None:
            return 0.0
        now = self.d.loop.time()
        left = [m.remaining for m in f.members]
        left += [self.d.pcie.remaining(now, (flow_id, i)) for i, *_ in f.pcie]
        return run.scale_b.model_bytes(max(left, default=0))

    def rate_bytes_per_s(self, flow_id: int) -> float:
        run = self.d.run
        f = run.flows.get(flow_id) if run else None
        if f is None or not f.members:
            return 0.0
        big = max(f.members, key=lambda m: m.total)
        real = self.d.sender.rate_bytes_per_s(big)
        return real * run.scale_b.factor * run.scale_t.factor


class Daemon:
    def __init__(self, config: DaemonConfig,
                 transport_factory: Callable[[list[str], Any], Any] | None = None) -> None:
        self.config = config
        self._transport_factory = transport_factory
        self.run: _Run | None = None
        self.driver: ControlClient | None = None
        self.stats: dict[str, float] = {"flows": 0, "decisions": 0, "completions": 0,
                                        "bytes_submitted": 0, "decide_s": 0.0}
        self.guard = GuardStats()
        self.policy_errors = 0
        self.active_flows_peak = 0
        self.progress = _Progress(self)
        self._stopped: asyncio.Event | None = None
        self._decide_pending = False
        self._wake_handle: asyncio.TimerHandle | None = None

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
        await self.transport.start()
        self.sender = SendScheduler(self.transport, cfg.sender, self._hw_class,
                                    self._member_done)
        self._new_pcie_lanes()
        self.pcie.warm_up()
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
        if self.coordinator is not None:
            self.coordinator.close()
        await self.transport.close()

    # --- the local API ---------------------------------------------------------------------------

    def _client_gone(self, client: ControlClient) -> None:
        if client is self.driver:
            self.driver = None

    def _handle(self, msg: dict, client: ControlClient) -> None:
        kind = msg["type"]
        if kind == "hello":
            self._hello(msg, client)
            return
        if kind == "stats":
            self.control.send(client, {"type": "stats_reply", "stats": self._stats_pairs()})
            return
        if kind == "shutdown":
            self.request_stop()
            return
        run = self.run
        if run is None:
            raise ProtocolError("no run configured: send hello first")
        now = self.now_s()
        policy = run.policy
        if kind == "submit":
            self._submit(msg, now, client)
        elif kind == "request":
            policy.on_request(request_from(msg), now)
        elif kind == "request_done":
            policy.on_request_done(msg["request_id"], now)
            run.pruned.discard(msg["request_id"])
        elif kind == "batch_start":
            policy.on_batch_start(batch_from(msg), now)
        elif kind == "layer_start":
            policy.on_layer_start(msg["batch_id"], msg["layer"], now)
        elif kind == "batch_compute_done":
            policy.on_batch_compute_done(msg["batch_id"], now)
        elif kind == "batch_end":
            policy.on_batch_end(msg["batch_id"], now)
            run.ranks.pop(msg["batch_id"], None)
        if msg.get("report") and self.coordinator is not None:
            self.coordinator.report(msg)
        self._decide_soon()

    def _hello(self, msg: dict, client: ControlClient) -> None:
        if msg["role"] == "driver":
            if self.run is None or self.run.run_id != msg["run_id"]:
                if self.run is not None and self.run.flows:
                    raise ProtocolError("a different run is still moving flows")
                self.run = _Run(msg, self.coordinator is not None)
                self._new_pcie_lanes()
                if self.coordinator is not None:
                    self.coordinator.reset()
                log.info("run %s: scheduler %s", self.run.run_id, msg.get("scheduler"))
            self.driver = client
        self.control.send(client, {"type": "welcome", "server": self.config.server,
                                   "pid": os.getpid(),
                                   "run_id": self.run.run_id if self.run else ""})

    # --- flows --------------------------------------------------------------------------------

    def _submit(self, msg: dict, now: float, client: ControlClient) -> None:
        run = self.run
        fid = msg["flow_id"]
        if fid in run.flows:
            return  # a re-submission of a flow we already carry
        limit = self.config.control_limits.max_pending_flows_per_client
        if client.pending_flows >= limit:
            self.guard.flows_refused += 1
            raise ProtocolError(f"{client.pending_flows} flows of this client are pending "
                                f"(limit {limit}); wait for completions")
        info = flow_from(msg)
        flow = _Flow(info, client)
        wall = self.loop.time()
        for index, src, dst, model_bytes in msg["local"]:
            s_server, s_nic = self.config.locate(src)
            d_server, d_nic = self.config.locate(dst)
            if s_server != self.config.server:
                raise ProtocolError(f"submit.local: member {index} starts on server {s_server}, "
                                    f"not on {self.config.server}")
            real = run.scale_b.real_bytes(model_bytes)
            if d_server == s_server:
                flow.pcie.append((index, src, dst, real))
            else:
                flow.members.append(MemberTx(fid, index, s_nic,
                                             self.config.address(s_server, s_nic),
                                             self.config.address(d_server, d_nic), real,
                                             msg["connections"]))
        flow.left = len(flow.members) + len(flow.pcie)
        if not flow.left:
            raise ProtocolError("submit.local: no members")
        run.policy.on_flow_submit(info, now)  # may refuse (e.g. an unknown batch): nothing kept
        run.flows[fid] = flow
        client.pending_flows += 1
        self.active_flows_peak = max(self.active_flows_peak, len(run.flows))
        flow.wall_s = wall
        for m in flow.members:
            self.sender.add(m)
        for index, src, dst, real in flow.pcie:
            self._pcie_after(self.pcie.add(wall, (fid, index), src, dst, real,
                                           share=msg["connections"]))
        self.stats["flows"] += 1
        self.stats["bytes_submitted"] += sum(m.total for m in flow.members) + \
            sum(b for *_, b in flow.pcie)
        if info.stage == Stage.P2D and self.coordinator is not None:
            share = sum(m[3] for m in msg["local"]) / max(info.total_bytes, 1e-9)
            self.coordinator.report({
                "type": "p2d_submit", "flow_id": fid, "request_id": info.request_ids[0],
                "batch_id": info.batch_id, "layer": info.layer,
                "port_bytes": [[p, b * share] for p, b in info.port_bytes]})

    # --- intra-server members (PCIe) ---------------------------------------------------------

    def _new_pcie_lanes(self) -> None:
        if (old := getattr(self, "_pcie_timer", None)) is not None:
            old.cancel()
        self.pcie = PcieLanes(self.config.pcie_bytes_per_s, self.config.gpus_per_server)
        self._pcie_timer: asyncio.TimerHandle | None = None

    def _pcie_after(self, done: list[tuple[int, int]]) -> None:
        """Finish what the lanes report done (soon, not inside the caller) and re-arm the
        timer for the next member that will finish at the new rates."""
        if done:
            self.loop.call_soon(self._pcie_finished, done)
        if self._pcie_timer is not None:
            self._pcie_timer.cancel()
            self._pcie_timer = None
        at = self.pcie.next_finish_s()
        if at != float("inf"):
            self._pcie_timer = self.loop.call_at(at, self._pcie_tick, at)

    def _pcie_tick(self, due: float) -> None:
        self._pcie_timer = None
        self._pcie_after(self.pcie.step(max(due, self.loop.time())))

    def _pcie_finished(self, done: list[tuple[int, int]]) -> None:
        run = self.run
        for fid, _ in done:
            flow = run.flows.get(fid) if run else None
            if flow is not None:
                self._member_finished(flow)

    def _member_done(self, m: MemberTx) -> None:
        run = self.run
        flow = run.flows.get(m.flow_id) if run else None
        if flow is not None:
            self._member_finished(flow)

    def _member_finished(self, flow: _Flow) -> None:
        flow.left -= 1
        if flow.left > 0 or flow.done:
            return
        flow.done = True
        run = self.run
        fid = flow.info.flow_id
        del run.flows[fid]
        if flow.client is not None:
            flow.client.pending_flows -= 1
        self.sender.forget_flow(fid, [m.index for m in flow.members])
        run.policy.on_flow_complete(fid, self.now_s())
        self.stats["completions"] += 1
        self._timing(flow)
        lvl = flow.first.level if flow.first else 0
        self._to_driver({"type": "completion", "flow_id": fid, "first_level": lvl,
                         "last_level": flow.last.level if flow.last else lvl,
                         "bytes": float(sum(m.total for m in flow.members)
                                        + sum(b for *_, b in flow.pcie))})
        if flow.info.stage == Stage.P2D and self.coordinator is not None:
            self.coordinator.report({"type": "p2d_complete", "flow_id": fid})
        self._decide_soon()

    def _timing(self, flow: _Flow) -> None:
        """Wall-time sums for the health figures: submit -> first chunk, submit -> done."""
        now = self.loop.time()
        st = self.stats
        st["flow_wall_s_sum"] = st.get("flow_wall_s_sum", 0.0) + now - flow.wall_s
        firsts = [m.first_send_s for m in flow.members if m.first_send_s >= 0]
        if firsts:
            st["flow_wait_s_sum"] = st.get("flow_wait_s_sum", 0.0) + min(firsts) - flow.wall_s
            st["flow_wait_n"] = st.get("flow_wait_n", 0) + 1

    # --- transport events (the daemon is the transport's TransportEvents) ---------------------

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

    # --- decisions ------------------------------------------------------------------------------

    def now_s(self) -> float:
        """Model time on the shared clock."""
        run = self.run
        return run.scale_t.model_s(self.loop.time() - run.epoch_s) if run else 0.0

    def _hw_class(self, prio: Priority) -> int:
        return hw_class_of_level(prio.level, self.run.num_levels if self.run else 8)

    def _decide_soon(self) -> None:
        if not self._decide_pending:
            self._decide_pending = True
            self.loop.call_soon(self._decide)

    def _decide(self) -> None:
        self._decide_pending = False
        run = self.run
        if run is None:
            return
        self.stats["decisions"] += 1
        t0 = time.perf_counter()
        try:
            d = run.policy.decide(self.now_s(), self.progress)
        except Exception:  # a policy bug must not take the data plane down
            log.exception("policy.decide failed")
            self.policy_errors += 1
            return
        finally:
            self.stats["decide_s"] += time.perf_counter() - t0
        for fid, prio in d.priorities.items():
            flow = run.flows.get(fid)
            if flow is not None:
                flow.prio = prio
                self._apply(flow)
        for fid, cap in d.rate_caps.items():
            flow = run.flows.get(fid)
            if flow is not None:
                real = None if cap is None else \
                    cap / (run.scale_b.factor * run.scale_t.factor)
                for m in flow.members:
                    self.sender.set_rate_cap(m, real)
                for i, *_ in flow.pcie:
                    self._pcie_after(self.pcie.set_cap(self.loop.time(), (fid, i), real))
        if d.pruned is not None and not run.coord_prunes:
            self._report_pruned(set(d.pruned))
        self._set_wake(d.wake_s)
        self.sender.pump()

    def _effective(self, flow: _Flow) -> Priority:
        run, p, info = self.run, flow.prio, flow.info
        if info.stage == Stage.P2D:
            if run.coord_prunes and info.request_ids[0] in run.pruned:
                return Priority(run.num_levels)
            return p
        if run.uses_red and info.batch_id in run.ranks:
            return Priority(p.level, run.ranks[info.batch_id])
        return p

    def _apply(self, flow: _Flow) -> None:
        if flow.prio is None:
            return
        eff = self._effective(flow)
        if flow.first is None:
            flow.first = eff
        if eff == flow.last:
            return
        flow.last = eff
        for m in flow.members:
            self.sender.set_priority(m, eff)
        key = priority_key(eff.level, eff.rank)
        for i, *_ in flow.pcie:
            self._pcie_after(self.pcie.set_priority(self.loop.time(), (flow.info.flow_id, i),
                                                    key))

    def _set_wake(self, wake_s: float | None) -> None:
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
        if wake_s is not None and wake_s != float("inf"):
            run = self.run
            at = run.epoch_s + run.scale_t.wall_s(wake_s)
            self._wake_handle = self.loop.call_at(at, self._decide_soon)

    def apply_coordinator(self, ranks: dict[int, int], pruned: set[int]) -> None:
        run = self.run
        if run is None:
            return
        run.ranks = ranks
        if run.coord_prunes:
            new = pruned - run.pruned
            run.pruned |= pruned
            if new:
                self._report_pruned(new)
        for flow in run.flows.values():
            self._apply(flow)
        self.sender.pump()

    def _report_pruned(self, pruned: set[int]) -> None:
        run = self.run
        new = pruned - run.reported_pruned
        if new:
            run.reported_pruned |= new
            self._to_driver({"type": "pruned", "request_ids": sorted(new)})

    def _to_driver(self, msg: dict) -> None:
        if self.driver is not None and not self.control.send(self.driver, msg):
            self.driver = None

    def _stats_pairs(self) -> list[tuple[str, float]]:
        pairs = [(k, float(v)) for k, v in self.stats.items()]
        pairs += [("messages", float(self.control.messages)),
                  ("errors", float(self.control.errors + self.policy_errors))]
        pairs += self.transport.as_pairs()
        pairs += self.guard.as_pairs()
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


# --- command line -------------------------------------------------------------------------------


def _parse(argv: list[str] | None) -> tuple[DaemonConfig, str]:
    p = argparse.ArgumentParser(prog="python -m mfsched.dataplane.daemon",
                                description="MFS host daemon (one per emulated server)")
    p.add_argument("--server", type=int, required=True)
    p.add_argument("--socket", required=True, help="Unix socket of the local API")
    p.add_argument("--socket-group", default=None,
                   help="group that may also use the socket (mode 0660); default: owner only")
    p.add_argument("--port", type=int, default=7411, help="TCP port for data")
    p.add_argument("--nics", type=int, default=1)
    p.add_argument("--gpus-per-server", type=int, default=4)
    p.add_argument("--address-base", default="198.18")
    p.add_argument("--pcie-bytes-per-s", type=float, default=31.5e6)
    p.add_argument("--coordinator", default=None, help="Unix socket of the coordinator")
    sender_defaults = SenderConfig()  # (a slots dataclass has no class-level defaults)
    p.add_argument("--chunk-bytes", type=int, default=sender_defaults.chunk_bytes)
    p.add_argument("--window-bytes", type=int, default=sender_defaults.window_bytes)
    p.add_argument("--promote-copy-after-s", type=float,
                   default=sender_defaults.promote_copy_after_s)
    key = p.add_mutually_exclusive_group()
    key.add_argument("--key-file", help="the run's data-plane key: 64 hex digits in a file "
                                        "only its owner can read")
    key.add_argument("--key-fd", type=int, help="read the key from this inherited descriptor")
    key.add_argument("--no-auth", action="store_true",
                     help="accept and open data connections without authentication")
    p.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                   help="a resource limit (see mfsched.dataplane.limits), repeatable")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    if a.key_file is None and a.key_fd is None and not a.no_auth:
        raise UserError("give the run's key (--key-file or --key-fd) or --no-auth",
                        where="--key-file")
    key = None if a.no_auth else (RunKey.from_file(a.key_file) if a.key_file is not None
                                  else RunKey.from_fd(a.key_fd))
    data_limits, control_limits = parse_limit_options(a.limit)
    try:
        sender = SenderConfig(a.chunk_bytes, a.window_bytes, a.promote_copy_after_s)
    except ValueError as e:
        raise UserError(str(e), where="--chunk-bytes/--window-bytes") from None
    cfg = DaemonConfig(a.server, a.socket, a.port, a.nics, a.gpus_per_server, a.address_base,
                       a.pcie_bytes_per_s, a.coordinator, sender, key, data_limits,
                       control_limits, a.socket_group)
    return cfg, a.log_level


def main(argv: list[str] | None = None) -> None:
    try:
        cfg, level = _parse(argv)
        logging.basicConfig(level=level, stream=sys.stderr,
                            format=f"%(asctime)s daemon{cfg.server} %(levelname)s %(message)s")
        serve_until_signalled(Daemon(cfg))  # may refuse its socket path: a UserError
    except UserError as e:
        print(f"mfsched daemon: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
