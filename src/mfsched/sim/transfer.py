"""A prepared transfer: the members of one schedulable flow and what the network needs.

The serving logic builds one per flow (or per member in per-flow mode) from the stage
planner's members ``(src_gpu, dst_gpu, bytes)``. The simulator's engine uses the aggregated
link weights; a wall-clock engine over real transports uses the members themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..workload.stages import Member
from .topology import Topology

__all__ = ["Transfer"]


class Transfer:
    """``connections``: how many transport connections each member is striped over; the
    flow claims that many fair shares on its links (``share``)."""

    __slots__ = ("bottleneck_bps", "links", "member_list", "members", "port_bytes", "share",
                 "size", "total", "weights")

    def __init__(self, topology: Topology, members: Sequence[Member],
                 connections: int = 1) -> None:
        per_link: dict[int, float] = {}
        for src, dst, size in members:
            for link in topology.path(src, dst):
                per_link[link] = per_link.get(link, 0.0) + size
        self.member_list = tuple(members)
        self.size = max(m[2] for m in members)
        self.total = sum(m[2] for m in members)
        self.members = len(members)
        self.links = np.fromiter(per_link, dtype=np.int64, count=len(per_link))
        self.weights = np.fromiter(per_link.values(), dtype=float, count=len(per_link)) / self.size
        self.port_bytes = tuple(per_link.items())
        self.bottleneck_bps = float(topology.capacity_bps[self.links].min())
        self.share = float(connections)
