"""Disaggregated prefill serving on top of the engine: routing, batching, layers, stages.

Life of a request (all times simulated):

1. **Arrival.** The KV-aware router picks a prefill unit; if another unit holds a longer
   prefix, those blocks will be fetched from it (Stage 1). The TTFT SLO is fixed now
   (``slo_fn``) and the policy learns the request.
2. **Batching.** When an instance is idle, each of its units takes queued work first-come
   first-served up to ``max_batched_tokens`` new tokens (continuous batching with chunked
   prefill); all units of an instance run the batch in lockstep.
3. **Layers.** For each layer: wait until the layer's Stage-1 blocks have arrived, tell the
   policy about the layer boundary, run the plan's steps (compute steps as timers, Stage-2
   collectives as flows that block the next step). When step 0 ends the layer's KV exists and
   its Stage-3 P2D flows start; nothing waits for them.
4. **First token.** When the last chunk is computed and all its P2D bytes have arrived, the
   decode instance runs one decode step; TTFT = that moment - arrival.

Stage-1 fetches of a batch start at batch start for the first ``reuse_lookahead_layers`` layers
(0 = all, like vLLM's ``start_load_kv``) and one more layer at each layer boundary.

(About 570 lines, over the project's 400, for one reason: the life of a request above is one
state machine over the same per-request and per-batch state; split by stage, each part would
have to reach into the others' state. The cluster description, the SLO reference and the
engine live elsewhere.)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from ..errors import SimulationStuck
from ..policy.base import Policy
from ..policy.fair import FairSharing
from ..policy.types import BatchInfo, FlowInfo, RequestInfo, Stage
from ..records import BatchRecord, CollectiveRecord, RequestRecord, RunRecords
from ..workload.cache import PrefixCaches
from ..workload.compute import ComputeModel
from ..workload.deployment import Deployment, Unit
from ..workload.requests import Request
from ..workload.router import Router, Routing
from ..workload.stages import BatchPlan, Chunk, CollectiveStep, ComputeStep, Member, StagePlanner
from .engine import Engine, EventKind
from .slomemo import SloStore, route_class
from .topology import Topology
from .transfer import Transfer

__all__ = ["IsolatedTtft", "Serving", "ServingConfig", "SimCluster", "SimStats", "SloFn",
           "WarmCaches", "prewarm"]

SloFn = Callable[[Request, Routing], float]


@dataclass(frozen=True, slots=True)
class ServingConfig:
    """Serving-system knobs. Defaults follow the paper's vLLM set-up where it states one."""

    max_batched_tokens: int = 8192
    reuse_lookahead_layers: int = 0  # 0: fetch every layer's reused KV at batch start
    router_overlap_weight: float = 1.0
    remote_reuse: bool = True
    grouped_flows: bool = True  # False: every member of a collective is its own flow
    contention_free: bool = False  # analysis only: every flow as if alone on its path

    def __post_init__(self) -> None:
        if self.max_batched_tokens < 1:
            raise ValueError("max_batched_tokens must be at least 1")
        if self.reuse_lookahead_layers < 0:
            raise ValueError("reuse_lookahead_layers must be >= 0")


@dataclass(frozen=True)
class SimCluster:
    """Everything static about a simulated cluster, shared by all runs of a scenario."""

    topology: Topology
    deployment: Deployment
    compute: ComputeModel
    planner: StagePlanner
    serving: ServingConfig
    kv_cache_tokens_per_unit: int


@dataclass(frozen=True, slots=True)
class SimStats:
    events: int
    simulated_time_s: float
    wall_time_s: float
    submitted_bytes: float
    delivered_bytes: float


def _prepare(topology: Topology, members: Sequence[Member], connections: int,
             grouped: bool) -> list[Transfer]:
    if grouped:
        return [Transfer(topology, members, connections)]
    return [Transfer(topology, [m], connections) for m in members]


class _RequestRun:
    __slots__ = ("compute_done_s", "deadline_s", "decode_s", "evaluated", "first_batch_s",
                 "index", "inflight_chunks", "next_token", "p2d_deadline_s", "p2d_done_s",
                 "p2d_left", "remaining_new", "req", "route", "slo_s", "unit")

    def __init__(self, req: Request, index: int, route: Routing, unit: Unit, slo_s: float,
                 evaluated: bool, decode_s: float) -> None:
        self.req = req
        self.index = index
        self.route = route
        self.unit = unit
        self.slo_s = slo_s
        self.deadline_s = req.arrival_s + slo_s
        self.p2d_deadline_s = self.deadline_s - decode_s  # the first decode step comes after
        self.decode_s = decode_s
        self.evaluated = evaluated
        self.next_token = route.local_tokens + route.remote_tokens
        self.remaining_new = route.new_tokens(req)
        self.inflight_chunks = 0
        self.p2d_left = 0
        self.first_batch_s = -1.0
        self.compute_done_s = -1.0
        self.p2d_done_s = -1.0


class _BatchRun:
    __slots__ = (
        "chunks",
        "collectives",
        "compute_done_s",
        "departed",
        "flows_left",
        "id",
        "inst",
        "layer",
        "p2d",
        "plan",
        "reqs",
        "reuse",
        "reuse_left",
        "reuse_next",
        "rids",
        "stall_s",
        "start_s",
        "step",
        "step_left",
        "step_start_s",
        "wait_since",
    )

    def __init__(self, batch_id: int, inst: int, plan: BatchPlan, chunks, reqs, now: float,
                 num_layers: int) -> None:
        self.id = batch_id
        self.inst = inst
        self.plan = plan
        self.chunks = chunks
        self.reqs = reqs
        self.rids = tuple(dict.fromkeys(r.req.request_id for r in reqs))
        self.start_s = now
        self.layer = 0
        self.step = 0
        self.step_left = 0
        self.step_start_s = now
        self.flows_left = 0
        self.compute_done_s = -1.0
        self.departed = False
        self.stall_s = 0.0
        self.wait_since = -1.0
        self.reuse_left = [0] * num_layers
        self.reuse_next = 0
        self.reuse: list = []
        self.collectives: list = []
        self.p2d: list = []


def _add_ports(acc: dict[int, float], port_bytes) -> None:
    for port, size in port_bytes:
        acc[port] = acc.get(port, 0.0) + size


def _router(cluster: SimCluster) -> Router:
    serving = cluster.serving
    return Router([[u.unit_id for u in inst] for inst in cluster.deployment.instances],
                  serving.max_batched_tokens, serving.router_overlap_weight,
                  serving.remote_reuse)


@dataclass(frozen=True)
class WarmCaches:
    """The prefix caches after a stream's history, and when each unit last received one of
    its requests (the router's round robin). Built once per request stream by :func:`prewarm`
    and copied into every run (:meth:`copy`), so the history is routed once, not per run."""

    caches: PrefixCaches
    last_routed: np.ndarray

    def copy(self) -> WarmCaches:
        return WarmCaches(self.caches.copy(), self.last_routed.copy())


def prewarm(cluster: SimCluster, history: Sequence[Request], block_tokens: int) -> WarmCaches:
    """Put what a running service would have cached: route each past request with the router
    itself and insert its blocks on the chosen unit. No time is simulated; the load the router
    sees is a proxy: each unit's pending work is what the last round of placements (one per
    unit) put on it. (Simplification: the past's real queues are not known; with no load at
    all every request would follow its shared system prompt.)"""
    units = cluster.deployment.units
    caches = PrefixCaches(len(units), cluster.kv_cache_tokens_per_unit // block_tokens)
    router = _router(cluster)
    last_routed = np.full(len(units), -1)
    recent: deque[tuple[int, int]] = deque()
    pending = np.zeros(len(units))
    for i, req in enumerate(history):
        route = router.route(req, caches, pending, last_routed)
        last_routed[route.unit] = i - len(history)
        new = route.new_tokens(req)
        pending[route.unit] += new
        recent.append((route.unit, new))
        if len(recent) > len(units):
            unit, done = recent.popleft()
            pending[unit] -= done
        caches.touch(route.unit, req.block_hashes)
    return WarmCaches(caches, last_routed)


class Serving:
    """One simulation run of a request stream on a cluster under one policy.

    The prefix caches start from ``warm`` (a copy of it) or, without it, from routing
    ``history`` afresh (:func:`prewarm`).
    """

    def __init__(self, cluster: SimCluster, policy: Policy | None, requests: Sequence[Request],
                 slo_fn: SloFn, *, warmup: int, evaluated: int,
                 forced_routes: dict[int, Routing] | None = None,
                 history: Sequence[Request] = (), check_invariants: bool = False,
                 record_flows: bool = False,
                 progress: Callable[[int, int], None] | None = None,
                 engine: Engine | None = None, warm: WarmCaches | None = None) -> None:
        self.c = cluster
        self.model = cluster.deployment.model
        self.units = cluster.deployment.units
        self.requests = requests
        self.slo_fn = slo_fn
        self.warmup = warmup
        self.n_eval = evaluated
        self.forced = forced_routes or {}
        self.progress = progress
        # another engine (a wall-clock one over real transports, whose daemons run the policy)
        # may stand in for the simulator; then ``policy`` is not needed
        if engine is None:
            if policy is None:
                raise ValueError("the simulator's engine needs a policy")
            engine = Engine(cluster.topology.capacity_bytes_per_s, policy, check_invariants,
                            record_flows, cluster.serving.contention_free)
        self.engine = engine
        self.queues: list[deque[_RequestRun]] = [deque() for _ in self.units]
        self.pending = np.zeros(len(self.units))
        self.router = _router(cluster)
        if warm is None:
            warm = prewarm(cluster, history, requests[0].block_tokens if requests else 16)
        else:
            warm = warm.copy()
        self.caches = warm.caches
        self.last_routed = warm.last_routed
        self.busy = [False] * len(cluster.deployment.instances)
        self.next_batch_id = 0
        self.evaluated_done = 0
        self.completed = 0
        self.window_done = 0  # completed among the warm-up and evaluated requests (progress)
        self.open: dict[int, _RequestRun] = {}  # arrived, first token not out yet (arrival order)
        self.request_records: list[RequestRecord] = []
        self.collective_records: list[CollectiveRecord] = []
        self.batch_records: list[BatchRecord] = []
        self.needs_port_loads = engine.needs_port_loads

    # --- entry point ----------------------------------------------------------------------

    def run(self) -> tuple[RunRecords, SimStats]:
        started = time.perf_counter()
        if self.requests:
            self.engine.schedule(self.requests[0].arrival_s, EventKind.ARRIVAL, 0)
        try:
            self.engine.run(self._dispatch, lambda: self.evaluated_done >= self.n_eval)
        except SimulationStuck as e:
            raise SimulationStuck(f"{e}; {self._oldest_open()}") from None
        wall = time.perf_counter() - started
        unfinished = self.n_eval - self.evaluated_done
        if unfinished:
            raise SimulationStuck(f"no event left, but {unfinished} evaluated requests never "
                                  f"finished; {self._oldest_open()}")
        records = RunRecords(self.request_records, self.collective_records, self.batch_records,
                             self.engine.flow_records)
        stats = SimStats(self.engine.events, self.engine.now_s, wall,
                         self.engine.submitted_bytes, self.engine.network.delivered_bytes)
        return records, stats

    def _oldest_open(self) -> str:
        """The oldest request whose first token is not out yet, and where it is."""
        if not self.open:
            return "no request in progress"
        r = next(iter(self.open.values()))
        if r.remaining_new and not r.inflight_chunks:
            where = f"{r.remaining_new} tokens queued on prefill unit {r.unit.unit_id}"
        elif r.inflight_chunks:
            where = f"computing in {r.inflight_chunks} batch(es) of instance {r.unit.instance_id}"
        else:
            where = f"waiting for {r.p2d_left} prefill-to-decode flows"
        return (f"oldest unfinished request: {r.req.request_id} (arrived at "
                f"{r.req.arrival_s:.6g} s, {r.req.input_tokens} tokens; {where})")

    def _dispatch(self, kind: EventKind, payload) -> None:
        if kind == EventKind.COMPUTE:
            self._step_done(payload)
        else:
            self._arrive(payload)

    # --- arrivals and routing -----------------------------------------------------------------

    def _arrive(self, index: int) -> None:
        req = self.requests[index]
        if index + 1 < len(self.requests):
            self.engine.schedule(self.requests[index + 1].arrival_s, EventKind.ARRIVAL, index + 1)
        route = self.forced.get(req.request_id)
        if route is None:
            route = self.router.route(req, self.caches, self.pending, self.last_routed)
        self.last_routed[route.unit] = index
        unit = self.units[route.unit]
        slo = self.slo_fn(req, route)
        evaluated = self.warmup <= index < self.warmup + self.n_eval
        decode = self.c.compute.decode_step_s(self.model, self.c.deployment.parallelism.tp,
                                              req.input_tokens)
        r = _RequestRun(req, index, route, unit, slo, evaluated, decode)
        bt = req.block_tokens
        if route.local_tokens:
            self.caches.touch(route.unit, req.block_hashes[: -(-route.local_tokens // bt)])
        if route.remote_tokens:
            reused = route.local_tokens + route.remote_tokens
            self.caches.touch(route.remote_unit, req.block_hashes[: -(-reused // bt)])
        self.engine.request_arrived(RequestInfo(req.request_id, req.arrival_s, slo,
                                                req.input_tokens))
        self.open[req.request_id] = r
        self.queues[route.unit].append(r)
        self.pending[route.unit] += r.remaining_new
        if not self.busy[unit.instance_id]:
            self._start_batch(unit.instance_id)

    # --- batches ------------------------------------------------------------------------------

    def _start_batch(self, inst: int) -> None:
        chunks: list[Chunk] = []
        reqs: list[_RequestRun] = []
        budget_max = self.c.serving.max_batched_tokens
        for k, unit in enumerate(self.c.deployment.instances[inst]):
            queue = self.queues[unit.unit_id]
            budget = budget_max
            for r in list(queue):
                if budget <= 0:
                    break
                n = min(r.remaining_new, budget)
                first = r.first_batch_s < 0
                if first:
                    r.first_batch_s = self.engine.now_s
                reused = r.route.local_tokens + r.route.remote_tokens
                remote = self.units[r.route.remote_unit] if r.route.remote_tokens else None
                chunks.append(Chunk(r.req.request_id, k, n, r.next_token,
                                    n + (reused if first else 0),
                                    r.route.remote_tokens if first else 0,
                                    remote if first else None))
                reqs.append(r)
                r.next_token += n
                r.remaining_new -= n
                r.inflight_chunks += 1
                budget -= n
                if r.remaining_new == 0:
                    queue.popleft()
        if not chunks:
            return
        self.busy[inst] = True
        self.next_batch_id += 1
        plan = self.c.planner.plan(inst, chunks)
        b = _BatchRun(self.next_batch_id, inst, plan, chunks, reqs, self.engine.now_s,
                   self.model.num_layers)
        self._prepare_batch(b)
        self.engine.batch_started(self._batch_info(b))
        lookahead = self.c.serving.reuse_lookahead_layers or self.model.num_layers
        while b.reuse_next < min(lookahead, self.model.num_layers):
            self._submit_reuse(b)
        self._begin_layer(b)

    def _prepare_batch(self, b: _BatchRun) -> None:
        topo, grouped = self.c.topology, self.c.serving.grouped_flows
        req_of = {r.req.request_id: r for r in b.reqs}
        b.reuse = [(req_of[t.request_id], _prepare(topo, t.members, t.connections, grouped))
                   for t in b.plan.reuse]
        b.p2d = [(req_of[t.request_id], _prepare(topo, t.members, t.connections, grouped))
                 for t in b.plan.p2d]
        b.collectives = [_prepare(topo, s.members, s.connections, grouped)
                         if isinstance(s, CollectiveStep) else None for s in b.plan.steps]
        per_layer = sum(len(ts) for _, ts in b.reuse)
        b.reuse_left = [per_layer] * self.model.num_layers
        for r, transfers in b.p2d:
            r.p2d_left += len(transfers) * self.model.num_layers

    def _batch_info(self, b: _BatchRun) -> BatchInfo:
        if not self.needs_port_loads:
            return BatchInfo(b.id, b.inst, b.rids, self.model.num_layers, self.engine.now_s,
                             b.plan.layer_compute_s)
        p2d: dict[int, dict[int, float]] = {}
        for r, transfers in b.p2d:
            per = p2d.setdefault(r.req.request_id, {})
            for t in transfers:
                _add_ports(per, t.port_bytes)
        early: dict[int, float] = {}
        for _r, transfers in b.reuse:
            for t in transfers:
                _add_ports(early, t.port_bytes)
        for transfers in b.collectives:
            for t in transfers or ():
                _add_ports(early, t.port_bytes)
        ports = set(early) | {port for per in p2d.values() for port in per}
        caps = self.c.topology.capacity_bps
        return BatchInfo(b.id, b.inst, b.rids, self.model.num_layers, self.engine.now_s,
                         b.plan.layer_compute_s, p2d, early,
                         {port: float(caps[port]) for port in ports})

    # --- layers and steps ---------------------------------------------------------------------

    def _begin_layer(self, b: _BatchRun) -> None:
        now = self.engine.now_s
        if b.reuse_left[b.layer] > 0:
            if b.wait_since < 0:
                b.wait_since = now
            return
        if b.wait_since >= 0:
            b.stall_s += now - b.wait_since
            b.wait_since = -1.0
        self.engine.layer_started(b.id, b.layer)
        lookahead = self.c.serving.reuse_lookahead_layers or self.model.num_layers
        while b.reuse_next < self.model.num_layers and b.reuse_next <= b.layer + lookahead:
            self._submit_reuse(b)
        b.step = 0
        self._run_step(b)

    def _run_step(self, b: _BatchRun) -> None:
        step = b.plan.steps[b.step]
        now = self.engine.now_s
        b.step_start_s = now
        if isinstance(step, ComputeStep):
            self.engine.schedule(now + step.duration_s, EventKind.COMPUTE, b)
            return
        transfers = b.collectives[b.step]
        b.step_left = len(transfers)
        done = partial(self._collective_flow_done, b)
        for t in transfers:
            self._submit(b, t, Stage.COLLECTIVE, b.layer, b.layer, b.rids, None, done)

    def _collective_flow_done(self, b: _BatchRun, _fid: int) -> None:
        b.flows_left -= 1
        b.step_left -= 1
        if b.step_left == 0:
            step = b.plan.steps[b.step]
            self.collective_records.append(CollectiveRecord(
                b.id, b.inst, b.layer, step.name, b.step_start_s, self.engine.now_s))
            self._step_done(b)

    def _step_done(self, b: _BatchRun) -> None:
        if b.step == 0:
            self._submit_p2d(b)
        b.step += 1
        if b.step < len(b.plan.steps):
            self._run_step(b)
            return
        b.layer += 1
        if b.layer < self.model.num_layers:
            self._begin_layer(b)
        else:
            self._batch_compute_done(b)

    # --- Stage 1 and Stage 3 ------------------------------------------------------------------

    def _submit_reuse(self, b: _BatchRun) -> None:
        layer = b.reuse_next
        b.reuse_next += 1
        done = partial(self._reuse_done, b, layer)
        for r, transfers in b.reuse:
            for t in transfers:
                self._submit(b, t, Stage.KV_REUSE, layer, layer, (r.req.request_id,), None, done)

    def _reuse_done(self, b: _BatchRun, layer: int, _fid: int) -> None:
        b.flows_left -= 1
        b.reuse_left[layer] -= 1
        if b.reuse_left[layer] == 0 and layer == b.layer and b.wait_since >= 0:
            self._begin_layer(b)
        self._maybe_depart(b)

    def _submit_p2d(self, b: _BatchRun) -> None:
        n_layers = self.model.num_layers
        for r, transfers in b.p2d:
            done = partial(self._p2d_done, b, r)
            for t in transfers:
                self._submit(b, t, Stage.P2D, b.layer, n_layers, (r.req.request_id,),
                             r.p2d_deadline_s, done)

    def _p2d_done(self, b: _BatchRun, r: _RequestRun, _fid: int) -> None:
        b.flows_left -= 1
        r.p2d_left -= 1
        if r.p2d_left == 0:
            r.p2d_done_s = self.engine.now_s
            self._maybe_finish(r)
        self._maybe_depart(b)

    def _submit(self, b: _BatchRun, t: Transfer, stage: Stage, layer: int, target: int,
                rids: tuple[int, ...], deadline: float | None, on_done) -> None:
        fid = self.engine.new_flow_id()
        info = FlowInfo(fid, stage, b.id, rids, layer, target, t.size, t.total, t.members,
                        t.port_bytes, t.bottleneck_bps, deadline, self.engine.now_s)
        b.flows_left += 1
        self.engine.submit(info, t, on_done)

    # --- completion -----------------------------------------------------------------------------

    def _batch_compute_done(self, b: _BatchRun) -> None:
        now = self.engine.now_s
        b.compute_done_s = now
        self.engine.batch_compute_done(b.id)
        units = self.c.deployment.instances[b.inst]
        for chunk, r in zip(b.chunks, b.reqs, strict=True):
            unit = units[chunk.unit_index]
            self.pending[unit.unit_id] -= chunk.new_tokens
            r.inflight_chunks -= 1
            bt = r.req.block_tokens
            self.caches.touch(unit.unit_id, r.req.block_hashes[: r.next_token // bt
                                                               + (r.remaining_new == 0)])
            if r.remaining_new == 0 and r.inflight_chunks == 0:
                r.compute_done_s = now
                self._maybe_finish(r)
        self.batch_records.append(BatchRecord(
            b.id, b.inst, len({c.request_id for c in b.chunks}),
            sum(c.new_tokens for c in b.chunks), b.start_s, now, b.plan.layer_compute_s,
            b.stall_s))
        self.busy[b.inst] = False
        self._start_batch(b.inst)
        self._maybe_depart(b)

    def _maybe_depart(self, b: _BatchRun) -> None:
        if (not b.departed and b.flows_left == 0 and b.compute_done_s >= 0
                and b.reuse_next >= self.model.num_layers):
            b.departed = True
            self.engine.batch_ended(b.id)

    def _maybe_finish(self, r: _RequestRun) -> None:
        if r.compute_done_s < 0 or r.p2d_left > 0 or r.remaining_new > 0:
            return
        now = self.engine.now_s
        first_token = max(now, r.p2d_done_s) + r.decode_s
        ttft = first_token - r.req.arrival_s
        rid = r.req.request_id
        self.request_records.append(RequestRecord(
            rid, r.req.arrival_s, r.req.input_tokens, r.route.new_tokens(r.req),
            r.route.local_tokens, r.route.remote_tokens, r.unit.instance_id, r.unit.unit_id,
            r.route.remote_unit, r.slo_s, r.deadline_s, r.p2d_deadline_s, r.first_batch_s,
            r.compute_done_s,
            r.p2d_done_s, first_token, ttft, ttft <= r.slo_s * (1 + 1e-12),
            rid in self.engine.ever_pruned, r.evaluated))
        self.engine.request_done(rid)
        del self.open[rid]
        self.completed += 1
        if r.evaluated:
            self.evaluated_done += 1
        if r.index < self.warmup + self.n_eval:
            self.window_done += 1
            if self.progress is not None:  # counts the warm-up and evaluated requests only
                self.progress(self.window_done, self.warmup + self.n_eval)


class IsolatedTtft:
    """TTFT of a request alone on the idle cluster, with the routing it got (memoised).

    Runs the same simulator with only that request and fair sharing, so the SLO reference
    includes the request's own contention between its stages but nothing else. Memoised by
    what determines the result (:mod:`mfsched.sim.slomemo`): the token counts and the route's
    class (equivalent routes of any instance share an entry), in ``store`` (in memory by
    default; the runner passes the cluster's on-disk store, shared by its scheduler runs).
    """

    def __init__(self, cluster: SimCluster, store: SloStore | None = None) -> None:
        self.cluster = cluster
        self.store = SloStore() if store is None else store
        self._classes: dict[tuple[int, int], str] = {}
        self.runs = 0  # isolated simulations this object ran (the memo's misses)

    def key(self, req: Request, route: Routing) -> str:
        where = (route.unit, route.remote_unit)
        shape = self._classes.get(where)
        if shape is None:
            shape = self._classes[where] = route_class(self.cluster, *where)
        return f"{req.input_tokens},{route.local_tokens},{route.remote_tokens},{shape}"

    def __call__(self, req: Request, route: Routing) -> float:
        key = self.key(req, route)
        ttft = self.store.get(key)
        if ttft is None:
            ttft = self.simulate(req, route)
            self.store.put(key, ttft)
        return ttft

    def simulate(self, req: Request, route: Routing) -> float:
        """The isolated run itself, without the memo."""
        self.runs += 1
        alone = replace(req, request_id=0, arrival_s=0.0)
        solo = Serving(self.cluster, FairSharing(), [alone], lambda _r, _rt: float("inf"),
                       warmup=0, evaluated=1, forced_routes={0: route})
        records, _ = solo.run()
        return records.requests[0].ttft_s
