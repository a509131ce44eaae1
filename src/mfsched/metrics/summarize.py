"""Summaries of one run: SLO attainment, TTFT statistics, Stage-2 CCT, P2D earliness.

* SLO attainment: share of evaluated requests whose TTFT <= their SLO.
* Stage-2 CCT: per (batch, layer), the summed duration of that layer's collectives (EP
  dispatch + combine, SP all-gather, ...), averaged over batch-layers that ran while evaluated
  requests were in the system (first evaluated arrival .. last evaluated first token).
* P2D earliness: (P2D deadline - last P2D byte) / SLO per request, where the P2D deadline is
  the TTFT deadline minus the first decode step; positive = early, negative = missed.
* Sustainable rate: the highest request rate at which an attainment curve still reaches a
  threshold (the report's table of the paper's "sustains 1.17x-1.46x higher request rates").

``stage2_cct_per_layer`` and ``request_earliness`` are the per-item values behind the two means
(the breakdowns of the paper's Figs. 14-15 plot their distributions); ``summarize`` averages
them, so the mean and the distribution come from one formula.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..records import RunRecords

__all__ = ["Summary", "request_earliness", "stage2_cct_per_layer", "summarize",
           "sustainable_rate"]


@dataclass(frozen=True, slots=True)
class Summary:
    requests_evaluated: int
    slo_attainment: float
    ttft_mean_s: float
    ttft_p50_s: float
    ttft_p99_s: float
    stage2_cct_mean_s: float
    p2d_earliness_mean: float
    pruned_fraction: float


def stage2_cct_per_layer(records: RunRecords) -> dict[tuple[int, int], float]:
    """(batch id, layer) -> summed Stage-2 collective time in seconds, for the batch-layers
    that ran while evaluated requests were in the system (empty if none were evaluated)."""
    ev = [r for r in records.requests if r.evaluated]
    per_layer: dict[tuple[int, int], float] = defaultdict(float)
    if not ev:
        return per_layer
    start = min(r.arrival_s for r in ev)
    end = max(r.first_token_s for r in ev)
    for c in records.collectives:
        if c.start_s >= start and c.end_s <= end:
            per_layer[(c.batch_id, c.layer)] += c.end_s - c.start_s
    return per_layer


def request_earliness(records: RunRecords) -> dict[int, float]:
    """Request id -> P2D earliness (fraction of its SLO), for the evaluated requests."""
    return {r.request_id: (r.p2d_deadline_s - r.p2d_done_s) / r.slo_s
            for r in records.requests if r.evaluated}


def summarize(records: RunRecords) -> Summary:
    ev = [r for r in records.requests if r.evaluated]
    if not ev:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan, nan, nan)
    ttft = np.array([r.ttft_s for r in ev])
    per_layer = stage2_cct_per_layer(records)
    cct = float(np.mean(list(per_layer.values()))) if per_layer else 0.0
    earliness = np.array(list(request_earliness(records).values()))
    return Summary(
        requests_evaluated=len(ev),
        slo_attainment=float(np.mean([r.met for r in ev])),
        ttft_mean_s=float(ttft.mean()),
        ttft_p50_s=float(np.percentile(ttft, 50)),
        ttft_p99_s=float(np.percentile(ttft, 99)),
        stage2_cct_mean_s=cct,
        p2d_earliness_mean=float(earliness.mean()),
        pruned_fraction=float(np.mean([r.pruned for r in ev])),
    )


def sustainable_rate(rates: Sequence[float], attainment: Sequence[float],
                     threshold: float = 0.5) -> float:
    """The highest rate at which the curve still reaches ``threshold``.

    Points are sorted by rate; between the last point at or above the threshold and the next one
    below it the rate is interpolated linearly. NaN if the curve never reaches the threshold;
    the highest rate if it never falls below it (the sweep did not go far enough).
    """
    pts = sorted(zip(rates, attainment, strict=True))
    if not pts:
        return float("nan")
    last_ok = None
    for i, (_r, a) in enumerate(pts):
        if a >= threshold:
            last_ok = i
    if last_ok is None:
        return float("nan")
    r0, a0 = pts[last_ok]
    if last_ok == len(pts) - 1:
        return float(r0)
    r1, a1 = pts[last_ok + 1]
    return float(r0 + (r1 - r0) * (a0 - threshold) / (a0 - a1))
