"""Worker side of the MFS connector: every KV transfer passes a gate (submit, permit, complete).

Who calls this: :class:`~mfsched.integrations.vllm.connector.MFSConnector` in each vLLM worker
process, from the per-layer hooks. The protocol is the one of the paper's host daemon (and of
the data-plane daemon of :mod:`mfsched.dataplane`): a runtime *submits* each transfer with its
metadata, starts it when *permitted*, in priority order, and reports its *completion*; it also
reports layer boundaries, so the policy's RLI (Stage 1) and MLU (Stage 3) advance with the
model's progress.

Two implementations, chosen by ``kv_connector_extra_config["mfs"]["gate"]``:

* ``"inprocess"`` -> :class:`InProcessGate`: runs its own policy object in the worker, fed with
  the step plan the scheduler side shipped (requests and deadlines, the batch) and with the
  worker's submissions and layer boundaries. Every submitted transfer is permitted at once, in
  priority order (there is no other host to wait for); the permits' priorities and transport
  classes are what the worker hands to the inner connector and records.
* ``"daemon:<unix socket path>"`` -> :class:`DaemonGate`: the client of the host daemon that
  gates all transfers of a host across processes. It is the adapter point for the data plane;
  until that client exists it raises ``NotImplementedError`` when the connector starts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol

from ...policy import Policy, Priority, Stage, make_policy
from .driver import FlowSpec, KeyedDriver
from .options import GATE_DAEMON_PREFIX, MFSOptions
from .planner import PORT_EGRESS, PORT_INGRESS, StepPlan
from .tracelog import DecisionLog
from .transport import TransportClass, transport_class

__all__ = ["DaemonGate", "InProcessGate", "Permit", "TransferGate", "TransferTicket", "make_gate"]

LOAD = "load"
SAVE = "save"


@dataclass(frozen=True, slots=True)
class TransferTicket:
    """One transfer a worker wants to start: the KV of ``layer`` for one request, in one
    direction (``kind`` is ``"load"`` or ``"save"``), ``size_bytes`` per TP lane."""

    req_id: str
    kind: str
    stage: Stage
    layer: int
    target_layer: int
    size_bytes: float
    lanes: int
    deadline_s: float | None


@dataclass(frozen=True, slots=True)
class Permit:
    """A transfer allowed to start, with the priority and transport class it should use, and
    the policy's rate limit for it (bytes/s per lane; None: none). The inner connectors have
    no pacing knob, so the connector records the limit but cannot enforce it."""

    flow_id: int
    ticket: TransferTicket
    priority: Priority
    transport: TransportClass
    rate_cap_bytes_per_s: float | None = None


class TransferGate(Protocol):
    """What the worker side needs of a gate; the daemon client implements the same."""

    def begin_step(self, plan: StepPlan, now_s: float) -> None:
        """A new vLLM step: its requests, deadlines and batch, from the scheduler side."""

    def submit(self, ticket: TransferTicket, now_s: float) -> int:
        """Register a transfer; returns its flow id."""

    def permit(self, now_s: float) -> list[Permit]:
        """The submitted transfers that may start now, most urgent first."""

    def complete(self, flow_id: int, now_s: float) -> None:
        """The transfer's last byte arrived (or it was dropped)."""

    def layer_start(self, layer: int, now_s: float) -> None:
        """Layer ``layer`` of the current step starts computing."""

    def end_step(self, now_s: float) -> None:
        """The step's compute is over; only its transfers may still run."""

    def poll(self, now_s: float) -> None:
        """A hook without news: decide if the policy asked to be woken by now."""

    def close(self) -> None:
        """Release resources (connections, files)."""


class InProcessGate:
    """A gate that decides inside the worker process with its own policy object."""

    def __init__(self, options: MFSOptions, policy: Policy | None = None,
                 log: DecisionLog | None = None) -> None:
        self.options = options
        self.driver = KeyedDriver(policy or make_policy(
            options.policy, options.num_levels, dict(options.policy_options)))
        self.log = log
        self._plan: StepPlan | None = None
        self._waiting: dict[int, TransferTicket] = {}
        self._seq = itertools.count()
        self._order: dict[int, int] = {}

    # --- steps and layers -------------------------------------------------------------------

    def begin_step(self, plan: StepPlan, now_s: float) -> None:
        for key in plan.finished:
            self.driver.finish_request(key, now_s)
        for r in plan.requests:
            self.driver.add_request(r.req_id, r.arrival_s, r.deadline_s - r.arrival_s,
                                    r.prompt_tokens, now_s)
        self._plan = plan
        if any(r.load_tokens or r.save_tokens for r in plan.requests):
            self._start_batch(plan, now_s)

    def _start_batch(self, plan: StepPlan, now_s: float) -> None:
        lanes = plan.tp_lanes
        p2d: dict[str, dict[int, float]] = {}
        early = 0.0
        for r in plan.requests:
            if r.load_tokens:
                total = plan.layer_bytes(r.load_tokens) * lanes
                if r.load_stage == Stage.P2D:
                    p2d.setdefault(r.req_id, {})[PORT_INGRESS] = total
                else:
                    early += total
            if r.save_tokens:
                p2d.setdefault(r.req_id, {})[PORT_EGRESS] = plan.layer_bytes(r.save_tokens) * lanes
        capacity = {PORT_EGRESS: plan.link_bps * lanes, PORT_INGRESS: plan.link_bps * lanes}
        self.driver.start_batch(plan.step, plan.order, plan.num_layers, plan.layer_compute_s,
                                p2d, {PORT_INGRESS: early} if early else {}, capacity, now_s)

    def layer_start(self, layer: int, now_s: float) -> None:
        if self._plan is None:
            return
        self.driver.layer_start(self._plan.step, layer, now_s)
        decision = self.driver.decide(now_s)
        if self.log is not None and decision.priorities:
            self.log.write("layer", step=self._plan.step, layer=layer,
                           changed={str(f): list(p) for f, p in decision.priorities.items()})

    def end_step(self, now_s: float) -> None:
        if self._plan is not None:
            self.driver.compute_done(self._plan.step, now_s)

    # --- transfers --------------------------------------------------------------------------

    def submit(self, ticket: TransferTicket, now_s: float) -> int:
        plan = self._plan
        if plan is None or not self.driver.has_batch(plan.step):
            raise RuntimeError("MFS gate: a transfer was submitted outside a planned step")
        port = PORT_INGRESS if ticket.kind == LOAD else PORT_EGRESS
        fid = self.driver.submit(FlowSpec(
            ticket.stage, plan.step, ticket.req_id, ticket.layer, ticket.target_layer,
            ticket.size_bytes, ticket.lanes, port, plan.link_bps, ticket.deadline_s), now_s)
        self._waiting[fid] = ticket
        self._order[fid] = next(self._seq)
        return fid

    def permit(self, now_s: float) -> list[Permit]:
        self.driver.decide(now_s)
        scavenger = Priority(self.options.num_levels)
        driver = self.driver
        ready = sorted(self._waiting, key=lambda f: (driver.priority(f) or scavenger,
                                                     self._order[f]))
        permits = []
        for fid in ready:
            prio = driver.priority(fid) or scavenger
            permits.append(Permit(fid, self._waiting.pop(fid), prio,
                                  transport_class(prio.level, self.options.num_levels),
                                  driver.caps.get(fid)))
            self._order.pop(fid, None)
        if self.log is not None and permits:
            self.log.write("permit", step=self._plan.step if self._plan else None,
                           permits=[[p.ticket.req_id, p.ticket.kind, p.ticket.layer,
                                     p.priority.level, p.priority.rank, p.transport.dscp,
                                     p.rate_cap_bytes_per_s]
                                    for p in permits])
        return permits

    def poll(self, now_s: float) -> None:
        """A hook without news: decide if the policy's wake-up time has come (its periodic
        refresh, e.g. MFS's MLU of P2D flows after the compute ended, Karuna's pacing)."""
        if self.driver.due(now_s):
            self.driver.decide(now_s)

    def complete(self, flow_id: int, now_s: float) -> None:
        self._waiting.pop(flow_id, None)
        self._order.pop(flow_id, None)
        self.driver.complete(flow_id, now_s)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


class DaemonGate:
    """Client of the data-plane host daemon (issue 4) at a Unix socket: the adapter point.

    It will send ``begin_step`` / ``submit`` / ``layer_start`` / ``complete`` as daemon messages
    and block in ``permit`` until the daemon permits. The daemon's client API is not available
    yet, so constructing one fails with a clear message rather than silently gating nothing.
    """

    def __init__(self, socket_path: str) -> None:
        raise NotImplementedError(
            f"MFS gate 'daemon:{socket_path}': the data-plane host daemon client is not "
            "available in this version of mfsched; use \"gate\": \"inprocess\"")


def make_gate(options: MFSOptions, log: DecisionLog | None = None) -> TransferGate:
    """The gate named by ``options.gate``."""
    if options.gate.startswith(GATE_DAEMON_PREFIX):
        return DaemonGate(options.gate[len(GATE_DAEMON_PREFIX):])
    return InProcessGate(options, log=log)
