"""A daemon's link to the coordinator: reports, decisions, reconnects and state replay.

Owned by :class:`mfsched.dataplane.daemon.Daemon` when it runs with a coordinator. The daemon
reports the request and batch events it was marked to report and the loads of its P2D flows;
the link remembers what the coordinator needs to rebuild its view, so that after the
coordinator restarts (or the link breaks) it reconnects every 0.2 s and replays that state, and
the daemon keeps scheduling locally meanwhile. Decisions pushed back (RED ranks, pruned
requests) go to :meth:`Daemon.apply_coordinator`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .protocol import SKIP_LIMIT_BYTES, ProtocolError, encode, read_message

if TYPE_CHECKING:
    from .daemon import Daemon

__all__ = ["COORDINATOR_TYPES", "CoordinatorLink"]

log = logging.getLogger("mfsched.daemon")

COORDINATOR_TYPES = frozenset({"decision", "error"})


class CoordinatorLink:
    """The daemon's connection to the coordinator: reports, decisions, reconnects."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.path = daemon.config.coordinator_path
        self.state: dict[tuple, dict] = {}  # what the coordinator needs to rebuild its view
        self.writer: asyncio.StreamWriter | None = None
        self.connected = False
        self.task = daemon.loop.create_task(self._run())

    def close(self) -> None:
        self.task.cancel()
        if self.writer is not None:
            self.writer.close()

    def reset(self) -> None:
        self.state.clear()
        if self.writer is not None:
            self.writer.transport.abort()  # reconnect with the new run's hello

    def report(self, msg: dict) -> None:
        msg = {k: v for k, v in msg.items() if k != "report"}
        self._remember(msg)
        if self.writer is not None:
            try:
                self.writer.write(encode(msg))
            except (ConnectionError, OSError, RuntimeError):
                self.writer = None

    def _remember(self, msg: dict) -> None:
        kind = msg["type"]
        if kind == "request":
            self.state[("request", msg["request_id"])] = msg
        elif kind == "request_done":
            self.state.pop(("request", msg["request_id"]), None)
        elif kind in ("batch_start", "layer_start", "batch_compute_done"):
            self.state[(kind, msg["batch_id"])] = msg
        elif kind == "batch_end":
            for k in ("batch_start", "layer_start", "batch_compute_done"):
                self.state.pop((k, msg["batch_id"]), None)
        elif kind == "p2d_submit":
            self.state[("p2d", msg["flow_id"])] = msg
        elif kind == "p2d_complete":
            self.state.pop(("p2d", msg["flow_id"]), None)

    async def _run(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.path,
                                                                    limit=SKIP_LIMIT_BYTES)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            await self._session(reader, writer)
            await asyncio.sleep(0.1)

    async def _session(self, reader, writer) -> None:
        run = self.d.run
        hello = {"type": "hello", "role": "daemon", "server": self.d.config.server,
                 "run_id": run.run_id if run else "", "epoch_s": run.epoch_s if run else 0.0,
                 "time_scale": run.scale_t.factor if run else 1.0}
        try:
            writer.write(encode(hello))
            for msg in list(self.state.values()):
                writer.write(encode(msg))
            self.writer, self.connected = writer, True
            log.info("connected to the coordinator (%d state messages replayed)",
                     len(self.state))
            while True:
                msg = await read_message(reader, COORDINATOR_TYPES)
                if msg is None:
                    break
                if msg["type"] == "decision":
                    self.d.apply_coordinator(dict(msg["ranks"]), set(msg["pruned"]))
                else:
                    log.warning("coordinator: %s", msg["reason"])
        except (ConnectionError, OSError, ProtocolError) as e:
            log.warning("coordinator connection lost: %s", e)
        finally:
            self.writer, self.connected = None, False
            writer.close()
