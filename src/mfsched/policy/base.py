"""The policy protocol, its configuration and the scheduler registry.

Drivers call the ``on_*`` notifications as things happen and :meth:`Policy.decide` once per
instant after them (the simulator: after all events of one timestamp; the daemon: after a
batch of messages). Notifications must be cheap; decide may do more work but sees only
what it was told plus the :class:`~mfsched.policy.types.ProgressView`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..registry import Registry
from .types import BatchInfo, Decision, FlowInfo, ProgressView, RequestInfo

__all__ = ["SCHEDULERS", "Policy", "PolicyConfig", "make_policy"]


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Settings every policy understands. ``num_levels`` strict levels 0..K-1; the scavenger
    class is level K. Policy-specific settings live in the policy's own config class."""

    num_levels: int = 8

    def __post_init__(self) -> None:
        if self.num_levels < 1:
            raise ValueError("num_levels must be at least 1")

    @property
    def scavenger_level(self) -> int:
        return self.num_levels


class Policy:
    """Base class with no-op notifications. Subclasses override what they need."""

    name: ClassVar[str] = "?"

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()

    def on_request(self, request: RequestInfo, now_s: float) -> None:
        """A request arrived (with its TTFT budget)."""

    def on_request_done(self, request_id: int, now_s: float) -> None:
        """The request's first token is out; forget it."""

    def on_batch_start(self, batch: BatchInfo, now_s: float) -> None:
        """A prefill batch started its first layer."""

    def on_batch_end(self, batch_id: int, now_s: float) -> None:
        """The batch departed: its compute is done and all its flows completed."""

    def on_flow_submit(self, flow: FlowInfo, now_s: float) -> None:
        """A flow is ready to send. It must get a priority in the next decision."""

    def on_layer_start(self, batch_id: int, layer: int, now_s: float) -> None:
        """Layer ``layer`` of the batch starts computing (a layer boundary)."""

    def on_flow_complete(self, flow_id: int, now_s: float) -> None:
        """The flow's last byte arrived."""

    def decide(self, now_s: float, progress: ProgressView) -> Decision:
        raise NotImplementedError


SCHEDULERS: Registry[type[Policy]] = Registry("scheduler", entry_point_group="mfsched.schedulers")


def make_policy(name: str, config: PolicyConfig | None = None) -> Policy:
    """Instantiate a registered scheduler by name."""
    return SCHEDULERS.get(name)(config)
