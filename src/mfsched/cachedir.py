"""Where mfsched keeps what it caches on disk, and the digest that ties a cache to the code.

Three caches live under :func:`cache_root`: the simulator's compiled kernels
(:mod:`mfsched._jit`, ``numba/``), the isolated-TTFT memo behind the SLOs
(:mod:`mfsched.sim.slomemo`, ``slo/``) and the schedulers' last wall times per cluster
(:mod:`mfsched.experiments.runtimes`, ``runtimes/``). All are keyed by :func:`source_digest`
of the code they depend on, so an edited or upgraded mfsched never reads an entry that older
code wrote. The two JSON caches are read and written with :func:`read_floats` and
:func:`write_json` (atomic replace).

``MFSCHED_CACHE_DIR`` chooses the root (default ``$XDG_CACHE_HOME/mfsched``, else
``~/.cache/mfsched``); ``MFSCHED_NO_DISK_CACHE=1`` keeps the SLO memo in memory only and
records no wall times.
Stdlib only: :mod:`mfsched._jit` imports this before any kernel is compiled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["PACKAGE", "cache_root", "disk_cache_enabled", "read_floats", "source_digest",
           "write_json"]

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


def read_floats(path: Path) -> dict[str, float]:
    """A JSON object of string -> float cached at ``path``; empty if missing or unreadable
    (other entries dropped: a cache is never trusted further than its types)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, float)}


def write_json(path: Path, data: object) -> None:
    """Replace ``path`` with ``data`` as JSON atomically (a temporary file in the same
    directory, renamed): readers see the old file or the new one, never a part. Raises
    OSError; the temporary file is removed on any failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
