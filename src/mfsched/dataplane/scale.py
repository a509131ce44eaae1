"""The one scaling factor between the paper's testbed (model units) and the emulation (real).

The emulated testbed is the paper's testbed with **every size divided by s and every duration
multiplied by s**; rates therefore shrink by s². With the default s = 20, a 100 Gbit/s NIC
becomes 250 Mbit/s, a 2.4 ms layer takes 48 ms of wall time, a 0.9 MB expert-parallel message
is 47 KB, and one simulated second lasts 20 wall seconds. Policies, records and summaries stay
in model units throughout (the daemons' policies see exactly the numbers the simulator's policy
sees); only the transport (bytes), the timers (durations) and the links (rates) are scaled.

Used by the wall-clock engine (times), the daemons (bytes, rates, clock) and the testbed runner
(link rates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Scale"]


@dataclass(frozen=True, slots=True)
class Scale:
    factor: float = 20.0

    def __post_init__(self) -> None:
        if not (1.0 <= self.factor <= 1e4 and math.isfinite(self.factor)):
            raise ValueError(f"the scale factor must be within 1..1e4, got {self.factor}")

    # bytes: real = model / s
    def real_bytes(self, model_bytes: float) -> int:
        """Bytes actually sent for ``model_bytes`` (at least one)."""
        return max(1, math.ceil(model_bytes / self.factor - 1e-9))

    def model_bytes(self, real_bytes: float) -> float:
        return real_bytes * self.factor

    # time: wall = model x s
    def wall_s(self, model_s: float) -> float:
        return model_s * self.factor

    def model_s(self, wall_s: float) -> float:
        return wall_s / self.factor

    # rates: real = model / s^2
    def real_rate(self, model_per_s: float) -> float:
        """Bytes/s or bits/s in the emulation for a model rate."""
        return model_per_s / (self.factor * self.factor)

    def model_rate(self, real_per_s: float) -> float:
        return real_per_s * self.factor * self.factor
