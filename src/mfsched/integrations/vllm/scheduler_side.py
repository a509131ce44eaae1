"""Scheduler side of the MFS connector: requests and steps -> the planner -> ordered metadata.

Who calls this: :class:`~mfsched.integrations.vllm.connector.MFSConnector` in vLLM's scheduler
process (role SCHEDULER, EngineCore), from its scheduler-side hooks, as vLLM's own connectors
hand those hooks to a scheduler-side object (``NixlConnectorScheduler``). Pure: vLLM's objects
arrive through the facade and are only read for a few fields (request id, arrival time,
priority, prompt length, ``kv_transfer_params``; the scheduler output's request lists).

What it adds to the inner connector: every request's TTFT deadline and flows go to the MFS
policy (:class:`~mfsched.integrations.vllm.planner.StepPlanner`); ``build_meta`` plans the
step and presents the step's requests to the inner connector in MFS order (:mod:`.ordering`);
``request_finished`` adds ``mfs_deadline_s`` to the inner connector's ``kv_transfer_params`` so
that a decode instance inherits the request's original deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .options import MFSOptions
from .ordering import ordered_view, reorder_metadata, snapshot, write_back
from .planner import ModelShape, ScheduledRequest, StepPlan, StepPlanner
from .tracelog import DecisionLog

__all__ = ["MFSConnectorScheduler", "scheduled_requests"]


class MFSConnectorScheduler:
    """MFS state of the scheduler process: the planner and the loads vLLM announced."""

    def __init__(self, options: MFSOptions, shape: ModelShape, produces_kv: bool,
                 log: DecisionLog, clock: Callable[[], float] = time.time) -> None:
        self.planner = StepPlanner(options, shape, produces_kv=produces_kv)
        self.log = log
        self.clock = clock
        self._load_async: dict[str, bool] = {}

    def track(self, request: Any) -> None:
        """Register a vLLM request (idempotent)."""
        self.planner.add_request(request.request_id, float(request.arrival_time),
                                 int(getattr(request, "priority", 0) or 0),
                                 int(request.num_prompt_tokens), request.kv_transfer_params,
                                 self.clock())

    def matched(self, request: Any, tokens: int | None, is_async: bool) -> None:
        """The inner connector will load ``tokens`` external tokens (maybe asynchronously)."""
        self.track(request)
        if tokens:
            self._load_async[request.request_id] = bool(is_async)

    def allocated(self, request: Any, num_external_tokens: int) -> None:
        """vLLM allocated blocks for the external tokens: a load of this step."""
        if num_external_tokens > 0:
            self.track(request)
            self.planner.note_load(request.request_id, num_external_tokens,
                                   self._load_async.pop(request.request_id, False))

    def build_meta(self, scheduler_output: Any, inner: Any) -> tuple[Any, StepPlan]:
        """Plan the step; the inner connector builds its metadata from the step's requests in
        MFS order (and its own per-request collections are reordered likewise)."""
        plan = self.planner.plan_step(self.clock(), scheduled_requests(scheduler_output),
                                      sorted(scheduler_output.finished_req_ids or ()))
        view = ordered_view(scheduler_output, plan.order)
        before = snapshot(view)
        inner_meta = inner.build_connector_meta(view)
        write_back(view, before, scheduler_output)
        reorder_metadata(inner_meta, plan.order)
        if plan.finished or plan.pruned or any(r.level is not None for r in plan.requests):
            self.log.write("plan", **plan.to_record())  # steps that moved or ended requests
        return inner_meta, plan

    def transfers_done(self, connector_output: Any) -> None:
        """vLLM reported asynchronous transfers complete (KVConnectorOutput)."""
        self.planner.transfers_done(connector_output.finished_recving or (),
                                    connector_output.finished_sending or (), self.clock())

    def finished(self, request: Any, delay_free: bool,
                 params: dict[str, Any] | None) -> dict[str, Any] | None:
        """vLLM finished the request; returns the inner connector's ``kv_transfer_params``
        with the request's deadline added."""
        deadline = self.planner.deadline_s(request.request_id)
        self.planner.finish_request(request.request_id, bool(delay_free), self.clock())
        if isinstance(params, dict) and deadline is not None:
            params = {**params, "mfs_deadline_s": deadline}
        return params


def scheduled_requests(scheduler_output: Any) -> list[ScheduledRequest]:
    """The step's requests with tokens computed before it and scheduled in it."""
    counts = scheduler_output.num_scheduled_tokens
    out = [ScheduledRequest(r.req_id, int(r.num_computed_tokens), int(counts.get(r.req_id, 0)))
           for r in scheduler_output.scheduled_new_reqs]
    cached = scheduler_output.scheduled_cached_reqs
    out.extend(ScheduledRequest(rid, int(done), int(counts.get(rid, 0)))
               for rid, done in zip(cached.req_ids, cached.num_computed_tokens, strict=False))
    return out
