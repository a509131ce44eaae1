"""Fair Sharing: every flow in one level, max-min fair (the default network stack).

The simplest policy, and the baseline every other is compared with (paper §6.3, "FS").
"""

from __future__ import annotations

from .base import SCHEDULERS, Policy
from .types import Decision, FlowInfo, Priority, ProgressView

__all__ = ["FairSharing"]

_SHARED = Priority(0, 0)
_NOTHING = Decision()


@SCHEDULERS.register("fs", help="Fair Sharing: one level, max-min fair among all flows")
class FairSharing(Policy):
    name = "fs"

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self._new: dict[int, Priority] = {}

    def on_flow_submit(self, flow: FlowInfo, now_s: float) -> None:
        self._new[flow.flow_id] = _SHARED

    def decide(self, now_s: float, progress: ProgressView) -> Decision:
        if not self._new:
            return _NOTHING
        new, self._new = self._new, {}
        return Decision(priorities=new)
