"""Optional JIT compilation of the simulator's innermost loops.

Kernels are written as plain loops over numpy arrays and decorated with :func:`njit`. With
numba installed (a core dependency) they are compiled once and cached on disk; without it they
run unchanged as ordinary Python, only slower, so the results never depend on numba.
Set ``MFSCHED_NO_JIT=1`` to force the interpreted path (tests use it to cross-check).
Where ``pip install .`` compiled a kernel's module with Cython (``setup.py`` lists them,
typed by the ``.pxd`` files beside them; :mod:`mfsched._compiled`), the kernel arrives here
compiled already and is returned as it is: numba then compiles nothing.
:func:`kernels_cached` tells the CLI whether the first call will compile (it then says so).

**Where the compiled kernels live.** numba keys a cached kernel by its own source file only: a
kernel of ``sim/network.py`` that calls one of ``sim/allocation.py`` keeps running the old
callee after ``allocation.py`` changes (measured: an edited allocator was silently not used).
So the cache lives in a directory named after the digest of every kernel source
(:data:`KERNEL_SOURCES`; ``tests/test_jit.py`` checks that the list names every module that
uses :func:`njit`), under ``mfsched.cachedir.cache_root()/numba`` (or ``$NUMBA_CACHE_DIR``):
changed kernels compile afresh, unchanged ones load.
"""

from __future__ import annotations

import os
import types

from .cachedir import cache_root, source_digest

__all__ = ["JIT_ENABLED", "KERNEL_SOURCES", "kernels_cached", "njit"]

# every module that defines kernels (relative to the package)
KERNEL_SOURCES = ("_jit.py", "policy/baselines.py", "policy/batchbook.py", "policy/oracle.py",
                  "policy/red.py",
                  "sim/allocation.py",
                  "sim/network.py")

_KERNELS: list = []  # every compiled kernel of the imported modules


def _cache_dir() -> str | None:
    """The kernels' cache directory for this code, or None (numba's default) if unusable."""
    base = os.environ.get("NUMBA_CACHE_DIR") or str(cache_root() / "numba")
    path = os.path.join(base, source_digest(KERNEL_SOURCES)[:16])
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK) else None


try:
    if os.environ.get("MFSCHED_NO_JIT"):
        raise ImportError
    import numba

    JIT_ENABLED = True
    _CACHE_DIR = _cache_dir()

    def njit(fn=None, *, inline: str = "never"):
        """Compile ``fn`` (cached on disk); ``@njit(inline="always")`` for a small helper
        that its compiled callers should inline (numba's option)."""
        if fn is None:
            return lambda f: njit(f, inline=inline)
        if not isinstance(fn, types.FunctionType):  # compiled by Cython already
            return fn
        # numba reads its cache directory when a kernel is decorated: point it at ours for
        # mfsched's kernels only, leaving other numba users in the process alone
        saved = numba.config.CACHE_DIR
        if _CACHE_DIR is not None:
            numba.config.CACHE_DIR = _CACHE_DIR
        try:
            kernel = numba.njit(cache=True, nogil=True, inline=inline)(fn)
        finally:
            numba.config.CACHE_DIR = saved
        _KERNELS.append(kernel)
        return kernel

except ImportError:  # pragma: no cover - exercised with MFSCHED_NO_JIT=1
    JIT_ENABLED = False

    def njit(fn=None, *, inline: str = "never"):
        return (lambda f: f) if fn is None else fn


def kernels_cached() -> bool:
    """Whether numba's on-disk cache holds a fresh compiled copy of any kernel imported so far:
    False on a first run (or after the sources changed), when the first calls compile for
    several seconds. (Some kernels serve only some runs, e.g. the contention-free reference,
    so a cache is never complete.) Reads numba's cache index through its private API; should
    that move, the answer is True (say nothing) rather than an error."""
    if not JIT_ENABLED or not _KERNELS:  # no numba kernel: nothing compiles (the compiled
        return True                      # core, mfsched._compiled, has them all in C)
    try:
        return any(k._cache._cache_file._load_index() for k in _KERNELS)
    except Exception:  # numba internals changed: no notice, no failure
        return True
