"""One run of a host daemon: its policy behind the shared driver, the flows this server carries,
and how decisions reach the software queues and the PCIe lanes.

Who calls this: :class:`mfsched.dataplane.daemon.Daemon` builds a :class:`RunState` when a
runtime says ``hello`` with a new run id and hands it every runtime message of that run; the
daemon's transport and PCIe callbacks report finished members to it. The contract test
(``tests/test_driver_contract.py``) builds one directly around an in-memory transport.

The policy is built from the hello (scheduler name, levels, options) with
:func:`mfsched.policy.make_policy`, the very classes the simulator runs, and driven by
:class:`mfsched.policy.driver.PolicyDriver`, the simulator's own driver. :class:`RunState` is
that driver's :class:`~mfsched.policy.driver.Enforcer` and progress view:

* a priority goes to every member of the flow: the sender's heap per (NIC, traffic class,
  :mod:`mfsched.traffic_classes`) and the PCIe lanes' strict-priority key;
* a rate cap (model bytes/s) becomes a real pace (divided by the byte and time scales);
* a new pruned set is reported to the runtime (``pruned``: only requests not reported before);
* the wake-up time becomes an event-loop timer that triggers a decision;
* progress is the largest member's unacknowledged bytes (or PCIe bytes left), in model bytes.

With a coordinator, the run state tells the driver so at once (an empty
:class:`~mfsched.policy.types.GlobalOrder`: the policy stops pruning on its own) and hands every
decision the coordinator pushes to :meth:`PolicyDriver.global_order`: RED ranks and pruned
requests enter the policy there and come out of its next decision, like any other priority
change. It reports P2D flows (``p2d_submit`` / ``p2d_complete``) and, whenever it sees a batch
start or depart, how much of each of its P2D flows remains (``p2d_progress``), so that the
coordinator's feasibility check counts what remains, as MFS does locally.

Batches depart in the driver (compute done, no live flow here); the runtime's ``batch_end`` is
only forwarded to the coordinator, which needs the global departure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..policy import make_policy
from ..policy.base import Policy
from ..policy.driver import PolicyDriver
from ..policy.types import FlowInfo, GlobalOrder, Priority, Stage
from ..sim.allocation import priority_key
from ..traffic_classes import DEFAULT_CLASSES
from .kvstore import PayloadSource, is_kv_flow, segment_name_ok
from .pcie import PcieClock
from .protocol import ProtocolError, batch_from, flow_from, request_from
from .scale import Scale
from .sender import MemberTx, SendScheduler

if TYPE_CHECKING:
    from .control import ControlClient
    from .coordlink import CoordinatorLink
    from .daemon import DaemonConfig

__all__ = ["RUNTIME_EVENTS", "RunState", "TooManyFlows", "hw_class_of"]

log = logging.getLogger("mfsched.daemon")

# runtime messages a run state handles (hello, stats and shutdown are the daemon's)
RUNTIME_EVENTS = frozenset({"request", "request_done", "batch_start", "layer_start",
                            "batch_compute_done", "batch_end", "submit", "kv_cancel",
                            "flow_done"})
_PROGRESS_BATCH = 10_000  # flows per p2d_progress message (well under the 1 MiB frame limit)


def hw_class_of(prio: Priority, num_levels: int) -> int:
    """The traffic class of a priority (the one table of :mod:`mfsched.traffic_classes`)."""
    return DEFAULT_CLASSES.of_level(prio.level, num_levels)


class _Flow:
    __slots__ = ("admission", "client", "done", "info", "left", "members", "pcie", "wall_s")

    def __init__(self, info: FlowInfo, client: ControlClient | None) -> None:
        self.info = info
        self.client = client  # who submitted it (pending-flow limit)
        self.members: list[MemberTx] = []
        self.pcie: list[tuple[int, int, int, int]] = []  # intra-server: (index, src, dst, bytes)
        self.left = 0
        self.done = False
        self.wall_s = 0.0
        self.admission = False  # the runtime moves the bytes; the daemon only ranks the flow


class RunState:
    """Everything that belongs to one run (one driver hello) of one daemon."""

    def __init__(self, hello: dict, config: DaemonConfig, sender: SendScheduler,
                 loop: asyncio.AbstractEventLoop, *, to_runtime: Callable[[dict], None],
                 coordinator: CoordinatorLink | None = None, stats: dict | None = None,
                 policy: Policy | None = None, clock: Callable[[], float] | None = None,
                 payloads: PayloadSource | None = None) -> None:
        self.run_id: str = hello["run_id"]
        self.scale_t = Scale(hello.get("time_scale", 1.0))
        self.scale_b = Scale(hello.get("byte_scale", 1.0))
        self.epoch_s: float = hello.get("epoch_s", 0.0)
        self.scheduler: str = hello.get("scheduler", "fs")
        self.num_levels: int = hello.get("num_levels", 8)
        self.options: list = [list(o) for o in hello.get("options", [])]
        self.config = config
        self.sender = sender
        self.loop = loop
        self.to_runtime = to_runtime
        self.coordinator = coordinator
        self.stats = stats if stats is not None else {}
        self._clock = clock
        self.payloads = payloads  # KV flows' staged segments (kvstore); None: pattern only
        self.pcie = PcieClock(loop, config.pcie_bytes_per_s, config.gpus_per_server,
                              self._pcie_done)
        self.flows: dict[int, _Flow] = {}
        self.reported_pruned: set[int] = set()
        self.policy = policy or make_policy(self.scheduler, self.num_levels,
                                            dict(map(tuple, self.options)))
        self.driver = PolicyDriver(self.policy, self, progress=self)
        self.policy_errors = 0
        self.active_flows_peak = 0
        self.wake_s: float | None = None  # the policy's wake-up wish (model s)
        self._wake_handle: asyncio.TimerHandle | None = None
        self._decide_pending = False
        if coordinator is not None:
            self.driver.global_order(GlobalOrder(), self.now_s())

    def close(self) -> None:
        self.pcie.close()
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None

    # --- time -----------------------------------------------------------------------------

    def now_s(self) -> float:
        """Model time on the run's shared clock."""
        if self._clock is not None:
            return self._clock()
        return self.scale_t.model_s(self.loop.time() - self.epoch_s)

    # --- the runtime's messages ---------------------------------------------------------------

    def handle(self, msg: dict, client: ControlClient | None) -> None:
        """One runtime message of this run; bad ones raise (the daemon answers ``error``)."""
        kind = msg["type"]
        now = self.now_s()
        d = self.driver
        if kind == "submit":
            self._submit(msg, now, client)
        elif kind == "request":
            d.add_request(request_from(msg), now)
        elif kind == "request_done":
            d.finish_request(msg["request_id"], now)
        elif kind == "batch_start":
            info = batch_from(msg)
            if not d.has_batch(info.batch_id):  # (a replay after a reconnect repeats it)
                d.start_batch(info, now)
        elif kind == "layer_start":
            d.layer_start(msg["batch_id"], msg["layer"], now)
        elif kind == "batch_compute_done":
            d.compute_done(msg["batch_id"], now)
        elif kind == "kv_cancel":  # answered, so that the runtime frees the staged bytes
            for fid in msg["flow_ids"]:  # only once the daemon no longer reads them
                self.cancel(fid)
            self.to_runtime({"type": "kv_cancelled", "flow_ids": msg["flow_ids"]})
        elif kind == "flow_done":
            f = self.flows.get(msg["flow_id"])
            if f is not None and f.admission:
                self.member_done(msg["flow_id"])
        if self.coordinator is not None:
            if kind in ("batch_start", "batch_end"):
                self._report_progress()  # before the event: the coordinator decides on it
            if msg.get("report"):
                self.coordinator.report(msg)
        self.decide_soon()

    def global_order(self, ranks: dict[int, int], pruned: set[int]) -> None:
        """A decision the coordinator pushed (RED ranks, pruned requests)."""
        self.driver.global_order(GlobalOrder(ranks, frozenset(pruned)), self.now_s())
        self.decide_soon()

    # --- flows --------------------------------------------------------------------------------

    def _submit(self, msg: dict, now: float, client: ControlClient | None) -> None:
        fid = msg["flow_id"]
        if fid in self.flows:
            return  # a re-submission of a flow we already carry
        limits = self.config.control_limits
        if client is not None and client.pending_flows >= limits.max_pending_flows_per_client:
            raise TooManyFlows(client.pending_flows, limits.max_pending_flows_per_client)
        info = flow_from(msg)
        flow = _Flow(info, client)
        cfg = self.config
        for index, src, dst, model_bytes in msg["local"]:
            s_server, s_nic = cfg.locate(src)
            d_server, d_nic = cfg.locate(dst)
            if s_server != cfg.server:
                raise ProtocolError(f"submit.local: member {index} starts on server {s_server}, "
                                    f"not on {cfg.server}")
            real = self.scale_b.real_bytes(model_bytes)
            if d_server == s_server:
                flow.pcie.append((index, src, dst, real))
            else:
                flow.members.append(MemberTx(fid, index, s_nic, cfg.address(s_server, s_nic),
                                             cfg.address(d_server, d_nic), real,
                                             msg.get("connections", 1)))
        flow.left = len(flow.members) + len(flow.pcie)
        if msg.get("admission"):
            if flow.left:
                raise ProtocolError("submit.local: an admission flow has no members here")
            flow.admission, flow.left = True, 1
        if not flow.left:
            raise ProtocolError("submit.local: no members")
        if msg.get("payload") is not None:
            self._attach_payload(fid, msg["payload"], flow)
        try:
            self.driver.submit(info, now)  # may refuse (an unknown batch): nothing is kept
        except Exception:
            if self.payloads is not None:
                self.payloads.detach(fid)
            raise
        self.flows[fid] = flow
        if client is not None:
            client.pending_flows += 1
        self.active_flows_peak = max(self.active_flows_peak, len(self.flows))
        flow.wall_s = self.loop.time()
        for m in flow.members:
            self.sender.add(m)
        for index, src, dst, real in flow.pcie:
            self.pcie.add((fid, index), src, dst, real, share=msg.get("connections", 1))
        self.stats["flows"] = self.stats.get("flows", 0) + 1
        self.stats["bytes_submitted"] = self.stats.get("bytes_submitted", 0) + \
            sum(m.total for m in flow.members) + sum(b for *_, b in flow.pcie)
        if info.stage == Stage.P2D and self.coordinator is not None:
            share = sum(m[3] for m in msg["local"]) / max(info.total_bytes, 1e-9)
            self.coordinator.report({
                "type": "p2d_submit", "flow_id": fid, "request_id": info.request_ids[0],
                "batch_id": info.batch_id, "layer": info.layer,
                "port_bytes": [[p, b * share] for p, b in info.port_bytes]})

    def _attach_payload(self, fid: int, name: str, flow: _Flow) -> None:
        """A KV flow: its bytes are the runtime's staged segment ``name``, sent as they are."""
        if self.payloads is None or not is_kv_flow(fid):
            raise ProtocolError("submit.payload: only KV flows (kvstore.kv_flow_id) carry one")
        if self.scale_b.factor != 1.0:
            raise ProtocolError("submit.payload: real bytes need byte_scale 1")
        if len(flow.members) != 1 or flow.pcie:
            raise ProtocolError("submit.payload: a KV flow has one member, to another server")
        if not segment_name_ok(name):
            raise ProtocolError(f"submit.payload: bad segment name {name!r}")
        try:
            self.payloads.attach(fid, name, flow.members[0].total)
        except (OSError, ValueError) as e:
            raise ProtocolError(f"submit.payload: segment {name}: {e}") from None

    def cancel(self, flow_id: int) -> None:
        """Stop a flow (its request was aborted, its receiver is gone): nothing more is sent,
        the policy forgets it, its staged segment is unmapped; no completion follows."""
        flow = self.flows.pop(flow_id, None)
        if flow is None:
            return
        flow.done = True
        for m in flow.members:
            self.sender.drop(m)
        if flow.client is not None:
            flow.client.pending_flows -= 1
        if self.payloads is not None:
            self.payloads.detach(flow_id)
        self.driver.complete(flow_id, self.now_s())
        self.stats["flows_cancelled"] = self.stats.get("flows_cancelled", 0) + 1
        self.decide_soon()

    def member_done(self, flow_id: int) -> None:
        """One of the flow's members is through (acknowledged, or out of the PCIe lanes)."""
        flow = self.flows.get(flow_id)
        if flow is None:
            return
        flow.left -= 1
        if flow.left > 0 or flow.done:
            return
        flow.done = True
        del self.flows[flow_id]
        if flow.client is not None:
            flow.client.pending_flows -= 1
        self.sender.forget_flow(flow_id, [m.index for m in flow.members])
        if self.payloads is not None:
            self.payloads.detach(flow_id)
        live = self.driver.complete(flow_id, self.now_s())
        self.stats["completions"] = self.stats.get("completions", 0) + 1
        self._timing(flow)
        first = live.first.level if live is not None and live.first else 0
        last = live.last.level if live is not None and live.last else first
        self.to_runtime({"type": "completion", "flow_id": flow_id, "first_level": first,
                         "last_level": last,
                         "bytes": float(sum(m.total for m in flow.members)
                                        + sum(b for *_, b in flow.pcie))})
        if flow.info.stage == Stage.P2D and self.coordinator is not None:
            self.coordinator.report({"type": "p2d_complete", "flow_id": flow_id})
        self.decide_soon()

    def _pcie_done(self, done: list[tuple[int, int]]) -> None:
        for fid, _ in done:
            self.member_done(fid)

    def _timing(self, flow: _Flow) -> None:
        """Wall-time sums for the health figures: submit -> first chunk, submit -> done."""
        now = self.loop.time()
        st = self.stats
        st["flow_wall_s_sum"] = st.get("flow_wall_s_sum", 0.0) + now - flow.wall_s
        firsts = [m.first_send_s for m in flow.members if m.first_send_s >= 0]
        if firsts:
            st["flow_wait_s_sum"] = st.get("flow_wait_s_sum", 0.0) + min(firsts) - flow.wall_s
            st["flow_wait_n"] = st.get("flow_wait_n", 0) + 1

    def _report_progress(self) -> None:
        """What remains of each of this daemon's P2D flows, as a fraction of its size."""
        rows = [[fid, min(1.0, self.remaining_bytes(fid) / f.info.size_bytes)]
                for fid, f in self.flows.items()
                if f.info.stage == Stage.P2D and f.info.size_bytes > 0]
        for i in range(0, len(rows), _PROGRESS_BATCH):
            self.coordinator.report({"type": "p2d_progress",
                                     "flows": rows[i:i + _PROGRESS_BATCH]})

    # --- decisions ----------------------------------------------------------------------------

    def decide_soon(self) -> None:
        if not self._decide_pending:
            self._decide_pending = True
            self.loop.call_soon(self.decide)

    def decide(self) -> None:
        self._decide_pending = False
        self.stats["decisions"] = self.stats.get("decisions", 0) + 1
        t0 = time.perf_counter()
        try:
            self.driver.decide(self.now_s())
        except Exception:  # a policy bug must not take the data plane down
            log.exception("policy.decide failed")
            self.policy_errors += 1
            return
        finally:
            self.stats["decide_s"] = self.stats.get("decide_s", 0.0) + \
                time.perf_counter() - t0
        self.sender.pump()

    # --- the Enforcer protocol ----------------------------------------------------------------

    def apply_priority(self, flow_id: int, priority: Priority) -> None:
        flow = self.flows[flow_id]
        if flow.admission:  # the runtime moves its bytes: it gets the priority
            self.to_runtime({"type": "priorities",
                             "flows": [[flow_id, priority.level, priority.rank]]})
        for m in flow.members:
            self.sender.set_priority(m, priority)
        if flow.pcie:
            key = priority_key(priority.level, priority.rank)
            for i, *_ in flow.pcie:
                self.pcie.set_priority((flow_id, i), key)

    def apply_rate_cap(self, flow_id: int, cap_bytes_per_s: float | None) -> None:
        flow = self.flows[flow_id]
        real = None if cap_bytes_per_s is None else \
            cap_bytes_per_s / (self.scale_b.factor * self.scale_t.factor)
        for m in flow.members:
            self.sender.set_rate_cap(m, real)
        for i, *_ in flow.pcie:
            self.pcie.set_cap((flow_id, i), real)

    def apply_pruned(self, request_ids: frozenset[int]) -> None:
        new = request_ids - self.reported_pruned
        if new:
            self.reported_pruned |= new
            self.to_runtime({"type": "pruned", "request_ids": sorted(new)})

    def set_wake(self, wake_s: float | None) -> None:
        self.wake_s = wake_s
        if self._wake_handle is not None:
            self._wake_handle.cancel()
            self._wake_handle = None
        if wake_s is not None and wake_s != float("inf"):
            at = self.epoch_s + self.scale_t.wall_s(wake_s)
            self._wake_handle = self.loop.call_at(at, self._woken)

    def _woken(self) -> None:
        self._wake_handle = None
        self.driver.wake()
        self.decide_soon()

    # --- the progress view (model units) ------------------------------------------------------

    def remaining_bytes(self, flow_id: int) -> float:
        f = self.flows.get(flow_id)
        if f is None:
            return 0.0
        if f.admission:  # the runtime moves it and reports only its end: all of it is left
            return f.info.size_bytes
        left = [m.remaining for m in f.members]
        left += [self.pcie.remaining((flow_id, i)) for i, *_ in f.pcie]
        return self.scale_b.model_bytes(max(left, default=0))

    def rate_bytes_per_s(self, flow_id: int) -> float:
        f = self.flows.get(flow_id)
        if f is None or not f.members:
            return 0.0
        big = max(f.members, key=lambda m: m.total)
        real = self.sender.rate_bytes_per_s(big)
        return real * self.scale_b.factor * self.scale_t.factor

    # --- introspection ------------------------------------------------------------------------

    def stat_pairs(self) -> list[tuple[str, float]]:
        return [("active_flows", float(len(self.flows))),
                ("active_flows_peak", float(self.active_flows_peak))]


class TooManyFlows(ProtocolError):
    """A client has too many flows pending (the daemon counts it in ``guard.flows_refused``)."""

    def __init__(self, pending: int, limit: int) -> None:
        super().__init__(f"{pending} flows of this client are pending (limit {limit}); "
                         "wait for completions")
