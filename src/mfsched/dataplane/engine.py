"""The wall-clock engine: the simulator's engine contract, executed by real daemons.

:class:`mfsched.sim.serving.Serving` takes an ``engine``; this one implements the same public
contract as :class:`mfsched.sim.engine.Engine` (``now_s``, ``schedule``, ``new_flow_id``,
``submit``, the request/batch/layer notifications, ``run``, ``events``, ``submitted_bytes``,
``network.delivered_bytes``, ``ever_pruned``, ``flow_records``), so the *same* serving logic
(routing, batching, layer steps, Stage 1/2/3 flows, records) runs over real transports:

* Time is wall time on CLOCK_MONOTONIC, presented in model seconds:
  ``now_s = (monotonic - epoch) / s``. Compute steps and arrivals are timers at
  ``epoch + t x s``. ``now_s`` is frozen while one event is dispatched, as in the simulator.
* ``submit`` splits a flow's members by source server and sends each daemon a ``submit`` with
  its members; the flow completes when every source daemon has reported ``completion``
  (completions are handled before due timers, like the simulator's network-first order).
* Notifications go to every daemon (all of them may carry flows of any batch); one daemon per
  request and per batch is marked ``report`` and forwards the event to the coordinator.
* A daemon that disappears is reconnected (up to ``reconnect_timeout_s``); the engine then
  replays the live requests and batches and re-submits every flow that daemon had not
  completed. Receivers deduplicate bytes, so nothing is lost or delivered twice.

The policy never runs here: the daemons run it. Pruned requests reported by daemons (from the
coordinator) fill ``ever_pruned``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import heapq
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..policy.types import BatchInfo, FlowInfo, RequestInfo
from ..sim.engine import EventKind, FlowRecordRow
from .clock import precise_event_loop
from .protocol import (
    SKIP_LIMIT_BYTES,
    ProtocolError,
    batch_msg,
    encode,
    flow_msg,
    read_message,
    request_msg,
)
from .scale import Scale

__all__ = ["Placement", "RunSpec", "WallClockEngine"]

log = logging.getLogger("mfsched.engine")

DAEMON_TYPES = frozenset({"welcome", "completion", "pruned", "error", "stats_reply"})


@dataclass(frozen=True)
class Placement:
    """Where GPUs live and which daemon reports each instance's batches."""

    servers: int
    gpus_per_server: int
    instance_home: tuple[int, ...]

    def server_of(self, gpu: int) -> int:
        return gpu // self.gpus_per_server

    def request_home(self, request_id: int) -> int:
        return request_id % self.servers

    def batch_home(self, instance: int) -> int:
        if 0 <= instance < len(self.instance_home):
            return self.instance_home[instance]
        return instance % self.servers


@dataclass(frozen=True)
class RunSpec:
    """What every daemon is told in ``hello``."""

    run_id: str
    scheduler: str
    num_levels: int
    options: tuple[tuple[str, str], ...] = ()
    coordinated: bool = False


@dataclass
class Lateness:
    """How much later than scheduled timers were dispatched, in model seconds. On an idle
    machine this is a fraction of a millisecond of wall time divided by the scale; a busy
    machine (run queue longer than the cores) shows up here first."""

    count: int = 0
    total_s: float = 0.0
    max_s: float = 0.0
    over_100us: int = 0

    def add(self, late_s: float) -> None:
        late_s = max(late_s, 0.0)
        self.count += 1
        self.total_s += late_s
        self.max_s = max(self.max_s, late_s)
        self.over_100us += late_s > 1e-4

    def as_dict(self) -> dict[str, float]:
        mean = self.total_s / self.count if self.count else 0.0
        return {"timers": self.count, "mean_s": mean, "max_s": self.max_s,
                "share_over_100us": self.over_100us / self.count if self.count else 0.0}


class _Network:
    """What Serving reads of the simulator's network."""

    def __init__(self) -> None:
        self.delivered_bytes = 0.0  # of completed flows, largest-member model bytes


class _Link:
    __slots__ = ("path", "reader", "server", "task", "up", "welcome", "writer")

    def __init__(self, server: int, path: str) -> None:
        self.server = server
        self.path = path
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.up = False
        self.task: asyncio.Task | None = None
        self.welcome: asyncio.Future | None = None


class _FlowState:
    __slots__ = ("first", "info", "last", "local", "on_done", "pending", "wall_s")

    def __init__(self, info: FlowInfo, local: dict[int, list], on_done, wall_s: float) -> None:
        self.wall_s = wall_s
        self.info = info
        self.local = local  # server -> [(index, src, dst, bytes)]
        self.pending = set(local)
        self.on_done = on_done
        self.first = 1 << 30
        self.last = 1 << 30


class WallClockEngine:
    def __init__(self, socket_paths: Sequence[str], placement: Placement, scale: Scale,
                 run: RunSpec, *, record_flows: bool = False, reconnect_timeout_s: float = 30.0,
                 stall_timeout_s: float = 60.0, start_lead_s: float = 0.3,
                 byte_scale: Scale | None = None) -> None:
        self.placement = placement
        self.scale = scale  # the testbed's one factor; tests may shrink bytes separately
        self.byte_scale = byte_scale or scale
        self.spec = run
        self.record_flows = record_flows
        self.reconnect_timeout_s = reconnect_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.start_lead_s = start_lead_s
        self.loop = precise_event_loop()
        self.links = [_Link(i, p) for i, p in enumerate(socket_paths)]
        # the engine contract
        self.now_s = 0.0
        self.events = 0
        self.submitted_bytes = 0.0
        self.network = _Network()
        self.pruned: frozenset[int] = frozenset()
        self.ever_pruned: set[int] = set()
        self.flow_records: list[FlowRecordRow] | None = [] if record_flows else None
        # state
        self.epoch_s = 0.0
        self.lateness = Lateness()  # how late timers fire (model s): the emulation's health
        self.flow_wall_s_sum = 0.0  # submit -> completion as the engine sees it (wall s)
        self.flows_done = 0
        self.errors: list[str] = []
        self.reconnects = 0
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._next_flow_id = 0
        self._flows: dict[int, _FlowState] = {}
        self._requests: dict[int, dict] = {}
        self._batches: dict[int, dict[str, dict]] = {}
        self._completions: deque[tuple[int, dict]] = deque()
        self._waiter: asyncio.Future | None = None
        self._fatal: Exception | None = None
        self._closing = False
        self._last_progress = 0.0

    # --- connection management ---------------------------------------------------------------

    def connect(self) -> None:
        """Connect to every daemon and configure the run; model time 0 is a moment ahead."""
        self.epoch_s = self.loop.time() + self.start_lead_s
        self.loop.run_until_complete(_gather(*(self._open(link) for link in self.links)))

    def close(self) -> None:
        self._closing = True

        async def _close() -> None:
            for link in self.links:
                if link.writer is not None:
                    link.writer.close()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(link.writer.wait_closed(), 1.0)
            tasks = [link.task for link in self.links if link.task is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.loop.run_until_complete(_close())
        self.loop.close()

    def _hello(self) -> dict:
        s = self.spec
        return {"type": "hello", "role": "driver", "run_id": s.run_id, "scheduler": s.scheduler,
                "num_levels": s.num_levels, "options": [list(o) for o in s.options],
                "epoch_s": self.epoch_s, "time_scale": self.scale.factor,
                "byte_scale": self.byte_scale.factor, "coordinated": s.coordinated}

    async def _open(self, link: _Link, timeout_s: float = 10.0) -> None:
        deadline = self.loop.time() + timeout_s
        while True:
            try:
                link.reader, link.writer = await asyncio.open_unix_connection(
                    link.path, limit=SKIP_LIMIT_BYTES)
                break
            except OSError as e:
                if self.loop.time() > deadline:
                    raise RuntimeError(f"daemon {link.server} at {link.path}: {e}") from None
                await asyncio.sleep(0.05)
        link.welcome = self.loop.create_future()
        link.writer.write(encode(self._hello()))
        link.task = self.loop.create_task(self._read(link))
        await asyncio.wait_for(link.welcome, timeout_s)
        link.up = True

    async def _read(self, link: _Link) -> None:
        try:
            while True:
                try:
                    msg = await read_message(link.reader, DAEMON_TYPES)
                except ProtocolError as e:
                    log.warning("daemon %d sent a bad message: %s", link.server, e)
                    if "stream ended" in str(e):
                        break
                    continue
                if msg is None:
                    break
                self._on_message(link, msg)
        except (ConnectionError, OSError):
            pass
        link.up = False
        if not self._closing:
            self.loop.create_task(self._reconnect(link))

    async def _reconnect(self, link: _Link) -> None:
        log.warning("daemon %d disconnected; reconnecting", link.server)
        try:
            await self._open(link, self.reconnect_timeout_s)
        except (TimeoutError, RuntimeError, OSError) as e:
            self._fatal = RuntimeError(f"daemon {link.server} did not come back: {e}")
            self._notify()
            return
        self.reconnects += 1
        self._replay(link)
        log.warning("daemon %d reconnected; state replayed", link.server)

    def _replay(self, link: _Link) -> None:
        """A restarted daemon learns the live requests and batches and gets its flows again."""
        server = link.server
        for rid, msg in self._requests.items():
            link.writer.write(encode({**msg, "report": self.placement.request_home(rid) ==
                                      server}))
        for batch in self._batches.values():
            for msg in batch.values():
                home = self.placement.batch_home(batch["batch_start"]["instance"])
                link.writer.write(encode({**msg, "report": home == server}))
        for st in self._flows.values():
            if server in st.pending:
                link.writer.write(encode(flow_msg(st.info, st.local[server])))

    def _on_message(self, link: _Link, msg: dict) -> None:
        kind = msg["type"]
        if kind == "welcome":
            if link.welcome is not None and not link.welcome.done():
                link.welcome.set_result(msg)
        elif kind == "completion":
            self._completions.append((link.server, msg))
            self._notify()
        elif kind == "pruned":
            self.ever_pruned.update(msg["request_ids"])
            self.pruned = frozenset(self.ever_pruned)
        elif kind == "error":
            text = f"daemon {link.server}: {msg['reason']}"
            log.warning("%s", text)
            self.errors.append(text)
            if msg.get("in_reply_to") == "submit":
                self._fatal = RuntimeError(text)
                self._notify()

    # --- sending -----------------------------------------------------------------------------

    def _send(self, server: int, frame: bytes) -> None:
        link = self.links[server]
        if link.up and link.writer is not None:
            try:
                link.writer.write(frame)
            except (ConnectionError, OSError, RuntimeError):
                link.up = False

    def _broadcast(self, msg: dict, home: int) -> None:
        plain = encode({**msg, "report": False})
        marked = encode({**msg, "report": True})
        for link in self.links:
            self._send(link.server, marked if link.server == home else plain)

    # --- the engine contract: scheduling --------------------------------------------------------

    def schedule(self, time_s: float, kind: EventKind, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_s, int(kind), self._seq, payload))

    def new_flow_id(self) -> int:
        self._next_flow_id += 1
        return self._next_flow_id

    # --- the engine contract: what the world tells the policy ------------------------------------

    def request_arrived(self, info: RequestInfo) -> None:
        msg = request_msg(info)
        self._requests[info.request_id] = msg
        self._broadcast(msg, self.placement.request_home(info.request_id))

    def request_done(self, request_id: int) -> None:
        self._requests.pop(request_id, None)
        self._broadcast({"type": "request_done", "request_id": request_id},
                        self.placement.request_home(request_id))

    def batch_started(self, info: BatchInfo) -> None:
        msg = batch_msg(info)
        self._batches[info.batch_id] = {"batch_start": msg}
        self._broadcast(msg, self.placement.batch_home(info.instance))

    def _batch_event(self, batch_id: int, msg: dict) -> None:
        batch = self._batches.get(batch_id)
        home = self.placement.batch_home(batch["batch_start"]["instance"]) if batch else 0
        if batch is not None and msg["type"] != "batch_end":
            batch[msg["type"]] = msg
        self._broadcast(msg, home)

    def batch_ended(self, batch_id: int) -> None:
        self._batch_event(batch_id, {"type": "batch_end", "batch_id": batch_id})
        self._batches.pop(batch_id, None)

    def layer_started(self, batch_id: int, layer: int) -> None:
        self._batch_event(batch_id, {"type": "layer_start", "batch_id": batch_id,
                                     "layer": layer})

    def batch_compute_done(self, batch_id: int) -> None:
        self._batch_event(batch_id, {"type": "batch_compute_done", "batch_id": batch_id})

    def submit(self, info: FlowInfo, transfer, on_done: Callable[[int], None]) -> None:
        """Start a flow now; ``on_done(flow_id)`` runs when every source daemon completed it."""
        local: dict[int, list] = {}
        for index, (src, dst, size) in enumerate(transfer.member_list):
            local.setdefault(self.placement.server_of(src), []).append(
                (index, int(src), int(dst), float(size)))
        self._flows[info.flow_id] = _FlowState(info, local, on_done, self.loop.time())
        self.submitted_bytes += info.size_bytes
        for server, members in local.items():
            self._send(server, encode(flow_msg(info, members, round(transfer.share))))

    # --- the loop ---------------------------------------------------------------------------------

    def _model_now(self) -> float:
        return self.scale.model_s(self.loop.time() - self.epoch_s)

    def _notify(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def run(self, dispatch: Callable[[int, Any], None],
            should_stop: Callable[[], bool]) -> None:
        """Dispatch timers at their wall times and flow completions as they come, until
        ``should_stop()``; raises if a daemon is lost or nothing moves for too long."""
        self.loop.run_until_complete(self._run(dispatch, should_stop))

    async def _run(self, dispatch, should_stop) -> None:
        loop = self.loop
        # a full collection of the set-up's objects would stall the clock for ~0.1 s: freeze
        # them, so that collections during the run only look at new objects
        gc.collect()
        gc.freeze()
        self._last_progress = loop.time()
        while not should_stop():
            if self._fatal is not None:
                raise self._fatal
            if self._completions:
                self._complete(*self._completions.popleft())
                continue
            due = None
            if self._heap:
                t = self._heap[0][0]
                due = self.epoch_s + self.scale.wall_s(t)
                if due <= loop.time():
                    _, kind, _, payload = heapq.heappop(self._heap)
                    self.now_s = max(self._model_now(), self.now_s)
                    self.lateness.add(self.now_s - t)
                    self.events += 1
                    self._last_progress = loop.time()
                    dispatch(kind, payload)
                    continue
            elif not self._flows:
                return  # nothing can happen any more
            await self._wait(due)

    async def _wait(self, due: float | None) -> None:
        loop = self.loop
        check = loop.time() + 1.0
        until = check if due is None else min(due, check)
        self._waiter = fut = loop.create_future()
        handle = loop.call_at(until, self._notify)
        try:
            await fut
        finally:
            handle.cancel()
            self._waiter = None
        if loop.time() - self._last_progress > self.stall_timeout_s and self._flows:
            sample = sorted(self._flows)[:5]
            where = {fid: sorted(self._flows[fid].pending) for fid in sample}
            raise RuntimeError(f"no progress for {self.stall_timeout_s:.0f} s with "
                               f"{len(self._flows)} flows in flight (e.g. flow -> servers "
                               f"still sending: {where}); errors: {self.errors[-3:]}")

    def _complete(self, server: int, msg: dict) -> None:
        st = self._flows.get(msg["flow_id"])
        if st is None or server not in st.pending:
            return
        st.pending.discard(server)
        st.first = min(st.first, msg["first_level"])
        st.last = min(st.last, msg["last_level"])
        if st.pending:
            return
        self.now_s = max(self._model_now(), self.now_s)
        self.events += 1
        self._last_progress = self.loop.time()
        info = st.info
        del self._flows[info.flow_id]
        self.flow_wall_s_sum += self.loop.time() - st.wall_s
        self.flows_done += 1
        self.network.delivered_bytes += info.size_bytes
        if self.flow_records is not None:
            self.flow_records.append((
                info.flow_id, int(info.stage), info.batch_id, info.layer, info.members,
                info.size_bytes, info.total_bytes, info.submit_s, self.now_s, st.first, st.last))
        st.on_done(info.flow_id)

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait (dispatching nothing) until every submitted flow has completed; True if so."""
        async def _drain() -> None:
            deadline = self.loop.time() + timeout_s
            while self._flows and self.loop.time() < deadline and self._fatal is None:
                while self._completions:
                    server, msg = self._completions.popleft()
                    st = self._flows.get(msg["flow_id"])
                    if st is not None:
                        st.on_done = _ignore
                    self._complete(server, msg)
                await self._wait(deadline)

        self.loop.run_until_complete(_drain())
        return not self._flows

    # --- introspection for tests and the testbed runner ---------------------------------------

    def daemon_stats(self, timeout_s: float = 5.0) -> list[dict[str, float]]:
        """Ask every daemon for its counters (through separate probe connections)."""
        return self.loop.run_until_complete(_gather(
            *(probe_stats(link.path, timeout_s) for link in self.links)))

    @property
    def in_flight(self) -> int:
        return len(self._flows)


def _ignore(_flow_id: int) -> None:
    """Completion callback for flows finishing after the run (the serving logic has stopped)."""


async def _gather(*aws) -> list:
    return await asyncio.gather(*aws)


async def probe_stats(path: str, timeout_s: float = 5.0) -> dict[str, float]:
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(
        path, limit=SKIP_LIMIT_BYTES), timeout_s)
    try:
        writer.write(encode({"type": "hello", "role": "probe", "run_id": "probe"}))
        writer.write(encode({"type": "stats"}))
        while True:
            msg = await asyncio.wait_for(read_message(reader, DAEMON_TYPES), timeout_s)
            if msg is None:
                raise RuntimeError(f"{path} closed before answering stats")
            if msg["type"] == "stats_reply":
                return dict(msg["stats"])
    finally:
        writer.close()
