"""Which of mfsched's modules run compiled, and the switch back to their Python source.

``pip install .`` compiles the simulator's hot modules with Cython (``setup.py`` lists them):
each ``.py`` gets an extension module beside it, built from that very file, which Python's
import system prefers. The build records the SHA-256 of every compiled source in
``_compiled.json``. :func:`install` (called when :mod:`mfsched` is imported) puts a finder
first on ``sys.meta_path`` that loads the ``.py`` instead of its extension

* for every compiled module when ``MFSCHED_PURE_PYTHON=1`` (the tests compare the two paths;
  the kernels then run under numba as before), and
* for a module whose source no longer matches its digest (an editable install being edited),
  with one line on stderr saying so: a stale extension would silently run old code.

Without ``_compiled.json`` (a source checkout never built, or a build without a compiler)
nothing is compiled and nothing is done here.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import json
import os
import sys
from pathlib import Path

__all__ = ["compiled_modules", "install"]

_PACKAGE = Path(__file__).resolve().parent
_MANIFEST = _PACKAGE / "_compiled.json"


def _source(module: str) -> Path:
    return _PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the named modules as their ``.py`` files."""

    def __init__(self, modules: frozenset[str]) -> None:
        self.modules = modules

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_file_location(fullname, _source(fullname))


def _manifest() -> dict[str, str]:
    try:
        return json.loads(_MANIFEST.read_text())
    except (OSError, ValueError):
        return {}


def compiled_modules() -> list[str]:
    """The modules running compiled in this process (imported or not yet)."""
    finders = [f for f in sys.meta_path if isinstance(f, _SourceFinder)]
    skipped = finders[0].modules if finders else frozenset()
    return sorted(m for m in _manifest() if m not in skipped)


def install() -> None:
    """Put the source finder in place (once per process) for the modules that must run as
    Python; see the module docstring."""
    if any(isinstance(f, _SourceFinder) for f in sys.meta_path):
        return
    digests = _manifest()
    if not digests:
        return
    if os.environ.get("MFSCHED_PURE_PYTHON"):
        source = frozenset(digests)
    else:
        stale = []
        for module, digest in digests.items():
            try:
                current = hashlib.sha256(_source(module).read_bytes()).hexdigest()
            except OSError:
                current = None
            if current != digest:
                stale.append(module)
        if stale:
            print(f"mfsched: {', '.join(sorted(stale))} changed since compiled: running "
                  "as Python (reinstall to compile them again)", file=sys.stderr)
        source = frozenset(stale)
    if source:
        sys.meta_path.insert(0, _SourceFinder(source))
