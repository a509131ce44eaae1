"""Simulator speed and memory: the default run and the paper-scale run.

    python bench/bench_sim.py [--repeat N] [--only default|paper] [--write docs/results.md]

Each scenario runs in a child process pinned to one core (``sched_setaffinity``), so its peak
resident memory (``ru_maxrss``) is its own. In the same process the child first times a small
fixed *reference* simulation, so results are also reported as a ratio to it: these machines are
shared and noisy, and the ratio moves less than the absolute time. Figures are medians over
``--repeat`` children. JSON goes to ``bench/results/bench_sim.json``; ``--write`` replaces the
section between the bench-sim markers of a Markdown file.

Scenarios:

* ``default`` — exactly ``mfsched simulate`` with no arguments (testbed, Mixtral-8x7B TP1/EP8,
  agent workload, 1 req/s per prefill GPU, 512 warm-up + 1024 evaluated requests, every
  registered scheduler). Target: under 60 s.
* ``paper`` — the paper's large-scale set-up: ``fattree`` with 256 servers (2048 GPUs),
  Mixtral-8x22B TP4/EP8 in 32-GPU instances, 512 + 1024 requests (1536), fs and mfs (when
  registered). Target: under 10 minutes and 8 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import save


def _reference_s() -> float:
    from mfsched.experiments import runner
    from mfsched.experiments.config import SimConfig

    cfg = SimConfig(requests=100, warmup=20, tail=0, slo_s=1.0)
    runner.run(cfg, ["fs"])  # load compiled kernels before timing
    t = time.perf_counter()
    runner.run(cfg, ["fs"])
    return time.perf_counter() - t


def _child(name: str) -> dict:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from mfsched.experiments import runner
    from mfsched.experiments.config import SimConfig
    from mfsched.policy import SCHEDULERS

    ref = _reference_s()
    if name == "default":
        cfg, names = SimConfig(), SCHEDULERS.names()
    else:
        cfg = SimConfig(scenario="fattree", model="mixtral-8x22b", tp=4, ep=8)
        names = [n for n in ("fs", "mfs") if n in SCHEDULERS]
    t = time.perf_counter()
    prepared = runner.prepare(cfg)
    results = runner.run(prepared, names)
    wall = time.perf_counter() - t
    events = sum(r.stats.events for r in results)
    return {
        "scenario": name, "schedulers": names, "wall_s": wall, "reference_s": ref,
        "ratio_to_reference": wall / ref, "events": events, "events_per_s": events / wall,
        "per_scheduler_wall_s": {r.scheduler: r.stats.wall_time_s for r in results},
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "requests_evaluated": results[0].summary.requests_evaluated,
        "gpus": prepared.cluster.topology.num_gpus,
    }


def _median_run(name: str, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True,
                             text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = dict(runs[0])
    for key in ("wall_s", "reference_s", "ratio_to_reference", "events_per_s", "peak_rss_mib"):
        med[key] = statistics.median(r[key] for r in runs)
    med["repeats"] = repeat
    med["walls_s"] = [r["wall_s"] for r in runs]
    return med


def _markdown(results: list[dict]) -> str:
    lines = ["| scenario | GPUs | schedulers | evaluated requests | wall s (median) | "
             "x reference | events | events/s | peak RSS MiB | target |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    targets = {"default": "< 60 s", "paper": "< 600 s, < 8192 MiB"}
    for r in results:
        lines.append(
            f"| {r['scenario']} | {r['gpus']} | {', '.join(r['schedulers'])} | "
            f"{r['requests_evaluated']} | {r['wall_s']:.1f} | {r['ratio_to_reference']:.1f} | "
            f"{r['events']:,} | {r['events_per_s']:,.0f} | {r['peak_rss_mib']:.0f} | "
            f"{targets[r['scenario']]} |")
    per = "; ".join(f"{r['scenario']}: " + ", ".join(
        f"{k} {v:.1f} s" for k, v in r["per_scheduler_wall_s"].items()) for r in results)
    lines.append("")
    lines.append(f"Per scheduler (last run): {per}. Reference run (testbed, 120 requests, fs): "
                 + ", ".join(f"{r['reference_s']:.2f} s" for r in results) + ".")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=("default", "paper"))
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child)))
        return
    names = [args.only] if args.only else ["default", "paper"]
    results = [_median_run(n, args.repeat if n == "default" else 1) for n in names]
    save("bench_sim", results, _markdown(results), args.write, "bench-sim")


if __name__ == "__main__":
    main()
