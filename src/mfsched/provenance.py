"""Which mfsched produced a result: its version and, when known, its git commit.

Called by ``mfsched --version`` and by the writer of ``config.json``
(:mod:`mfsched.cli_files`), so that every result directory says what code made it. The commit
is known when the package is imported from a git checkout (an editable install, the tests); an
installed wheel has none and says so (``null``) rather than guessing.
"""

from __future__ import annotations

import functools
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["git_commit", "mfsched_version", "provenance", "version_line"]

_SOURCE = Path(__file__).resolve().parent


@functools.cache
def mfsched_version() -> str:
    try:
        return version("mfsched")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(_SOURCE), *args], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def git_commit() -> tuple[str | None, bool | None]:
    """(commit, modified): the checkout's HEAD and whether tracked files differ from it;
    (None, None) when mfsched does not run from a git checkout."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return commit, None if status is None else bool(status)


def provenance() -> dict:
    commit, modified = git_commit()
    return {"mfsched_version": mfsched_version(), "git_commit": commit,
            "git_modified": modified}


def version_line() -> str:
    """``mfsched 0.1.0 (git 3a49903, modified)`` or ``mfsched 0.1.0``."""
    commit, modified = git_commit()
    if commit is None:
        return f"mfsched {mfsched_version()}"
    return f"mfsched {mfsched_version()} (git {commit[:7]}{', modified' if modified else ''})"
