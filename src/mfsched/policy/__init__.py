"""Pure scheduling policies: standard library only, no clock, no sockets, no simulator imports.

A policy is told what happens (requests, batches, flow submissions, layer boundaries,
completions, time) and answers with :class:`~mfsched.policy.types.Decision` objects: a priority
per flow, rate caps, the pruned set and its next wake-up. Every runtime drives it through the
one :class:`~mfsched.policy.driver.PolicyDriver`: the simulator (:mod:`mfsched.sim.engine`), the
data-plane daemons (:mod:`mfsched.dataplane.runstate`) and both sides of the vLLM connector.

``SCHEDULERS`` is the registry of policy classes; ``mfsched list schedulers`` prints it.

Paper-to-code map (Sun et al., arXiv 2603.17456; notes in ``../shared/docs/paper-notes.md``;
our reading of each open point in ``docs/design.md`` section 6):

=====================================  ==========================================================
paper                                  code
=====================================  ==========================================================
§2.2 three stages per layer            :class:`.types.Stage`; flows per layer:
                                       :mod:`mfsched.workload.stages`
§4.1 Defer-and-Promote (the            no single function: flows *start deferred* (Stage 1 at
principle behind RMLQ)                 :meth:`.rmlq.LevelLayout.early` of their RLI, P2D in the
                                       MLU band of :func:`.rmlq.p2d_band`, both in
                                       :meth:`.mfs.MFS._assign`) and are *promoted* only as
                                       laxity shrinks: at layer boundaries
                                       (:meth:`.mfs.MFS.on_layer_start` ->
                                       :meth:`.mfs.MFS._promote_batch`), then periodically
                                       after the compute (:meth:`.mfs.MFS._refresh_finished`,
                                       woken through ``Decision.wake_s``), never demoted
                                       (:meth:`.mfs.MFS._place`)
§4.2 RMLQ, §4.5 arbitration across     :class:`.rmlq.LevelLayout`: level 0 reserved for urgent
stages (urgent P2D on top, early       P2D, early-stage levels, P2D bands, scavenger K
stages above the other P2D)
§4.3 MLU and its geometric thresholds  :func:`.rmlq.minimal_link_utilization`,
                                       :func:`.rmlq.mlu_thresholds`, :func:`.rmlq.p2d_band`;
                                       rho: :meth:`.mfs.MFS._rho`; per flow:
                                       :meth:`.mfs.MFS._p2d_level`
§4.4.1 RLI (Theorem 1: smallest RLI    :meth:`.mfs.MFS._assign` (RLI = target layer - current
first)                                 layer), :meth:`.rmlq.LevelLayout.early` (capped)
§4.4.2 RED (robust effective           :func:`.red.split_deadlines`,
deadline), the global order            :func:`.red.robust_effective_deadline`,
                                       :meth:`.batchbook.BatchBook.reorder` (sparse ranks);
                                       MFS's flows: :meth:`.mfs.MFS._reorder`
App. B Algorithm 1: feasibility and    :meth:`.batchbook.BatchBook.prune` (load vectors in
selective pruning, drop budget         arrays, the walk :func:`.red.feasibility_prune` states);
                                       MFS: :meth:`.mfs.MFS._prune`; the coordinator:
                                       :meth:`mfsched.dataplane.coordinator.CoordinatorState.
                                       recompute` (same book, global view)
§4.4.2 Scavenger class for pruned      :attr:`.rmlq.LevelLayout.scavenger`;
requests                               :meth:`.mfs.MFS._mark_pruned`
§5 daemons + coordinator, submit /     :mod:`mfsched.dataplane.runstate`,
permit / completion                    :mod:`mfsched.dataplane.sender`,
                                       :mod:`mfsched.dataplane.coordinator`; the coordinator's
                                       decisions enter a policy through
                                       :meth:`.base.Policy.on_global_order`
§5 hybrid priority queue (software     :mod:`mfsched.dataplane.sender` (strict priority at the
strict priority + DSCP classes)        host), :mod:`mfsched.traffic_classes` (levels -> DSCP)
§6.3 baselines                         :mod:`.fair` (FS), :mod:`.baselines` (SJF, EDF,
                                       Karuna, PIAS); reference: :mod:`.oracle`
=====================================  ==========================================================
"""

from .base import SCHEDULERS, Policy, PolicyConfig, make_policy
from .driver import Enforcer, PolicyDriver
from .types import (
    BatchInfo,
    Decision,
    FlowInfo,
    GlobalOrder,
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
    "Enforcer",
    "FlowInfo",
    "GlobalOrder",
    "Policy",
    "PolicyConfig",
    "PolicyDriver",
    "Priority",
    "ProgressView",
    "RequestInfo",
    "Stage",
    "make_policy",
]
