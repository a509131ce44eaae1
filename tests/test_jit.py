"""The compiled kernels' cache is keyed by every kernel source (``mfsched._jit``)."""

from __future__ import annotations

import re

from mfsched import _jit
from mfsched.cachedir import PACKAGE, source_digest


def test_kernel_sources_name_every_module_with_kernels():
    uses = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
            if re.search(r"^from \S*_jit import .*njit", p.read_text(), re.M)}
    assert uses | {"_jit.py"} == set(_jit.KERNEL_SOURCES)


def test_digest_follows_the_sources(tmp_path, monkeypatch):
    """Another kernel source gives another digest, hence another cache directory."""
    before = source_digest(_jit.KERNEL_SOURCES)
    monkeypatch.setattr("mfsched.cachedir.PACKAGE", tmp_path)
    for rel in _jit.KERNEL_SOURCES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((PACKAGE / rel).read_bytes())
    assert source_digest(_jit.KERNEL_SOURCES) == before
    (tmp_path / "sim/allocation.py").write_text("# changed\n")
    assert source_digest(_jit.KERNEL_SOURCES) != before
