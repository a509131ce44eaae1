"""Simulator speed and memory: the default command, its first run, and paper-scale runs.

    python bench/bench_sim.py [--repeat N] [--only cli,cold,default,paper]
                              [--paper-schedulers fs,mfs,...] [--write docs/results.md]

Rows (issue 11's targets, each next to its target in the table):

* ``cli`` — ``mfsched simulate`` exactly as a user types it (testbed, Mixtral-8x7B TP1/EP8,
  agent workload, 512 warm-up + 1,024 evaluated requests, every registered scheduler, in
  parallel worker processes: ``--jobs`` defaults to the CPUs), with warm caches (compiled
  kernels and the SLO memo on disk, from an untimed first run) and the modules' byte code
  compiled, as ``pip install .`` leaves them. Target: < 10 s wall.
* ``cold`` — the same command with an empty cache directory (``MFSCHED_CACHE_DIR``): the
  isolated TTFTs behind the SLOs are computed (and numba's kernels compiled, where the core
  runs from source: ``MFSCHED_PURE_PYTHON=1``, :mod:`mfsched._compiled`); the row also
  records the notices the command printed on stderr. Target: < 15 s, saying what it does.
* ``default`` — the same simulation in one process pinned to one core, schedulers one after
  the other (what the CPU costs, independent of the core count).
* ``paper`` — the paper's large-scale set-up: ``fattree`` with 256 servers (2,048 GPUs),
  Mixtral-8x22B TP4/EP8 in 32-GPU instances, 512 + 1,024 requests (1,536), one scheduler per
  child pinned to one core (its peak resident memory is its own); the time is the scheduler's
  run (the stream and the SLO memo are prepared before it). Targets: < 20 s each, < 1 GiB.

Every child first times the reference run of :func:`_report.reference_s` in its own process,
and each figure is also given as a ratio to it (these machines are shared and noisy: the ratio
moves less than the absolute time). Figures are medians over ``--repeat`` runs (paper: one).
JSON goes to ``bench/results/bench_sim.json`` (rows not measured by ``--only`` keep their
earlier figures there and in the table); ``--write`` replaces the section between the
bench-sim markers of a Markdown file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import RESULTS, reference_s, save

from mfsched.policy import SCHEDULERS

ROWS = ("cli", "cold", "default", "paper")


def _pin() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _child_default() -> dict:
    _pin()
    from mfsched.experiments import runner
    from mfsched.experiments.config import SimConfig

    ref = reference_s()
    t = time.perf_counter()
    results = runner.run(runner.prepare(SimConfig()), SCHEDULERS.names(), jobs=1)
    wall = time.perf_counter() - t
    return {"wall_s": wall, "reference_s": ref, "events": sum(r.stats.events for r in results),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "per_scheduler_wall_s": {r.scheduler: r.stats.wall_time_s for r in results}}


def _child_paper(scheduler: str) -> dict:
    _pin()
    from mfsched.experiments import runner
    from mfsched.experiments.config import SimConfig

    ref = reference_s()
    t = time.perf_counter()
    p = runner.prepare(SimConfig(scenario="fattree", model="mixtral-8x22b", tp=4, ep=8))
    p.warm  # noqa: B018 (the history's caches: part of preparing, not of the run)
    prepared_s = time.perf_counter() - t
    t = time.perf_counter()
    result = runner.run(p, [scheduler])[0]
    wall = time.perf_counter() - t
    return {"scheduler": scheduler, "wall_s": wall, "prepare_s": prepared_s, "reference_s": ref,
            "events": result.stats.events, "isolated_runs": p.isolated.runs,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "attainment": result.summary.slo_attainment}


def _json_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cli(env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of ``mfsched simulate --json`` and what it printed on stderr."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "mfsched", "simulate", "--json"], env=env,
                         capture_output=True, text=True, check=True)
    return time.perf_counter() - t, out.stderr


def _notices(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines()
            if line.startswith(("compiling", "computing"))]


def _cli_rows(repeat: int, bytecode_dir: str) -> list[dict]:
    rows = []
    # Byte code as ``pip install .`` leaves it: pip compiles every module it installs (even
    # with PYTHONDONTWRITEBYTECODE set, as on these machines), but the test environment is
    # installed editable with --no-compile, so without this every run would compile about 550
    # modules first (about 1 s). The untimed first run writes the byte code of exactly what
    # the command imports into ``bytecode_dir``; the timed runs read it from there.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = bytecode_dir
    _cli(env)  # also warms both caches (kernels, SLO memo) of this user's cache directory
    env = dict(os.environ, PYTHONPYCACHEPREFIX=bytecode_dir)
    walls, refs = [], []
    for _ in range(repeat):
        refs.append(reference_s())
        walls.append(_cli(env)[0])
    rows.append({"row": "cli", "wall_s": statistics.median(walls), "walls_s": walls,
                 "reference_s": statistics.median(refs), "jobs": len(os.sched_getaffinity(0))})
    walls, refs, notices = [], [], []
    for _ in range(repeat):
        refs.append(reference_s())
        with tempfile.TemporaryDirectory(prefix="mfsched-cold-") as cache:
            cold = {k: v for k, v in env.items() if k != "NUMBA_CACHE_DIR"}
            cold["MFSCHED_CACHE_DIR"] = cache
            wall, stderr = _cli(cold)
        walls.append(wall)
        notices = _notices(stderr)
    rows.append({"row": "cold", "wall_s": statistics.median(walls), "walls_s": walls,
                 "reference_s": statistics.median(refs), "notices": notices})
    return rows


def _default_row(repeat: int) -> dict:
    runs = [_json_child("default") for _ in range(repeat)]
    med = {k: statistics.median(r[k] for r in runs)
           for k in ("wall_s", "reference_s", "peak_rss_mib")}
    middle = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]  # its per-scheduler split
    return {"row": "default", **middle, **med, "walls_s": [r["wall_s"] for r in runs]}


def _paper_rows(schedulers: list[str]) -> list[dict]:
    return [{"row": "paper", **_json_child("paper", s)} for s in schedulers]


def _markdown(rows: list[dict]) -> str:
    lines = ["| what | target | measured (median) | x reference | notes |",
             "|---|---|---:|---:|---|"]
    for r in rows:
        ratio = r["wall_s"] / r["reference_s"]
        if r["row"] == "cli":
            lines.append(f"| `mfsched simulate` (default, 7 schedulers, 1,536 requests), wall, "
                         f"caches warm | < 10 s | {r['wall_s']:.1f} s | {ratio:.0f} | "
                         f"--jobs {r['jobs']} (the CPUs); byte code compiled as pip install "
                         f"leaves it |")
        elif r["row"] == "cold":
            said = "; ".join(f"\"{n}\"" for n in r["notices"]) or "nothing"
            lines.append(f"| the same, first run (empty cache directory; byte code as "
                         f"installed) | < 15 s, saying "
                         f"what it does | {r['wall_s']:.1f} s | {ratio:.0f} | says: {said} |")
        elif r["row"] == "default":
            per = ", ".join(f"{k} {v:.1f}" for k, v in r["per_scheduler_wall_s"].items())
            lines.append(f"| the same simulation in one process on one core, schedulers in "
                         f"turn | (CPU cost) | {r['wall_s']:.1f} s | {ratio:.0f} | "
                         f"{r['events']:,} events; s per scheduler: {per} |")
        else:
            lines.append(f"| paper scale (256 x 8 GPUs, 1,536 requests), {r['scheduler']}, one "
                         f"core | < 20 s, < 1 GiB | {r['wall_s']:.1f} s, "
                         f"{r['peak_rss_mib']:.0f} MiB | {ratio:.0f} | {r['events']:,} events; "
                         f"prepare {r['prepare_s']:.1f} s"
                         + (f"; {r['isolated_runs']:,} isolated runs (SLO memo misses)"
                            if r.get("isolated_runs") else "") + " |")
    refs = sorted({f"{r['reference_s']:.2f}" for r in rows})
    lines += ["", f"Reference run (testbed, 120 requests, fs) in the same processes: "
                  f"{', '.join(refs)} s."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default=",".join(ROWS))
    ap.add_argument("--paper-schedulers", default=",".join(SCHEDULERS.names()))
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        print(json.dumps(_child_default() if kind == "default" else _child_paper(*rest)))
        return
    only = args.only.split(",")
    rows: list[dict] = []
    if "cli" in only or "cold" in only:
        with tempfile.TemporaryDirectory(prefix="mfsched-bytecode-") as bytecode_dir:
            rows += [r for r in _cli_rows(args.repeat, bytecode_dir) if r["row"] in only]
    if "default" in only:
        rows.append(_default_row(args.repeat))
    if "paper" in only:
        rows += _paper_rows(args.paper_schedulers.split(","))
    # rows not measured this time stay as they were (one table for every run of this script;
    # a paper-scale row per scheduler)
    previous = RESULTS / "bench_sim.json"
    if previous.exists():
        measured = {(r["row"], r.get("scheduler")) for r in rows}
        kept = [r for r in json.loads(previous.read_text())
                if isinstance(r, dict) and r.get("row") in ROWS
                and (r["row"], r.get("scheduler")) not in measured]
        order = SCHEDULERS.names()  # the registry's order, as the table always had it
        rows = sorted(kept + rows, key=lambda r: (
            ROWS.index(r["row"]), order.index(r["scheduler"]) if r.get("scheduler") in order
            else 0))
    save("bench_sim", rows, _markdown(rows), args.write, "bench-sim")


if __name__ == "__main__":
    main()
