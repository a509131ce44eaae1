"""Parameter sweeps: every combination of workloads, rates, bandwidth scales and seeds, each run
under every requested scheduler (the same requests for all of them).

Called by ``mfsched sweep``. Each combination is one :class:`~mfsched.experiments.points.Point`
(optionally with the contention-free reference), run by the executors of
:mod:`mfsched.experiments.executors`, the same mechanism as ``mfsched reproduce``: local processes
(``jobs``) or Ray.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ..metrics import SustainableRate, sustainable_rate
from .config import SimConfig
from .executors import execute
from .points import Point, run_point
from .runner import CONTENTION_FREE

__all__ = ["CONTENTION_FREE", "SustainableRate", "SweepSpec", "attainment_table",
           "markdown_tables", "run_sweep", "sustainable_rates"]


@dataclass(frozen=True)
class SweepSpec:
    base: SimConfig
    workloads: tuple[str, ...]
    rates: tuple[float, ...]
    bandwidth_scales: tuple[float, ...] = (1.0,)
    seeds: tuple[int, ...] = (0,)
    schedulers: tuple[str, ...] = ()
    contention_free_reference: bool = False

    def configs(self) -> list[SimConfig]:
        return [replace(self.base, workload=w, rate_per_gpu=r, bandwidth_scale=b, seed=s)
                for w, b, r, s in itertools.product(self.workloads, self.bandwidth_scales,
                                                    self.rates, self.seeds)]

    def points(self) -> list[Point]:
        return [Point(str(i), cfg, self.schedulers, self.contention_free_reference)
                for i, cfg in enumerate(self.configs())]


def run_sweep(spec: SweepSpec, jobs: int = 1,
              on_job: Callable[[int, int], None] | None = None, *,
              executor: str = "process", address: str | None = None) -> list[dict]:
    """All rows (one per configuration and scheduler), in configuration order."""
    points = spec.points()
    parts: list[tuple[dict, ...]] = [()] * len(points)
    done = 0

    def keep(i: int, result) -> None:
        nonlocal done
        parts[i] = result.rows
        done += 1
        if on_job:
            on_job(done, len(points))

    execute(run_point, points, executor=executor, jobs=jobs, address=address, on_result=keep)
    return [row for part in parts for row in part]


def attainment_table(rows: Sequence[dict]) -> dict[tuple, dict[float, dict[str, float]]]:
    """(workload, bandwidth scale) -> rate -> scheduler -> attainment (mean over seeds)."""
    acc: dict[tuple, dict[float, dict[str, list[float]]]] = {}
    for r in rows:
        key = (r["workload"], r["bandwidth_scale"])
        acc.setdefault(key, {}).setdefault(r["rate_per_gpu"], {}).setdefault(
            r["scheduler"], []).append(r["slo_attainment"])
    return {k: {rate: {s: sum(v) / len(v) for s, v in per.items()} for rate, per in rates.items()}
            for k, rates in acc.items()}


def markdown_tables(rows: Sequence[dict]) -> str:
    """The attainment tables as Markdown (one per workload and bandwidth scale), in percent
    like every table of the CLI, with the best real scheduler in bold (the oracle and the
    contention-free reference are never marked) and MFS's ratio to the best and the worst
    baseline."""
    out = []
    for (wl, bw), per_rate in attainment_table(rows).items():
        cols = list(dict.fromkeys(s for per in per_rate.values() for s in per))
        baselines = [c for c in cols if c not in ("mfs", "oracle", CONTENTION_FREE)]
        seeds = sorted({r.get("seed", 0) for r in rows
                        if (r["workload"], r["bandwidth_scale"]) == (wl, bw)})
        what = f"seed {seeds[0]}" if len(seeds) == 1 else \
            f"mean of seeds {', '.join(map(str, seeds))}"
        out.append(f"**{wl}, bandwidth x{bw:g}** ({what})\n")
        out.append("| req/s/GPU | " + " | ".join(cols) + " | mfs / best baseline | "
                   "mfs / worst baseline |")
        out.append("|---:|" + "---:|" * (len(cols) + 2))
        for rate, per in sorted(per_rate.items()):
            real = {c: v for c, v in per.items() if c not in ("oracle", CONTENTION_FREE)}
            best = max(real.values(), default=None)
            cells = [f"**{per[c]:.1%}**" if c in real and per[c] == best else
                     f"{per[c]:.1%}" if c in per else "-" for c in cols]
            ratios = [_ratio(per.get("mfs"), f([per[c] for c in baselines]))
                      for f in (max, min)] if "mfs" in per and baselines else ["", ""]
            out.append(f"| {rate:g} | " + " | ".join(cells) + f" | {ratios[0]} | {ratios[1]} |")
        out.append("")
    return "\n".join(out)


def _ratio(a: float | None, b: float) -> str:
    if a is None:
        return ""
    if b <= 0:
        return "n/a" if a <= 0 else "inf"  # 0 / 0: nobody meets the SLO, nothing to compare
    return f"{a / b:.2f}x"


def sustainable_rates(rows: Sequence[dict], threshold: float = 0.5
                      ) -> dict[tuple, dict[str, SustainableRate]]:
    """(workload, bandwidth scale) -> scheduler -> sustainable rate
    (:func:`mfsched.metrics.sustainable_rate` of the attainment, mean over seeds)."""
    out: dict[tuple, dict[str, SustainableRate]] = {}
    for key, per_rate in attainment_table(rows).items():
        rates = sorted(per_rate)
        scheds = dict.fromkeys(s for r in rates for s in per_rate[r])
        res = out.setdefault(key, {})
        for s in scheds:
            points = [(r, per_rate[r][s]) for r in rates if s in per_rate[r]]
            res[s] = sustainable_rate([r for r, _ in points], [a for _, a in points], threshold)
    return out
