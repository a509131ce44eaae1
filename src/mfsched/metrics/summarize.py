"""Summaries of one run: SLO attainment, TTFT statistics, Stage-2 CCT, P2D earliness.

* SLO attainment: share of evaluated requests whose TTFT <= their SLO.
* Stage-2 CCT: per (batch, layer), the summed duration of that layer's collectives (EP
  dispatch + combine, SP all-gather, ...), averaged over batch-layers that ran while evaluated
  requests were in the system (first evaluated arrival .. last evaluated first token).
* P2D earliness: (P2D deadline - last P2D byte) / SLO per request, where the P2D deadline is
  the TTFT deadline minus the first decode step; positive = early, negative = missed.
* Prefix reuse: the share of the evaluated requests' prompt tokens whose KV came from a cache
  (their unit's or, by Stage 1, another unit's) rather than being computed.
* Instance shares: the fraction of all requests (warm-up and tail included) and of all batches
  each prefill instance served, to check that the router spreads the load.
* Sustainable rate: where an attainment curve first falls below a threshold as the rate grows
  (the paper's "sustains 1.17x-1.46x higher request rates"); used by ``mfsched sweep``'s tables
  and the reproduction report.

``stage2_cct_per_layer`` and ``request_earliness`` are the per-item values behind the two means
(the breakdowns of the paper's Figs. 14-15 plot their distributions); ``summarize`` averages
them, so the mean and the distribution come from one formula.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..records import RunRecords

__all__ = ["Summary", "SustainableRate", "request_earliness", "stage2_cct_per_layer",
           "summarize", "sustainable_rate"]


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
    prefix_reuse: float = float("nan")
    instance_request_share: tuple[float, ...] = ()
    instance_batch_share: tuple[float, ...] = ()


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


def _shares(instances, n: int) -> tuple[float, ...]:
    counts = [0] * n
    for i in instances:
        counts[i] += 1
    total = sum(counts)
    return tuple(c / total if total else 0.0 for c in counts)


def summarize(records: RunRecords, instances: int = 0) -> Summary:
    """The summary of one run; ``instances``: how many prefill instances the cluster has
    (0: as many as the records show)."""
    n = max([instances, *(r.instance + 1 for r in records.requests),
             *(b.instance + 1 for b in records.batches)])
    req_share = _shares((r.instance for r in records.requests), n)
    batch_share = _shares((b.instance for b in records.batches), n)
    ev = [r for r in records.requests if r.evaluated]
    if not ev:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan, nan, nan, nan, req_share, batch_share)
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
        prefix_reuse=sum(r.local_hit_tokens + r.remote_hit_tokens for r in ev)
        / sum(r.input_tokens for r in ev),
        instance_request_share=req_share,
        instance_batch_share=batch_share,
    )


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


def sustainable_rate(rates: Sequence[float], attainment: Sequence[float],
                     threshold: float = 0.5) -> SustainableRate:
    """Where the attainment first falls below ``threshold`` as the rate grows, interpolated
    linearly between the two swept rates around the crossing (points are sorted by rate)."""
    points = sorted(zip(rates, attainment, strict=True))
    if not points:
        raise ValueError("no points")
    if points[0][1] < threshold:
        return SustainableRate(points[0][0], "<")
    for (r0, a0), (r1, a1) in itertools.pairwise(points):
        if a1 < threshold <= a0:
            return SustainableRate(r0 + (a0 - threshold) / (a0 - a1) * (r1 - r0))
    return SustainableRate(points[-1][0], ">=")
