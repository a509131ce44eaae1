"""What every benchmark does with its figures: print them, keep the JSON, update the docs.

``reference_s()`` times the fixed reference run that every speed benchmark repeats in its own
process (a 120-request testbed simulation under fair sharing, after one untimed run that loads
the compiled kernels): figures are also given as ratios to it, which move less than absolute
times on these shared machines.

``save(name, data, text, write, tag)`` prints the Markdown ``text``, writes ``data`` to
``bench/results/<name>.json`` and, if ``write`` is a Markdown file, replaces what lies between
its ``<!-- BEGIN tag -->`` and ``<!-- END tag -->`` markers with ``text``. The benchmarks are
run as scripts (``python bench/x.py``), so this module is imported from their own folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def reference_s() -> float:
    """Wall seconds of the reference run (module docstring)."""
    import time

    from mfsched.experiments import runner
    from mfsched.experiments.config import SimConfig

    cfg = SimConfig(requests=100, warmup=20, tail=0, slo_s=1.0)
    runner.run(cfg, ["fs"])  # load compiled kernels before timing
    t = time.perf_counter()
    runner.run(cfg, ["fs"])
    return time.perf_counter() - t


def save(name: str, data, text: str, write: Path | None, tag: str) -> None:
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    if write is not None:
        replace_section(write, tag, text)


def replace_section(path: Path, tag: str, text: str) -> None:
    begin, end = f"<!-- BEGIN {tag} -->", f"<!-- END {tag} -->"
    doc = path.read_text()
    if begin not in doc or end not in doc:
        sys.exit(f"{path} has no {begin} ... {end} markers")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + begin + "\n" + text + "\n" + end + tail)
