"""The driver contract: one event script through every runtime that runs a policy, same decisions.

Runtimes (each with the shared :class:`mfsched.policy.driver.PolicyDriver` behind its own
adapter):

* the simulator's :class:`~mfsched.sim.engine.Engine` (its real event loop, one decision per
  instant, WAKE events), over a scripted network that completes flows when the script says;
* the data-plane daemon's :class:`~mfsched.dataplane.runstate.RunState` with the daemon's real
  send scheduler over an in-memory transport that holds every chunk until the script releases
  its flow (then the transport's acknowledgements complete it, as on a real run);
* the worker side of the vLLM connector (:class:`~mfsched.integrations.vllm.gate.InProcessGate`:
  steps, tickets, layer boundaries, permits) and, for a script shaped like vLLM scheduler steps,
  the scheduler side (:class:`~mfsched.integrations.vllm.planner.StepPlanner`).

Every runtime sees the same requests, batches, layer boundaries, submissions, completions and
request ends at the same times; nothing moves a byte until its scripted completion, so every
progress view reads the same (the flow's size) and the policy's decisions can be compared
exactly. Compared after every instant: the notifications the policy received, the instants at
which it decided (the runtimes' wake-up handling), and what each runtime enforces: the
priority (level, rank) and rate cap of every live flow as the network / the software queues /
the permits hold them, and every request ever pruned. Every registered scheduler runs the
script; the script makes MFS promote by RLI and MLU, refresh P2D after the compute, rank by
RED, prune a hopeless request and forget requests whose flows were still moving.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from mfsched.policy import SCHEDULERS, BatchInfo, FlowInfo, Priority, RequestInfo, Stage
from mfsched.policy import make_policy as _make_policy

T = 2.0 ** -10  # one script tick (~1 ms), binary-exact
LAYERS = 4
LANES = 2
KV = 256  # bytes per token, layer and lane: one lane of one layer fits in one 32 KiB chunk
LINK_BPS = 1e8
PORT_EGRESS, PORT_INGRESS = 0, 1
INF = math.inf


# --- the script ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Req:
    key: str
    arrival_s: float
    deadline_s: float
    prompt: int
    load: int = 0  # external tokens loaded in its step (Stage 1)
    save: int = 0  # tokens whose KV it saves (Stage 3)


@dataclass(frozen=True)
class Instant:
    t: float
    complete: tuple[int, ...] = ()  # flow ids (numbered in submission order from 0)
    end_step: bool = False  # the current step's compute is over
    finished: tuple[str, ...] = ()  # requests vLLM finished (announced with the next step)
    step: tuple[Req, ...] | None = None  # a new step with these requests (None: no new step)
    layer: int | None = None  # layer boundary of the current step
    submit: tuple[tuple[str, str, int], ...] = ()  # (request, "load" | "save", layer)


def _script() -> list[Instant]:
    a = Req("a", 0.0, 40 * T, 100, load=64)
    b = Req("b", 0.0, 12 * T, 120, save=120)
    c = Req("c", 0.0, 200 * T, 100, save=100)
    d = Req("d", 4 * T, 6 * T, 128, save=128)  # hopeless: 256 KB of P2D at 25 MB/s in 1 tick
    e = Req("e", 8 * T, 300 * T, 64, load=32, save=64)  # its batch ranks last by RED

    def loads(key):
        return tuple((key, "load", layer) for layer in range(LAYERS))

    def saves(layer, *keys):
        return tuple((key, "save", layer) for key in keys)

    return [
        Instant(0 * T, step=(a, b, c), layer=0, submit=loads("a")),              # 0..3
        Instant(1 * T, complete=(0,), layer=1, submit=saves(0, "b", "c")),       # 4, 5
        Instant(2 * T, complete=(1,), layer=2, submit=saves(1, "b", "c")),       # 6, 7
        Instant(3 * T, complete=(2, 4), layer=3, submit=saves(2, "b", "c")),     # 8, 9
        Instant(4 * T, complete=(3,), submit=saves(3, "b", "c"), end_step=True),  # 10, 11
        Instant(5 * T, finished=("a",), step=(d,), layer=0, submit=saves(0, "d")),  # 12
        Instant(6 * T, complete=(5, 6), layer=1, submit=saves(1, "d")),          # 13
        Instant(7 * T, complete=(7, 8), layer=2, submit=saves(2, "d")),          # 14
        Instant(8 * T, complete=(9,), layer=3, submit=saves(3, "d")),            # 15
        Instant(9 * T, end_step=True, finished=("b", "d"), step=(e,), layer=0,
                submit=loads("e") + saves(0, "e")),                               # 16..20
        Instant(10 * T, complete=(10, 12, 16), layer=1, submit=saves(1, "e")),   # 21
        Instant(11 * T, complete=(11, 13, 17), layer=2, submit=saves(2, "e")),   # 22
        Instant(12 * T, complete=(14, 18), layer=3, submit=saves(3, "e")),       # 23
        Instant(13 * T, complete=(15, 19, 20), end_step=True, finished=("c", "e"), step=()),
        Instant(14 * T, complete=(21, 22)),
        Instant(16 * T, complete=(23,)),
    ]


def _policy(name: str):
    options = {}
    if name == "karuna":
        options["refresh_s"] = str(3 * T / 2)  # re-paces between the script's instants
    return _make_policy(name, 8, options)


def _policies() -> list[str]:
    return SCHEDULERS.names()


class _Translator:
    """The script in the policy's terms, exactly as the vLLM gate builds them (request ids in
    order of first appearance, flow ids in submission order, one batch per step)."""

    def __init__(self) -> None:
        self.rid: dict[str, int] = {}
        self.reqs: dict[str, Req] = {}
        self.step = 0
        self.next_fid = 0

    def request(self, r: Req) -> RequestInfo | None:
        self.reqs[r.key] = r
        if r.key in self.rid:
            return None
        self.rid[r.key] = len(self.rid)
        return RequestInfo(self.rid[r.key], r.arrival_s, r.deadline_s - r.arrival_s, r.prompt)

    def batch(self, reqs: tuple[Req, ...], now: float) -> BatchInfo | None:
        self.step += 1
        if not any(r.load or r.save for r in reqs):
            return None
        p2d, early = {}, 0.0
        for r in reqs:
            if r.load:
                early += r.load * KV * LANES
            if r.save:
                p2d[self.rid[r.key]] = {PORT_EGRESS: float(r.save * KV * LANES)}
        caps = {PORT_EGRESS: LINK_BPS * LANES, PORT_INGRESS: LINK_BPS * LANES}
        return BatchInfo(self.step, 0, tuple(self.rid[r.key] for r in reqs), LAYERS, now,
                         _layer_compute_s(), p2d, {PORT_INGRESS: early} if early else {}, caps)

    def flow(self, key: str, kind: str, layer: int, now: float) -> FlowInfo:
        r = self.reqs[key]
        tokens = r.load if kind == "load" else r.save
        size = float(tokens * KV)
        stage = Stage.KV_REUSE if kind == "load" else Stage.P2D
        port = PORT_INGRESS if kind == "load" else PORT_EGRESS
        fid = self.next_fid
        self.next_fid += 1
        return FlowInfo(fid, stage, self.step, (self.rid[key],), layer,
                        layer if stage == Stage.KV_REUSE else LAYERS, size, size * LANES,
                        LANES, ((port, size * LANES),), LINK_BPS,
                        r.deadline_s if stage == Stage.P2D else None, now)


def _layer_compute_s() -> float:
    return T / 8


# --- recording what the policy sees -----------------------------------------------------------


def _record(policy, log: list, decisions: list) -> None:
    """Log every notification (kind and its arguments but the time) and every decide time."""
    for name in ("on_request", "on_request_done", "on_batch_start", "on_batch_end",
                 "on_flow_submit", "on_layer_start", "on_batch_compute_done",
                 "on_flow_complete"):
        original = getattr(policy, name)

        def spy(*args, _name=name, _original=original):
            log.append((_name, repr(args[:-1])))
            return _original(*args)

        setattr(policy, name, spy)
    decide = policy.decide

    def deciding(now_s, progress):
        decisions.append(now_s)
        return decide(now_s, progress)

    policy.decide = deciding


class _Outcome:
    """What a runtime did: after each decision, the enforced state and what the policy was told
    since the previous decision; grouped by instant (a runtime may decide more than once in an
    instant, e.g. the gate at a layer boundary and again at its permits: the last state counts).
    """

    def __init__(self) -> None:
        self.log: list = []
        self.decisions: list[float] = []
        self._by_instant: dict[float, list] = {}

    def decided(self, now_s: float, state) -> None:
        slot = self._by_instant.setdefault(now_s, [None, []])
        slot[0] = state
        slot[1].extend(self.log)
        self.log.clear()

    @property
    def instants(self) -> list[float]:
        return sorted(self._by_instant)

    @property
    def states(self) -> list:
        return [self._by_instant[t][0] for t in self.instants]

    @property
    def notes(self) -> list:
        return [sorted(self._by_instant[t][1]) for t in self.instants]


def _observe(driver, out: _Outcome, state) -> None:
    """Look at the runtime's enforced state after each of its driver's decisions."""
    decide = driver.decide

    def deciding(now_s):
        d = decide(now_s)
        out.decided(now_s, state())
        return d

    driver.decide = deciding


def _state(flows: dict[int, tuple[Priority | None, float | None]], pruned) -> tuple:
    return (sorted((fid, tuple(p) if p else None, cap) for fid, (p, cap) in flows.items()),
            sorted(pruned))


# --- the simulator --------------------------------------------------------------------------------


class ScriptedNetwork:
    """The fluid network's interface for the engine; a flow completes at its scripted time."""

    def __init__(self, finish_s: dict[int, float]) -> None:
        self.finish_s = finish_s
        self.size: dict[int, float] = {}
        self.prio: dict[int, Priority] = {}
        self.cap: dict[int, float | None] = {}
        self.dirty = False
        self.delivered_bytes = 0.0

    def add(self, fid, links, weights, size_bytes, share=1.0) -> None:
        self.size[fid] = size_bytes
        self.dirty = True

    def set_priority(self, fid, priority) -> None:
        self.prio[fid] = priority
        self.dirty = True

    def set_rate_cap(self, fid, cap) -> None:
        self.cap[fid] = cap
        self.dirty = True

    def remaining_bytes(self, fid) -> float:
        return self.size.get(fid, 0.0)

    def rate_bytes_per_s(self, fid) -> float:
        return 0.0

    def advance(self, t) -> None:
        pass

    def reallocate(self) -> float:
        self.dirty = False
        return min((self.finish_s[f] for f in self.size), default=INF)

    def advance_and_pop(self, t) -> list[int]:
        done = sorted(f for f in self.size if self.finish_s[f] <= t)
        for f in done:
            self.delivered_bytes += self.size.pop(f)
        self.dirty = True
        return done


def run_simulator(name: str, script: list[Instant]) -> _Outcome:
    from mfsched.sim.engine import Engine, EventKind

    out = _Outcome()
    finish = {fid: i.t for i in script for fid in i.complete}
    net = ScriptedNetwork(finish)
    policy = _policy(name)
    _record(policy, out.log, out.decisions)
    engine = Engine(np.zeros(1), policy, network=net)
    tr = _Translator()
    links = SimpleNamespace(links=np.zeros(1, dtype=np.int64), weights=np.ones(1), share=1.0)

    def state():
        flows = {fid: (net.prio.get(fid), net.cap.get(fid)) for fid in engine.driver.flows}
        return _state(flows, engine.ever_pruned)

    _observe(engine.driver, out, state)
    current = [0]

    def dispatch(_kind, i: Instant) -> None:
        now = engine.now_s
        if i.end_step:
            engine.batch_compute_done(current[0])
        if i.step is not None:
            for key in i.finished:
                engine.request_done(tr.rid[key])
            for r in i.step:
                info = tr.request(r)
                if info is not None:
                    engine.request_arrived(info)
            batch = tr.batch(i.step, now)
            current[0] = tr.step
            if batch is not None:
                engine.batch_started(batch)
        if i.layer is not None:
            engine.layer_started(current[0], i.layer)
        for key, kind, layer in i.submit:
            engine.submit(tr.flow(key, kind, layer, now), links, lambda _fid: None)

    for i in script:
        engine.schedule(i.t, EventKind.ARRIVAL, i)
    engine.run(dispatch, lambda: False)
    return out


# --- the runtimes that decide on their own: a harness that keeps the same instants -----------


def _instants(script: list[Instant], complete, apply, decide, wake) -> None:
    """Run ``script`` like the simulator's loop: at every instant complete its flows (the
    simulator's network events come first), apply its other events and decide; between
    instants decide at the wake-up times the runtime asks for."""
    now = 0.0
    for i in [*script, None]:
        nxt = INF if i is None else i.t
        while (w := wake()) is not None and now < w < nxt:  # wake-ups before the next instant
            now = w
            decide(now)
        if i is None:
            break
        now = i.t
        complete(i, now)
        apply(i, now)
        decide(now)


# --- the daemon's run state ----------------------------------------------------------------------


class _HeldTransport:
    """The in-memory transport, but chunks wait until their flow is released."""

    def __init__(self, fabric, addrs, events) -> None:
        from mfsched.dataplane.memtransport import MemoryTransport

        class Held(MemoryTransport):
            def send(self, route, key, total) -> None:
                self.unacked.setdefault(route, {})[key] = total
                self.held.append((route, key, total))

        self.t = Held(fabric, addrs, events)
        self.t.held = []

    def release(self, flow_id: int) -> None:
        while True:
            mine = [h for h in self.t.held if h[1].flow_id == flow_id]
            if not mine:
                return
            self.t.held = [h for h in self.t.held if h[1].flow_id != flow_id]
            for route, key, total in mine:
                self.t._deliver(route, key, total)


def run_daemon(name: str, script: list[Instant]) -> _Outcome:
    from mfsched.dataplane import protocol
    from mfsched.dataplane.daemon import DaemonConfig
    from mfsched.dataplane.memtransport import MemoryFabric, MemoryTransport
    from mfsched.dataplane.runstate import RunState, hw_class_of
    from mfsched.dataplane.sender import SenderConfig, SendScheduler

    out = _Outcome()

    async def main() -> None:
        cfg = DaemonConfig(0, "unused", address_base="m", gpus_per_server=4,
                           sender=SenderConfig(window_bytes=64 << 20))
        fabric = MemoryFabric()
        clock = [0.0]
        run: RunState | None = None

        class Events:  # what the daemon does with its transport's events
            def chunk_acked(self, route, key) -> None:
                sender.chunk_acked(route, key)
                sender.pump()

            def chunk_failed(self, route, key, reason) -> None:  # pragma: no cover
                raise AssertionError(reason)

            def member_received(self, *args) -> None:
                pass

        held = _HeldTransport(fabric, cfg.addresses, Events())
        peer = MemoryTransport(fabric, [cfg.address(1, 0)], Events())
        await held.t.start()
        await peer.start()
        sender = SendScheduler(held.t, cfg.sender, lambda p: hw_class_of(p, 8),
                               lambda m: run.member_done(m.flow_id))
        policy = _policy(name)
        _record(policy, out.log, out.decisions)
        hello = {"run_id": "contract", "scheduler": name, "num_levels": 8, "epoch_s": 0.0}
        run = RunState(hello, cfg, sender, asyncio.get_running_loop(), to_runtime=lambda m: None,
                       policy=policy, clock=lambda: clock[0])
        tr = _Translator()
        current = [0]

        def complete(i: Instant, now: float) -> None:
            clock[0] = now
            for fid in i.complete:
                held.release(fid)

        def apply(i: Instant, now: float) -> None:
            if i.end_step:
                run.handle({"type": "batch_compute_done", "batch_id": current[0]}, None)
            if i.step is not None:
                for key in i.finished:
                    run.handle({"type": "request_done", "request_id": tr.rid[key]}, None)
                for r in i.step:
                    info = tr.request(r)
                    if info is not None:
                        run.handle(protocol.request_msg(info), None)
                batch = tr.batch(i.step, now)
                current[0] = tr.step
                if batch is not None:
                    run.handle(protocol.batch_msg(batch), None)
            if i.layer is not None:
                run.handle({"type": "layer_start", "batch_id": current[0], "layer": i.layer},
                           None)
            for key, kind, layer in i.submit:
                f = tr.flow(key, kind, layer, now)
                members = [(k, k, 4 + k, f.size_bytes) for k in range(LANES)]  # server 0 -> 1
                run.handle(protocol.flow_msg(f, members), None)

        def decide(now: float) -> None:
            clock[0] = now
            run.decide()

        def state():
            flows = {}
            for fid, f in run.flows.items():
                (m, *_) = f.members
                flows[fid] = (m.prio, m.cap_bytes_per_s)
                assert all((x.prio, x.cap_bytes_per_s) == flows[fid] for x in f.members)
            return _state(flows, run.reported_pruned)

        _observe(run.driver, out, state)
        _instants(script, complete, apply, decide, lambda: run.wake_s)
        run.close()

    asyncio.run(main())
    return out


# --- the vLLM worker's gate ----------------------------------------------------------------------


def _options():
    from mfsched.integrations.vllm.options import MFSOptions

    return MFSOptions(link_gbps=LINK_BPS / 1e9, layer_compute_s_per_token=0.0)


def _plan(step: int, now: float, reqs: tuple[Req, ...], finished: tuple[str, ...]):
    from mfsched.integrations.vllm.planner import RequestPlan, StepPlan

    plans = tuple(RequestPlan(r.key, r.arrival_s, r.deadline_s, r.prompt, r.load,
                              int(Stage.KV_REUSE), False, r.save, None, 0, False) for r in reqs)
    return StepPlan(step, now, LAYERS, KV, LANES, LINK_BPS, _layer_compute_s(), plans,
                    frozenset(), finished)


def run_gate(name: str, script: list[Instant]) -> _Outcome:
    from mfsched.integrations.vllm.gate import InProcessGate, TransferTicket

    out = _Outcome()
    policy = _policy(name)
    _record(policy, out.log, out.decisions)
    gate = InProcessGate(_options(), policy=policy)
    kd = gate.driver
    reqs: dict[str, Req] = {}
    step = [0]

    def complete(i: Instant, now: float) -> None:
        for fid in i.complete:
            gate.complete(fid, now)

    def apply(i: Instant, now: float) -> None:
        if i.end_step:
            gate.end_step(now)
        if i.step is not None:
            step[0] += 1
            reqs.update((r.key, r) for r in i.step)
            gate.begin_step(_plan(step[0], now, i.step, i.finished), now)
        if i.layer is not None:
            gate.layer_start(i.layer, now)
        for key, kind, layer in i.submit:
            r = reqs[key]
            stage = Stage.KV_REUSE if kind == "load" else Stage.P2D
            tokens = r.load if kind == "load" else r.save
            gate.submit(TransferTicket(key, kind, stage, layer,
                                       layer if stage == Stage.KV_REUSE else LAYERS,
                                       float(tokens * KV), LANES,
                                       r.deadline_s if stage == Stage.P2D else None), now)
        gate.permit(now)

    def state():
        flows = {fid: (kd.priority(fid), kd.caps.get(fid)) for fid in kd.driver.flows}
        return _state(flows, kd.driver.ever_pruned)

    _observe(kd.driver, out, state)
    _instants(script, complete, apply, gate.poll, lambda: kd.wake_s)
    return out


# --- the tests ----------------------------------------------------------------------------------


def _same(sim: _Outcome, other: _Outcome, what: str, polls: bool = False) -> None:
    """The same enforced state and the same notifications at every instant; the same decision
    instants (``polls``: the other runtime may decide at more instants, e.g. every step, but
    at least at the simulator's)."""
    if polls:
        assert set(sim.instants) <= set(other.instants), f"{what}: a decision was missed"
    else:
        assert sim.instants == other.instants, f"{what}: decisions at other instants"
    timeline = sorted(set(sim.instants) | set(other.instants))

    def at(out: _Outcome, t: float):
        k = max(i for i, ti in enumerate(out.instants) if ti <= t)
        return out.states[k], (out.notes[k] if out.instants[k] == t else [])

    for t in timeline:
        (sa, na), (sb, nb) = at(sim, t), at(other, t)
        assert sa == sb, f"{what}: enforced state differs after deciding at {t / T:g} ticks"
        assert na == nb, f"{what}: the policy was told different things by {t / T:g} ticks"
    for out in (sim, other):
        assert sorted(set(out.decisions)) == out.instants  # (every decision was observed)


@pytest.mark.parametrize("name", _policies())
def test_same_script_same_decisions_in_every_runtime(name):
    script = _script()
    sim = run_simulator(name, script)
    _same(sim, run_daemon(name, script), f"{name}: simulator vs daemon")
    _same(sim, run_gate(name, script), f"{name}: simulator vs vLLM gate")


def test_the_script_exercises_what_the_drivers_must_agree_on():
    """MFS: RLI promotions, RED ranks, pruning, requests forgotten only when their flows
    completed, wake-ups between instants; Karuna: rate caps. (If the script stopped exercising
    them, the contract would say little.)"""
    script = _script()
    mfs = run_simulator("mfs", script)
    seen = {}
    for st in mfs.states:
        for fid, prio, _ in st[0]:
            seen.setdefault(fid, set()).add(prio)
    assert len(seen[3]) > 1  # a's load of layer 3 was promoted as RLI shrank
    # e's batch ranks last by RED, behind a's batch: one rank above a's (ranks are sparse, so
    # the batches that end before e's renumber nobody)
    e_ranks = {p[1] for fid in (16, 17, 18, 19) for p in seen[fid]}
    assert len(e_ranks) == 1 and min(e_ranks) > max(p[1] for fid in range(4) for p in seen[fid])
    assert {p[0] for p in seen[12]} == {8}  # d's P2D rides the scavenger level (K = 8) ...
    assert mfs.states[-1][1] == [3]  # ... because d (request 3) was pruned
    assert set(mfs.decisions) - {i.t for i in script}  # decisions at wake-ups in between
    # e (request 4) finished at 13T with flows in flight: forgotten with its last flow at 16T
    assert ("on_request_done", "(4,)") in mfs.notes[-1]
    assert not any(("on_request_done", "(4,)") in notes for notes in mfs.notes[:-1])
    karuna = run_simulator("karuna", script)
    assert any(cap for st in karuna.states for _, _, cap in st[0])


# --- the vLLM scheduler side: a script of scheduler steps, replayed in the other runtimes ------


def _step_policy(name: str):
    """Wake-ups on the step grid: the scheduler side decides at its steps only (vLLM calls it
    once per engine step), so its periodic refreshes are compared where a step serves them."""
    options = {"mfs": {"p2d_refresh_s": str(T)}, "karuna": {"refresh_s": str(T)}}
    return _make_policy(name, 8, options.get(name, {}))


def run_planner(name: str) -> tuple[_Outcome, list]:
    """Scheduler steps every tick; returns what happened and the policy's inputs (instant,
    notification, arguments) to replay elsewhere."""
    from mfsched.integrations.vllm.options import MFSOptions
    from mfsched.integrations.vllm.planner import ModelShape, ScheduledRequest, StepPlanner

    out = _Outcome()
    policy = _step_policy(name)
    inputs: list = []
    clock = [0.0]
    for hook in ("on_request", "on_request_done", "on_batch_start", "on_batch_compute_done",
                 "on_flow_submit", "on_flow_complete", "on_layer_start"):
        original = getattr(policy, hook)

        def spy(*args, _hook=hook, _original=original):
            inputs.append((clock[0], _hook, args[:-1]))
            return _original(*args)

        setattr(policy, hook, spy)
    _record(policy, out.log, out.decisions)
    options = MFSOptions(link_gbps=LINK_BPS / 1e9, layer_compute_s_per_token=T / 1000)
    planner = StepPlanner(options, ModelShape(LAYERS, KV, LANES), produces_kv=True,
                          policy=policy)
    kd = planner.driver
    _observe(kd.driver, out, lambda: _state(
        {fid: (kd.priority(fid), kd.caps.get(fid)) for fid in kd.driver.flows},
        kd.driver.ever_pruned))

    def add(key, prompt, deadline_s):
        planner.add_request(key, clock[0], 0, prompt, {"deadline_s": deadline_s}, clock[0])

    def step(t, *scheduled):
        clock[0] = t
        return planner.plan_step(t, [ScheduledRequest(*s) for s in scheduled])

    clock[0] = 0.0
    add("a", 100, 40 * T)
    add("b", 120, 12 * T)
    planner.note_load("a", 64, is_async=False)
    step(0.0, ("a", 0, 36), ("b", 0, 120))       # a's loads, a's and b's saves
    step(1 * T, ("a", 36, 64))                    # the rest of a's prompt
    clock[0] = 2 * T
    add("c", 128, 3 * T)                          # hopeless
    planner.finish_request("a", True, 2 * T)      # a's saves still go out (asynchronously)
    step(2 * T, ("c", 0, 128))
    clock[0] = 3 * T
    planner.transfers_done((), ("a",), 3 * T)     # ... now they went
    step(3 * T)
    clock[0] = 4 * T
    planner.finish_request("b", False, 4 * T)
    planner.finish_request("c", False, 4 * T)
    for k in range(4, 8):
        step(k * T)
    return out, inputs


def _replay_simulator(name: str, inputs: list) -> _Outcome:
    from mfsched.sim.engine import Engine, EventKind

    out = _Outcome()
    finish = {args[0]: t for t, hook, args in inputs if hook == "on_flow_complete"}
    net = ScriptedNetwork(finish)
    policy = _step_policy(name)
    _record(policy, out.log, out.decisions)
    engine = Engine(np.zeros(1), policy, network=net)
    _observe(engine.driver, out, lambda: _state(
        {fid: (net.prio.get(fid), net.cap.get(fid)) for fid in engine.driver.flows},
        engine.ever_pruned))
    links = SimpleNamespace(links=np.zeros(1, dtype=np.int64), weights=np.ones(1), share=1.0)
    calls = {
        "on_request": lambda info: engine.request_arrived(info),
        "on_request_done": lambda rid: engine.request_done(rid),
        "on_batch_start": lambda info: engine.batch_started(info),
        "on_batch_compute_done": lambda bid: engine.batch_compute_done(bid),
        "on_layer_start": lambda bid, layer: engine.layer_started(bid, layer),
        "on_flow_submit": lambda info: engine.submit(info, links, lambda _fid: None),
    }
    for t, hook, args in inputs:
        if hook in calls:
            engine.schedule(t, EventKind.ARRIVAL, (calls[hook], args))
    engine.run(lambda _kind, call: call[0](*call[1]), lambda: False)
    return out


@pytest.mark.parametrize("name", _policies())
def test_scheduler_side_decides_as_the_simulator_does(name):
    planner, inputs = run_planner(name)
    _same(_replay_simulator(name, inputs), planner, f"{name}: simulator vs vLLM scheduler side",
          polls=True)
    # a finished with its saves still going out: forgotten when vLLM reported them sent
    assert [t for t, hook, args in inputs if hook == "on_request_done" and args == (0,)] == \
        [3 * T]
    if name == "mfs":
        assert planner.states[-1][1] == [2]  # c (request 2) was pruned
