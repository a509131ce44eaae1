"""What every benchmark does with its figures: print them, keep the JSON, update the docs.

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
