"""Optional JIT compilation of the simulator's innermost loops.

Kernels are written as plain loops over numpy arrays and decorated with :func:`njit`. With
numba installed (a core dependency) they are compiled once and cached on disk; without it they
run unchanged as ordinary Python, only slower, so the results never depend on numba.
Set ``MFSCHED_NO_JIT=1`` to force the interpreted path (tests use it to cross-check).
:func:`kernels_cached` tells the CLI whether the first call will compile (it then says so).
"""

from __future__ import annotations

import os

__all__ = ["JIT_ENABLED", "kernels_cached", "njit"]

_KERNELS: list = []  # every compiled kernel of the imported modules

try:
    if os.environ.get("MFSCHED_NO_JIT"):
        raise ImportError
    import numba

    JIT_ENABLED = True

    def njit(fn):
        kernel = numba.njit(cache=True, nogil=True)(fn)
        _KERNELS.append(kernel)
        return kernel

except ImportError:  # pragma: no cover - exercised with MFSCHED_NO_JIT=1
    JIT_ENABLED = False

    def njit(fn):
        return fn


def kernels_cached() -> bool:
    """Whether numba's on-disk cache holds a fresh compiled copy of any kernel imported so far:
    False on a first run (or after the sources changed), when the first calls compile for
    several seconds. (Some kernels serve only some runs, e.g. the contention-free reference,
    so a cache is never complete.) Reads numba's cache index through its private API; should
    that move, the answer is True (say nothing) rather than an error."""
    if not JIT_ENABLED:
        return True
    try:
        return any(k._cache._cache_file._load_index() for k in _KERNELS)
    except Exception:  # numba internals changed: no notice, no failure
        return True
