"""Range checks at the edge: one line naming the option, the value and the allowed range.

Every number a user can give (an option, a field of :class:`~mfsched.experiments.config.SimConfig`,
an entry of a comma-separated list) goes through one of these before any work starts, so that a
bad value is refused with a :class:`~mfsched.errors.UserError` such as
``--levels must be an integer in 1..64, got 1000`` rather than failing later (an overflow in a
policy, a seed numpy refuses) or running forever (a rate so low that arrivals span centuries).

Callers: :mod:`mfsched.experiments.config` (every run configuration), the CLI's list parsers
(:mod:`mfsched.cli_options`), the trace readers (time magnitudes).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from .errors import UserError

__all__ = ["MAX_SIMULATED_S", "integer", "number"]

# A double resolves 1 ns steps below 2**23 s (ulp(2**23 s) = 2**-29 s ~ 1.9 ns, and below it at
# most 2**-30 s ~ 0.93 ns); the simulator completes flows to within 1 ns, so simulated time must
# stay below this (97 days). Arrivals get half of it, the drain after the last arrival the rest.
MAX_SIMULATED_S = float(2**23)


def integer(flag: str, value: object, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in ``lo..hi`` (``hi`` None: no upper bound), or a UserError."""
    ok = isinstance(value, Integral) and not isinstance(value, bool)
    if ok and lo <= value and (hi is None or value <= hi):
        return int(value)
    allowed = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
    raise UserError(f"{flag} must be {allowed}, got {value!r}")


def number(flag: str, value: object, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (lo < value if lo_open else lo <= value) and value <= hi:
        return float(value)
    if lo_open and lo == 0:
        allowed = f"a positive number up to {hi:g}"
    else:
        allowed = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    raise UserError(f"{flag} must be {allowed}, got {value!r}")
