"""KV-cache-aware request router in the style of NVIDIA Dynamo, aware of lockstep instances.

For every prefill unit u the router scores::

    cost(u) = overlap_weight * (prompt blocks u would have to compute)
              + blocks of lockstep work u's instance puts ahead of the request

and picks the cheapest unit (Dynamo's KV router: a prefill cost weighted by
``overlap_weight`` plus the worker's load). The load is what the *instance* will make the
request wait, not the unit's own queue: all units of a DP-attention/EP instance run every layer
in lockstep, so a batch lasts as long as its largest per-unit chunk, and an idle unit of a busy
instance is not free. :func:`lockstep_tokens` estimates, in tokens, the work of the instance's
batches up to the one that finishes the request (each batch counted by its largest chunk);
the load term is that minus the request's own new tokens.

Ties go to the least loaded instance (its queued and running new tokens), then the least
loaded unit, then the instance and the unit that received a request longest ago (round robin
when everything is idle), then the lowest id, so requests spread over instances and units
evenly when no cache makes a difference.

If another unit holds a longer prefix than the chosen one, the extra blocks are fetched from
that unit layer by layer (Stage 1, KV-cache reuse from a remote prefill unit). A request always
computes at least one token (the last prompt token is recomputed even on a full hit, as in
vLLM).

Callers: :mod:`mfsched.sim.serving` at every arrival (also when the emulated testbed runs it)
and for the history that warms the caches. The scores are computed for all units at once
(numpy): at the paper's scale there are up to 1,024 units per decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .cache import PrefixCaches
from .requests import Request, prefix_hit_tokens

__all__ = ["Router", "Routing", "lockstep_tokens"]


@dataclass(frozen=True, slots=True)
class Routing:
    """Where a request is prefilled and where its reused prefix comes from."""

    unit: int
    local_tokens: int  # prefix tokens already in the unit's cache
    remote_unit: int  # -1 if nothing is fetched
    remote_tokens: int  # prefix tokens fetched from remote_unit (Stage 1)

    def new_tokens(self, request: Request) -> int:
        return request.input_tokens - self.local_tokens - self.remote_tokens


def lockstep_tokens(own_tokens, others_max_tokens, batch_tokens: int):
    """Tokens of lockstep work until a unit with ``own_tokens`` pending finishes them.

    The instance cuts every unit's queue into batches of at most ``batch_tokens`` new tokens
    and runs them in lockstep, so batch b costs the largest chunk of any unit in it. The unit
    needs ``ceil(own / batch)`` batches; in each, the largest chunk is its own or that of the
    busiest other unit (``others_max_tokens`` pending). Works on numbers and numpy arrays.
    """
    own = np.asarray(own_tokens, dtype=float)
    others = np.asarray(others_max_tokens, dtype=float)
    total = np.zeros(np.broadcast(own, others).shape)
    done = 0.0
    while True:
        active = own > done
        if not active.any():
            break
        mine = np.minimum(batch_tokens, own - done)
        theirs = np.minimum(batch_tokens, np.maximum(0.0, others - done))
        total += np.where(active, np.maximum(mine, theirs), 0.0)
        done += batch_tokens
    return float(total) if total.ndim == 0 else total


class Router:
    """The routing rule for one deployment: ``instances`` lists the unit ids of each instance
    (units of one instance run in lockstep; every instance has the same number of units, with
    consecutive ids); ``batch_tokens`` is the per-unit batch budget."""

    def __init__(self, instances: Sequence[Sequence[int]], batch_tokens: int,
                 overlap_weight: float = 1.0, remote_reuse: bool = True) -> None:
        self.shape = (len(instances), len(instances[0]))
        if [u for inst in instances for u in inst] != list(range(self.shape[0] * self.shape[1])):
            raise ValueError("instances must hold consecutive unit ids, equally many each")
        self.batch_tokens = batch_tokens
        self.overlap_weight = overlap_weight
        self.remote_reuse = remote_reuse
        self._ids = np.arange(self.shape[0] * self.shape[1])

    def route(self, request: Request, caches: PrefixCaches, pending_tokens: np.ndarray,
              last_routed: np.ndarray) -> Routing:
        """Choose the prefill unit and the Stage-1 source for ``request``.

        ``pending_tokens[u]``: the queued and running new-token work of unit u;
        ``last_routed[u]``: when u last received a request (larger is more recent, -1 never).
        """
        hits = caches.hits(request.block_hashes)
        bt = request.block_tokens
        n_blocks = -(-request.input_tokens // bt)
        reusable = request.input_tokens - 1
        hit_blocks = np.zeros(len(self._ids))
        new = np.full(len(self._ids), float(request.input_tokens))
        for u, h in hits.items():
            hit_blocks[u] = h
            new[u] = request.input_tokens - min(prefix_hit_tokens(request, h), reusable)
        pending = np.asarray(pending_tokens, dtype=float)
        per_inst = pending.reshape(self.shape)
        top = per_inst.max(axis=1)
        second = np.sort(per_inst, axis=1)[:, -2] if self.shape[1] > 1 else np.zeros(len(top))
        top_u, second_u = np.repeat(top, self.shape[1]), np.repeat(second, self.shape[1])
        others = np.where(pending == top_u, second_u, top_u)
        wait = lockstep_tokens(pending + new, others, self.batch_tokens) - new
        cost = self.overlap_weight * (n_blocks - hit_blocks) + wait / bt
        inst_load = np.repeat(per_inst.sum(axis=1), self.shape[1])
        last = np.asarray(last_routed)
        inst_last = np.repeat(last.reshape(self.shape).max(axis=1), self.shape[1])
        best = int(np.lexsort((self._ids, last, inst_last, pending, inst_load, cost))[0])
        local = min(prefix_hit_tokens(request, hits.get(best, 0)), reusable)
        remote_unit, remote = -1, 0
        if self.remote_reuse and hits:
            v = max(hits, key=lambda w: (hits[w], -w))
            extra = min(prefix_hit_tokens(request, hits[v]), reusable) - local
            if v != best and extra > 0:
                remote_unit, remote = v, extra
        return Routing(best, local, remote_unit, remote)
