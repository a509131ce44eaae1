"""Optional JIT compilation of the simulator's innermost loops.

Kernels are written as plain loops over numpy arrays and decorated with :func:`njit`. With
numba installed (a core dependency) they are compiled once and cached on disk; without it they
run unchanged as ordinary Python, only slower, so the results never depend on numba.
Set ``MFSCHED_NO_JIT=1`` to force the interpreted path (tests use it to cross-check).
"""

from __future__ import annotations

import os

__all__ = ["JIT_ENABLED", "njit"]

try:
    if os.environ.get("MFSCHED_NO_JIT"):
        raise ImportError
    import numba

    JIT_ENABLED = True

    def njit(fn):
        return numba.njit(cache=True, nogil=True)(fn)

except ImportError:  # pragma: no cover - exercised with MFSCHED_NO_JIT=1
    JIT_ENABLED = False

    def njit(fn):
        return fn
