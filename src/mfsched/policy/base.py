"""The policy protocol, its configuration and the scheduler registry.

Every runtime drives a policy through :class:`mfsched.policy.driver.PolicyDriver`, which calls
the ``on_*`` notifications as things happen and :meth:`Policy.decide` once per instant after
them (the simulator: after all events of one timestamp; the daemon: after a batch of messages;
vLLM: at its hooks). Notifications must be cheap; decide may do more work but sees only what
it was told plus the :class:`~mfsched.policy.types.ProgressView`. The driver guarantees that a
policy never sees a flow of an unknown batch, nor a request forgotten while its flows move.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import ClassVar

from ..errors import UserError
from ..registry import Registry
from .types import BatchInfo, Decision, FlowInfo, GlobalOrder, ProgressView, RequestInfo

__all__ = ["SCHEDULERS", "Policy", "PolicyConfig", "make_policy", "parse_options"]


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
    """Base class with no-op notifications. Subclasses override what they need.

    A policy with settings of its own declares ``config_cls``, a frozen dataclass that extends
    :class:`PolicyConfig`; ``needs_port_loads`` asks the driver to fill the traffic matrix of
    :class:`BatchInfo` (it costs the driver a little work per batch).
    """

    name: ClassVar[str] = "?"
    config_cls: ClassVar[type[PolicyConfig]] = PolicyConfig
    needs_port_loads: ClassVar[bool] = False

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or self.config_cls()

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

    def on_batch_compute_done(self, batch_id: int, now_s: float) -> None:
        """The batch's last layer finished computing; only its P2D flows may remain."""

    def on_flow_complete(self, flow_id: int, now_s: float) -> None:
        """The flow's last byte arrived."""

    def on_global_order(self, order: GlobalOrder, now_s: float) -> None:
        """A coordinator decided the inter-request order and the pruned requests (paper §5).
        From the first call on, a policy with an inter-request stage takes both from the
        coordinator (its own RED ranks only for batches the order does not know yet) and no
        longer prunes by itself; the changes come out of the next :meth:`decide` as usual.
        Policies without an inter-request stage ignore it."""

    def decide(self, now_s: float, progress: ProgressView) -> Decision:
        raise NotImplementedError


SCHEDULERS: Registry[type[Policy]] = Registry("scheduler", entry_point_group="mfsched.schedulers")


def make_policy(name: str, num_levels: int = 8, options: dict[str, str] | None = None) -> Policy:
    """Instantiate a registered scheduler by name with ``num_levels`` levels and optional
    ``options`` (field name -> value as text) for its config class."""
    cls = SCHEDULERS.get(name)
    return cls(parse_options(cls.config_cls, num_levels, options or {}))


def parse_options(config_cls: type[PolicyConfig], num_levels: int,
                  options: dict[str, str]) -> PolicyConfig:
    """Build a policy config from text options, with one-line errors for bad ones."""
    config = config_cls(num_levels=num_levels)
    known = {f.name: f for f in fields(config_cls)}
    changes = {}
    for key, text in options.items():
        name = key.replace("-", "_")
        if name not in known or name == "num_levels":
            choices = ", ".join(sorted(k for k in known if k != "num_levels")) or "none"
            raise UserError(f"unknown option {key!r} for {config_cls.__name__}; "
                            f"known: {choices}")
        current = getattr(config, name)
        try:
            if isinstance(current, bool):
                if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError(text)
                changes[name] = text.lower() in ("true", "1", "yes", "on")
            else:
                changes[name] = type(current)(text)
        except ValueError:
            raise UserError(f"option {key}: cannot read {text!r} as "
                            f"{type(current).__name__}") from None
        if isinstance(changes[name], float) and not math.isfinite(changes[name]):
            raise UserError(f"option {key}: must be a finite number, got {text!r}")
    try:
        return replace(config, **changes)
    except ValueError as e:
        raise UserError(f"{config_cls.__name__}: {e}") from None
