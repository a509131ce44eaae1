"""How long each scheduler's run took on a cluster, so that the next parallel run of that
cluster starts the longest first.

:func:`mfsched.experiments.runner.run` with ``jobs`` > 1 hands the schedulers of one point to
worker processes in the order :func:`longest_first` gives and :func:`record`\\ s their wall
times afterwards. Started in registry order, the two slowest schedulers of the default
``mfsched simulate`` (PIAS and the oracle) ran last, one of them alone on a core for about
4 s (measured: 14.1 s for the parallel part on 2 cores); longest first is the classic
greedy (LPT) schedule. The order changes nothing but the wall time: every run is
deterministic and results are returned in the caller's order.

The times live in ``cache_root()/runtimes/<cluster digest>.json`` (the digest of
:func:`mfsched.sim.slomemo.cluster_digest`, which covers the package's source: changed code
starts afresh). Without a file (first run, disk cache off, unreadable) the order is the
caller's. Writers replace the file atomically; a lost update between two concurrent runs only
costs a less good order next time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..cachedir import cache_root, disk_cache_enabled, read_floats, write_json
from ..sim.serving import SimCluster
from ..sim.slomemo import cluster_digest

__all__ = ["longest_first", "record"]


def _path(cluster: SimCluster) -> Path | None:
    if not disk_cache_enabled():
        return None
    return cache_root() / "runtimes" / f"{cluster_digest(cluster)[:32]}.json"


def longest_first(cluster: SimCluster, schedulers: Sequence[str]) -> list[int]:
    """Indices into ``schedulers``, the longest recorded wall time first; schedulers without
    a record keep their order, before the recorded ones (they may be long)."""
    path = _path(cluster)
    wall_s = {} if path is None else read_floats(path)
    return sorted(range(len(schedulers)),
                  key=lambda i: (schedulers[i] in wall_s, -wall_s.get(schedulers[i], 0.0), i))


def record(cluster: SimCluster, wall_s: Mapping[str, float]) -> None:
    """Keep these schedulers' wall times (seconds) for the next run of ``cluster``; a cache
    that cannot be written is skipped."""
    path = _path(cluster)
    if path is None or not wall_s:
        return
    with contextlib.suppress(OSError):
        write_json(path, {**read_floats(path), **{k: float(v) for k, v in wall_s.items()}})
