"""Fluid flows on a topology: rates from :func:`~mfsched.sim.allocation.allocate_subset`.

A network flow is one rate variable. It is either a single point-to-point transfer, or a
*group*: parallel members of one collective (or the TP lanes of one KV transfer) advanced
together, each member at a rate proportional to its size so that all finish together (the
group's rate is the rate of its largest member; ``size_bytes`` is that member's size). On each
link the group weighs the sum of its members' sizes there divided by the largest member's
size, so a group of k equal members crossing a link competes there like k flows. The per-flow
reference mode simply submits every member as its own flow; ``tests/test_grouping.py`` checks
that the two agree on small cases.

Flows live in dense slot rows (swap-remove), so a reallocation hands the arrays to the kernel
without copying; per-slot scalars are packed in two arrays to keep the compiled calls cheap.

**Paced flows.** A flow with a rate cap (Karuna paces its deadline flows at the top level)
whose class lies above every uncapped flow gets exactly its cap as long as no link is
overbooked by such caps: progressive filling then freezes each at its cap before any link
fills. The network keeps the capped flows' load per link up to date as caps are set, changed
and removed (exact fixed-point sums), and a reallocation then fills only the uncapped flows on
what the paced ones leave, instead of re-sorting thousands of paced flows at every event
(the cost that made Karuna at the paper's scale 10-50x slower than the other schedulers;
``docs/design.md`` section 8). Otherwise, and whenever some link is (nearly) overbooked by
caps, the full filling runs over every flow. The two agree to rounding
(``tests/test_network.py``): a paced flow's rate is its cap exactly here, the filling level
times its share there.
**Compiled.** ``pip install .`` compiles this module with Cython (``setup.py``): the class
becomes an extension type whose arrays are typed views (``network.pxd``), so its kernels are
C calls without numba's dispatch or a buffer request per array; the kernels keep ``@njit`` for
the source path (``MFSCHED_PURE_PYTHON=1``, :mod:`mfsched._compiled`), where numba compiles
them. The Python code reads the arrays only in ways both take (``np.asarray`` where numpy's
methods are needed).
Owned by :class:`mfsched.sim.engine.Engine`, which advances the network between events, asks
for the next completion time and pops completed flows.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit
from ..policy.types import Priority
from .allocation import allocate_subset, priority_key, scratch_arrays

__all__ = ["FluidNetwork", "load_kernels"]

_TIME_EPS_S = 1e-9  # flows that would finish within 1 ns are complete
_BYTE_EPS = 1e-6
_UNSET = -1
_INF = float("inf")
# rows of FluidNetwork._ints and ._floats
_NLINKS, _KEY, _ID = 0, 1, 2
_NINTS = 3
_SIZE, _REMAINING, _RATE, _CAP, _SHARE = 0, 1, 2, 3, 4
_NFLOATS = 5
# Reserved (paced) load per link is kept in fixed point, in units of 2^-48 of the link's
# capacity (3.6e-15), so that sums are exact whatever the order of additions and removals. A
# contribution is clamped at the capacity (a flow alone at it overbooks the link anyway), so a
# link holds 2^15 of them before int64 could overflow.
_FX = float(2 ** 48)
# A link whose reservations come within this share of its capacity is left to the full
# progressive filling (where the paced flows may really compete).
_RESERVE_SLACK = 1e-6


class FluidNetwork:
    def __init__(self, capacity_bytes_per_s: np.ndarray, check_invariants: bool = False,
                 contention_free: bool = False) -> None:
        self.capacity_bytes_per_s = np.ascontiguousarray(capacity_bytes_per_s, dtype=np.float64)
        self.check_invariants = check_invariants and not contention_free
        # analysis reference: every flow runs as if it were alone on its links
        self.contention_free = contention_free
        self.now_s = 0.0
        self.dirty = False
        self.delivered_bytes = 0.0  # of completed flows, in largest-member bytes
        self._ids: list[int] = []
        self._pos: dict[int, int] = {}
        self._prio: list[Priority | None] = []
        self._unset = 0  # flows still waiting for their first priority
        self._links = np.zeros((64, 8), dtype=np.int64)
        self._weights = np.zeros((64, 8))
        self._ints = np.zeros((_NINTS, 64), dtype=np.int64)
        self._floats = np.zeros((_NFLOATS, 64))
        self._read_only = self._read_only_rows()
        self._done_buf = np.empty(64, dtype=np.int64)
        self._paced = 0  # flows with a rate cap
        # the paced flows' load per link, x _FX
        self._reserved = np.zeros(len(self.capacity_bytes_per_s), dtype=np.int64)
        self._rows_buf = np.empty(64, dtype=np.int64)
        self._residual = np.empty(len(self.capacity_bytes_per_s))
        self._scratch(64, 8)

    def _grow(self, slots: int, width: int) -> None:
        n = len(self._ids)
        links = np.zeros((slots, width), dtype=np.int64)
        weights = np.zeros((slots, width))
        ints = np.zeros((_NINTS, slots), dtype=np.int64)
        floats = np.zeros((_NFLOATS, slots))
        w = self._links.shape[1]
        links[:n, :w] = np.asarray(self._links)[:n]
        weights[:n, :w] = np.asarray(self._weights)[:n]
        ints[:, :n] = np.asarray(self._ints)[:, :n]
        floats[:, :n] = np.asarray(self._floats)[:, :n]
        self._links, self._weights, self._ints, self._floats = links, weights, ints, floats
        self._read_only = self._read_only_rows()
        self._scratch(slots, width)

    def _scratch(self, slots: int, width: int) -> None:
        """The allocator's working space for ``slots`` rows of ``width`` links (kept between
        reallocations: :func:`~mfsched.sim.allocation.scratch_arrays`)."""
        (self._local_of, self._frozen, self._order, self._sort_tmp, self._fill_ints,
         self._fill_demand, self._capped) = scratch_arrays(len(self.capacity_bytes_per_s),
                                                           slots, slots * width)

    def _read_only_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read-only views of the id, remaining and rate rows (slices of a read-only view are
        read-only: :meth:`flow_arrays` hands them out without setting flags per call)."""
        ints, floats = np.asarray(self._ints), np.asarray(self._floats)
        rows = (ints[_ID], floats[_REMAINING], floats[_RATE])
        for row in rows:
            row.flags.writeable = False
        return rows

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, flow_id: int) -> bool:
        return flow_id in self._pos

    # --- membership ------------------------------------------------------------------------

    def add(self, flow_id: int, links: np.ndarray, weights: np.ndarray, size_bytes: float,
            priority: Priority | None = None, share: float = 1.0) -> None:
        """A new flow; ``share`` is the number of fair shares it claims (its parallel
        transport connections, :mod:`mfsched.sim.allocation`)."""
        if size_bytes <= 0:
            raise ValueError("flows must carry bytes")
        n = len(self._ids)
        slots, width = self._links.shape[0], self._links.shape[1]
        if n == slots or len(links) > width:
            self._grow(2 * slots if n == slots else slots, max(width, len(links)))
        self._pos[flow_id] = n
        self._ids.append(flow_id)
        self._prio.append(None)
        self._unset += 1
        _put_row(self._links, self._weights, self._ints, self._floats, n, flow_id, links,
                 weights, size_bytes, share)
        if priority is not None:
            self.set_priority(flow_id, priority)
        self.dirty = True

    def _remove_at(self, i: int) -> None:
        last = len(self._ids) - 1
        fid = self._ids[i]
        if self._prio[i] is None:
            self._unset -= 1
        if self._floats[_CAP, i] < _INF:
            self._paced -= 1
            _reserve(self._reserved, self.capacity_bytes_per_s, self._links, self._weights,
                     self._ints, i, self._floats[_CAP, i], -1)
        if i != last:
            moved = self._ids[last]
            self._ids[i] = moved
            self._pos[moved] = i
            self._prio[i] = self._prio[last]
            _move_row(self._links, self._weights, self._ints, self._floats, last, i)
        self._ids.pop()
        self._prio.pop()
        del self._pos[fid]
        self.dirty = True

    def set_priority(self, flow_id: int, priority: Priority) -> None:
        i = self._pos[flow_id]
        if self._prio[i] != priority:
            if self._prio[i] is None:
                self._unset -= 1
            self._prio[i] = priority
            self._ints[_KEY, i] = priority_key(priority.level, priority.rank)
            self.dirty = True

    def set_rate_cap(self, flow_id: int, cap_bytes_per_s: float | None) -> None:
        """Limit the flow's (largest member's) rate; None removes the limit."""
        i = self._pos[flow_id]
        cap = _INF if cap_bytes_per_s is None else float(cap_bytes_per_s)
        old = self._floats[_CAP, i]
        if old != cap:
            if old < _INF:
                self._paced -= 1
                _reserve(self._reserved, self.capacity_bytes_per_s, self._links, self._weights,
                         self._ints, i, old, -1)
            if cap < _INF:
                self._paced += 1
                _reserve(self._reserved, self.capacity_bytes_per_s, self._links, self._weights,
                         self._ints, i, cap, 1)
            self._floats[_CAP, i] = cap
            self.dirty = True

    def priority(self, flow_id: int) -> Priority | None:
        return self._prio[self._pos[flow_id]]

    def remaining_bytes(self, flow_id: int) -> float:
        return float(self._floats[_REMAINING, self._pos[flow_id]])

    def rate_bytes_per_s(self, flow_id: int) -> float:
        return float(self._floats[_RATE, self._pos[flow_id]])

    def flow_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every flow's id, remaining bytes and rate (bytes/s), in slot order: read-only
        views, valid until the network next changes (the bulk form of the two getters above,
        for policies that look at every flow at each decision, :class:`~mfsched.policy.PIAS`).
        """
        n = len(self._ids)
        ids, remaining, rates = self._read_only
        return ids[:n], remaining[:n], rates[:n]

    # --- time --------------------------------------------------------------------------------

    def advance(self, t: float) -> None:
        """Move every flow forward to time ``t`` at its current rate."""
        dt = t - self.now_s
        if dt < 0:
            raise ValueError("time runs forward only")
        if dt > 0 and self._ids:
            _advance(self._floats, len(self._ids), dt)
        self.now_s = t

    def advance_and_pop(self, t: float) -> list[int]:
        """:meth:`advance` to ``t``, then :meth:`pop_completed` (one compiled call)."""
        dt = t - self.now_s
        if dt < 0:
            raise ValueError("time runs forward only")
        self.now_s = t
        return self._pop(dt)

    def reallocate(self) -> float:
        """Recompute all rates; return the next completion time (inf if none)."""
        n = len(self._ids)
        self.dirty = False
        if n == 0:
            return float("inf")
        if self._unset:
            missing = [self._ids[i] for i in range(n) if self._prio[i] is None]
            raise RuntimeError(f"policy gave no priority to flows {missing[:5]}")
        if self.contention_free:
            _alone_rates(self.capacity_bytes_per_s, self._links, self._weights, self._ints,
                         self._floats, n)
            return self.next_completion_s()
        if len(self._rows_buf) < n:
            self._rows_buf = np.empty(2 * n, dtype=np.int64)
        t_next = _reallocate(self.capacity_bytes_per_s, self._reserved, self._residual,
                             self._rows_buf, self._links, self._weights, self._ints,
                             self._floats, n, self._paced > 0, self._local_of, self._frozen,
                             self._order, self._sort_tmp, self._fill_ints, self._fill_demand,
                             self._capped)
        if self.check_invariants:
            self._check()
        return self.now_s + t_next

    def link_loads(self) -> np.ndarray:
        """Bytes/s currently carried by each link."""
        loads = np.zeros(len(self.capacity_bytes_per_s))
        for i in range(len(self._ids)):
            k = self._ints[_NLINKS, i]
            np.add.at(loads, np.asarray(self._links[i, :k]),
                      np.asarray(self._weights[i, :k]) * self._floats[_RATE, i])
        return loads

    def _check(self) -> None:
        over = self.link_loads() > self.capacity_bytes_per_s * (1 + 1e-9) + 1e-6
        if over.any():
            raise AssertionError(f"links over capacity: {np.flatnonzero(over)[:5]}")

    def next_completion_s(self) -> float:
        return self.now_s + _time_to_next(self._floats, len(self._ids))

    def pop_completed(self) -> list[int]:
        """Remove and return the flows that are done at the current time."""
        return self._pop(0.0)

    def _pop(self, dt: float) -> list[int]:
        buf = self._done_buf
        if len(buf) < len(self._ids):
            buf = self._done_buf = np.empty(2 * len(self._ids), dtype=np.int64)
        k, delivered = _advance_done(self._floats, len(self._ids), dt, _TIME_EPS_S, _BYTE_EPS,
                                     buf)
        if not k:
            return []
        ids = [self._ids[buf[j]] for j in range(k)]
        self.delivered_bytes += delivered
        for fid in ids:
            self._remove_at(self._pos[fid])
        return ids


def load_kernels() -> None:
    """Compile (first run) or load (from numba's cache) every kernel of the network now, on a
    toy network: the runner calls it before it forks parallel workers, which then inherit the
    compiled code instead of each compiling or loading it again."""
    for contention_free in (False, True):
        net = FluidNetwork(np.array([4.0, 4.0]), contention_free=contention_free)
        net.add(1, np.array([0, 1], dtype=np.int64), np.ones(2), 2.0, Priority(0))
        net.add(2, np.array([0], dtype=np.int64), np.ones(1), 1.0, Priority(1))
        net.add(3, np.array([1], dtype=np.int64), np.ones(1), 1.0, Priority(2))
        net.set_rate_cap(1, 1.0)  # the paced path
        net.advance(net.reallocate() / 2)
        net.set_rate_cap(1, None)  # the full filling
        net.advance_and_pop(net.reallocate())
        net.pop_completed()


@njit
def _advance(floats, n, dt):
    for i in range(n):
        floats[_REMAINING, i] -= floats[_RATE, i] * dt


@njit
def _time_to_next(floats, n):
    best = _INF
    for i in range(n):
        rate = floats[_RATE, i]
        if rate > 0.0:
            t = floats[_REMAINING, i] / rate
            if t < best:
                best = t
    return best


@njit
def _reallocate(capacity, reserved, residual, rows, links, weights, ints, floats, n, paced,
                local_of, frozen, order, sort_tmp, fill_ints, fill_demand, capped):
    """New rates in place; returns the time until the next completion. With paced (capped)
    flows, if every capped flow's class lies above every uncapped flow's and no link is
    (nearly) overbooked by caps, the capped flows get their caps and the others are filled on
    what is left; otherwise (and without paced flows) the full filling of every flow. (One
    kernel for both: numba re-optimises every compiled callee inside each caller, so each
    level of calls added about half a second to a first run's compilation.)"""
    m = 0
    ok = paced
    if paced:
        top_paced = -1
        first_free = -1
        for i in range(n):
            if floats[_CAP, i] < _INF:
                if ints[_KEY, i] > top_paced:
                    top_paced = ints[_KEY, i]
            else:
                if first_free < 0 or ints[_KEY, i] < first_free:
                    first_free = ints[_KEY, i]
                rows[m] = i
                m += 1
        ok = first_free < 0 or top_paced < first_free
        if ok:
            for g in range(len(capacity)):
                share = reserved[g] / _FX
                if share > 1.0 - _RESERVE_SLACK:
                    ok = False
                    break
                residual[g] = capacity[g] - capacity[g] * share
    if ok:
        for i in range(n):
            if floats[_CAP, i] < _INF:
                floats[_RATE, i] = floats[_CAP, i]
    else:
        for g in range(len(capacity)):
            residual[g] = capacity[g]
        for i in range(n):
            rows[i] = i
        m = n
    allocate_subset(capacity, residual, rows[:m], links, weights, ints[_NLINKS], ints[_KEY],
                    floats[_CAP], floats[_SHARE], floats[_RATE], local_of, frozen, order,
                    sort_tmp, fill_ints, fill_demand, capped)
    return _time_to_next(floats, n)


@njit
def _reserve(reserved, capacity, links, weights, ints, i, cap, sign):
    """Add (``sign`` 1) or remove (-1) the load of slot ``i`` paced at ``cap`` on its links."""
    for k in range(ints[_NLINKS, i]):
        g = links[i, k]
        share = cap * weights[i, k] / capacity[g]
        if share > 1.0:
            share = 1.0
        reserved[g] += sign * int(share * _FX + 0.5)


@njit
def _alone_rates(capacity, links, weights, ints, floats, n):
    """Contention-free rates: each flow's own bottleneck (and cap), ignoring all others."""
    for i in range(n):
        rate = floats[_CAP, i]
        for k in range(ints[_NLINKS, i]):
            r = capacity[links[i, k]] / weights[i, k]
            if r < rate:
                rate = r
        floats[_RATE, i] = rate


@njit
def _advance_done(floats, n, dt, time_eps, byte_eps, out):
    """Advance by ``dt``; the slots of flows then done (into ``out``): their count and their
    summed sizes."""
    k = 0
    delivered = 0.0
    for i in range(n):
        floats[_REMAINING, i] -= floats[_RATE, i] * dt
        if floats[_REMAINING, i] <= floats[_RATE, i] * time_eps + byte_eps:
            out[k] = i
            k += 1
            delivered += floats[_SIZE, i]
    return k, delivered


@njit
def _put_row(links, weights, ints, floats, i, flow_id, row_links, row_weights, size_bytes,
             share):
    k = len(row_links)
    for j in range(k):
        links[i, j] = row_links[j]
        weights[i, j] = row_weights[j]
    ints[_NLINKS, i] = k
    ints[_KEY, i] = _UNSET
    ints[_ID, i] = flow_id
    floats[_SIZE, i] = size_bytes
    floats[_REMAINING, i] = size_bytes
    floats[_RATE, i] = 0.0
    floats[_CAP, i] = _INF
    floats[_SHARE, i] = share


@njit
def _move_row(links, weights, ints, floats, src, dst):
    for j in range(ints[_NLINKS, src]):
        links[dst, j] = links[src, j]
        weights[dst, j] = weights[src, j]
    for r in range(_NINTS):
        ints[r, dst] = ints[r, src]
    for r in range(_NFLOATS):
        floats[r, dst] = floats[r, src]
