"""The central coordinator: the RED order of batches and the pruned requests, for all daemons.

Started once per run by the testbed runner (``python -m mfsched.dataplane.coordinator
--socket PATH``); daemons connect to its Unix socket (a path in the shared filesystem, so
daemons inside network namespaces reach it). Daemons report request and batch events (each
event by one daemon, the one the runtime marked ``report``), the per-port loads of the P2D flows
they carry and, on every batch event they see, how much of those flows remains. On every batch
arrival and departure the coordinator runs MFS's inter-request stage with the global view, with
the very functions MFS runs locally (:mod:`mfsched.policy.red`):

1. :func:`~mfsched.policy.red.red_order`: the live batches by their robust effective deadline;
2. :func:`~mfsched.policy.red.batch_loads` + :func:`~mfsched.policy.red.feasibility_prune`:
   the feasibility check with selective pruning over that order (remaining compute,
   early-stage bytes of the remaining layers, P2D bytes still in flight (the daemons' last
   progress report: a flow counts in full until its first report) and of layers still to
   come), with the drop budget of the run's policy (``mfs.drop_budget``, 0 when
   ``mfs.pruning=false``), which the daemons' hello carries;

and pushes a ``decision`` (ranks and the full pruned set) to every daemon when it changed. Each
daemon hands it to its policy's driver (:meth:`mfsched.policy.driver.PolicyDriver.global_order`).
A daemon that connects (or reconnects after the coordinator restarted) first replays its state,
so the coordinator catches up without help from the runtime.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ..errors import UserError
from ..policy import SCHEDULERS
from ..policy.base import parse_options
from ..policy.red import BatchState, add_in_flight, batch_loads, feasibility_prune, red_order
from .clock import serve_until_signalled
from .control import ControlClient, ControlServer
from .limits import ControlLimits, GuardStats, parse_limit_options
from .localsock import SocketAccess
from .protocol import batch_from

__all__ = ["Coordinator", "CoordinatorState", "drop_budget_of", "main"]

log = logging.getLogger("mfsched.coordinator")

ACCEPTED = frozenset({"hello", "request", "request_done", "batch_start", "layer_start",
                      "batch_compute_done", "batch_end", "p2d_submit", "p2d_complete",
                      "p2d_progress"})


def drop_budget_of(scheduler: str, num_levels: int, options: dict[str, str]) -> int:
    """How many requests the run's policy may prune per trigger: its ``drop_budget`` when it
    prunes at all (``pruning``), else 0 (policies without an inter-request stage: 0)."""
    config = parse_options(SCHEDULERS.get(scheduler).config_cls, num_levels, options)
    if not getattr(config, "pruning", False):
        return 0
    return int(getattr(config, "drop_budget", 0))


class _P2d:
    __slots__ = ("batch_id", "left", "port_bytes", "request_id")

    def __init__(self, request_id: int, batch_id: int, port_bytes: dict[int, float]) -> None:
        self.request_id = request_id
        self.batch_id = batch_id
        self.port_bytes = port_bytes
        self.left = 1.0  # share of its bytes still to move (the daemon's last report)


class CoordinatorState:
    """The coordinator's view and its two computations; no I/O (unit-testable)."""

    def __init__(self) -> None:
        self.drop_budget = 0
        self.run_id = ""
        self.requests: dict[int, float] = {}  # request -> deadline (model s)
        self.batches: dict[int, BatchState] = {}
        self.p2d: dict[tuple[int, int], _P2d] = {}  # (flow, server) -> its load here
        self.capacity_bytes_per_s: dict[int, float] = {}  # port -> bytes/s
        self.ranks: dict[int, int] = {}
        self.pruned: set[int] = set()
        self.version = 0

    def reset(self, run_id: str, drop_budget: int = 0) -> None:
        self.__init__()
        self.run_id = run_id
        self.drop_budget = drop_budget

    def apply(self, msg: dict, server: int) -> bool:
        """Update the view; True if the order and pruning must be recomputed."""
        kind = msg["type"]
        if kind == "request":
            self.requests[msg["request_id"]] = msg["arrival_s"] + msg["slo_s"]
        elif kind == "request_done":
            self.requests.pop(msg["request_id"], None)
            self.pruned.discard(msg["request_id"])
        elif kind == "batch_start":
            info = batch_from(msg)
            if info.batch_id in self.batches:
                return False
            self.batches[info.batch_id] = BatchState(info)
            for port, bps in info.port_capacity_bps.items():
                self.capacity_bytes_per_s[port] = bps / 8
            return True
        elif kind == "layer_start":
            b = self.batches.get(msg["batch_id"])
            if b is not None:
                b.layer = max(b.layer, msg["layer"])
        elif kind == "batch_compute_done":
            b = self.batches.get(msg["batch_id"])
            if b is not None:
                b.compute_done = True
        elif kind == "batch_end":
            return self.batches.pop(msg["batch_id"], None) is not None
        elif kind == "p2d_submit":
            self.p2d[(msg["flow_id"], server)] = _P2d(msg["request_id"], msg["batch_id"],
                                                      dict(msg["port_bytes"]))
            b = self.batches.get(msg["batch_id"])
            if b is not None:
                b.p2d_layers.setdefault(msg["request_id"], set()).add(msg["layer"])
        elif kind == "p2d_complete":
            self.p2d.pop((msg["flow_id"], server), None)
        elif kind == "p2d_progress":
            for fid, left in msg["flows"]:
                flow = self.p2d.get((fid, server))
                if flow is not None:
                    flow.left = left
        return False

    def recompute(self, now_s: float) -> bool:
        """New RED ranks and pruning; True if the decision changed."""
        ordered = red_order(self.batches.values(), self.requests)
        ranks = {b.info.batch_id: i for i, b in enumerate(ordered)}
        victims: list[int] = []
        if self.drop_budget:
            in_flight: dict[tuple[int, int], dict[int, float]] = {}
            for f in self.p2d.values():
                add_in_flight(in_flight, f.batch_id, f.request_id, f.port_bytes.items(), f.left)
            loads = batch_loads(ordered, self.requests, self.pruned, in_flight, now_s)
            victims = feasibility_prune(loads, self.capacity_bytes_per_s, now_s,
                                        self.drop_budget)
        changed = ranks != self.ranks or bool(set(victims) - self.pruned)
        self.ranks = ranks
        self.pruned |= set(victims)
        if changed:
            self.version += 1
        return changed

    def decision(self) -> dict:
        return {"type": "decision", "ranks": [[b, r] for b, r in self.ranks.items()],
                "pruned": sorted(self.pruned), "epoch": self.version}


class Coordinator:
    def __init__(self, socket_path: str, limits: ControlLimits | None = None,
                 socket_group: str | None = None) -> None:
        self.socket_path = socket_path
        self.state = CoordinatorState()
        self.epoch_s = 0.0
        self.time_scale = 1.0
        self.stats = {"decisions": 0, "connects": 0}
        self.guard = GuardStats()
        self.control = ControlServer(socket_path, ACCEPTED, self._handle, guard=self.guard,
                                     limits=limits, access=SocketAccess(socket_group),
                                     stop_on=frozenset())
        self._stopped: asyncio.Event | None = None

    @property
    def daemons(self) -> list[ControlClient]:
        """The daemons that said hello."""
        return [c for c in self.control.clients if c.server >= 0]

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        await self.control.start()
        log.info("coordinator listening on %s", self.socket_path)

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            self.close()

    def close(self) -> None:
        self.control.close()

    def request_stop(self) -> None:
        if self._stopped is not None:
            self._stopped.set()

    def now_s(self) -> float:
        return (self.loop.time() - self.epoch_s) / self.time_scale

    def _handle(self, msg: dict, client: ControlClient) -> None:
        if msg["type"] == "hello":
            self._hello(msg, client)
        elif client.server < 0:
            self.control.reject(client, "send hello first")
        elif self.state.apply(msg, client.server) and self.state.recompute(self.now_s()):
            self._broadcast()

    def _hello(self, msg: dict, client: ControlClient) -> None:
        if msg["run_id"] and msg["run_id"] != self.state.run_id:
            budget = drop_budget_of(msg.get("scheduler", "fs"), msg.get("num_levels", 8),
                                    dict(map(tuple, msg.get("options", []))))
            log.info("new run %s (drop budget %d)", msg["run_id"], budget)
            self.state.reset(msg["run_id"], budget)
        self.epoch_s = msg.get("epoch_s", self.epoch_s)
        self.time_scale = msg.get("time_scale", self.time_scale)
        client.server = msg.get("server", 0)
        self.stats["connects"] += 1
        self.control.send(client, self.state.decision())

    def _broadcast(self) -> None:
        self.stats["decisions"] += 1
        decision = self.state.decision()
        for c in self.daemons:
            self.control.send(c, decision)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mfsched.dataplane.coordinator",
                                description="MFS coordinator: RED order and pruning")
    p.add_argument("--socket", required=True)
    p.add_argument("--socket-group", default=None,
                   help="group that may also use the socket (mode 0660); default: owner only")
    p.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                   help="a control-socket limit (see mfsched.dataplane.limits), repeatable")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level, stream=sys.stderr,
                        format="%(asctime)s coordinator %(levelname)s %(message)s")
    try:
        _, control = parse_limit_options(a.limit)
        serve_until_signalled(Coordinator(a.socket, control, a.socket_group))
    except UserError as e:
        print(f"mfsched coordinator: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
