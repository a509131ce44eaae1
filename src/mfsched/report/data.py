"""Results directories -> the numbers the report shows (no plotting here).

:func:`find_experiments` finds every directory written by ``mfsched reproduce`` (the one given, or
its sub-directories); :class:`ExperimentData` holds one experiment's rows and computes curves
(mean and range over seeds), sustainable rates and per-scheduler summaries from them. The
per-request and per-batch-layer details (breakdowns) are read as numpy arrays.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..experiments.points import CONTENTION_FREE
from ..experiments.spec import Experiment
from ..experiments.store import read_table
from ..metrics import SustainableRate, sustainable_rate

__all__ = ["BASELINE_EXCLUDED", "Curve", "ExperimentData", "find_experiments"]

# runs that are not baselines when "best-baseline" is asked for
BASELINE_EXCLUDED = ("mfs", "oracle", CONTENTION_FREE)


@dataclass(frozen=True)
class Curve:
    """One scheduler's attainment against rate: mean, min and max over seeds at each rate."""

    rates: tuple[float, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    seeds: int


@dataclass
class ExperimentData:
    root: Path
    experiment: Experiment
    grid: str
    meta: dict
    rows: list[dict]
    complete: bool
    points_expected: int
    _details: dict[str, dict | None] = field(default_factory=dict)

    # ------------------------------------------------------------------ structure

    @property
    def name(self) -> str:
        return self.experiment.name

    def runs(self) -> list[str]:
        """Schedulers in the experiment's order, the reference last (those present)."""
        present = {r["scheduler"] for r in self.rows}
        order = [*self.experiment.schedulers, CONTENTION_FREE]
        return [s for s in order if s in present] + sorted(present - set(order))

    def groups(self) -> list[tuple[str, str]]:
        """(model, workload) pairs present, in the grid's order."""
        g = self.experiment.grid(self.grid == "quick")
        present = {(r["model"], r["workload"]) for r in self.rows}
        return [(m, w) for m in g.models for w in g.workloads if (m, w) in present]

    def points_done(self) -> int:
        return len({r["point"] for r in self.rows})

    def seeds(self) -> list[int]:
        return sorted({r["seed"] for r in self.rows})

    # ------------------------------------------------------------------ aggregates

    def values(self, column: str, model: str, workload: str, scheduler: str,
               rate: float) -> list[float]:
        """The column's value per seed at one point."""
        return [r[column] for r in self.rows if r["model"] == model and
                r["workload"] == workload and r["scheduler"] == scheduler and
                r["rate_per_gpu"] == rate and r[column] is not None]

    def curve(self, model: str, workload: str, scheduler: str,
              column: str = "slo_attainment") -> Curve:
        by_rate: dict[float, list[float]] = defaultdict(list)
        for r in self.rows:
            if (r["model"], r["workload"], r["scheduler"]) == (model, workload, scheduler):
                v = r[column]
                if v is not None and not math.isnan(v):
                    by_rate[r["rate_per_gpu"]].append(v)
        rates = tuple(sorted(by_rate))
        return Curve(rates, tuple(float(np.mean(by_rate[x])) for x in rates),
                     tuple(min(by_rate[x]) for x in rates), tuple(max(by_rate[x]) for x in rates),
                     max((len(v) for v in by_rate.values()), default=0))

    def mean(self, column: str, model: str, workload: str, scheduler: str,
             rate: float) -> float:
        vals = self.values(column, model, workload, scheduler, rate)
        return float(np.mean(vals)) if vals else float("nan")

    def sustainable(self, model: str, workload: str, scheduler: str,
                    threshold: float = 0.5) -> SustainableRate | None:
        """The sustainable rate of the seed-mean curve (None without points)."""
        c = self.curve(model, workload, scheduler)
        return sustainable_rate(c.rates, c.mean, threshold) if c.rates else None

    def rates(self, model: str | None = None, workload: str | None = None) -> list[float]:
        return sorted({r["rate_per_gpu"] for r in self.rows
                       if (model is None or r["model"] == model)
                       and (workload is None or r["workload"] == workload)})

    # ------------------------------------------------------------------ details

    def details(self, name: str) -> dict[str, np.ndarray] | None:
        """A detail table ('requests' or 'layers') as columns, or None if not stored."""
        if name not in self._details:
            table, _ = read_table(self.root, name)
            self._details[name] = None if table is None else {
                c: np.asarray(table.column(c).to_numpy(zero_copy_only=False))
                for c in table.column_names}
        return self._details[name]

    def detail_values(self, name: str, column: str, scheduler: str, model: str | None = None,
                      workload: str | None = None, rate: float | None = None) -> np.ndarray:
        d = self.details(name)
        if d is None:
            return np.array([])
        mask = d["scheduler"] == scheduler
        if model is not None:
            mask &= d["model"] == model
        if workload is not None:
            mask &= d["workload"] == workload
        if rate is not None:
            mask &= d["rate_per_gpu"] == rate
        return d[column][mask].astype(float)


def find_experiments(results_dir: Path) -> list[ExperimentData]:
    """Every experiment directory at ``results_dir`` or below it, sorted by name."""
    root = Path(results_dir)
    if not root.is_dir():
        raise UserError("no such results directory", where=str(root))
    metas = sorted({p.parent for p in [root / "experiment.json",
                                       *root.glob("*/experiment.json"),
                                       *root.glob("*/*/experiment.json")] if p.exists()})
    out = []
    for d in metas:
        try:
            meta = json.loads((d / "experiment.json").read_text())
            exp = Experiment.from_json(meta["experiment"])
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"unreadable experiment.json ({e})", where=str(d)) from None
        table, complete = read_table(d)
        if table is None:
            continue  # started, no point finished yet
        rows = table.to_pylist()
        quick = meta.get("grid") == "quick"
        out.append(ExperimentData(d, exp, meta.get("grid", "full"), meta, rows, complete,
                                  len(exp.points(quick))))
    if not out:
        raise UserError("holds no results of 'mfsched reproduce' (no experiment.json with "
                        "finished points)", where=str(root))
    return sorted(out, key=lambda e: _figure_order(e))


def _figure_order(e: ExperimentData) -> tuple:
    digits = "".join(ch for ch in e.experiment.figure if ch.isdigit())
    return (int(digits) if digits else 99, e.name, e.grid, str(e.root))
