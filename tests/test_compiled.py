"""The compiled core (issue 11): ``pip install .`` compiles the simulator's hot modules with
Cython (``setup.py``); :mod:`mfsched._compiled` runs a module's source instead where asked
(``MFSCHED_PURE_PYTHON=1``) or where the source changed since the build. That both paths give
the same results is ``tests/test_equivalence.py``'s job."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys

import pytest

import mfsched._compiled as compiled


def _setup_modules() -> list[str]:
    namespace: dict = {}
    source = compiled._PACKAGE.parent.parent / "setup.py"
    if not source.exists():  # an installed (non-editable) package: its manifest is the list
        return sorted(compiled._manifest())
    code = source.read_text().split("\ndef ")[0]  # the module list, before any function
    exec(compile(code, str(source), "exec"), namespace)
    return sorted(namespace["COMPILED"])


def test_the_hot_modules_run_compiled():
    """The test command installs the package as users do, so every module setup.py lists is
    an extension module here (a build that fell back to Python fails this)."""
    listed = _setup_modules()
    assert compiled.compiled_modules() == listed
    for module in listed:
        file = __import__(module, fromlist=["_"]).__file__
        assert file.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), (module, file)


def test_pure_python_runs_every_module_from_its_source():
    code = ("import mfsched._compiled as c, mfsched.sim.network as n, mfsched.policy.mfs as m;"
            "print(c.compiled_modules(), n.__file__, m.__file__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"MFSCHED_PURE_PYTHON": "1", "PATH": ""}, check=True)
    assert out.stdout.split() == ["[]", str(compiled._source("mfsched.sim.network")),
                                  str(compiled._source("mfsched.policy.mfs"))]


def test_a_changed_source_runs_as_python_and_says_so(monkeypatch, capsys):
    """An editable install being edited: the stale extension must not run the old code."""
    digests = dict(compiled._manifest()) or {"mfsched.sim.transfer": ""}
    digests["mfsched.sim.transfer"] = "0" * 64  # not the source's digest
    monkeypatch.setattr(compiled, "_manifest", lambda: digests)
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path
                                           if not isinstance(f, compiled._SourceFinder)])
    compiled.install()
    finder = sys.meta_path[0]
    assert isinstance(finder, compiled._SourceFinder)
    assert finder.modules == {"mfsched.sim.transfer"}
    assert finder.find_spec("mfsched.sim.transfer", None).origin == \
        str(compiled._source("mfsched.sim.transfer"))
    assert finder.find_spec("mfsched.sim.network", None) is None
    assert capsys.readouterr().err == ("mfsched: mfsched.sim.transfer changed since compiled: "
                                       "running as Python (reinstall to compile them again)\n")
    assert "mfsched.sim.transfer" not in compiled.compiled_modules()
    compiled.install()  # once per process
    assert sum(isinstance(f, compiled._SourceFinder) for f in sys.meta_path) == 1


def test_without_a_compiler_the_build_installs_python_and_says_so(tmp_path):
    """setup.py's fallback: a C compiler that fails leaves every module as Python, with one
    line saying so, and the build still succeeds (in a copy of the sources)."""
    import shutil

    root = compiled._PACKAGE.parent.parent
    if not (root / "setup.py").exists():
        pytest.fail("needs the source tree (setup.py) beside the package: run from a checkout")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "src", tmp_path / "src",
                    ignore=shutil.ignore_patterns("*.so", "*.c", "_compiled.json",
                                                  "__pycache__"))
    out = subprocess.run([sys.executable, "setup.py", "-q", "build_ext"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "CC": "/bin/false"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mfsched: compiling the simulator's core failed" in out.stderr
    assert "installing it as pure Python (slower)" in out.stderr
    assert not list(tmp_path.rglob("*.so")) and not list(tmp_path.rglob("_compiled.json"))
