"""The simulator against the emulated testbed, seed by seed (needs root).

    sudo python bench/testbed_compare.py [--schedulers fs,sjf,edf,karuna,mfs] [--seeds 0,1,2]
                                         [--requests 32] [--warmup 8] [--write docs/results.md]

Runs ``mfsched compare`` (the command a user runs) once per seed with ``--out`` into a
temporary folder, reads its ``comparison.json`` and ``testbed/dataplane.json`` and writes the
``testbed-compare`` section: per scheduler the means over seeds of SLO attainment, mean TTFT and
mean Stage-2 CCT on both sides with the simulator's relative error, the per-seed attainment,
and the machine's load average and timer lateness during each emulated run (the emulation is
only as faithful as the machine is idle, so both are part of the figure).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import RESULTS, save


def run_seed(schedulers: str, seed: int, requests: int, warmup: int, nice: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cmp"
        cmd = ["mfsched", "compare", "--scheduler", schedulers, "--seed", str(seed),
               "--requests", str(requests), "--warmup", str(warmup), "--nice", str(nice),
               "--out", str(out)]
        t0 = time.monotonic()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall_s = time.monotonic() - t0
        table = json.loads((out / "comparison.json").read_text())
        plane = json.loads((out / "testbed" / "dataplane.json").read_text())
    runs = {r["scheduler"]: r for r in plane["runs"]}
    for row in table:
        r = runs[row["scheduler"]]
        row["load_avg_1min_start_end"] = list(r["load_avg_1min"])
        row["timer_lateness_mean_s"] = r["timer_lateness"]["mean_s"]
    return {"seed": seed, "wall_s": wall_s, "rows": table}


def _err(sim: float, real: float) -> str:
    return f"{(sim - real) / real:+.1%}"


def render(seeds: list[dict], args) -> str:
    names = [r["scheduler"] for r in seeds[0]["rows"]]
    by = {(s["seed"], r["scheduler"]): r for s in seeds for r in s["rows"]}
    seed_ids = [s["seed"] for s in seeds]
    lines = [f"`sudo python bench/testbed_compare.py --schedulers {args.schedulers} --seeds "
             f"{args.seeds} --requests {args.requests} --warmup {args.warmup} --nice {args.nice}"
             " --write docs/results.md`: one `mfsched compare` per seed (the simulator, then the "
             "emulated testbed, scheduler by scheduler; "
             f"{np.mean([s['wall_s'] for s in seeds]) / 60:.1f} minutes per seed). The default "
             "scenario of `mfsched testbed`: the paper's testbed (8 servers x 4 RTX 3090, two "
             "100 Gb/s NICs per server), Mixtral-8x7B TP1/EP8, agent at 1 request/s per prefill "
             f"GPU, {args.warmup} warm-up + {args.requests} evaluated requests per seed, SLO = 3 x "
             "the isolated TTFT, scale s = 20. Means over the seeds; err = (simulator - testbed) "
             "/ testbed.", "",
             "| scheduler | SLO sim | SLO testbed | TTFT sim ms | TTFT testbed ms | err | "
             "Stage-2 CCT sim ms | CCT testbed ms | err |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        rows = [by[(s, n)] for s in seed_ids]

        def m(key: str, rows=rows) -> float:
            return float(np.mean([r[key] for r in rows]))

        lines.append(
            f"| {n} | {m('sim_slo_attainment'):.1%} | {m('testbed_slo_attainment'):.1%} | "
            f"{1e3 * m('sim_ttft_mean_s'):.0f} | {1e3 * m('testbed_ttft_mean_s'):.0f} | "
            f"{_err(m('sim_ttft_mean_s'), m('testbed_ttft_mean_s'))} | "
            f"{1e3 * m('sim_stage2_cct_mean_s'):.2f} | {1e3 * m('testbed_stage2_cct_mean_s'):.2f}"
            f" | {_err(m('sim_stage2_cct_mean_s'), m('testbed_stage2_cct_mean_s'))} |")
    lines += ["", "Per seed: SLO attainment sim / testbed, and the relative errors of mean TTFT "
              "and Stage-2 CCT; the 1-minute load average when the emulated run started and ended, "
              "and the "
              "mean lateness of its timers (model time).", "",
              "| scheduler | seed | SLO sim / testbed | TTFT err | CCT err | load avg start / end "
              "| timer lateness us |", "|---|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        for s in seed_ids:
            r = by[(s, n)]
            lines.append(
                f"| {n} | {s} | {r['sim_slo_attainment']:.1%} / {r['testbed_slo_attainment']:.1%}"
                f" | {r['rel_err_ttft_mean_s']:+.1%} | {r['rel_err_stage2_cct_mean_s']:+.1%} | "
                f"{r['load_avg_1min_start_end'][0]:.1f} / {r['load_avg_1min_start_end'][1]:.1f} | "
                f"{1e6 * r['timer_lateness_mean_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schedulers", default="fs,sjf,edf,karuna,mfs")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--nice", type=int, default=-10,
                    help="niceness of the emulation's processes (negative: ahead of others)")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    seeds = []
    for s in (int(x) for x in args.seeds.split(",")):
        print(f"seed {s} ...", file=sys.stderr, flush=True)
        seeds.append(run_seed(args.schedulers, s, args.requests, args.warmup, args.nice))
        RESULTS.mkdir(exist_ok=True)  # kept as each seed ends: a seed takes minutes
        (RESULTS / "testbed_compare.partial.json").write_text(json.dumps(seeds, indent=2))
    save("testbed_compare", seeds, render(seeds, args), args.write, "testbed-compare")


if __name__ == "__main__":
    main()
