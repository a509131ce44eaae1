"""KV-cache-aware request router in the style of NVIDIA Dynamo, plus Stage-1 source choice.

For every prefill unit u the router scores::

    cost(u) = overlap_weight * (prompt blocks u would have to compute) + pending blocks on u

(pending = new-token work queued on or running at u, in blocks) and picks the cheapest unit,
ties to the least loaded, then the lowest id. It therefore prefers the unit with the most
cached prefix, penalised by its queue, as Dynamo's KV router does.

If another unit holds a longer prefix than the chosen one, the extra blocks are fetched from
that unit layer by layer (Stage 1, KV-cache reuse from a remote prefill unit). A request always
computes at least one token (the last prompt token is recomputed even on a full hit, as in
vLLM).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .cache import PrefixCaches
from .requests import Request, prefix_hit_tokens

__all__ = ["Route", "route_request"]


@dataclass(frozen=True, slots=True)
class Route:
    unit: int
    local_tokens: int  # prefix tokens already in the unit's cache
    remote_unit: int  # -1 if nothing is fetched
    remote_tokens: int  # prefix tokens fetched from remote_unit (Stage 1)

    def new_tokens(self, request: Request) -> int:
        return request.input_tokens - self.local_tokens - self.remote_tokens


def route_request(request: Request, caches: PrefixCaches, pending_tokens: Sequence[float],
                  overlap_weight: float = 1.0, remote_reuse: bool = True) -> Route:
    """Choose the prefill unit and the Stage-1 source for ``request``."""
    hits = caches.hits(request.block_hashes)
    bt = request.block_tokens
    n_blocks = -(-request.input_tokens // bt)
    best_u, best_key = 0, None
    for u, pending in enumerate(pending_tokens):
        cost = overlap_weight * (n_blocks - hits.get(u, 0)) + pending / bt
        key = (cost, pending, u)
        if best_key is None or key < best_key:
            best_u, best_key = u, key
    reusable = request.input_tokens - 1
    local = min(prefix_hit_tokens(request, hits.get(best_u, 0)), reusable)
    remote_unit, remote = -1, 0
    if remote_reuse and hits:
        v = max(hits, key=lambda w: (hits[w], -w))
        extra = min(prefix_hit_tokens(request, hits[v]), reusable) - local
        if v != best_u and extra > 0:
            remote_unit, remote = v, extra
    return Route(best_u, local, remote_unit, remote)
