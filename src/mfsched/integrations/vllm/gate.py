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
* ``"daemon:<unix socket path>"`` -> :class:`DaemonGate`: the client of the host daemon
  (:mod:`mfsched.dataplane.daemon`), which runs the policy for every transfer of the host. The
  step plan, layer boundaries and submissions become the daemon's ``request``,
  ``batch_start``, ``layer_start``, ``submit`` and ``batch_compute_done`` messages. A ticket
  with a :class:`KVPayload` (``MFSKVConnector``) is a KV flow: the daemon sends its staged
  bytes to the decode host in the classes its policy picks and answers ``completion``. A
  ticket without one (``MFSConnector`` around NIXL) is an *admission* flow: the daemon's policy
  ranks it with the host's other flows and answers its priority (``priorities``), the inner
  connector moves the bytes, and ``complete`` reports the end (``flow_done``).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Protocol

from ...policy import Policy, Priority, Stage, make_policy
from .driver import FlowSpec, KeyedDriver
from .options import GATE_DAEMON_PREFIX, MFSOptions
from .planner import PORT_EGRESS, PORT_INGRESS, StepPlan
from .tracelog import DecisionLog
from .transport import TransportClass, transport_class

__all__ = ["DaemonGate", "InProcessGate", "KVPayload", "Permit", "TransferGate", "TransferTicket",
           "make_gate"]

LOAD = "load"
SAVE = "save"


@dataclass(frozen=True, slots=True)
class KVPayload:
    """The real bytes of a save: a KV flow id (:func:`mfsched.dataplane.kvstore.kv_flow_id`),
    the shared-memory segment holding them, and the daemon server number of the decode host."""

    flow_id: int
    segment: str
    dst_server: int
    size_bytes: int


@dataclass(frozen=True, slots=True)
class TransferTicket:
    """One transfer a worker wants to start: the KV of ``layer`` for one request, in one
    direction (``kind`` is ``"load"`` or ``"save"``), ``size_bytes`` per TP lane; ``payload``:
    bytes the daemon moves itself (None: the inner connector moves them)."""

    req_id: str
    kind: str
    stage: Stage
    layer: int
    target_layer: int
    size_bytes: float
    lanes: int
    deadline_s: float | None
    payload: KVPayload | None = None


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
    """The worker's gate on the host daemon at ``socket_path`` (see the module docstring)."""

    def __init__(self, options: MFSOptions, socket_path: str, log: DecisionLog | None = None,
                 client=None, permit_wait_s: float = 0.05) -> None:
        from ...dataplane.client import DaemonClient

        self.options = options
        self.log = log
        self.client = client or DaemonClient(socket_path)
        self.client.hello(options.policy, options.num_levels, dict(options.policy_options))
        self.permit_wait_s = permit_wait_s
        self._plan: StepPlan | None = None
        self._req_ids: dict[str, int] = {}
        self._next_req = itertools.count(1)
        self._next_flow = itertools.count(1)
        self._batches: set[int] = set()
        self._waiting: dict[int, TransferTicket] = {}  # admission flows without a priority yet
        self._admitted: dict[int, Priority] = {}
        self.kv_flows: dict[int, TransferTicket] = {}  # KV flows the daemon is sending
        self.completed: dict[int, dict] = {}  # KV flow id -> the daemon's completion message

    def _gpu(self, server: int) -> int:
        return server * self.client.gpus_per_server

    def _model_s(self, wall_s: float) -> float:
        return self.client.model_s(wall_s)

    def _rid(self, key: str) -> int:
        rid = self._req_ids.get(key)
        if rid is None:
            rid = self._req_ids[key] = next(self._next_req)
        return rid

    # --- steps and layers -------------------------------------------------------------------

    def begin_step(self, plan: StepPlan, now_s: float) -> None:
        send = self.client.send
        for key in plan.finished:
            rid = self._req_ids.pop(key, None)
            if rid is not None:
                send({"type": "request_done", "request_id": rid})
        for r in plan.requests:
            if r.req_id not in self._req_ids:
                send({"type": "request", "request_id": self._rid(r.req_id),
                      "arrival_s": self._model_s(r.arrival_s),
                      "slo_s": r.deadline_s - r.arrival_s, "input_tokens": r.prompt_tokens})
        self._plan = plan
        if any(r.load_tokens or r.save_tokens for r in plan.requests):
            self._start_batch(plan, now_s)

    def _start_batch(self, plan: StepPlan, now_s: float) -> None:
        lanes = plan.tp_lanes
        p2d: dict[int, list] = {}
        early = 0.0
        for r in plan.requests:
            rid = self._rid(r.req_id)
            if r.load_tokens:
                total = plan.layer_bytes(r.load_tokens) * lanes
                if r.load_stage == Stage.P2D:
                    p2d.setdefault(rid, []).append([PORT_INGRESS, total])
                else:
                    early += total
            if r.save_tokens:
                p2d.setdefault(rid, []).append([PORT_EGRESS,
                                                plan.layer_bytes(r.save_tokens) * lanes])
        cap = plan.link_bps * lanes
        self.client.send({
            "type": "batch_start", "batch_id": plan.step, "instance": 0,
            "request_ids": [self._rid(k) for k in plan.order], "num_layers": plan.num_layers,
            "start_s": self._model_s(now_s), "layer_compute_s": plan.layer_compute_s,
            "p2d_port_bytes": [[rid, ports] for rid, ports in p2d.items()],
            "early_port_bytes": [[PORT_INGRESS, early]] if early else [],
            "port_capacity_bps": [[PORT_EGRESS, cap], [PORT_INGRESS, cap]]})
        self._batches.add(plan.step)

    def layer_start(self, layer: int, now_s: float) -> None:
        if self._plan is not None and self._plan.step in self._batches:
            self.client.send({"type": "layer_start", "batch_id": self._plan.step,
                              "layer": max(layer, 0)})

    def end_step(self, now_s: float) -> None:
        if self._plan is not None and self._plan.step in self._batches:
            self._batches.discard(self._plan.step)
            self.client.send({"type": "batch_compute_done", "batch_id": self._plan.step})
        self.poll(now_s)

    # --- transfers --------------------------------------------------------------------------

    def submit(self, ticket: TransferTicket, now_s: float) -> int:
        plan = self._plan
        if plan is None or plan.step not in self._batches:
            raise RuntimeError("MFS gate: a transfer was submitted outside a planned step")
        port = PORT_INGRESS if ticket.kind == LOAD else PORT_EGRESS
        size = float(ticket.size_bytes if ticket.payload is None else ticket.payload.size_bytes)
        msg = {"type": "submit", "stage": int(ticket.stage), "batch_id": plan.step,
               "request_ids": [self._rid(ticket.req_id)], "layer": ticket.layer,
               "target_layer": ticket.target_layer, "size_bytes": size,
               "total_bytes": size * ticket.lanes, "members": 1,
               "port_bytes": [[port, size]], "bottleneck_bps": plan.link_bps,
               "deadline_s": None if ticket.deadline_s is None
               else self._model_s(ticket.deadline_s),
               "submit_s": self._model_s(now_s)}
        here = self._gpu(self.client.server)
        if ticket.payload is not None:
            fid = ticket.payload.flow_id
            msg.update(flow_id=fid, payload=ticket.payload.segment,
                       local=[[0, here, self._gpu(ticket.payload.dst_server), size]])
            self.kv_flows[fid] = ticket
        else:
            fid = next(self._next_flow)
            msg.update(flow_id=fid, local=[], admission=True)
            self._waiting[fid] = ticket
        self.client.send(msg)
        return fid

    def permit(self, now_s: float) -> list[Permit]:
        """KV flows are the daemon's to send: none is handed back. Admission flows are
        permitted once the daemon answered their priority (most urgent first); the gate waits
        at most ``permit_wait_s`` for the answer, then permits at the scavenger level."""
        if not self._waiting:
            self.poll(now_s)
            return []
        deadline = time.monotonic() + self.permit_wait_s
        while True:
            self.poll(now_s)
            if all(f in self.client.priorities for f in self._waiting) \
                    or time.monotonic() >= deadline:
                break
            time.sleep(0.001)
        scavenger = Priority(self.options.num_levels)
        prios = {f: self.client.priorities.get(f, scavenger) for f in self._waiting}
        permits = [Permit(f, self._waiting[f], prios[f],
                          transport_class(prios[f].level, self.options.num_levels))
                   for f in sorted(self._waiting, key=lambda f: prios[f])]
        self._waiting.clear()
        if self.log is not None and permits:
            self.log.write("permit", step=self._plan.step if self._plan else None,
                           permits=[[p.ticket.req_id, p.ticket.kind, p.ticket.layer,
                                     p.priority.level, p.priority.rank, p.transport.dscp]
                                    for p in permits])
        return permits

    def poll(self, now_s: float) -> None:
        """File what the daemon sent: completions of KV flows, priorities."""
        self.client.poll()
        done = self.client.completions
        for fid in list(done):
            msg = done.pop(fid)
            if self.kv_flows.pop(fid, None) is not None:
                self.completed[fid] = msg

    def complete(self, flow_id: int, now_s: float) -> None:
        """The inner connector finished an admission flow (KV flows complete in the daemon)."""
        if flow_id in self.kv_flows or flow_id in self.completed:
            return
        self._waiting.pop(flow_id, None)
        self.client.priorities.pop(flow_id, None)
        self.client.send({"type": "flow_done", "flow_id": flow_id})

    def cancel(self, flow_ids: list[int]) -> None:
        """Stop KV flows (their request was aborted, or their receiver never took them)."""
        for fid in flow_ids:
            self.kv_flows.pop(fid, None)
        if flow_ids:
            self.client.send({"type": "kv_cancel", "flow_ids": list(flow_ids)})

    def close(self) -> None:
        self.client.close()
        if self.log is not None:
            self.log.close()


def make_gate(options: MFSOptions, log: DecisionLog | None = None) -> TransferGate:
    """The gate named by ``options.gate``."""
    if options.gate.startswith(GATE_DAEMON_PREFIX):
        return DaemonGate(options, options.gate[len(GATE_DAEMON_PREFIX):], log)
    return InProcessGate(options, log=log)
