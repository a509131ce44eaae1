"""Parameter sweeps: every combination of workloads, rates, bandwidth scales and seeds, each run
under every requested scheduler (the same requests for all of them).

Called by ``mfsched sweep``. Each combination is one job; ``jobs > 1`` runs combinations in
parallel processes (one machine; Ray would be the tool beyond one). The workers ignore Ctrl-C
and are terminated when the sweep is interrupted, so that it stops at once (a process pool that
lets its jobs finish would take minutes, and each worker would print its own traceback). A job
can add the *contention-free reference*
(:func:`mfsched.experiments.runner.run_contention_free`).
"""

from __future__ import annotations

import itertools
import multiprocessing
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from .config import SimConfig
from .runner import CONTENTION_FREE, RunResult, prepare, run, run_contention_free

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


def _run_job(args: tuple[SimConfig, tuple[str, ...], bool]) -> list[dict]:
    cfg, schedulers, reference = args
    prepared = prepare(cfg)
    results = run(prepared, schedulers)
    if reference:
        results.append(run_contention_free(prepared))
    return [_row(r) for r in results]


def _row(result: RunResult) -> dict:
    row = result.to_json()
    row["bandwidth_scale"] = result.config.bandwidth_scale
    return row


def run_sweep(spec: SweepSpec, jobs: int = 1,
              on_job: Callable[[int, int], None] | None = None) -> list[dict]:
    """All rows (one per configuration and scheduler), in configuration order."""
    work = [(cfg, spec.schedulers, spec.contention_free_reference) for cfg in spec.configs()]
    rows: list[dict] = []
    if jobs <= 1:
        for i, item in enumerate(work):
            rows.extend(_run_job(item))
            if on_job:
                on_job(i + 1, len(work))
        return rows
    # leaving the block terminates the workers: at once on an interrupt or error
    with multiprocessing.get_context().Pool(min(jobs, len(work)),
                                            initializer=_ignore_interrupts) as pool:
        for i, part in enumerate(pool.imap(_run_job, work)):
            rows.extend(part)
            if on_job:
                on_job(i + 1, len(work))
    return rows


def _ignore_interrupts() -> None:
    """In a worker: Ctrl-C is for the parent, which terminates the pool; termination is
    silent (a forked worker inherits the CLI's SIGTERM handler otherwise)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


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


@dataclass(frozen=True, slots=True)
class SustainableRate:
    """The highest rate (requests/s per prefill GPU) at which a scheduler still meets the SLO
    of ``threshold`` of the requests; ``bound`` is "" for a crossing found between two swept
    rates, ">=" if it never fell below (the highest rate swept), "<" if it was below at the
    lowest one (then ``rate`` is that lowest rate)."""

    rate: float
    bound: str = ""

    def __str__(self) -> str:
        return f"{self.bound}{self.rate:.3g}"


def sustainable_rates(rows: Sequence[dict], threshold: float = 0.5
                      ) -> dict[tuple, dict[str, SustainableRate]]:
    """(workload, bandwidth scale) -> scheduler -> sustainable rate: where the attainment
    (mean over seeds) first falls below ``threshold`` as the rate grows, interpolated linearly
    between the two swept rates around the crossing."""
    out: dict[tuple, dict[str, SustainableRate]] = {}
    for key, per_rate in attainment_table(rows).items():
        rates = sorted(per_rate)
        scheds = dict.fromkeys(s for r in rates for s in per_rate[r])
        res = out.setdefault(key, {})
        for s in scheds:
            points = [(r, per_rate[r][s]) for r in rates if s in per_rate[r]]
            if points[0][1] < threshold:
                res[s] = SustainableRate(points[0][0], "<")
                continue
            res[s] = SustainableRate(points[-1][0], ">=")
            for (r0, a0), (r1, a1) in itertools.pairwise(points):
                if a1 < threshold <= a0:
                    res[s] = SustainableRate(r0 + (a0 - threshold) / (a0 - a1) * (r1 - r0))
                    break
    return out
