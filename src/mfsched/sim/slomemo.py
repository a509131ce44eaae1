"""What the isolated TTFT behind an SLO depends on, and where it is remembered.

The SLO of a request is ``slo_scale`` x its TTFT alone on the idle cluster with the routing it
got (:class:`mfsched.sim.serving.IsolatedTtft`, one small simulation per distinct case). Two
requests share that TTFT when their token counts (prompt, local hit, remote hit) are equal and
their routes are *equivalent*: the simulation of one is the simulation of the other with the
links renamed. :func:`route_class` finds that out from the topology itself: it plans a batch of
one chunk on the route's unit (fetching from the route's remote unit, if any) and lists every
step and transfer with their links renamed in order of first appearance, with the renamed
links' capacities and the compute steps' durations. Equal lists mean the same steps, the same
members over the same link pattern and capacities, in the same order, so the isolated runs
perform the same arithmetic in the same order (identical results, not just close:
``tests/test_slomemo.py`` compares every look-up of small runs with a fresh isolated run). In
practice the class is the unit's place in its instance and how the remote unit relates to it
(same server, same NIC, another server), so equivalent routes of different instances share
entries.

:class:`SloStore` keeps the entries of one cluster on disk (``cache_root()/slo``), in a file
named after a digest of everything the isolated TTFT depends on: the model, parallelism,
deployment, hardware and compute model, the topology's links and capacities, the
communication model, the serving configuration, the mfsched version and the source of the
whole package. A changed model, scenario or code therefore never reads another's entries.
Reads happen once per process; new entries are merged into the file under a lock
(``fcntl.flock``), so parallel runs sharing a cluster add to one file. Disable with
``MFSCHED_NO_DISK_CACHE=1``.

Callers: :class:`mfsched.sim.serving.IsolatedTtft`; the runner hands one store to the scheduler
runs of a point (:mod:`mfsched.experiments.runner`).
"""

from __future__ import annotations

import fcntl
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..cachedir import cache_root, disk_cache_enabled, read_floats, source_digest, write_json
from ..provenance import mfsched_version
from ..workload.stages import Chunk, CollectiveStep, ComputeStep

if TYPE_CHECKING:
    from .serving import SimCluster

__all__ = ["SloStore", "cluster_digest", "route_class"]

_FORMAT = 1  # bump when the file layout or the key's meaning changes


def route_class(cluster: SimCluster, unit: int, remote_unit: int) -> str:
    """A digest of the route's shape: equal for routes whose isolated runs are the same up to
    a renaming of links (module docstring)."""
    units = cluster.deployment.units
    u = units[unit]
    remote = units[remote_unit] if remote_unit >= 0 else None
    chunk = Chunk(0, u.index, 1, 0, 1, 1 if remote is not None else 0, remote)
    plan = cluster.planner.plan(u.instance_id, [chunk])
    topo = cluster.topology
    names: dict[int, int] = {}

    def members(ms) -> tuple:
        out = []
        for src, dst, size in ms:
            path = tuple(names.setdefault(link, len(names)) for link in topo.path(src, dst))
            out.append((path, size))
        return tuple(out)

    steps = tuple(("compute", s.name, s.duration_s) if isinstance(s, ComputeStep) else
                  ("collective", s.name, s.connections, members(s.members))
                  for s in plan.steps)
    assert all(isinstance(s, ComputeStep | CollectiveStep) for s in plan.steps)
    reuse = tuple((t.connections, members(t.members)) for t in plan.reuse)
    p2d = tuple((t.connections, members(t.members)) for t in plan.p2d)
    capacity = tuple(float(topo.capacity_bps[link]) for link in names)
    shape = (steps, reuse, p2d, capacity, remote is None)
    return hashlib.sha256(repr(shape).encode()).hexdigest()[:32]


def cluster_digest(cluster: SimCluster) -> str:
    """Everything an isolated TTFT on ``cluster`` depends on, as one digest (module
    docstring)."""
    topo = cluster.topology
    h = hashlib.sha256()
    for part in (
        _FORMAT, mfsched_version(), source_digest(["**/*.py"]),
        cluster.deployment, cluster.compute, cluster.planner.comm,
        cluster.planner.intra_server_bytes_per_s, cluster.serving,
        cluster.kv_cache_tokens_per_unit,
        (topo.name, topo.num_servers, topo.gpus_per_server, topo.intra_server_bps, topo.gpu,
         topo.nccl_rings, tuple(topo.link_names)),
    ):
        h.update(repr(part).encode() + b"\0")
    h.update(topo.capacity_bps.astype(float).tobytes())
    return h.hexdigest()


@dataclass
class SloStore:
    """Isolated TTFTs of one cluster: in memory, backed by a file when ``path`` is set.

    Keys are ``"input,local,remote,route_class"`` strings; values the TTFT in seconds (JSON
    round-trips doubles exactly). ``new`` holds what this process computed and has not
    saved yet.
    """

    path: Path | None = None
    entries: dict[str, float] = field(default_factory=dict)
    new: dict[str, float] = field(default_factory=dict)

    @classmethod
    def for_cluster(cls, cluster: SimCluster) -> SloStore:
        """The store of ``cluster``: its file's entries, or an in-memory store when disk
        caching is off or the cache directory is not usable."""
        if not disk_cache_enabled():
            return cls()
        path = cache_root() / "slo" / f"{cluster_digest(cluster)[:32]}.json"
        store = cls(path)
        store.entries.update(read_floats(path))
        return store

    def get(self, key: str) -> float | None:
        return self.entries.get(key)

    def put(self, key: str, ttft_s: float) -> None:
        self.entries[key] = ttft_s
        self.new[key] = ttft_s

    def merge(self, entries: dict[str, float]) -> None:
        """Entries computed elsewhere (another process) for the same cluster."""
        for k, v in entries.items():
            if k not in self.entries:
                self.put(k, v)

    def save(self) -> None:
        """Merge this process's new entries into the file (under a lock; atomic rename).
        A cache that cannot be written is skipped: it only costs recomputation."""
        if self.path is None or not self.new:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_suffix(".lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                merged = read_floats(self.path)
                merged.update(self.new)
                write_json(self.path, merged)
        except OSError:
            return
        self.entries.update(merged)
        self.new.clear()
