"""Every scheduler on the paper's testbed: attainment tables, sustainable rates, Fig. 10.

    python bench/sched_tables.py [--jobs 2] [--write docs/results.md]
    python bench/sched_tables.py --rows-from bench/results/sched_tables.json --write ...

Runs the grids of :data:`GRIDS` (every registered scheduler plus the contention-free
reference, on the same requests per configuration) with :func:`mfsched.experiments.sweep.
run_sweep`, keeps the rows in ``bench/results/sched_tables.json`` and writes four sections of
``docs/results.md``: ``sched-tables`` (attainment per rate), ``sustainable-rates`` (the rate at
which each scheduler falls below 50% attainment), ``fig10`` (MFS against fair sharing at
1 request/s per prefill GPU, next to the paper's Fig. 10) and ``reuse`` (prompt reuse reached
against the workload's intended reuse).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from _report import RESULTS, replace_section

from mfsched.experiments.config import SimConfig
from mfsched.experiments.runner import scheduler_names
from mfsched.experiments.sweep import (
    CONTENTION_FREE,
    SweepSpec,
    markdown_tables,
    run_sweep,
    sustainable_rates,
)

TRACE = "../shared/traces/mooncake_synthetic.jsonl"
GRIDS = {
    "conv": {"workloads": ("conv",), "rates": (0.2, 0.4, 0.5, 0.6, 0.7, 0.8),
             "seeds": (0, 1, 2)},
    "agent": {"workloads": ("agent",), "rates": (0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5),
              "seeds": (0, 1, 2)},
    "mooncake": {"workloads": (TRACE,), "rates": (0.01, 0.02, 0.03, 0.05, 0.075, 0.1),
                 "seeds": (0,), "trace": TRACE},
}
# The paper's Fig. 10 (testbed, 1 request/s per GPU): MFS's reductions against the baseline.
PAPER_FIG10 = {"conv": (-0.207, -0.319), "agent": (-0.323, -0.431)}


def command(name: str) -> str:
    g = GRIDS[name]
    src = (f"--trace {g['trace']} --trace-format mooncake --over-context drop"
           if "trace" in g else f"--workload {g['workloads'][0]}")
    return (f"mfsched sweep --scheduler all {src} --rate {','.join(map(str, g['rates']))} "
            f"--seeds {','.join(map(str, g['seeds']))}")


def run(jobs: int, names) -> dict[str, list[dict]]:
    out = {}
    for name in names:
        g = GRIDS[name]
        # the trace's requests longer than Mixtral-8x7B's 32k context are dropped (as vLLM
        # rejects them), not simulated as if the model could serve them
        base = SimConfig(trace=g.get("trace"), over_context="drop")
        spec = SweepSpec(base, g["workloads"], g["rates"], (1.0,), g["seeds"],
                         tuple(scheduler_names("all")), contention_free_reference=True)
        out[name] = run_sweep(spec, jobs, lambda done, total, name=name: print(
            f"{name}: {done}/{total} configurations", file=sys.stderr, flush=True))
    return out


def _label(workload: str) -> str:
    return "Mooncake synthetic trace" if workload == TRACE else workload


def sustainable_table(rows_by_grid: dict[str, list[dict]]) -> str:
    lines = []
    for rows in rows_by_grid.values():
        for (wl, _bw), per in sustainable_rates(rows).items():
            if not lines:
                cols = list(per)
                lines = ["| workload | " + " | ".join(cols) + " | mfs / karuna | mfs / best "
                         "baseline |", "|---|" + "---:|" * (len(cols) + 2)]
            baselines = [c for c in per if c not in ("mfs", "oracle", CONTENTION_FREE)]
            best = max(per[c].rate for c in baselines)
            lines.append(f"| {_label(wl)} | " + " | ".join(str(per[c]) for c in cols)
                         + f" | {per['mfs'].rate / per['karuna'].rate:.2f}x | "
                         f"{per['mfs'].rate / best:.2f}x |")
    return "\n".join(lines)


def _mean(rows, sched, rate, key):
    vals = [r[key] for r in rows if r["scheduler"] == sched and r["rate_per_gpu"] == rate]
    return statistics.fmean(vals) if vals else float("nan")


def fig10_table(rows_by_grid: dict[str, list[dict]]) -> str:
    lines = ["| workload | rate, req/s/GPU | fs TTFT / CCT, ms | mfs TTFT / CCT, ms | TTFT, MFS vs "
             "FS | CCT, MFS vs FS | TTFT, paper (Fig. 10) | CCT, paper (Fig. 10) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("conv", "agent"):
        rows = rows_by_grid[name]
        for rate in (1.0, 0.6) if name == "conv" else (1.0, 1.5):
            if not any(r["rate_per_gpu"] == rate for r in rows):
                continue
            t = {s: _mean(rows, s, rate, "ttft_mean_s") for s in ("fs", "mfs")}
            c = {s: _mean(rows, s, rate, "stage2_cct_mean_s") for s in ("fs", "mfs")}
            pt, pc = PAPER_FIG10[name]
            lines.append(f"| {name} | {rate:g} | {1e3 * t['fs']:.0f} / {1e3 * c['fs']:.2f} | "
                         f"{1e3 * t['mfs']:.0f} / {1e3 * c['mfs']:.2f} | "
                         f"{t['mfs'] / t['fs'] - 1:+.1%} | {c['mfs'] / c['fs'] - 1:+.1%} | "
                         f"{pt:+.1%} | {pc:+.1%} |")
    return "\n".join(lines)


def reuse_table(rows_by_grid: dict[str, list[dict]]) -> str:
    lines = ["| workload | rate, req/s/GPU | intended reuse (ideal cache) | reached, fs | "
             "reached, mfs |", "|---|---:|---:|---:|---:|"]
    for name in ("conv", "agent"):
        rows = rows_by_grid[name]
        by_rate = defaultdict(list)
        for r in rows:
            by_rate[r["rate_per_gpu"]].append(r)
        for rate in sorted(by_rate):
            lines.append(f"| {name} | {rate:g} | "
                         f"{_mean(rows, 'fs', rate, 'ideal_prefix_reuse'):.3f} | "
                         f"{_mean(rows, 'fs', rate, 'prefix_reuse'):.3f} | "
                         f"{_mean(rows, 'mfs', rate, 'prefix_reuse'):.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--rows-from", type=Path, help="tabulate these rows instead of running")
    ap.add_argument("--grids", default=",".join(GRIDS),
                    help="run only these grids and keep the other grids' rows of "
                         "bench/results/sched_tables.json")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    if args.rows_from:
        rows_by_grid = json.loads(args.rows_from.read_text())
    else:
        kept = RESULTS / "sched_tables.json"
        rows_by_grid = json.loads(kept.read_text()) if kept.exists() else {}
        rows_by_grid.update(run(args.jobs, args.grids.split(",")))
        rows_by_grid = {n: rows_by_grid[n] for n in GRIDS if n in rows_by_grid}
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "sched_tables.json").write_text(json.dumps(rows_by_grid, indent=1) + "\n")
    cmds = "\n".join(command(n) for n in GRIDS)
    sections = {
        "sched-tables": f"`python bench/sched_tables.py --jobs 2 --write docs/results.md`, which "
                        f"runs\n\n```\n{cmds}\n```\n\n" + "\n".join(
                            markdown_tables(rows) for rows in rows_by_grid.values()),
        "sustainable-rates": sustainable_table(rows_by_grid),
        "fig10": fig10_table(rows_by_grid),
        "reuse": reuse_table(rows_by_grid),
    }
    for tag, text in sections.items():
        print(f"\n## {tag}\n\n{text}")
        if args.write:
            replace_section(args.write, tag, text)


if __name__ == "__main__":
    main()
