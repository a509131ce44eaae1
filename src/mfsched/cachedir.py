"""Where mfsched keeps what it caches on disk, and the digest that ties a cache to the code.

Two caches live under :func:`cache_root`: the simulator's compiled kernels
(:mod:`mfsched._jit`, ``numba/``) and the isolated-TTFT memo behind the SLOs
(:mod:`mfsched.sim.slomemo`, ``slo/``). Both are keyed by :func:`source_digest` of the code
they depend on, so an edited or upgraded mfsched never reads an entry that older code wrote.

``MFSCHED_CACHE_DIR`` chooses the root (default ``$XDG_CACHE_HOME/mfsched``, else
``~/.cache/mfsched``); ``MFSCHED_NO_DISK_CACHE=1`` keeps the SLO memo in memory only.
Stdlib only: :mod:`mfsched._jit` imports this before any kernel is compiled.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["PACKAGE", "cache_root", "disk_cache_enabled", "source_digest"]

PACKAGE = Path(__file__).resolve().parent


def cache_root() -> Path:
    """The directory of mfsched's on-disk caches (read from the environment at each call)."""
    explicit = os.environ.get("MFSCHED_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mfsched"


def disk_cache_enabled() -> bool:
    return os.environ.get("MFSCHED_NO_DISK_CACHE", "") in ("", "0")


def source_digest(relpaths: Iterable[str]) -> str:
    """SHA-256 (hex) of the named source files of the package (paths relative to it, ``**``
    globs allowed), in sorted order, each with its path."""
    files: set[Path] = set()
    for rel in relpaths:
        files.update(PACKAGE.glob(rel) if "*" in rel else [PACKAGE / rel])
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()
