"""Our value of each number the paper states, computed from an experiment's results.

An experiment file lists the paper's claims (:class:`mfsched.experiments.spec.Claim`), each naming
a metric of :data:`mfsched.experiments.spec.CLAIM_METRICS`; ``CLAIM_FUNCS`` holds one function per
metric (a test checks the two agree). Each returns :class:`Ours`: one value per group (model,
workload, rate or baseline, whichever the claim ranges over), so the report shows the range and
where it comes from. Definitions:

* ``sustainable_rate_ratio``: per (model, workload), the numerator's sustainable rate
  (:func:`mfsched.metrics.sustainable_rate` of the seed-mean attainment at the claim's threshold,
  0.5 by default) over the denominator's; undefined where either curve did not cross the
  threshold inside the grid.
* ``attainment_ratio``: per (model, workload), the highest ratio of seed-mean attainments over
  the upper half of the grid's rates (the paper's "at high request rates"; only the claim's rate
  if it names one), counting rates where the denominator meets at least 5% of SLOs.
* ``mean_ratio`` / ``mean_reduction``: per (model, workload, rate), seed-mean of a summary
  column for the numerator over the denominator (or one minus that).
* ``nonneg_earliness_reduction``: per (model, workload, rate), one minus the ratio of the mean
  non-negative P2D earliness of all evaluated requests (all seeds), from the per-request details.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..experiments.spec import Claim
from .data import BASELINE_EXCLUDED, ExperimentData

__all__ = ["CLAIM_FUNCS", "Ours", "evaluate"]

MIN_DENOMINATOR_ATTAINMENT = 0.05


@dataclass(frozen=True)
class Ours:
    values: tuple[tuple[str, float], ...]  # (group label, value); NaN where undefined
    note: str = ""

    def finite(self) -> list[float]:
        return [v for _, v in self.values if math.isfinite(v)]


def evaluate(claim: Claim, data: ExperimentData) -> Ours:
    return CLAIM_FUNCS[claim.metric](claim, data)


def _groups(claim: Claim, data: ExperimentData) -> list[tuple[str, str]]:
    return [(m, w) for m, w in data.groups()
            if (claim.models is None or m in claim.models)
            and (claim.workload is None or w == claim.workload)]


def _label(data: ExperimentData, model: str, workload: str, extra: str = "") -> str:
    parts = []
    if len({m for m, _ in data.groups()}) > 1:
        parts.append(model)
    if len({w for _, w in data.groups()}) > 1:
        parts.append(workload)
    if extra:
        parts.append(extra)
    return ", ".join(parts) or "all"


def _baselines(data: ExperimentData, numerator: str) -> list[str]:
    return [s for s in data.runs() if s not in BASELINE_EXCLUDED and s != numerator]


def _attainment(data, model, workload, scheduler, rate, numerator) -> float:
    if scheduler == "best-baseline":
        vals = [data.mean("slo_attainment", model, workload, s, rate)
                for s in _baselines(data, numerator)]
        vals = [v for v in vals if math.isfinite(v)]
        return max(vals) if vals else float("nan")
    return data.mean("slo_attainment", model, workload, scheduler, rate)


def _ratio(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return float("nan")
    return a / b


def _sustainable_rate_ratio(claim: Claim, data: ExperimentData) -> Ours:
    out = []
    for den in claim.denominators:
        for m, w in _groups(claim, data):
            num = data.sustainable(m, w, claim.numerator, claim.threshold)
            den_rate = data.sustainable(m, w, den, claim.threshold)
            extra = den if len(claim.denominators) > 1 else ""
            exact = num is not None and den_rate is not None and not (num.bound or den_rate.bound)
            out.append((_label(data, m, w, extra),
                        _ratio(num.rate, den_rate.rate) if exact else float("nan")))
    return Ours(tuple(out), f"at {claim.threshold:.0%} attainment")


def _claim_rates(claim: Claim, data: ExperimentData, model: str, workload: str) -> list[float]:
    """The grid's rates of (model, workload), only the claim's rate where it names one."""
    rates = data.rates(model, workload)
    return rates if claim.rate_per_gpu is None else [r for r in rates
                                                      if r == claim.rate_per_gpu]


def _attainment_ratio(claim: Claim, data: ExperimentData) -> Ours:
    out = []
    for den in claim.denominators:
        for m, w in _groups(claim, data):
            rates = _claim_rates(claim, data, m, w)
            if claim.rate_per_gpu is None:
                rates = rates[len(rates) // 2:]
            best, at = float("nan"), None
            for r in rates:
                d = _attainment(data, m, w, den, r, claim.numerator)
                if not d >= MIN_DENOMINATOR_ATTAINMENT:
                    continue
                v = _ratio(_attainment(data, m, w, claim.numerator, r, claim.numerator), d)
                if math.isfinite(v) and (at is None or v > best):
                    best, at = v, r
            extra = ", ".join(x for x in (den if len(claim.denominators) > 1 else "",
                                          f"at {at:g}" if at is not None else "") if x)
            out.append((_label(data, m, w, extra), best))
    return Ours(tuple(out), "" if claim.denominators != ("best-baseline",)
                else "against the best baseline at each rate")


def _per_point(claim: Claim, data: ExperimentData,
               value: Callable[[str, str, float, str], float]) -> Ours:
    out = []
    for den in claim.denominators:
        for m, w in _groups(claim, data):
            rates = _claim_rates(claim, data, m, w)
            for r in rates:
                extra = ", ".join(x for x in (den if len(claim.denominators) > 1 else "",
                                              f"{r:g} req/s/GPU" if len(rates) > 1 else "")
                                  if x)
                out.append((_label(data, m, w, extra), value(m, w, r, den)))
    return Ours(tuple(out))


def _mean_ratio(claim: Claim, data: ExperimentData) -> Ours:
    col = claim.column or ""
    return _per_point(claim, data, lambda m, w, r, den: _ratio(
        data.mean(col, m, w, claim.numerator, r), data.mean(col, m, w, den, r)))


def _mean_reduction(claim: Claim, data: ExperimentData) -> Ours:
    ours = _mean_ratio(claim, data)
    return Ours(tuple((k, 1 - v) for k, v in ours.values), ours.note)


def _nonneg_earliness_reduction(claim: Claim, data: ExperimentData) -> Ours:
    if data.details("requests") is None:
        return Ours((), "needs per-request details (details = true)")

    def mean_nonneg(m, w, r, s) -> float:
        e = data.detail_values("requests", "p2d_earliness", s, m, w, r)
        e = e[e >= 0]
        return float(np.mean(e)) if e.size else float("nan")

    return _per_point(claim, data, lambda m, w, r, den: 1 - _ratio(
        mean_nonneg(m, w, r, claim.numerator), mean_nonneg(m, w, r, den)))


CLAIM_FUNCS: dict[str, Callable[[Claim, ExperimentData], Ours]] = {
    "sustainable_rate_ratio": _sustainable_rate_ratio,
    "attainment_ratio": _attainment_ratio,
    "mean_ratio": _mean_ratio,
    "mean_reduction": _mean_reduction,
    "nonneg_earliness_reduction": _nonneg_earliness_reduction,
}
