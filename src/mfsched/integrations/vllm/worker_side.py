"""Worker side of the MFS connector: every KV transfer of a step passes the gate, layer by layer.

Who calls this: :class:`~mfsched.integrations.vllm.connector.MFSConnector` in each vLLM worker
process (role WORKER), from its per-layer hooks, as vLLM's own connectors hand their worker
hooks to a worker-side object (``NixlConnectorWorker``). Pure: it sees the inner connector and
vLLM's objects only through the facade's calls, and gets the layer index of a layer name from
the facade (vLLM's ``extract_layer_index``).

Per step (``bind``: the scheduler's :class:`~mfsched.integrations.vllm.planner.StepPlan`):
``start_load_kv`` submits every request's loads (one ticket per layer) and takes the gate's
permits, in priority order; ``save_kv_layer`` submits the step's P2D saves of that layer;
``wait_for_layer_load`` / ``wait_for_save`` / vLLM's finished-receiving reports complete them;
the first hook of a layer reports the layer boundary (RLI and MLU advance), and a hook of the
same layer polls the gate (a policy wake-up, e.g. the periodic MLU refresh, is served there).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from ...policy import Priority, Stage
from .gate import LOAD, SAVE, KVPayload, Permit, TransferGate, TransferTicket, make_gate
from .options import MFSOptions
from .planner import StepPlan
from .tracelog import DecisionLog

__all__ = ["MFSConnectorWorker"]


class MFSConnectorWorker:
    """MFS state of one worker: its gate and the current step's transfers."""

    def __init__(self, options: MFSOptions, log: DecisionLog,
                 clock: Callable[[], float] = time.time,
                 layer_index: Callable[[str], int] = lambda name: -1) -> None:
        self.clock = clock
        self.layer_index = layer_index
        self.gate: TransferGate = make_gate(options, log)
        self.plan: StepPlan | None = None
        self._layer = -1
        self._saved_layers: set[int] = set()
        self._layer_loads: dict[int, list[int]] = {}
        self._step_flows: list[int] = []
        self._async_loads: dict[str, list[int]] = {}
        self.layer_events: deque[tuple[str, int]] = deque(maxlen=100_000)
        self.permit_log: deque[tuple[int, str, str, int, Priority]] = deque(maxlen=100_000)

    def close(self) -> None:
        self.gate.close()

    # --- steps and layers ---------------------------------------------------------------------

    def bind(self, plan: StepPlan | None) -> None:
        """The step's metadata arrived (a repeated plan of the same step changes nothing)."""
        if plan is None or (self.plan is not None and plan.step == self.plan.step):
            return
        self.plan = plan
        self._layer = -1
        self._saved_layers = set()
        self._layer_loads = {}
        self._step_flows = []
        self.gate.begin_step(plan, self.clock())

    def enter_layer(self, hook: str, layer_name: str) -> int:
        layer = self.layer_index(layer_name)
        self.layer_events.append((hook, layer))
        if layer != self._layer and layer >= 0:
            self._layer = layer
            self.gate.layer_start(layer, self.clock())
        else:
            self.gate.poll(self.clock())
        return layer

    # --- transfers ----------------------------------------------------------------------------

    def _admit(self, tickets: Iterable[TransferTicket]) -> list[Permit]:
        """Submit ``tickets`` to the gate and take its permits (priority order)."""
        now = self.clock()
        for ticket in tickets:
            self.gate.submit(ticket, now)
        permits = self.gate.permit(now)
        step = self.plan.step if self.plan else -1
        for p in permits:
            self.permit_log.append((step, p.ticket.req_id, p.ticket.kind, p.ticket.layer,
                                    p.priority))
        return permits

    def start_load(self) -> None:
        """``start_load_kv``: every request's loads of this step, one ticket per layer."""
        plan = self.plan
        if plan is None:
            return
        tickets = []
        for r in plan.requests:
            if not r.load_tokens:
                continue
            stage = Stage(r.load_stage)
            for layer in range(plan.num_layers):
                target = plan.num_layers if stage == Stage.P2D else layer
                tickets.append(TransferTicket(
                    r.req_id, LOAD, stage, layer, target, plan.layer_bytes(r.load_tokens),
                    plan.tp_lanes, r.deadline_s if stage == Stage.P2D else None))
        async_ids = {r.req_id for r in plan.requests if r.load_async}
        for p in self._admit(tickets):
            if p.ticket.req_id in async_ids:
                self._async_loads.setdefault(p.ticket.req_id, []).append(p.flow_id)
            else:
                self._layer_loads.setdefault(p.ticket.layer, []).append(p.flow_id)

    def layer_loaded(self, layer: int) -> None:
        """``wait_for_layer_load`` returned: the layer's synchronous loads are in."""
        self._complete(self._layer_loads.pop(layer, ()))

    def save_layer(self, layer: int, payloads: Mapping[str, KVPayload] | None = None) -> None:
        """``save_kv_layer``: the P2D saves of this layer (once per layer). With ``payloads``
        (``MFSKVConnector``), only those requests' saves, each with its staged bytes."""
        plan = self.plan
        if plan is None or layer in self._saved_layers:
            return
        self._saved_layers.add(layer)
        tickets = [TransferTicket(r.req_id, SAVE, Stage.P2D, max(layer, 0), plan.num_layers,
                                  plan.layer_bytes(r.save_tokens), plan.tp_lanes, r.deadline_s,
                                  None if payloads is None else payloads[r.req_id])
                   for r in plan.requests
                   if r.save_tokens and (payloads is None or r.req_id in payloads)]
        self._step_flows.extend(p.flow_id for p in self._admit(tickets))

    def step_saved(self) -> None:
        """``wait_for_save`` returned: the step's synchronous transfers are over (saves, and
        loads of layers never waited on), and so is its compute."""
        flows, self._step_flows = self._step_flows, []
        for layer_flows in self._layer_loads.values():
            flows.extend(layer_flows)
        self._layer_loads = {}
        self._complete(flows)
        self.gate.end_step(self.clock())

    def received(self, req_ids: Iterable[str] | None) -> None:
        """vLLM reported asynchronous loads of these requests finished."""
        for rid in req_ids or ():
            self._complete(self._async_loads.pop(rid, ()))

    def _complete(self, flow_ids: Iterable[int]) -> None:
        now = self.clock()
        for fid in flow_ids:
            self.gate.complete(fid, now)
