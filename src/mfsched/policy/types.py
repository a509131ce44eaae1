"""The vocabulary shared by every policy and every driver (simulator, daemon, vLLM plugin).

All times are absolute seconds on the driver's clock (virtual or wall), all sizes bytes, all
rates bits per second. Ports are opaque integers chosen by the driver (the simulator uses link
ids); a policy only compares and sums over them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import NamedTuple, Protocol

__all__ = [
    "MAX_RANK",
    "RANK_BITS",
    "BatchInfo",
    "Decision",
    "FlowInfo",
    "GlobalOrder",
    "Priority",
    "ProgressView",
    "RequestInfo",
    "Stage",
]


class Stage(IntEnum):
    """The three communication stages of one layer of a prefill batch (paper §2.2)."""

    KV_REUSE = 1  # fetch reusable prefix KV from another prefill unit; needed by its layer
    COLLECTIVE = 2  # EP all-to-all / SP / cross-server TP collectives; block the next step
    P2D = 3  # layer-wise prefill-to-decode KV transfer; blocks nothing, counts in TTFT


# Drivers pack (level, rank) into one 64-bit integer (mfsched.sim.allocation.priority_key):
# ranks are 0..MAX_RANK, a deadline in microseconds up to 101 days (the simulator's clock stops
# at 97, mfsched.validate.MAX_SIMULATED_S), levels below 2**20.
RANK_BITS = 43
MAX_RANK = (1 << RANK_BITS) - 1


class Priority(NamedTuple):
    """Where a flow sits: strict priority by ``level`` (0 is highest), then by ``rank``.

    Flows with equal (level, rank) share bandwidth max-min fairly. ``rank`` lets a policy order
    flows inside one hardware level in software (e.g. MFS's RED order); most policies leave 0.
    Ranks are 0..``MAX_RANK``.
    """

    level: int
    rank: int = 0


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """A request as the policy sees it on arrival."""

    request_id: int
    arrival_s: float
    slo_s: float  # TTFT budget
    input_tokens: int

    @property
    def deadline_s(self) -> float:
        return self.arrival_s + self.slo_s


class FlowInfo(NamedTuple):
    """One schedulable flow: a point-to-point transfer, or a group of parallel equal-purpose
    transfers of one collective (``members`` > 1) that the driver advances together.

    ``request_ids`` are the requests it serves: one for a Stage-1 or Stage-3 transfer, several
    (of its batch) for a collective. ``size_bytes`` is the size of the largest member (what sets
    the flow's finish time at a given per-member rate); ``total_bytes`` sums all members.
    ``port_bytes`` lists the load the flow puts on each port it crosses. ``target_layer`` is the
    layer whose computation consumes the data (Stage 3 uses ``num_layers``: nothing waits for it
    but the first token).

    A NamedTuple rather than a frozen dataclass: drivers create one per flow on their hot path
    and a frozen dataclass costs six times as much to build; both are immutable and typed.
    """

    flow_id: int
    stage: Stage
    batch_id: int
    request_ids: tuple[int, ...]
    layer: int
    target_layer: int
    size_bytes: float
    total_bytes: float
    members: int
    port_bytes: tuple[tuple[int, float], ...]
    bottleneck_bps: float
    deadline_s: float | None
    submit_s: float


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A prefill batch (one forward pass of an instance) on its start.

    ``layer_compute_s`` is the driver's estimate of the compute time of one layer (all compute
    steps, no communication). The per-layer traffic matrix, filled only for policies that set
    ``needs_port_loads``: ``p2d_port_bytes`` maps request id -> port -> Stage-3 bytes per layer;
    ``early_port_bytes`` maps port -> Stage-1 and Stage-2 bytes per layer of the whole batch.
    """

    batch_id: int
    instance: int
    request_ids: tuple[int, ...]
    num_layers: int
    start_s: float
    layer_compute_s: float
    p2d_port_bytes: Mapping[int, Mapping[int, float]] = field(default_factory=dict)
    early_port_bytes: Mapping[int, float] = field(default_factory=dict)
    port_capacity_bps: Mapping[int, float] = field(default_factory=dict)


_EMPTY: Mapping = MappingProxyType({})


class Decision(NamedTuple):
    """What a policy answers. ``priorities`` holds only flows whose priority changed (or that
    are new) since the previous decision; ``rate_caps`` likewise holds changed per-member rate
    limits in bytes/s (``None`` lifts a limit; most policies never set one); ``pruned`` is the
    full pruned request set, or None if unchanged; ``wake_s`` asks the driver to call
    :meth:`Policy.decide` again at that time. (A NamedTuple: one is built per decision.)"""

    priorities: Mapping[int, Priority] = _EMPTY
    rate_caps: Mapping[int, float | None] = _EMPTY
    pruned: frozenset[int] | None = None
    wake_s: float | None = None


class GlobalOrder(NamedTuple):
    """An inter-request decision made outside the policy: the data plane's coordinator orders
    all live batches by RED and prunes requests with the global view (paper §5), and every
    daemon's policy takes its decision from there (:meth:`Policy.on_global_order`).

    ``ranks`` maps batch -> RED rank (0 first); ``pruned`` is the full set of pruned requests.
    An empty order says only "a coordinator owns this": the policy stops pruning on its own.
    """

    ranks: Mapping[int, int] = _EMPTY
    pruned: frozenset[int] = frozenset()


class ProgressView(Protocol):
    """Read-only view of flow progress, provided by the driver at decision time."""

    def remaining_bytes(self, flow_id: int) -> float:
        """Bytes the flow's largest member still has to send."""
        ...

    def rate_bytes_per_s(self, flow_id: int) -> float:
        """The largest member's current sending rate (bytes/s)."""
        ...
