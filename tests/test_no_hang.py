"""No run hangs (issue 14): the engine's bounds on events and simulated time stop a stuck run
with an error naming the stuck flow and request, and inputs that would get there are refused
at the edge."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from mfsched.errors import SimulationStuck, UserError
from mfsched.experiments import runner
from mfsched.experiments.config import SimConfig
from mfsched.policy.fair import FairSharing
from mfsched.policy.types import BatchInfo, FlowInfo, Stage
from mfsched.sim.engine import DRAIN_FACTOR, IDLE_EVENTS, Engine, EventKind
from mfsched.sim.serving import Serving
from mfsched.validate import MAX_SIMULATED_S


class _Links:
    def __init__(self) -> None:
        self.links = np.array([0], dtype=np.int64)
        self.weights = np.ones(1)
        self.share = 1.0


def _flow(fid: int, size: float, deadline_s: float | None = None) -> FlowInfo:
    return FlowInfo(fid, Stage.P2D, 7, (42,), 3, 32, size, size, 1, ((0, size),), 8e6,
                    deadline_s, 0.0)


class WakesAtNow(FairSharing):
    """A broken policy: asks to be woken at the very instant it decides, forever."""

    def decide(self, now_s, progress):
        return super().decide(now_s, progress)._replace(wake_s=now_s)


class Crawls(FairSharing):
    """A broken policy: caps every flow at 1 byte/s."""

    def decide(self, now_s, progress):
        d = super().decide(now_s, progress)
        return d._replace(rate_caps=dict.fromkeys(d.priorities, 1.0))


def _engine(policy) -> Engine:
    eng = Engine(np.array([1e6]), policy)  # one link, 1 MB/s
    eng.schedule(0.0, EventKind.ARRIVAL, None)
    # the flows' batch: the policy driver refuses flows of a batch it does not know
    eng.batch_started(BatchInfo(7, 0, (42,), 32, 0.0, 1e-3))
    return eng


def test_a_policy_that_wakes_itself_forever_is_stopped_by_the_event_bound():
    eng = _engine(WakesAtNow())
    eng.submit(_flow(1, 1e6), _Links(), lambda fid: None)
    with pytest.raises(SimulationStuck) as info:
        eng.run(lambda kind, payload: None, lambda: False)
    msg = str(info.value)
    assert f"{IDLE_EVENTS + 1:,} events in a row did no work" in msg
    assert "slowest flow in flight: flow 1 (P2D of batch 7, layer 3, request 42)" in msg
    assert eng.events == IDLE_EVENTS + 2  # the arrival, then exactly one event past the bound


def test_a_flow_that_never_finishes_is_stopped_by_the_time_bound():
    eng = _engine(Crawls())
    eng.submit(_flow(1, 1e6, deadline_s=2.0), _Links(), lambda fid: None)
    # alone the flow takes 8 * 1e6 bytes / 8e6 bit/s = 1 s; the latest deadline is 2 s
    with pytest.raises(SimulationStuck) as info:
        eng.run(lambda kind, payload: None, lambda: False)
    msg = str(info.value)
    bound = 2.0 + DRAIN_FACTOR * 1.0 + 1.0
    assert f"past this run's bound of {bound:.6g} s" in msg
    assert msg.startswith("simulated time would reach 1e+06 s")  # when the flow would end
    assert "flow 1 (P2D of batch 7, layer 3, request 42), 1e+06 of 1e+06 bytes left at 1 B/s"\
        in msg
    assert eng.now_s <= bound


def test_time_never_passes_what_the_clock_resolves_in_nanoseconds():
    eng = Engine(np.array([1e6]), FairSharing())
    eng.schedule(MAX_SIMULATED_S * 0.9, EventKind.ARRIVAL, None)
    eng.schedule(MAX_SIMULATED_S * 1.1, EventKind.COMPUTE, None)  # work of 1.1 x the horizon
    with pytest.raises(SimulationStuck, match=re.escape("at most 8.38861e+06 s")):
        eng.run(lambda kind, payload: None, lambda: False)
    assert np.spacing(eng.now_s) < 1e-9


def test_a_stuck_serving_run_names_its_oldest_unfinished_request():
    p = runner.prepare(SimConfig(requests=3, warmup=0, tail=0, slo_s=1.0))
    sim = Serving(p.cluster, Crawls(), p.requests, p.slo_fn, warmup=0, evaluated=3)
    with pytest.raises(SimulationStuck) as info:
        sim.run()
    msg = str(info.value)
    assert "slowest flow in flight: flow" in msg
    first = p.requests[0]
    assert (f"oldest unfinished request: {first.request_id} (arrived at "
            f"{first.arrival_s:.6g} s, {first.input_tokens} tokens;") in msg


def test_healthy_runs_stay_far_inside_the_bounds():
    """The time bound's headroom, measured: an overloaded run (4 requests/s per GPU on a
    tenth of the bandwidth) drains in a small fraction of its serial work."""
    p = runner.prepare(SimConfig(requests=60, warmup=10, rate_per_gpu=4, bandwidth_scale=0.1))
    sim = Serving(p.cluster, FairSharing(), p.requests, p.slo_fn, warmup=p.warmup,
                  evaluated=p.evaluated, history=p.history)
    sim.run()
    eng = sim.engine
    drain_s = eng.now_s - max(r.arrival_s for r in p.requests)
    assert 0 < drain_s < 0.2 * eng.work_s  # measured ~0.06; the bound allows DRAIN_FACTOR = 10


@pytest.mark.parametrize("lines,keep,fragment", [
    # 0 mixed with epoch milliseconds: hung in the engine before issue 14
    (['{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}',
      '{"timestamp": 1700000000000, "input_length": 10, "output_length": 1, "hash_ids": [1]}'],
     True, ":2: the timestamps span 1.7e+09 s (line 1 to line 2)"),
    (['{"timestamp": 1e13, "input_length": 10, "output_length": 1, "hash_ids": [1]}',
      '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}'],
     True, ":1: the timestamps span 1e+10 s (line 2 to line 1)"),
])
def test_time_magnitudes_the_clock_cannot_resolve_are_refused(tmp_path, lines, keep, fragment):
    trace = tmp_path / "t.jsonl"
    trace.write_text("\n".join(lines) + "\n")
    cfg = SimConfig(trace=str(trace), keep_timestamps=keep, requests=2, warmup=0)
    with pytest.raises(UserError, match=re.escape(fragment)):
        runner.prepare(cfg)
    # without --keep-timestamps the trace's times are replaced by Poisson arrivals: fine
    assert len(runner.prepare(SimConfig(trace=str(trace), requests=2, warmup=0)).requests) == 2


def test_rates_whose_arrivals_span_centuries_are_refused():
    with pytest.raises(UserError, match=r"--rate 1e-09: 3 requests .* arrive over"):
        runner.prepare(SimConfig(rate_per_gpu=1e-9, requests=3, warmup=0, tail=0))


def test_session_history_beyond_memory_is_refused():
    with pytest.raises(UserError, match=r"--rate 100000: .* need .* requests of history"):
        runner.prepare(SimConfig(rate_per_gpu=1e5, requests=3, warmup=0, tail=0))


def test_stuck_is_one_line_exit_3_through_the_cli(monkeypatch, capsys):
    """The CLI reports a stuck run as a bug: one line, exit code 3."""
    from mfsched import cli

    def stuck(*args, **kwargs):
        raise SimulationStuck("simulated time would reach 99 s; slowest flow in flight: ...")

    monkeypatch.setattr(runner, "run", stuck)
    monkeypatch.setattr("sys.argv", ["mfsched", "simulate", "--requests", "2", "--warmup", "0",
                                     "--scheduler", "fs"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 3
    assert err[-1].startswith("mfsched: error: the simulation is stuck, a bug to report: ")
    assert json.dumps(err)  # one printable line
