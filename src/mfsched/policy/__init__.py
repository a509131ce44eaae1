"""Pure scheduling policies: standard library only, no clock, no sockets, no simulator imports.

A policy is told what happens (requests, batches, flow submissions, layer boundaries,
completions, time) and answers with :class:`~mfsched.policy.types.Decision` objects: a priority
per flow, the pruned set and its next wake-up. The simulator (:mod:`mfsched.sim.engine`), the
data-plane daemons and the vLLM connector all drive the same objects.

``SCHEDULERS`` is the registry of policy classes; ``mfsched list schedulers`` prints it.
"""

from .base import SCHEDULERS, Policy, PolicyConfig, make_policy
from .types import (
    BatchInfo,
    Decision,
    FlowInfo,
    Priority,
    ProgressView,
    RequestInfo,
    Stage,
)

# Importing the modules registers their policies.
from . import fair as _fair  # noqa: F401  isort: skip
from . import baselines as _baselines  # noqa: F401  isort: skip
from . import mfs as _mfs  # noqa: F401  isort: skip
from . import oracle as _oracle  # noqa: F401  isort: skip

__all__ = [
    "SCHEDULERS",
    "BatchInfo",
    "Decision",
    "FlowInfo",
    "Policy",
    "PolicyConfig",
    "Priority",
    "ProgressView",
    "RequestInfo",
    "Stage",
    "make_policy",
]
