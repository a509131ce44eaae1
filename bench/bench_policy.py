"""Cost of scheduling decisions with 1,000 and 10,000 active flows, and of one allocation.

    python bench/bench_policy.py [--flows 1000,10000] [--repeat 200] [--write docs/results.md]

A synthetic population: batches of 4 requests with 10 flows each (4 P2D, 4 Stage-1 with
targets spread over 32 layers, 2 collectives), every flow over 4 of 256 ports, half of its bytes
left. The progress view also offers every flow in bulk (``flow_arrays``) as the simulator's
network does, so MFS's pruning, PIAS and the oracle read it as in a simulation (before, they
read it through the per-flow getters here); a flow enters it, untimed, just before the policy
hears of it. For every policy and population size it times, as medians over ``--repeat`` samples,
only the calls into the policy (each sample's flow, batch and request descriptions are built
before the phase is timed):

* a decision on one new flow (``on_flow_submit`` + ``decide``),
* a layer-boundary update of one batch (``on_layer_start`` + ``decide``), also divided by the
  flows the boundary re-examines (the batch's Stage-1 and P2D flows: the issue's "per flow"),
* a batch arrival (``on_request`` x 4 + ``on_batch_start`` + 10 x ``on_flow_submit`` +
  ``decide``: for MFS the RED order and the feasibility check over every active batch).

Fair sharing, the cheapest possible policy, runs in the same process as a reference, and so
does the reference simulation of :func:`_report.reference_s` (ratios to it are in the JSON).

The allocation rows time one full reallocation (:meth:`FluidNetwork.reallocate`) of 10,000
flows between random GPUs of the paper's fat-tree (256 servers x 8 GPUs, 8,192 links), with
priorities in 8 levels and either one rank per level (8 classes) or 1,000 ranks per level (many
small classes, as MFS's per-request ranks make), median over ``--repeat``.

Issue 11's targets: MFS batch arrival + decide at 10,000 active flows < 1 ms; MFS new flow and
layer boundary + decide < 2 us per flow; an allocation of 10,000 flows on the fat-tree < 2 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np
from _report import reference_s, save

from mfsched.policy import BatchInfo, FlowInfo, Priority, RequestInfo, Stage, make_policy
from mfsched.sim.network import FluidNetwork
from mfsched.sim.topology import FatTreeConfig, build_topology

PORTS = 256
LAYERS = 32


class _Progress:
    """Half of every flow's bytes left, at 1 GB/s; also in bulk (``flow_arrays``), as the
    simulator's network offers it to the policies that read every flow (MFS's pruning)."""

    def __init__(self) -> None:
        self.size: dict[int, float] = {}
        self._ids = np.zeros(1024, dtype=np.int64)
        self._remaining = np.zeros(1024)
        self._rates = np.zeros(1024)

    def add(self, flow_id: int, size: float) -> None:
        self.size[flow_id] = size
        n = len(self.size)
        if n > len(self._ids):
            self._ids, self._remaining, self._rates = (
                np.concatenate([a, np.zeros_like(a)])
                for a in (self._ids, self._remaining, self._rates))
        self._ids[n - 1], self._remaining[n - 1], self._rates[n - 1] = flow_id, size / 2, 1e9

    def remaining_bytes(self, flow_id: int) -> float:
        return self.size.get(flow_id, 1e6) / 2

    def rate_bytes_per_s(self, flow_id: int) -> float:
        return 1e9

    def flow_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.size)
        return self._ids[:n], self._remaining[:n], self._rates[:n]


class _Population:
    """Builds the synthetic population's events; the timed calls only hand them to the policy
    (building a ``FlowInfo`` or ``BatchInfo`` costs microseconds of its own)."""

    def __init__(self, policy, progress: _Progress, rng: random.Random) -> None:
        self.p, self.progress, self.rng = policy, progress, rng
        self.next_flow = self.next_batch = self.next_req = 0
        self.batches: list[int] = []
        self.promotable: dict[int, int] = {}  # batch -> its Stage-1 and P2D flows

    def _ports(self) -> tuple[tuple[int, float], ...]:
        return tuple((port, 2e6) for port in self.rng.sample(range(PORTS), 4))

    def make_flow(self, batch: int, rids: tuple[int, ...], stage: Stage, now: float) -> FlowInfo:
        self.next_flow += 1
        fid = self.next_flow
        size = self.rng.uniform(1e5, 4e6)
        target = self.rng.randrange(LAYERS) if stage == Stage.KV_REUSE else 0
        if stage != Stage.COLLECTIVE:
            self.promotable[batch] = self.promotable.get(batch, 0) + 1
        return FlowInfo(
            fid, stage, batch, rids, 0, LAYERS if stage == Stage.P2D else target, size, size, 1,
            self._ports(), 8e10, now + 0.5 if stage == Stage.P2D else None, now)

    def make_batch(self, now: float) -> tuple[list[RequestInfo], BatchInfo, list[FlowInfo]]:
        self.next_batch += 1
        rids = tuple(range(self.next_req + 1, self.next_req + 5))
        self.next_req += 4
        requests = [RequestInfo(r, now, self.rng.uniform(0.2, 1.0), 1000) for r in rids]
        ports = {port: 1e6 for port in self.rng.sample(range(PORTS), 8)}
        info = BatchInfo(
            self.next_batch, 0, rids, LAYERS, now, 1e-3,
            {r: {port: 1e6 for port in self.rng.sample(range(PORTS), 4)} for r in rids},
            ports, {port: 8e10 for port in range(PORTS)})
        flows = []
        for k in range(10):
            stage = (Stage.P2D, Stage.KV_REUSE, Stage.COLLECTIVE)[0 if k < 4 else 1 if k < 8
                                                                  else 2]
            flows.append(self.make_flow(
                self.next_batch, (rids[k % 4],) if stage != Stage.COLLECTIVE else rids,
                stage, now))
        self.batches.append(self.next_batch)
        return requests, info, flows

    def start(self, batch: tuple[list[RequestInfo], BatchInfo, list[FlowInfo]],
              now: float) -> None:
        requests, info, flows = batch
        for r in requests:
            self.p.on_request(r, now)
        self.p.on_batch_start(info, now)
        for f in flows:
            self.p.on_flow_submit(f, now)


def _median_us(fn, events, before=None) -> float:
    """Median wall time of ``fn(event)`` over the events, in us (``before(event)`` untimed
    first: what the simulator does outside the policy, e.g. adding the flows to the network)."""
    samples = []
    for event in events:
        if before is not None:
            before(event)
        t = time.perf_counter()
        fn(event)
        samples.append(time.perf_counter() - t)
    return 1e6 * statistics.median(samples)


def measure(name: str, flows: int, repeat: int) -> dict:
    policy = make_policy(name)
    progress = _Progress()
    pop = _Population(policy, progress, random.Random(0))

    def expose(flows) -> None:  # the flows enter the progress view as they enter the network
        for f in flows:
            progress.add(f.flow_id, f.size_bytes)

    now = 0.0
    while pop.next_flow < flows:
        batch = pop.make_batch(now)
        expose(batch[2])
        pop.start(batch, now)
    policy.decide(now, progress)
    # each phase's events built before it is timed, 1 us apart
    clock = [now]

    def instant() -> float:
        clock[0] += 1e-6
        return clock[0]

    def new_flow(event):
        t, flow = event
        policy.on_flow_submit(flow, t)
        policy.decide(t, progress)

    def boundary(event):
        t, batch, layer = event
        policy.on_layer_start(batch, layer, t)
        policy.decide(t, progress)

    def arrival(event):
        t, batch = event
        pop.start(batch, t)
        policy.decide(t, progress)

    events = [(t, pop.make_flow(pop.rng.choice(pop.batches), (1,), Stage.KV_REUSE, t))
              for t in (instant() for _ in range(repeat))]
    new_flow_us = _median_us(new_flow, events, lambda event: expose((event[1],)))
    events = [(instant(), pop.rng.choice(pop.batches), pop.rng.randrange(LAYERS))
              for _ in range(repeat)]
    promoted = statistics.median(pop.promotable[batch] for _, batch, _ in events)
    boundary_us = _median_us(boundary, events)
    events = [(t, pop.make_batch(t)) for t in (instant() for _ in range(max(5, repeat // 10)))]
    return {"policy": name, "active_flows": flows, "new_flow_us": new_flow_us,
            "layer_boundary_us": boundary_us,
            "layer_boundary_per_flow_us": boundary_us / promoted,
            "batch_arrival_us": _median_us(arrival, events, lambda event: expose(event[1][2]))}


def measure_allocation(flows: int, ranks: int, repeat: int) -> dict:
    topo = build_topology(FatTreeConfig())
    net = FluidNetwork(topo.capacity_bytes_per_s)
    rng = random.Random(0)
    for fid in range(flows):
        src, dst = rng.sample(range(topo.num_gpus), 2)
        links = np.array(topo.path(src, dst), dtype=np.int64)
        net.add(fid, links, np.ones(len(links)), rng.uniform(1e5, 4e6),
                Priority(rng.randrange(8), rng.randrange(ranks)))
    net.reallocate()  # compile or load the kernels

    def allocate(_):
        net.dirty = True
        net.reallocate()

    return {"active_flows": flows, "classes": 8 * ranks if ranks > 1 else 8,
            "ranks_per_level": ranks, "allocation_us": _median_us(allocate, range(repeat))}


_TARGETS_US = {"new_flow_us": 2.0, "layer_boundary_per_flow_us": 2.0,
               "batch_arrival_us": 1000.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", default="1000,10000")
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    ref = reference_s()
    rows = [measure(name, int(n), args.repeat) for n in args.flows.split(",")
            for name in ("fs", "mfs", "oracle")]
    allocations = [measure_allocation(10_000, ranks, args.repeat) for ranks in (1, 1000)]
    lines = ["| policy | active flows | new flow + decide, us | layer boundary + decide, us "
             "(per flow it moves) | batch arrival + decide, us |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['policy']} | {r['active_flows']:,} | {r['new_flow_us']:.1f} | "
                     f"{r['layer_boundary_us']:.1f} ({r['layer_boundary_per_flow_us']:.2f}) | "
                     f"{r['batch_arrival_us']:.1f} |")
    mfs = max((r for r in rows if r["policy"] == "mfs"), key=lambda r: r["active_flows"])
    lines += ["", "| issue 11 target | target | measured (median) | x reference |",
              "|---|---:|---:|---:|"]
    for key, what in (("batch_arrival_us", "MFS batch arrival + decide"),
                      ("new_flow_us", "MFS new flow + decide"),
                      ("layer_boundary_per_flow_us",
                       "MFS layer boundary + decide, per flow it moves")):
        lines.append(f"| {what}, {mfs['active_flows']:,} active flows | "
                     f"< {_TARGETS_US[key]:g} us | {mfs[key]:.1f} us | "
                     f"{mfs[key] / 1e6 / ref:.2g} |")
    for a in allocations:
        lines.append(f"| allocation of 10,000 flows on the fat-tree, {a['classes']:,} classes "
                     f"| < 2000 us | {a['allocation_us']:.0f} us | "
                     f"{a['allocation_us'] / 1e6 / ref:.2g} |")
    lines += ["", f"Reference run (testbed, 120 requests, fs) in the same process: {ref:.2f} s."]
    data = {"reference_s": ref, "policies": rows, "allocation": allocations}
    save("bench_policy", data, "\n".join(lines), args.write, "bench-policy")


if __name__ == "__main__":
    main()
