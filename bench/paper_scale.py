"""The paper's simulation scale: where the attainment curves fall, and the reuse reached.

    python bench/paper_scale.py [--jobs 2] [--write docs/results.md]

The ``fattree`` scenario (256 servers x 8 A100, one 200 Gb/s NIC per GPU, Mixtral-8x22B
TP4/EP8: 32 prefill instances of 32 GPUs), ``conv`` and ``agent`` over their :data:`RATES`, under
fair sharing and MFS (``--schedulers``) plus the contention-free reference, seed 0, the paper's 512
warm-up and 1024 evaluated requests. Writes the ``paper-scale`` section: attainment per rate,
prompt reuse reached against intended, and the smallest and largest instance share of the
requests (even would be 1/32 = 0.031).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _report import RESULTS, replace_section

from mfsched.experiments.config import SimConfig
from mfsched.experiments.sweep import SweepSpec, run_sweep

RATES = {"conv": (0.3, 0.5, 0.7, 1.0), "agent": (0.5, 1.0, 2.0, 3.0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--schedulers", default="fs,mfs",
                    help="comma-separated (karuna is slow at this scale until issue 11)")
    ap.add_argument("--rows-from", type=Path)
    ap.add_argument("--workloads", default=",".join(RATES),
                    help="run only these and keep the others' rows of "
                         "bench/results/paper_scale.json")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    if args.rows_from:
        rows = json.loads(args.rows_from.read_text())
    else:
        kept = RESULTS / "paper_scale.json"
        todo = args.workloads.split(",")
        rows = [r for r in (json.loads(kept.read_text()) if kept.exists() else [])
                if r["workload"] not in todo]
        for wl in todo:
            spec = SweepSpec(SimConfig(scenario="fattree"), (wl,), RATES[wl], (1.0,), (0,),
                             tuple(args.schedulers.split(",")), contention_free_reference=True)
            rows += run_sweep(spec, args.jobs, lambda done, total, wl=wl: print(
                f"{wl}: {done}/{total} configurations", file=sys.stderr, flush=True))
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "paper_scale.json").write_text(json.dumps(rows, indent=1) + "\n")
    cols = list(dict.fromkeys(r["scheduler"] for r in rows))
    lines = [f"`python bench/paper_scale.py --jobs {args.jobs} --schedulers {args.schedulers} "
             "--write docs/results.md` "
             f"(fattree, Mixtral-8x22B TP4/EP8, seed 0, 512 warm-up + 1024 evaluated "
             "requests)", "",
             "| workload | req/s/GPU | " + " | ".join(f"SLO met, {c}" for c in cols)
             + " | reuse intended / reached (fs) | instance share min / max (fs) |",
             "|---|---:|" + "---:|" * (len(cols) + 2)]
    for wl in RATES:
        for rate in RATES[wl]:
            got = {r["scheduler"]: r for r in rows
                   if r["workload"] == wl and r["rate_per_gpu"] == rate}
            if not got:
                continue
            fs = got["fs"]
            share = fs["instance_request_share"]
            lines.append(f"| {wl} | {rate:g} | "
                         + " | ".join(f"{got[c]['slo_attainment']:.1%}" for c in cols)
                         + f" | {fs['ideal_prefix_reuse']:.3f} / {fs['prefix_reuse']:.3f} | "
                         f"{min(share):.3f} / {max(share):.3f} |")
    text = "\n".join(lines)
    print(text)
    if args.write:
        replace_section(args.write, "paper-scale", text)


if __name__ == "__main__":
    main()
