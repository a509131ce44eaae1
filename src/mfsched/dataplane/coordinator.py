"""The central coordinator: the RED order of batches and the pruned requests, for all daemons.

Started once per run by the testbed runner (``python -m mfsched.dataplane.coordinator
--socket PATH``); daemons connect to its Unix socket (a path in the shared filesystem, so
daemons inside network namespaces reach it). Daemons report request and batch events (each
event by one daemon, the one the runtime marked ``report``), the per-port loads of the P2D flows
they carry and, on every batch event they see, how much of those flows remains. On every batch
arrival and departure the coordinator runs MFS's inter-request stage with the global view, with
the very state and functions MFS runs locally (:class:`mfsched.policy.batchbook.BatchBook`):

1. :meth:`~mfsched.policy.batchbook.BatchBook.reorder`: the live batches by their robust
   effective deadline (sparse ranks: a batch that moves changes no other batch's rank);
2. :meth:`~mfsched.policy.batchbook.BatchBook.prune`:
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
from ..policy.batchbook import BatchBook
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


class CoordinatorState:
    """The coordinator's view and its two computations; no I/O (unit-testable)."""

    def __init__(self) -> None:
        self.drop_budget = 0
        self.run_id = ""
        # requests (deadlines in model s), batches, P2D flows in flight, the order and pruning
        self.book = BatchBook()
        self._p2d: dict[tuple[int, int], int] = {}  # (flow, server) -> the book's flow id
        self._next_flow = 0
        self.ranks: dict[int, int] = {}
        self.version = 0

    def reset(self, run_id: str, drop_budget: int = 0) -> None:
        self.__init__()
        self.run_id = run_id
        self.drop_budget = drop_budget

    def apply(self, msg: dict, server: int) -> bool:
        """Update the view; True if the order and pruning must be recomputed."""
        kind = msg["type"]
        book = self.book
        if kind == "request":
            book.add_request(msg["request_id"], msg["arrival_s"] + msg["slo_s"])
        elif kind == "request_done":
            book.end_request(msg["request_id"])
        elif kind == "batch_start":
            info = batch_from(msg)
            if book.has_batch(info.batch_id):
                return False
            book.add_batch(info)
            return True
        elif kind == "layer_start":
            if book.has_batch(msg["batch_id"]):
                book.set_layer(msg["batch_id"], max(book.layer(msg["batch_id"]), msg["layer"]))
        elif kind == "batch_compute_done":
            if book.has_batch(msg["batch_id"]):
                book.set_compute_done(msg["batch_id"])
        elif kind == "batch_end":
            if not book.has_batch(msg["batch_id"]):
                return False
            book.end_batch(msg["batch_id"])
            return True
        elif kind == "p2d_submit":
            key = (msg["flow_id"], server)
            if key not in self._p2d:
                fid = self._p2d[key] = self._next_flow
                self._next_flow += 1
                book.add_p2d(fid, msg["batch_id"], msg["request_id"], msg["layer"],
                             msg["port_bytes"])
        elif kind == "p2d_complete":
            fid = self._p2d.pop((msg["flow_id"], server), None)
            if fid is not None:
                book.end_p2d(fid)
        elif kind == "p2d_progress":
            for flow_id, left in msg["flows"]:
                fid = self._p2d.get((flow_id, server))
                if fid is not None:
                    book.set_left(fid, left)
        return False

    @property
    def pruned(self) -> set[int]:
        """The live pruned requests."""
        return self.book.pruned

    def recompute(self, now_s: float) -> bool:
        """New RED ranks and pruning; True if the decision changed."""
        book = self.book
        book.reorder()
        ranks = book.ranks()
        victims = book.prune(now_s, self.drop_budget)  # (never one pruned before)
        book.mark_pruned(victims)
        changed = ranks != self.ranks or bool(victims)
        self.ranks = ranks
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
