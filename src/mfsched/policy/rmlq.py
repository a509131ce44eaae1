"""Reverse Multi-Level Queue: where flows sit, and the one MLU formula.

Level layout among K strict levels (0 is the highest) plus the scavenger class K, as MFS
arbitrates across stages (paper §4.2, §4.5; the split is our choice, see docs/design.md)::

    level 0                         the most urgent P2D flows (reserved)
    levels 1 .. early_levels        early-stage flows by RLI: Stage 2 and RLI 0 in level 1,
                                    RLI r in level 1 + min(r, early_levels - 1)
    levels early_levels+1 .. K-1    P2D bands by MLU, tighter first
    level K                         scavenger (pruned requests)

Flows start low and are promoted as their laxity shrinks; a flow's level never goes back down
(numerically up): :meth:`mfsched.policy.mfs.MFS._place` enforces it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LevelLayout", "minimal_link_utilization", "mlu_thresholds", "p2d_band"]

URGENT_LEVEL = 0


@dataclass(frozen=True, slots=True)
class LevelLayout:
    num_levels: int
    early_levels: int

    def __post_init__(self) -> None:
        if self.num_levels < 3:
            raise ValueError("MFS needs at least 3 levels (urgent P2D, early stage, P2D)")
        if not 1 <= self.early_levels <= self.num_levels - 2:
            raise ValueError(f"early_levels must be in 1..{self.num_levels - 2}")

    @property
    def p2d_bands(self) -> int:
        return self.num_levels - 1 - self.early_levels

    @property
    def scavenger(self) -> int:
        return self.num_levels

    def early(self, rli: int) -> int:
        """Level of an early-stage flow whose data is needed ``rli`` layers from now."""
        return 1 + min(max(rli, 0), self.early_levels - 1)

    def p2d(self, band: int | None) -> int:
        """Level of a P2D flow in MLU band ``band`` (0 = tightest; None = urgent)."""
        if band is None:
            return URGENT_LEVEL
        return 1 + self.early_levels + min(band, self.p2d_bands - 1)


def minimal_link_utilization(remaining_bytes: float, remaining_s: float,
                             bottleneck_bytes_per_s: float, rho: float) -> float:
    """MLU = remaining bytes / (remaining time x B x (1 - rho)) (paper §4.3).

    The share of the bottleneck's residual capacity the transfer needs to meet its deadline;
    infinite once the deadline has passed or no residual capacity is left.
    """
    residual = remaining_s * bottleneck_bytes_per_s * (1.0 - rho)
    if residual <= 0.0:
        return float("inf")
    return remaining_bytes / residual


def mlu_thresholds(e: float, u: float, bands: int) -> tuple[float, ...]:
    """Band boundaries Q_i = E^-i x U for i = 1 .. bands-1 (a geometric progression)."""
    return tuple(u * e ** -i for i in range(1, bands))


def p2d_band(mlu_alone: float, rho: float, urgent: float, infeasible: float,
             thresholds: tuple[float, ...]) -> int | None:
    """The band of a P2D flow: None for the reserved top level, else 0 (tightest) and up.

    ``mlu_alone`` is the MLU with rho = 0: the share of the bottleneck the flow needs if it
    had it to itself, which is what a promotion to the top level would give it. Urgent when
    ``urgent <= mlu_alone <= infeasible``. Beyond ``infeasible`` the deadline is out of reach
    even so; promoting it would pour bandwidth into a certain miss (the paper's "black hole"),
    so it gets the loosest band (and, since levels never drop, keeps the level it had).
    Otherwise the band comes from the MLU against the residual B x (1 - rho) that early-stage
    traffic leaves to P2D (levels below the early stages), with boundaries ``thresholds``.
    """
    if mlu_alone > infeasible * (1 + 1e-9):
        return len(thresholds)
    if mlu_alone >= urgent * (1 - 1e-9):
        return None
    loaded = mlu_alone / (1.0 - rho) if rho < 1.0 else float("inf")
    for i, q in enumerate(thresholds):
        if loaded >= q:
            return i
    return len(thresholds)
