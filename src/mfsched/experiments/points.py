"""One grid point: a config run under several schedulers on the same prepared requests.

A *point* is the unit of work of every sweep (``mfsched sweep``) and every paper experiment
(``mfsched reproduce``): the executors of :mod:`mfsched.experiments.executors` run
:func:`run_point` in a worker process or on a Ray worker and hand the :class:`PointResult` back
to the driver, which stores it. A point builds its cluster and request stream once and runs every
scheduler on them, so the schedulers of one point are compared on identical requests.

A point can add the *contention-free reference*
(:func:`mfsched.experiments.runner.run_contention_free`).

With ``details`` a point also returns the per-item values behind two of the summary means: each
evaluated request's TTFT and P2D earliness, and each batch-layer's Stage-2 CCT (the paper's
Figs. 14-15 plot their distributions). Both come from :mod:`mfsched.metrics`, the same functions
the summary averages.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..metrics import request_earliness, stage2_cct_per_layer
from .config import SimConfig
from .runner import CONTENTION_FREE, prepare, run, run_contention_free

__all__ = ["CONTENTION_FREE", "Point", "PointResult", "run_point"]


@dataclass(frozen=True)
class Point:
    """What one task computes. ``key`` names it in a results directory (unique per grid)."""

    key: str
    config: SimConfig
    schedulers: tuple[str, ...]
    reference: bool = False
    details: bool = False


@dataclass(frozen=True)
class PointResult:
    """Plain rows (picklable, no simulator objects), in scheduler order, reference last.

    ``rows``: one summary per scheduler (:meth:`RunResult.to_json` plus ``bandwidth_scale``).
    ``requests`` / ``layers``: per-request and per-batch-layer rows when the point asked for
    details, else empty.
    """

    key: str
    rows: tuple[dict, ...]
    requests: tuple[dict, ...] = ()
    layers: tuple[dict, ...] = ()


def run_point(point: Point) -> PointResult:
    """Run every scheduler of the point (and the reference) on one prepared request stream."""
    cfg = point.config
    prepared = prepare(cfg)
    results = run(prepared, point.schedulers)
    if point.reference:
        results.append(run_contention_free(prepared))
    rows = tuple(dict(r.to_json(), bandwidth_scale=cfg.bandwidth_scale) for r in results)
    if not point.details:
        return PointResult(point.key, rows)
    requests: list[dict] = []
    layers: list[dict] = []
    for r in results:
        earliness = request_earliness(r.records)
        requests.extend({"scheduler": r.scheduler, "request_id": q.request_id,
                         "input_tokens": q.input_tokens, "new_tokens": q.new_tokens,
                         "ttft_s": q.ttft_s, "slo_s": q.slo_s, "met": q.met,
                         "p2d_earliness": earliness[q.request_id]}
                        for q in r.records.requests if q.evaluated)
        layers.extend({"scheduler": r.scheduler, "batch_id": b, "layer": layer,
                       "stage2_cct_s": cct}
                      for (b, layer), cct in sorted(stage2_cct_per_layer(r.records).items()))
    return PointResult(point.key, rows, tuple(requests), tuple(layers))
