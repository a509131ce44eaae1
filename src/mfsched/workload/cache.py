"""Per-unit prefix KV caches (LRU over blocks) with a global block -> holders index.

Each prefill unit keeps the KV of recently computed prompt blocks (block granularity, LRU,
bounded capacity in blocks). Because block ids are prefix chains, a request's hit on a unit is
the number of its leading blocks that unit holds. The global index answers "which units hold
the longest prefix" in one pass over the request's blocks, which the KV-aware router and
Stage-1 (remote reuse) need for every arrival.

Callers: :mod:`mfsched.workload.router` (lookups), the serving model (insert after prefill;
a warmed state is copied into each run).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["PrefixCaches"]


class PrefixCaches:
    """LRU block caches for ``num_units`` units, ``capacity_blocks`` each."""

    def __init__(self, num_units: int, capacity_blocks: int) -> None:
        if capacity_blocks < 0:
            raise ValueError("capacity must be non-negative")
        self.capacity_blocks = capacity_blocks
        self._lru: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(num_units)]
        self._holders: dict[int, set[int]] = {}

    def hits(self, blocks: Sequence[int]) -> dict[int, int]:
        """Unit -> number of leading blocks of ``blocks`` it holds (units with 0 omitted)."""
        result: dict[int, int] = {}
        if not blocks:
            return result
        alive = set(self._holders.get(blocks[0], ()))
        depth = 0
        while alive:
            depth += 1
            if depth == len(blocks):
                for u in alive:
                    result[u] = depth
                break
            nxt = self._holders.get(blocks[depth])
            survivors = alive & nxt if nxt else set()
            for u in alive - survivors:
                result[u] = depth
            alive = survivors
        return result

    def touch(self, unit: int, blocks: Sequence[int]) -> None:
        """Insert (or refresh) ``blocks`` in ``unit``'s cache, evicting least recently used."""
        if self.capacity_blocks == 0:
            return
        lru = self._lru[unit]
        for b in blocks[-self.capacity_blocks:] if len(blocks) > self.capacity_blocks else blocks:
            if b in lru:
                lru.move_to_end(b)
            else:
                lru[b] = None
                self._holders.setdefault(b, set()).add(unit)
        while len(lru) > self.capacity_blocks:
            old, _ = lru.popitem(last=False)
            holders = self._holders[old]
            holders.discard(unit)
            if not holders:
                del self._holders[old]

    def size(self, unit: int) -> int:
        return len(self._lru[unit])

    def copy(self) -> PrefixCaches:
        """An independent copy with the same contents and LRU order (a warmed state is built
        once and copied into every run, :func:`mfsched.sim.serving.prewarm`)."""
        other = PrefixCaches.__new__(PrefixCaches)
        other.capacity_blocks = self.capacity_blocks
        other._lru = [lru.copy() for lru in self._lru]
        other._holders = {b: units.copy() for b, units in self._holders.items()}
        return other
