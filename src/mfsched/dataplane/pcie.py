"""Intra-server transfers of a daemon: a fluid model of its GPUs' PCIe links.

The daemon (:mod:`.daemon`) hands :class:`PcieLanes` every member whose source and destination
GPU are both on its server. A real server moves those over PCIe, not through its NIC, so they
never touch the emulated network; instead they share each GPU's PCIe out-link and in-link the
way the simulator's do: rates come from the simulator's own allocator
(:func:`mfsched.sim.allocation.allocate`: strict priority by (level, rank), max-min fair within
one), recomputed whenever a member arrives, finishes or changes priority, and a member completes
when its bytes are through. :class:`PcieLanes` is pure (the caller passes the time and sets the
timer for :meth:`PcieLanes.next_finish_s`), so it is tested with hand-computed numbers.

Simplification: in the simulator a GPU's PCIe links also carry that GPU's network traffic (on
its way to and from the NIC); here only the intra-server members share them.
"""

from __future__ import annotations

import math

import numpy as np

from ..sim.allocation import allocate

__all__ = ["PcieLanes"]

Key = tuple[int, int]  # (flow id, member index)

_DONE_BYTES = 0.5  # a member with less than half a byte left is through


class PcieLanes:
    """Members on the PCIe links of one server's GPUs (real bytes, wall seconds)."""

    def __init__(self, bytes_per_s: float, gpus_per_server: int) -> None:
        if not bytes_per_s > 0:
            raise ValueError(f"PCIe rate must be positive, got {bytes_per_s}")
        self.capacity = np.full(2 * gpus_per_server, float(bytes_per_s))
        self.gpus_per_server = gpus_per_server
        self._left: dict[Key, float] = {}
        self._links: dict[Key, tuple[int, int]] = {}  # (out-link of source, in-link of dest)
        self._key: dict[Key, int] = {}  # strict-priority key (lower first)
        self._cap: dict[Key, float] = {}
        self._share: dict[Key, float] = {}  # fair shares (connections, workload.comm)
        self._rate: dict[Key, float] = {}
        self._now_s = 0.0

    def add(self, now_s: float, key: Key, src_gpu: int, dst_gpu: int, nbytes: float,
            priority_key: int = 0, share: float = 1.0) -> list[Key]:
        """Start a member between two GPUs of this server; returns members that finished."""
        done = self._advance(now_s)
        src, dst = src_gpu % self.gpus_per_server, dst_gpu % self.gpus_per_server
        self._left[key] = float(nbytes)
        self._links[key] = (2 * src, 2 * dst + 1)
        self._key[key] = priority_key
        self._cap[key] = math.inf
        self._share[key] = share
        self._reallocate()
        return done

    def set_priority(self, now_s: float, key: Key, priority_key: int) -> list[Key]:
        """Change a member's class; returns members that finished."""
        return self._change(now_s, key, self._key, priority_key)

    def set_cap(self, now_s: float, key: Key, cap_bytes_per_s: float | None) -> list[Key]:
        """Limit a member's rate (None: no limit); returns members that finished."""
        cap = math.inf if cap_bytes_per_s is None else cap_bytes_per_s
        return self._change(now_s, key, self._cap, cap)

    def step(self, now_s: float) -> list[Key]:
        """Bring the fluid state to ``now_s``; returns the members that finished."""
        done = self._advance(now_s)
        if done:
            self._reallocate()
        return done

    def forget(self, key: Key) -> None:
        for table in (self._left, self._links, self._key, self._cap, self._share, self._rate):
            table.pop(key, None)

    def remaining(self, now_s: float, key: Key) -> float:
        left = self._left.get(key, 0.0)
        return max(0.0, left - self._rate.get(key, 0.0) * max(0.0, now_s - self._now_s))

    def rate(self, key: Key) -> float:
        return self._rate.get(key, 0.0)

    def next_finish_s(self) -> float:
        """When the next member finishes at the current rates (inf if none moves)."""
        times = [left / r for k, left in self._left.items() if (r := self._rate[k]) > 0]
        return self._now_s + min(times, default=math.inf)

    def __len__(self) -> int:
        return len(self._left)

    # --- internals ------------------------------------------------------------------------------

    def _advance(self, now_s: float) -> list[Key]:
        dt = max(0.0, now_s - self._now_s)
        self._now_s = max(self._now_s, now_s)
        done = []
        for k in list(self._left):
            left = self._left[k] - self._rate.get(k, 0.0) * dt
            if left < _DONE_BYTES:
                done.append(k)
                self.forget(k)
            else:
                self._left[k] = left
        return done

    def _change(self, now_s: float, key: Key, table: dict, value) -> list[Key]:
        if key not in self._left or table[key] == value:
            return []
        done = self._advance(now_s)
        if key in self._left:
            table[key] = value
        self._reallocate()
        return done

    def _reallocate(self) -> None:
        keys = list(self._left)
        if not keys:
            self._rate = {}
            return
        links = np.array([self._links[k] for k in keys], dtype=np.int64).ravel()
        flows = np.repeat(np.arange(len(keys)), 2)
        rates = allocate(self.capacity, flows, links, np.ones(len(links)),
                         np.array([self._key[k] for k in keys], dtype=np.int64),
                         np.array([self._cap[k] for k in keys]),
                         np.array([self._share[k] for k in keys]))
        self._rate = dict(zip(keys, rates.tolist(), strict=True))

    def warm_up(self) -> None:
        """Load the compiled allocator now, not in the middle of a run."""
        self.add(0.0, (-1, 0), 0, 0, 1.0)
        self.forget((-1, 0))
