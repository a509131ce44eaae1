"""Build step of ``pip install .``: compile the simulator's hot modules with Cython.

Everything else about the package is declared in ``pyproject.toml``. The modules in
``COMPILED`` are ordinary Python files; Cython compiles each into an extension module beside
it (the modules with kernels take their C types from the ``.pxd`` files beside them,
Cython's "pure Python mode"; the others compile untyped), which Python's import system then
prefers to the source. The build also writes ``mfsched/_compiled.json``, the SHA-256 of
every compiled source, so that :mod:`mfsched._compiled` can run a source that changed since
(an editable install being edited) instead of its stale extension, and
``MFSCHED_PURE_PYTHON=1`` can run them all as plain Python. Where no C compiler works, the
package installs without the extensions and says so: every module then runs as Python (with
numba for the kernels), only slower.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Cython's checks off per module. "unchecked": no bounds, negative-index or initialisation
# checks (the network and the allocator: a .pxd types every index, and no index there is
# negative); "no-wraparound": bounds still checked, negative indexes not wrapped (the modules
# whose kernels are typed beside Python classes: an index outside is an IndexError, never a
# read outside the list); "": Cython's defaults (modules compiled untyped).
_CHECKS = {
    "unchecked": {"boundscheck": False, "wraparound": False, "initializedcheck": False},
    "no-wraparound": {"wraparound": False},
    "": {},
}
COMPILED = {
    "mfsched.sim.allocation": "unchecked",
    "mfsched.sim.network": "unchecked",
    "mfsched.policy.baselines": "no-wraparound",
    "mfsched.policy.batchbook": "no-wraparound",
    "mfsched.policy.oracle": "no-wraparound",
    "mfsched.policy.red": "no-wraparound",
    "mfsched.sim.engine": "",
    "mfsched.sim.serving": "",
    "mfsched.sim.transfer": "",
    "mfsched.policy.driver": "",
    "mfsched.policy.mfs": "",
    "mfsched.policy.fair": "",
    "mfsched.policy.rmlq": "",
    "mfsched.policy.types": "",
}
MANIFEST = "_compiled.json"


def _source(module: str) -> str:
    return os.path.join("src", *module.split(".")) + ".py"


def _extensions() -> list[Extension]:
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    exts = []
    for module, checks in COMPILED.items():
        directives = {"language_level": 3, "annotation_typing": False, **_CHECKS[checks]}
        exts += cythonize([Extension(module, [_source(module)])], compiler_directives=directives,
                          include_path=["src"], quiet=True)
    return exts


class BuildExt(build_ext):
    """Build the extensions, then record the sources they were built from; without a working
    compiler, say so and install the pure-Python package."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:  # one compiler per core
            self.parallel = len(os.sched_getaffinity(0))

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            print(f"mfsched: compiling the simulator's core failed ({exc}); installing it "
                  "as pure Python (slower)", file=sys.stderr)
            return
        if not self.extensions:
            return
        digests = {m: hashlib.sha256(Path(_source(m)).read_bytes()).hexdigest()
                   for m in COMPILED}
        manifest = self._manifest()
        os.makedirs(os.path.dirname(manifest), exist_ok=True)
        with open(manifest, "w") as f:
            json.dump(digests, f, indent=1, sort_keys=True)

    def _manifest(self) -> str:
        """Where the manifest goes: beside the package's extensions (the source tree for an
        editable install, the build directory for a wheel)."""
        return os.path.join(os.path.dirname(self.get_ext_fullpath("mfsched.x")), MANIFEST)

    def get_outputs(self) -> list[str]:
        outputs = super().get_outputs()
        return [*outputs, self._manifest()] if os.path.exists(self._manifest()) else outputs


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
