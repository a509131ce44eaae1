"""The central coordinator: the RED order of batches and the pruned requests, for all daemons.

Started once per run by the testbed runner (``python -m mfsched.dataplane.coordinator
--socket PATH``); daemons connect to its Unix socket (a path in the shared filesystem, so
daemons inside network namespaces reach it). Daemons report request and batch events (each
event by one daemon, the one the runtime marked ``report``) and the per-port loads of the P2D
flows they carry. On every batch arrival and departure the coordinator

1. orders the live batches by their robust effective deadline (RED,
   :func:`mfsched.policy.red.robust_effective_deadline`), and
2. runs the feasibility check with selective pruning (:func:`mfsched.policy.red.
   feasibility_prune`) over that order, with the same load model as the MFS policy
   (remaining compute, early-stage bytes of the remaining layers, P2D bytes in flight and of
   layers still to come),

and pushes a ``decision`` (ranks and the full pruned set) to every daemon when it changed. A
daemon that connects (or reconnects after the coordinator restarted) first replays its state, so
the coordinator catches up without help from the runtime. P2D flows count with their full size
until their completion is reported (daemons report no progress inside a flow).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import dataclass, field

from ..errors import UserError
from ..policy.red import BatchLoad, feasibility_prune, robust_effective_deadline
from ..policy.types import BatchInfo
from .clock import serve_until_signalled
from .control import ControlClient, ControlServer
from .limits import ControlLimits, GuardStats, parse_limit_options
from .localsock import SocketAccess
from .protocol import batch_from

__all__ = ["Coordinator", "CoordinatorState", "main"]

log = logging.getLogger("mfsched.coordinator")

ACCEPTED = frozenset({"hello", "request", "request_done", "batch_start", "layer_start",
                      "batch_compute_done", "batch_end", "p2d_submit", "p2d_complete"})


@dataclass
class _Batch:
    info: BatchInfo
    layer: int = 0
    compute_done: bool = False
    p2d_layers: dict[int, set[int]] = field(default_factory=dict)  # request -> layers emitted


class CoordinatorState:
    """The coordinator's view and its two computations; no I/O (unit-testable)."""

    def __init__(self, drop_budget: int = 2) -> None:
        self.drop_budget = drop_budget
        self.run_id = ""
        self.requests: dict[int, float] = {}  # request -> deadline (model s)
        self.batches: dict[int, _Batch] = {}
        self.p2d: dict[tuple[int, int], tuple[int, int, dict[int, float]]] = {}
        self.capacity: dict[int, float] = {}  # port -> bytes/s
        self.ranks: dict[int, int] = {}
        self.pruned: set[int] = set()
        self.version = 0

    def reset(self, run_id: str) -> None:
        self.__init__(self.drop_budget)
        self.run_id = run_id

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
            self.batches[info.batch_id] = _Batch(info)
            for port, bps in info.port_capacity_bps.items():
                self.capacity[port] = bps / 8
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
            key = (msg["flow_id"], server)
            self.p2d[key] = (msg["request_id"], msg["batch_id"], dict(msg["port_bytes"]))
            b = self.batches.get(msg["batch_id"])
            if b is not None:
                b.p2d_layers.setdefault(msg["request_id"], set()).add(msg["layer"])
        elif kind == "p2d_complete":
            self.p2d.pop((msg["flow_id"], server), None)
        return False

    def recompute(self, now_s: float) -> bool:
        """New RED ranks and pruning; True if the decision changed."""
        def red(b: _Batch) -> float:
            ds = [self.requests[r] for r in b.info.request_ids if r in self.requests]
            return robust_effective_deadline(ds or [float("inf")])

        ordered = sorted(self.batches.values(), key=lambda b: (red(b), b.info.batch_id))
        ranks = {b.info.batch_id: i for i, b in enumerate(ordered)}
        victims = feasibility_prune(self._loads(ordered, now_s), self.capacity, now_s,
                                    self.drop_budget) if self.drop_budget else []
        changed = ranks != self.ranks or bool(set(victims) - self.pruned)
        self.ranks = ranks
        self.pruned |= set(victims)
        if changed:
            self.version += 1
        return changed

    def _loads(self, ordered: list[_Batch], now_s: float) -> list[BatchLoad]:
        in_flight: dict[tuple[int, int], dict[int, float]] = {}
        for rid, bid, ports in self.p2d.values():
            acc = in_flight.setdefault((bid, rid), {})
            for port, size in ports.items():
                acc[port] = acc.get(port, 0.0) + size
        loads = []
        for b in ordered:
            info = b.info
            left = 0 if b.compute_done else info.num_layers - b.layer
            early = {port: size * left for port, size in info.early_port_bytes.items()}
            prunable = {}
            for rid in info.request_ids:
                if rid not in self.requests or rid in self.pruned or \
                        rid not in info.p2d_port_bytes:
                    continue
                load = dict(in_flight.get((info.batch_id, rid), {}))
                if not b.compute_done:
                    future = info.num_layers - len(b.p2d_layers.get(rid, ()))
                    for port, size in info.p2d_port_bytes[rid].items():
                        load[port] = load.get(port, 0.0) + size * future
                prunable[rid] = load
            deadlines = [self.requests[r] for r in info.request_ids if r in self.requests]
            if deadlines:
                loads.append(BatchLoad(info.batch_id, deadlines,
                                       now_s + left * info.layer_compute_s, early, prunable))
        return loads

    def decision(self) -> dict:
        return {"type": "decision", "ranks": [[b, r] for b, r in self.ranks.items()],
                "pruned": sorted(self.pruned), "epoch": self.version}


class Coordinator:
    def __init__(self, socket_path: str, drop_budget: int = 2,
                 limits: ControlLimits | None = None, socket_group: str | None = None) -> None:
        self.socket_path = socket_path
        self.state = CoordinatorState(drop_budget)
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
            log.info("new run %s", msg["run_id"])
            self.state.reset(msg["run_id"])
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
    p.add_argument("--drop-budget", type=int, default=2)
    p.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                   help="a control-socket limit (see mfsched.dataplane.limits), repeatable")
    p.add_argument("--log-level", default="INFO")
    a = p.parse_args(argv)
    logging.basicConfig(level=a.log_level, stream=sys.stderr,
                        format="%(asctime)s coordinator %(levelname)s %(message)s")
    try:
        _, control = parse_limit_options(a.limit)
        serve_until_signalled(Coordinator(a.socket, a.drop_budget, control, a.socket_group))
    except UserError as e:
        print(f"mfsched coordinator: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
