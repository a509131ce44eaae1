"""The report's tables as data (plain-text cells), rendered to HTML by :mod:`.html` and to
Markdown by :mod:`.markdown`, so both show the same numbers.

* :func:`attainment_table`: SLO attainment per rate and run (seed mean), per (model, workload).
* :func:`sustainable_table`: sustainable rate per run and MFS / Karuna, next to the paper.
* :func:`summary_table`: seed means per run and point (breakdowns and normalised figures).
* :func:`claims_table`: the paper's stated numbers next to ours (:mod:`.claims`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .claims import evaluate
from .data import ExperimentData

__all__ = ["Table", "attainment_table", "claims_table", "fmt_pct", "fmt_ratio",
           "summary_table", "sustainable_table"]


@dataclass(frozen=True)
class Table:
    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    text_columns: int = 1  # the first columns hold text (left-aligned); the rest numbers


def fmt_ratio(v: float) -> str:
    return f"{v:.2f}x" if math.isfinite(v) else "n/a"


def fmt_pct(v: float) -> str:
    """A reduction (fraction) as the change it is: 0.2 -> -20.0%."""
    return f"{-100 * v:+.1f}%" if math.isfinite(v) else "n/a"


def attainment_table(d: ExperimentData, model: str, workload: str) -> Table:
    runs = d.runs()
    rows = []
    for rate in d.rates(model, workload):
        rows.append((f"{rate:g}", *(_num(d.mean("slo_attainment", model, workload, r, rate),
                                         "{:.3f}") for r in runs)))
    seeds = len(d.seeds())
    return Table(f"SLO attainment, {model}, {workload} (mean of {seeds} seed"
                 f"{'s' if seeds > 1 else ''})", ("req/s/GPU", *runs), tuple(rows))


def sustainable_table(d: ExperimentData) -> Table:
    runs = d.runs()
    sr_claims = [c for c in d.experiment.claims if c.metric == "sustainable_rate_ratio"]
    rows = []
    for m, w in d.groups():
        cells, rates = [], {}
        for r in runs:
            sr = d.sustainable(m, w, r)
            rates[r] = sr
            cells.append("–" if sr is None else str(sr).replace(">=", "≥"))
        mfs, karuna = rates.get("mfs"), rates.get("karuna")
        exact = mfs is not None and karuna is not None and not (mfs.bound or karuna.bound)
        ratio = mfs.rate / karuna.rate if exact and karuna.rate > 0 else math.nan
        paper = [c.paper_text() for c in sr_claims
                 if (c.models is None or m in c.models) and (c.workload in (None, w))]
        rows.append((m, w, *cells, fmt_ratio(ratio), ", ".join(paper)))
    return Table("Sustainable rate (req/s per GPU): where the seed-mean attainment first falls "
                 "below 50% as the rate grows, interpolated between grid rates; ≥: it never "
                 "fell below 50% in the grid; <: it was below at the lowest rate (MFS / Karuna "
                 "only where both crossed inside the grid).",
                 ("model", "workload", *runs, "MFS / Karuna", "paper"), tuple(rows), 2)


def summary_table(d: ExperimentData, earliness: bool) -> Table:
    head = ["model", "workload", "req/s/GPU", "run", "SLO attainment", "TTFT mean (ms)",
            "TTFT p99 (ms)", "Stage-2 CCT mean (ms)"]
    if earliness:
        head += ["mean non-negative earliness", "requests missed"]
    rows = []
    for m, w in d.groups():
        for rate in d.rates(m, w):
            for r in d.runs():
                vals = [_num(d.mean("slo_attainment", m, w, r, rate), "{:.3f}"),
                        _num(1e3 * d.mean("ttft_mean_s", m, w, r, rate), "{:.1f}"),
                        _num(1e3 * d.mean("ttft_p99_s", m, w, r, rate), "{:.1f}"),
                        _num(1e3 * d.mean("stage2_cct_mean_s", m, w, r, rate), "{:.3f}")]
                if earliness:
                    e = d.detail_values("requests", "p2d_earliness", r, m, w, rate)
                    nonneg = e[e >= 0]
                    vals += [f"{np.mean(nonneg):.3f}" if nonneg.size else "–",
                             f"{np.mean(e < 0):.1%}" if e.size else "–"]
                rows.append((m, w, f"{rate:g}", r, *vals))
    return Table("Seed means per run", tuple(head), tuple(rows), 4)


def claims_table(d: ExperimentData) -> Table | None:
    """None when the paper states no number for the figure."""
    if not d.experiment.claims:
        return None
    rows = []
    for c in d.experiment.claims:
        ours = evaluate(c, d)
        vals = ours.finite()
        fmt = fmt_pct if c.unit == "%" else fmt_ratio
        if not vals:
            summary = "n/a"
        elif min(vals) == max(vals):
            summary = fmt(vals[0])
        else:  # low to high as displayed (a reduction shows as a negative change)
            lo, hi = (max(vals), min(vals)) if c.unit == "%" else (min(vals), max(vals))
            summary = f"{fmt(lo)} to {fmt(hi)}"
        per = "; ".join(f"{k}: {fmt(v)}" for k, v in ours.values) or ours.note or "n/a"
        what = f"{c.numerator} vs {', '.join(c.denominators)}" + (
            f" ({ours.note})" if ours.note and ours.values else "")
        rows.append((c.text, what, c.paper_text(), summary, per))
    return Table("The paper's stated numbers next to ours",
                 ("the paper says", "compared", "paper", "ours", "ours per group"),
                 tuple(rows), 2)


def _num(v: float, fmt: str) -> str:
    return fmt.format(v) if math.isfinite(v) else "–"
