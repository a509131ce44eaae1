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

Callers: :mod:`mfsched.sim.serving` at every arrival (also when the emulated testbed runs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .cache import PrefixCaches
from .requests import Request, prefix_hit_tokens

__all__ = ["Placement", "lockstep_tokens", "route_request"]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a request is prefilled and where its reused prefix comes from."""

    unit: int
    local_tokens: int  # prefix tokens already in the unit's cache
    remote_unit: int  # -1 if nothing is fetched
    remote_tokens: int  # prefix tokens fetched from remote_unit (Stage 1)

    def new_tokens(self, request: Request) -> int:
        return request.input_tokens - self.local_tokens - self.remote_tokens


def lockstep_tokens(own_tokens: float, others_max_tokens: float, batch_tokens: int) -> float:
    """Tokens of lockstep work until a unit with ``own_tokens`` pending finishes them.

    The instance cuts every unit's queue into batches of at most ``batch_tokens`` new tokens
    and runs them in lockstep, so batch b costs the largest chunk of any unit in it. The unit
    needs ``ceil(own / batch)`` batches; in each, the largest chunk is its own or that of the
    busiest other unit (``others_max_tokens`` pending).
    """
    total = 0.0
    b = 0
    while b * batch_tokens < own_tokens:
        done = b * batch_tokens
        mine = min(batch_tokens, own_tokens - done)
        theirs = min(batch_tokens, max(0.0, others_max_tokens - done))
        total += max(mine, theirs)
        b += 1
    return total


def route_request(request: Request, caches: PrefixCaches, pending_tokens: Sequence[float],
                  instances: Sequence[Sequence[int]], batch_tokens: int,
                  last_routed: Sequence[int] | None = None, overlap_weight: float = 1.0,
                  remote_reuse: bool = True) -> Placement:
    """Choose the prefill unit and the Stage-1 source for ``request``.

    ``pending_tokens[u]`` is the queued and running new-token work of unit u; ``instances``
    lists the unit ids of each instance (units of one instance run in lockstep);
    ``batch_tokens`` is the per-unit batch budget; ``last_routed[u]`` orders units by when
    they last received a request (larger is more recent, -1 never).
    """
    hits = caches.hits(request.block_hashes)
    bt = request.block_tokens
    n_blocks = -(-request.input_tokens // bt)
    reusable = request.input_tokens - 1
    best_u, best_key = 0, None
    for units in instances:
        loads = [pending_tokens[u] for u in units]
        inst_load = sum(loads)
        inst_last = max(last_routed[u] for u in units) if last_routed is not None else 0
        top = max(loads)
        second = max((x for i, x in enumerate(loads) if i != loads.index(top)), default=0.0)
        for u, pending in zip(units, loads, strict=True):
            new = request.input_tokens - min(prefix_hit_tokens(request, hits.get(u, 0)),
                                              reusable)
            others = second if pending == top else top
            wait = lockstep_tokens(pending + new, others, batch_tokens) - new
            cost = overlap_weight * (n_blocks - hits.get(u, 0)) + wait / bt
            key = (cost, inst_load, pending, inst_last,
                   last_routed[u] if last_routed is not None else 0, u)
            if best_key is None or key < best_key:
                best_u, best_key = u, key
    local = min(prefix_hit_tokens(request, hits.get(best_u, 0)), reusable)
    remote_unit, remote = -1, 0
    if remote_reuse and hits:
        v = max(hits, key=lambda w: (hits[w], -w))
        extra = min(prefix_hit_tokens(request, hits[v]), reusable) - local
        if v != best_u and extra > 0:
            remote_unit, remote = v, extra
    return Placement(best_u, local, remote_unit, remote)
