"""Cost of scheduling decisions with 1,000 and 10,000 active flows.

    python bench/bench_policy.py [--flows 1000,10000] [--repeat 200] [--write docs/results.md]

A synthetic population: batches of 4 requests with 10 flows each (4 P2D, 4 Stage-1 with
targets spread over 32 layers, 2 collectives), every flow over 4 of 256 ports, half of its bytes
left. For every policy and population size it times, as medians over ``--repeat`` samples:

* a decision on one new flow (``on_flow_submit`` + ``decide``),
* a layer-boundary update of one batch (``on_layer_start`` + ``decide``),
* a batch arrival (``on_batch_start`` + ``decide``: for MFS the RED order and the feasibility
  check over every active batch).

Fair sharing, the cheapest possible policy, runs in the same process as the reference.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from _report import save

from mfsched.policy import BatchInfo, FlowInfo, RequestInfo, Stage, make_policy

PORTS = 256
LAYERS = 32


class _Progress:
    def __init__(self) -> None:
        self.size: dict[int, float] = {}

    def remaining_bytes(self, flow_id: int) -> float:
        return self.size.get(flow_id, 1e6) / 2

    def rate_bytes_per_s(self, flow_id: int) -> float:
        return 1e9


class _Population:
    def __init__(self, policy, progress: _Progress, rng: random.Random) -> None:
        self.p, self.progress, self.rng = policy, progress, rng
        self.next_flow = self.next_batch = self.next_req = 0
        self.batches: list[int] = []

    def _ports(self) -> tuple[tuple[int, float], ...]:
        return tuple((port, 2e6) for port in self.rng.sample(range(PORTS), 4))

    def flow(self, batch: int, rids: tuple[int, ...], stage: Stage, now: float) -> None:
        self.next_flow += 1
        fid = self.next_flow
        size = self.rng.uniform(1e5, 4e6)
        self.progress.size[fid] = size
        target = self.rng.randrange(LAYERS) if stage == Stage.KV_REUSE else 0
        self.p.on_flow_submit(FlowInfo(
            fid, stage, batch, rids, 0, LAYERS if stage == Stage.P2D else target, size, size, 1,
            self._ports(), 8e10, now + 0.5 if stage == Stage.P2D else None, now), now)

    def batch(self, now: float) -> int:
        self.next_batch += 1
        rids = tuple(range(self.next_req + 1, self.next_req + 5))
        self.next_req += 4
        for r in rids:
            self.p.on_request(RequestInfo(r, now, self.rng.uniform(0.2, 1.0), 1000), now)
        ports = {port: 1e6 for port in self.rng.sample(range(PORTS), 8)}
        self.p.on_batch_start(BatchInfo(
            self.next_batch, 0, rids, LAYERS, now, 1e-3,
            {r: {port: 1e6 for port in self.rng.sample(range(PORTS), 4)} for r in rids},
            ports, {port: 8e10 for port in range(PORTS)}), now)
        for k in range(10):
            stage = (Stage.P2D, Stage.KV_REUSE, Stage.COLLECTIVE)[0 if k < 4 else 1 if k < 8
                                                                  else 2]
            self.flow(self.next_batch, (rids[k % 4],) if stage != Stage.COLLECTIVE else rids,
                      stage, now)
        self.batches.append(self.next_batch)
        return self.next_batch


def _median_us(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return 1e6 * statistics.median(samples)


def measure(name: str, flows: int, repeat: int) -> dict:
    policy = make_policy(name)
    progress = _Progress()
    pop = _Population(policy, progress, random.Random(0))
    now = 0.0
    while pop.next_flow < flows:
        pop.batch(now)
    policy.decide(now, progress)
    clock = [now]

    def tick() -> float:
        clock[0] += 1e-6
        return clock[0]

    def new_flow():
        t = tick()
        pop.flow(pop.rng.choice(pop.batches), (1,), Stage.KV_REUSE, t)
        policy.decide(t, progress)

    def boundary():
        t = tick()
        policy.on_layer_start(pop.rng.choice(pop.batches), pop.rng.randrange(LAYERS), t)
        policy.decide(t, progress)

    def arrival():
        t = tick()
        pop.batch(t)
        policy.decide(t, progress)

    return {"policy": name, "active_flows": flows,
            "new_flow_us": _median_us(new_flow, repeat),
            "layer_boundary_us": _median_us(boundary, repeat),
            "batch_arrival_us": _median_us(arrival, max(5, repeat // 10))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", default="1000,10000")
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    rows = [measure(name, int(n), args.repeat) for n in args.flows.split(",")
            for name in ("fs", "mfs", "oracle")]
    lines = ["| policy | active flows | new flow + decide, us | layer boundary + decide, us "
             "| batch arrival + decide, us |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['policy']} | {r['active_flows']:,} | {r['new_flow_us']:.1f} | "
                     f"{r['layer_boundary_us']:.1f} | {r['batch_arrival_us']:.1f} |")
    save("bench_policy", rows, "\n".join(lines), args.write, "bench-policy")


if __name__ == "__main__":
    main()
