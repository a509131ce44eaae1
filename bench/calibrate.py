"""Contention in the paper's Fig. 5 set-up, with each contention mechanism on and off.

    python bench/calibrate.py [--seeds 0,1,2] [--write docs/results.md]

Runs :func:`mfsched.experiments.calibrate.contention_cost` (fair sharing against the
contention-free reference on the same requests) for the defaults and for every variant of
:data:`mfsched.experiments.calibrate.MECHANISMS`, and writes the table between the
``calibrate`` markers. ``mfsched calibrate`` prints the first row for any scenario.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from _report import save

from mfsched.experiments.calibrate import FIG5, MECHANISMS, contention_cost, markdown_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    costs = []
    for label, overrides in MECHANISMS.items():
        costs.append(contention_cost(replace(FIG5, **overrides), seeds, label))
        print(f"{label}: TTFT {costs[-1].ttft_ratio:.2f}x, CCT {costs[-1].cct_ratio:.2f}x",
              flush=True)
    text = "\n".join([
        f"`python bench/calibrate.py --seeds {args.seeds}` (testbed, Mixtral-8x7B TP1/EP8, "
        f"agent at 1 request/s per prefill GPU, {FIG5.warmup} warm-up + {FIG5.requests} "
        f"evaluated requests per seed, means over seeds {args.seeds}; \"with\" is fair "
        "sharing, \"without\" the contention-free reference on the same requests)", "",
        markdown_table(costs)])
    save("calibrate", [c.to_json() for c in costs], text, args.write, "calibrate")


if __name__ == "__main__":
    main()
