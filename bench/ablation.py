"""MFS ablations: switch one mechanism off at a time on one scenario.

    python bench/ablation.py [--workload conv] [--rate 0.4] [--bandwidth-scale 0.25]
                             [--seeds 0,1,2] [--write docs/results.md]

Variants (``mfs`` config fields): all on; ``rli`` off (Stage-1 flows share the top early level
with collectives); ``mlu`` off (P2D never promoted); ``promotion`` off (levels fixed at
submission); ``red_tiebreak`` off; ``pruning`` off; ``mlu_per_request`` on. Each variant runs on
the same requests as fair sharing and the contention-free reference. Attainment is averaged
over seeds.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

from _report import save

from mfsched.experiments.config import SimConfig
from mfsched.experiments.points import CONTENTION_FREE, Point, run_point
from mfsched.experiments.runner import prepare, run_scheduler

VARIANTS = {
    "mfs (all mechanisms)": {},
    "no RLI": {"rli": "false"},
    "no MLU promotion": {"mlu": "false"},
    "no promotion at all": {"promotion": "false"},
    "no RED tie-break": {"red_tiebreak": "false"},
    "no pruning": {"pruning": "false"},
    "per-request MLU": {"mlu_per_request": "true"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="conv")
    ap.add_argument("--rate", type=float, default=0.6)
    ap.add_argument("--bandwidth-scale", type=float, default=1.0)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    results: dict[str, list[dict]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        cfg = SimConfig(workload=args.workload, rate_per_gpu=args.rate,
                        bandwidth_scale=args.bandwidth_scale, seed=seed)
        for row in run_point(Point("ablation", cfg, ("fs",), reference=True)).rows:
            label = "contention-free reference" if row["scheduler"] == CONTENTION_FREE else "fs"
            results.setdefault(label, []).append(row)
        p = prepare(cfg)
        for label, opts in VARIANTS.items():
            options = tuple(f"mfs.{k}={v}" for k, v in opts.items())
            res = run_scheduler(replace(p, config=replace(cfg, policy_options=options)), "mfs")
            results.setdefault(label, []).append(res.to_json())
    lines = [f"`python bench/ablation.py --workload {args.workload} --rate {args.rate:g} "
             f"--bandwidth-scale {args.bandwidth_scale:g} --seeds {args.seeds}`", "",
             "| variant | SLO attainment | TTFT mean ms | Stage-2 CCT ms |",
             "|---|---:|---:|---:|"]
    for label, rows in results.items():
        def mean(key, rows=rows):
            return statistics.mean(r[key] for r in rows)
        lines.append(f"| {label} | {mean('slo_attainment'):.1%} | "
                     f"{1e3 * mean('ttft_mean_s'):.0f} | {1e3 * mean('stage2_cct_mean_s'):.2f} |")
    save("ablation", results, "\n".join(lines), args.write, "ablation")


if __name__ == "__main__":
    main()
