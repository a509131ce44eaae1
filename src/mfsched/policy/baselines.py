"""The schedulers MFS is compared against (paper §6.3), plus PIAS.

* ``sjf`` — strict priority to smaller flows (by size, every flow its own class).
* ``edf`` — flows with an explicit deadline (Stage 3) first, earliest deadline first; flows
  without one (Stages 1 and 2) share fairly below them.
* ``karuna`` — deadline flows at the top level, each limited to the minimal rate that meets its
  deadline (remaining bytes / remaining time, as Karuna's MCP paces them, re-paced every
  ``refresh_s``); flows without deadlines in K-1 size-threshold levels (Karuna's type-2 flows,
  known sizes, SJF-like). A deadline flow whose deadline has passed joins the size levels.
* ``pias`` — information-agnostic multi-level feedback queue: every flow starts at the top and
  is demoted when the bytes it has sent cross geometric thresholds.

Sizes are the flow's largest member (what a switch sees of one transfer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._jit import njit
from .arrays import grown, progress_arrays
from .base import SCHEDULERS, Policy, PolicyConfig
from .types import MAX_RANK, Decision, FlowInfo, Priority, ProgressView

__all__ = ["EDF", "PIAS", "SJF", "Karuna", "SizeThresholdConfig", "size_level"]

_NOTHING = Decision()
_NS = 1e-9
_INF = float("inf")


def _size_rank(size_bytes: float) -> int:
    """A sortable integer for a size (64-byte units), ties stay ties."""
    return min(MAX_RANK, int(size_bytes) >> 6)


def size_level(size_bytes: float, thresholds: tuple[float, ...]) -> int:
    """0-based index of the first threshold the size is below (len(thresholds) if none)."""
    for i, t in enumerate(thresholds):
        if size_bytes < t:
            return i
    return len(thresholds)


@dataclass(frozen=True, slots=True)
class SizeThresholdConfig(PolicyConfig):
    """Geometric size thresholds: first_threshold_bytes x ratio^j, one per level boundary."""

    first_threshold_bytes: float = 256 * 1024
    ratio: float = 4.0
    refresh_s: float = 5e-3  # Karuna's re-pacing period

    def __post_init__(self) -> None:
        if self.first_threshold_bytes <= 0 or self.ratio <= 1 or self.refresh_s <= 0:
            raise ValueError("need first_threshold_bytes > 0, ratio > 1 and refresh_s > 0")
        try:  # the largest threshold a policy with num_levels levels uses
            top = self.first_threshold_bytes * self.ratio ** max(0, self.num_levels - 2)
        except OverflowError:
            top = float("inf")
        if not math.isfinite(top):
            raise ValueError(f"size thresholds overflow: first_threshold_bytes x ratio^"
                             f"{max(0, self.num_levels - 2)} is not a finite number")

    def thresholds(self, levels: int) -> tuple[float, ...]:
        return tuple(self.first_threshold_bytes * self.ratio ** j for j in range(levels - 1))


class _NewFlows(Policy):
    """Shared shape of the static policies: a priority per new flow, nothing else."""

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self._new: dict[int, Priority] = {}

    def on_flow_submit(self, flow: FlowInfo, now_s: float) -> None:
        self._new[flow.flow_id] = self.priority(flow)

    def priority(self, flow: FlowInfo) -> Priority:
        raise NotImplementedError

    def decide(self, now_s: float, progress: ProgressView) -> Decision:
        if not self._new:
            return _NOTHING
        new, self._new = self._new, {}
        return Decision(priorities=new)


@SCHEDULERS.register("sjf", help="Shortest Job First: strict priority to smaller flows")
class SJF(_NewFlows):
    name = "sjf"

    def priority(self, flow: FlowInfo) -> Priority:
        return Priority(0, _size_rank(flow.size_bytes))


@SCHEDULERS.register("edf", help="Earliest Deadline First for flows with explicit deadlines "
                                 "(P2D); the rest fair-shared below")
class EDF(_NewFlows):
    name = "edf"

    def priority(self, flow: FlowInfo) -> Priority:
        if flow.deadline_s is None:
            return Priority(1, 0)
        return Priority(0, min(MAX_RANK, max(0, int(flow.deadline_s * 1e6))))


@SCHEDULERS.register("karuna", help="Karuna: minimal-rate deadline flows on top, the rest in "
                                    "size-threshold levels")
class Karuna(Policy):
    name = "karuna"
    config_cls = SizeThresholdConfig

    def __init__(self, config: SizeThresholdConfig | None = None) -> None:
        super().__init__(config)
        self.thresholds = self.config.thresholds(self.config.num_levels - 1)
        self.deadline_flows: dict[int, FlowInfo] = {}
        self.caps: dict[int, float] = {}
        self._next_refresh = float("inf")
        self._new: list[FlowInfo] = []

    def on_flow_submit(self, flow: FlowInfo, now_s: float) -> None:
        self._new.append(flow)

    def on_flow_complete(self, flow_id: int, now_s: float) -> None:
        self.deadline_flows.pop(flow_id, None)
        self.caps.pop(flow_id, None)

    def _sized(self, flow: FlowInfo) -> Priority:
        return Priority(1 + size_level(flow.size_bytes, self.thresholds))

    def decide(self, now_s: float, progress: ProgressView) -> Decision:
        prios: dict[int, Priority] = {}
        caps: dict[int, float | None] = {}
        for flow in self._new:
            left = (flow.deadline_s or 0.0) - now_s
            if flow.deadline_s is not None and left > 0:
                self.deadline_flows[flow.flow_id] = flow
                prios[flow.flow_id] = Priority(0)
                self.caps[flow.flow_id] = caps[flow.flow_id] = flow.size_bytes / left
            else:
                prios[flow.flow_id] = self._sized(flow)
        self._new.clear()
        if now_s >= self._next_refresh:
            self._repace(now_s, progress, prios, caps)
        if self.deadline_flows and self._next_refresh <= now_s:
            self._next_refresh = now_s + self.config.refresh_s
        wake = self._next_refresh if self.deadline_flows else None
        return Decision(priorities=prios, rate_caps=caps, wake_s=wake)

    def _repace(self, now_s, progress, prios, caps) -> None:
        """Every refresh_s: each deadline flow's pace becomes remaining / time left; flows past
        their deadline join the size levels."""
        for fid, flow in list(self.deadline_flows.items()):
            left = flow.deadline_s - now_s
            if left <= 0:
                del self.deadline_flows[fid]
                del self.caps[fid]
                prios[fid] = self._sized(flow)
                caps[fid] = None
                continue
            cap = progress.remaining_bytes(fid) / left
            if abs(cap - self.caps[fid]) > 1e-3 * self.caps[fid]:
                self.caps[fid] = caps[fid] = cap


@SCHEDULERS.register("pias", help="PIAS: MLFQ demoting flows as their sent bytes cross "
                                  "thresholds (size-agnostic)")
class PIAS(Policy):
    """Each decision looks at every active flow (the bytes it has sent decide its level), in
    one compiled pass (:func:`_pias_walk`) over the network's arrays when the progress view
    offers them (``flow_arrays``, the simulator's network), else over the flows' getters.
    Levels and sizes live in arrays indexed by flow id (ids are small counters)."""

    name = "pias"
    config_cls = SizeThresholdConfig

    def __init__(self, config: SizeThresholdConfig | None = None) -> None:
        super().__init__(config)
        self.thresholds = self.config.thresholds(self.config.num_levels)
        self._thresholds = np.array(self.thresholds, dtype=np.float64)
        self.flows: set[int] = set()
        self._size = np.zeros(64)  # by flow id
        self._level = np.zeros(64, dtype=np.int64)
        self._changed = np.empty(64, dtype=np.int64)
        self._new: list[int] = []

    def on_flow_submit(self, flow: FlowInfo, now_s: float) -> None:
        fid = flow.flow_id
        self._size = grown(self._size, fid)
        self._level = grown(self._level, fid)
        self._size[fid] = flow.size_bytes
        self._level[fid] = 0
        self.flows.add(fid)
        self._new.append(fid)

    def on_flow_complete(self, flow_id: int, now_s: float) -> None:
        self.flows.discard(flow_id)

    def decide(self, now_s: float, progress: ProgressView) -> Decision:
        prios = {fid: Priority(0) for fid in self._new}
        self._new.clear()
        ids, remaining, rates = progress_arrays(progress, self.flows)
        if len(self._changed) < len(ids):
            self._changed = np.empty(2 * len(ids), dtype=np.int64)
        changed, wake = _pias_walk(ids, remaining, rates, self._size, self._level,
                                   self._thresholds, now_s, self._changed)
        for fid in self._changed[:changed].tolist():
            prios[fid] = Priority(int(self._level[fid]))
        return Decision(priorities=prios, wake_s=None if wake == _INF else wake)


@njit
def _pias_walk(ids, remaining, rates, size, level, thresholds, now_s, changed):
    """One decision of PIAS over every flow: demote those whose sent bytes crossed their
    level's threshold (their ids go to ``changed``, their levels to ``level``); returns how
    many changed and the earliest predicted crossing (inf if none)."""
    n_levels = len(thresholds)
    count = 0
    wake = _INF
    for i in range(len(ids)):
        fid = ids[i]
        size_bytes = size[fid]
        rate = rates[i]
        # what the flow sends in the next nanosecond counts as sent already, so a wake-up at
        # a predicted crossing always demotes (time must move forward)
        sent = size_bytes - remaining[i] + rate * _NS + 1.0
        new = 0
        while new < n_levels and not sent < thresholds[new]:  # size_level(sent)
            new += 1
        old = level[fid]
        if new < old:
            new = old
        if new != old:
            level[fid] = new
            changed[count] = fid
            count += 1
        if new < n_levels and thresholds[new] < size_bytes and rate > 0:
            step = (thresholds[new] - sent) / rate
            if step < _NS:
                step = _NS
            if now_s + step < wake:
                wake = now_s + step
    return count, wake
