"""Scheduler side of the MFS connector: vLLM requests and steps -> MFS flows -> a step plan.

Who calls this: :class:`~mfsched.integrations.vllm.connector.MFSConnector` in vLLM's scheduler
process (EngineCore), from its scheduler-side hooks. Pure (no vLLM import): the connector turns
vLLM's objects into the plain values below, so the planner is unit-tested without vLLM.

The model, per vLLM scheduler step (one ``build_connector_meta`` call):

* The step's scheduled requests, plus those whose external KV starts loading in it, form one
  batch (``BatchInfo``) with the model's layers.
* **Loads** (``update_state_after_alloc`` with external tokens) become one flow per layer into
  the instance's ingress port. A load of KV that another *prefill* instance computed for this
  request (``kv_transfer_params["do_remote_prefill"]``, the decode side of P/D disaggregation,
  e.g. NixlConnector's pull) is the P2D transfer itself and is Stage 3 with the request's
  deadline; every other external load (a prefix held elsewhere) is Stage 1, needed by its layer.
* **Saves** on a KV producer: the prompt tokens computed in the step, one Stage-3 (P2D) flow per
  layer out of the egress port.
* Flow size = tokens x KV bytes per token per layer and TP rank; TP ranks are the flow's lanes.
* The policy decides once per step; the plan carries each request's priority (the most urgent
  of its flows in flight), the order of the step's requests, the pruned set, and what the
  worker's gate needs to follow the same requests (deadlines, tokens to load and to save).

Completion: synchronous transfers are done when the next step is planned (the workers' step,
``wait_for_save`` included, is over); asynchronous loads when vLLM reports them received, and
saves of requests whose inner connector keeps the blocks after ``request_finished`` (a P/D
producer) when vLLM reports them sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...policy import Policy, Priority, Stage, make_policy
from .driver import FlowSpec, KeyedDriver
from .options import MFSOptions

__all__ = [
    "PORT_EGRESS",
    "PORT_INGRESS",
    "ModelShape",
    "RequestPlan",
    "ScheduledRequest",
    "StepPlan",
    "StepPlanner",
    "kv_bytes_per_token_per_layer",
    "request_deadline_s",
]

PORT_EGRESS = 0  # this instance's NIC lanes, outgoing (P2D saves / sends)
PORT_INGRESS = 1  # incoming (external loads, P2D pulls)

# kv_transfer_params keys read for a request's TTFT deadline, in order of precedence.
ABSOLUTE_DEADLINE_KEYS = ("deadline_s", "deadline", "mfs_deadline_s")
RELATIVE_SLO_KEYS = ("ttft_slo_s",)


def kv_bytes_per_token_per_layer(num_kv_heads: int, head_size: int, dtype_bytes: int,
                                 mla: bool = False) -> int:
    """KV bytes of one token in one layer of one TP rank: K and V (2 x heads x head size x
    dtype bytes); MLA keeps one latent vector per token instead of K and V."""
    return (1 if mla else 2) * num_kv_heads * head_size * dtype_bytes


def request_deadline_s(arrival_s: float, priority: int, kv_transfer_params: Mapping | None,
                       options: MFSOptions) -> tuple[float, str]:
    """A request's TTFT deadline (absolute, on the arrival clock) and where it came from.

    Precedence: an absolute deadline in ``kv_transfer_params`` (``deadline_s``, ``deadline``, or
    ``mfs_deadline_s``, which the prefill side adds to the parameters it hands to the decode
    side), then a relative ``ttft_slo_s`` there, then ``slo_by_priority_s[priority]``, then
    ``default_slo_s``.
    """
    params = kv_transfer_params or {}
    for key in ABSOLUTE_DEADLINE_KEYS:
        value = _number(params.get(key))
        if value is not None:
            return value, key
    for key in RELATIVE_SLO_KEYS:
        value = _number(params.get(key))
        if value is not None and value > 0:
            return arrival_s + value, key
    slo = options.slo_for_priority_s(priority)
    if slo is not None:
        return arrival_s + slo, "priority"
    return arrival_s + options.default_slo_s, "default"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What the planner needs of the model: layers of this pipeline stage, KV bytes per token
    per layer on one TP rank, and the TP ranks that move KV in parallel (lanes)."""

    num_layers: int
    kv_bytes_per_token_per_layer: int
    tp_lanes: int = 1

    def __post_init__(self) -> None:
        if self.num_layers < 1 or self.kv_bytes_per_token_per_layer < 1 or self.tp_lanes < 1:
            raise ValueError("num_layers, kv_bytes_per_token_per_layer and tp_lanes must be >= 1")


@dataclass(frozen=True, slots=True)
class ScheduledRequest:
    """One request of a vLLM step: tokens already computed and tokens scheduled now."""

    req_id: str
    num_computed_tokens: int
    num_scheduled_tokens: int


@dataclass(frozen=True, slots=True)
class RequestPlan:
    """One request of a step plan. ``level``/``rank``: the most urgent MFS priority among the
    request's flows in flight (None: it has none). ``load_stage`` is a :class:`Stage` value."""

    req_id: str
    arrival_s: float
    deadline_s: float
    prompt_tokens: int
    load_tokens: int
    load_stage: int
    load_async: bool
    save_tokens: int
    level: int | None
    rank: int
    pruned: bool

    @property
    def priority(self) -> Priority | None:
        return None if self.level is None else Priority(self.level, self.rank)


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What the scheduler side decided for one step; shipped to the workers in the metadata.
    ``requests`` is in MFS order (most urgent first)."""

    step: int
    now_s: float
    num_layers: int
    kv_bytes_per_token_per_layer: int
    tp_lanes: int
    link_bps: float
    layer_compute_s: float
    requests: tuple[RequestPlan, ...]
    pruned: frozenset[str]
    finished: tuple[str, ...]

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(r.req_id for r in self.requests)

    def priorities(self) -> dict[str, Priority | None]:
        return {r.req_id: r.priority for r in self.requests}

    def layer_bytes(self, tokens: int) -> float:
        """Bytes of ``tokens`` tokens in one layer on one lane."""
        return float(tokens * self.kv_bytes_per_token_per_layer)

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready summary (the decision log's line)."""
        return {
            "step": self.step, "t_s": self.now_s, "order": list(self.order),
            "pruned": sorted(self.pruned), "finished": list(self.finished),
            "requests": {r.req_id: {"level": r.level, "rank": r.rank, "deadline_s": r.deadline_s,
                                    "load_tokens": r.load_tokens, "load_stage": r.load_stage,
                                    "save_tokens": r.save_tokens, "pruned": r.pruned}
                         for r in self.requests},
        }


class _PlannedRequest:
    __slots__ = ("arrival_s", "deadline_s", "load", "load_async", "prompt_tokens",
                 "remote_prefill")

    def __init__(self, arrival_s: float, deadline_s: float, prompt_tokens: int,
                 remote_prefill: bool) -> None:
        self.arrival_s = arrival_s
        self.deadline_s = deadline_s
        self.prompt_tokens = prompt_tokens
        self.remote_prefill = remote_prefill
        self.load = 0  # external tokens allocated and not yet planned
        self.load_async = False


class StepPlanner:
    """Scheduler-side MFS state of one vLLM engine. ``produces_kv``: the instance is a KV
    producer (its computed prompt KV leaves it: P2D saves)."""

    def __init__(self, options: MFSOptions, shape: ModelShape, produces_kv: bool,
                 policy: Policy | None = None) -> None:
        self.options = options
        self.shape = shape
        self.produces_kv = produces_kv
        self.driver = KeyedDriver(policy or make_policy(
            options.policy, options.num_levels, dict(options.policy_options)))
        self._reqs: dict[str, _PlannedRequest] = {}
        self._step = 0
        self._prev_step: int | None = None
        self._step_flows: list[tuple[int, str, str, bool]] = []  # fid, key, load|save, async
        self._awaiting: dict[str, list[int]] = {}  # key -> flows completed by vLLM's reports

    # --- requests ---------------------------------------------------------------------------

    def add_request(self, req_id: str, arrival_s: float, priority: int, prompt_tokens: int,
                    kv_transfer_params: Mapping | None, now_s: float) -> float:
        """Register a request (idempotent) and return its TTFT deadline."""
        r = self._reqs.get(req_id)
        if r is not None:
            return r.deadline_s
        deadline_s, _ = request_deadline_s(arrival_s, priority, kv_transfer_params, self.options)
        remote = bool((kv_transfer_params or {}).get("do_remote_prefill"))
        self._reqs[req_id] = _PlannedRequest(arrival_s, deadline_s, prompt_tokens, remote)
        self.driver.add_request(req_id, arrival_s, deadline_s - arrival_s, prompt_tokens, now_s)
        return deadline_s

    def deadline_s(self, req_id: str) -> float | None:
        r = self._reqs.get(req_id)
        return None if r is None else r.deadline_s

    def note_load(self, req_id: str, tokens: int, is_async: bool) -> None:
        """``tokens`` external tokens were allocated for the request (update_state_after_alloc)."""
        r = self._reqs.get(req_id)
        if r is None or tokens <= 0:
            return
        r.load += tokens
        r.load_async = r.load_async or is_async

    def finish_request(self, req_id: str, async_send: bool, now_s: float) -> None:
        """vLLM finished the request; ``async_send``: the inner connector still sends its KV."""
        r = self._reqs.pop(req_id, None)
        if r is None:
            return
        for fid in self.driver.live_flows(req_id):
            if async_send and self.driver.flow(fid).port_bytes[0][0] == PORT_EGRESS:
                self._awaiting.setdefault(req_id, []).append(fid)
            else:
                self.driver.complete(fid, now_s)
        self._step_flows = [f for f in self._step_flows if f[1] != req_id]
        if not async_send:
            self._awaiting.pop(req_id, None)
        self.driver.finish_request(req_id, now_s)

    def transfers_done(self, recv_ids: Iterable[str], send_ids: Iterable[str],
                       now_s: float) -> None:
        """vLLM reported asynchronous transfers complete (KVConnectorOutput)."""
        for key in (*recv_ids, *send_ids):
            for fid in self._awaiting.pop(key, ()):
                self.driver.complete(fid, now_s)

    # --- steps ------------------------------------------------------------------------------

    def plan_step(self, now_s: float, scheduled: Sequence[ScheduledRequest],
                  finished: Iterable[str] = ()) -> StepPlan:
        self._close_previous_step(now_s)
        self._step += 1
        step = self._step
        loads = {k: r for k, r in self._reqs.items() if r.load > 0}
        saves = self._save_tokens(scheduled)
        keys = list(dict.fromkeys([s.req_id for s in scheduled if s.req_id in self._reqs]
                                  + list(loads)))
        if loads or saves:
            self._start_batch(step, keys, loads, saves, scheduled, now_s)
            self._prev_step = step
        self.driver.decide(now_s)
        plan = self._plan(step, now_s, keys, loads, saves, scheduled, tuple(finished))
        for r in loads.values():
            r.load = 0
            r.load_async = False
        return plan

    def _save_tokens(self, scheduled: Sequence[ScheduledRequest]) -> dict[str, int]:
        if not self.produces_kv:
            return {}
        out = {}
        for s in scheduled:
            r = self._reqs.get(s.req_id)
            if r is None:
                continue
            tokens = min(s.num_scheduled_tokens, r.prompt_tokens - s.num_computed_tokens)
            if tokens > 0:
                out[s.req_id] = tokens
        return out

    def _start_batch(self, step: int, keys: list[str], loads: dict[str, _PlannedRequest],
                     saves: dict[str, int], scheduled: Sequence[ScheduledRequest],
                     now_s: float) -> None:
        shape, link_bps = self.shape, self.options.link_bps
        lane_layer = float(shape.kv_bytes_per_token_per_layer)
        p2d: dict[str, dict[int, float]] = {}
        early = 0.0
        for key, r in loads.items():
            total = r.load * lane_layer * shape.tp_lanes
            if r.remote_prefill:
                p2d.setdefault(key, {})[PORT_INGRESS] = total
            else:
                early += total
        for key, tokens in saves.items():
            p2d.setdefault(key, {})[PORT_EGRESS] = tokens * lane_layer * shape.tp_lanes
        tokens_in_step = sum(s.num_scheduled_tokens for s in scheduled)
        capacity = {PORT_EGRESS: link_bps * shape.tp_lanes, PORT_INGRESS: link_bps * shape.tp_lanes}
        self.driver.start_batch(step, keys, shape.num_layers,
                                tokens_in_step * self.options.layer_compute_s_per_token,
                                p2d, {PORT_INGRESS: early} if early else {}, capacity, now_s)
        for key, r in loads.items():
            stage = Stage.P2D if r.remote_prefill else Stage.KV_REUSE
            for layer in range(shape.num_layers):
                target = shape.num_layers if stage == Stage.P2D else layer
                self._submit(step, key, stage, layer, target, r.load * lane_layer, PORT_INGRESS,
                             "load", r.load_async, now_s)
        for key, tokens in saves.items():
            for layer in range(shape.num_layers):
                self._submit(step, key, Stage.P2D, layer, shape.num_layers, tokens * lane_layer,
                             PORT_EGRESS, "save", False, now_s)

    def _submit(self, step: int, key: str, stage: Stage, layer: int, target: int,
                size_bytes: float, port: int, kind: str, is_async: bool, now_s: float) -> None:
        r = self._reqs[key]
        deadline = r.deadline_s if stage == Stage.P2D else None
        fid = self.driver.submit(FlowSpec(stage, step, key, layer, target, size_bytes,
                                          self.shape.tp_lanes, port, self.options.link_bps,
                                          deadline), now_s)
        if is_async:
            self._awaiting.setdefault(key, []).append(fid)
        else:
            self._step_flows.append((fid, key, kind, is_async))

    def _close_previous_step(self, now_s: float) -> None:
        """The previous step ran: its compute is done and its synchronous transfers too (saves
        of requests that finished with an asynchronous send left this list in finish_request)."""
        if self._prev_step is not None:
            self.driver.compute_done(self._prev_step, now_s)
        flows, self._step_flows = self._step_flows, []
        for fid, _key, _kind, _async in flows:
            self.driver.complete(fid, now_s)

    def _plan(self, step: int, now_s: float, keys: list[str], loads: dict[str, _PlannedRequest],
              saves: dict[str, int], scheduled: Sequence[ScheduledRequest],
              finished: tuple[str, ...]) -> StepPlan:
        pruned = self.driver.pruned
        plans = []
        for key in keys:
            r = self._reqs[key]
            prio = self.driver.request_priority(key)
            load = loads.get(key)
            plans.append(RequestPlan(
                req_id=key, arrival_s=r.arrival_s, deadline_s=r.deadline_s,
                prompt_tokens=r.prompt_tokens,
                load_tokens=load.load if load else 0,
                load_stage=int(Stage.P2D if r.remote_prefill else Stage.KV_REUSE),
                load_async=bool(load and load.load_async),
                save_tokens=saves.get(key, 0),
                level=None if prio is None else prio.level,
                rank=0 if prio is None else prio.rank,
                pruned=key in pruned))
        plans.sort(key=_urgency)
        shape = self.shape
        tokens_in_step = sum(s.num_scheduled_tokens for s in scheduled)
        return StepPlan(step=step, now_s=now_s, num_layers=shape.num_layers,
                        kv_bytes_per_token_per_layer=shape.kv_bytes_per_token_per_layer,
                        tp_lanes=shape.tp_lanes, link_bps=self.options.link_bps,
                        layer_compute_s=tokens_in_step * self.options.layer_compute_s_per_token,
                        requests=tuple(plans), pruned=pruned, finished=finished)


def _urgency(r: RequestPlan) -> tuple:
    """MFS order: by priority (requests without flows after those with), then EDF, then FIFO."""
    prio = r.priority
    return (prio is None, prio or Priority(0), r.deadline_s, r.arrival_s, r.req_id)
