"""The reproduction of the paper's figures, from ``mfsched reproduce`` results into the docs.

    python bench/reproduce_section.py RESULTS_DIR [--write docs/results.md]

Runs :func:`mfsched.report.write_report` (what ``mfsched report RESULTS_DIR`` does) into a
temporary folder, copies its PNGs to ``docs/figures/`` (replacing the previous ones) and writes
its Markdown, headings moved under section 8 and figure links pointing at ``figures/``, between
the ``reproduce`` markers. Each experiment's section names the command that ran it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

from _report import replace_section

from mfsched.report import write_report

FIGURES = Path(__file__).resolve().parent.parent / "docs" / "figures"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="a results directory of mfsched reproduce "
                                               "(or a folder holding several)")
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_report(args.results, Path(tmp))
        text = (Path(tmp) / "report.md").read_text()
        if args.write is not None:
            if FIGURES.exists():
                shutil.rmtree(FIGURES)
            shutil.copytree(Path(tmp) / "figures", FIGURES)
    body = text.split("\n", 2)[2]  # drop the report's own title
    n = iter(range(1, 1000))
    body = re.sub(r"^## ", lambda _: f"### 8.{next(n)} ", body, flags=re.M)
    head = (f"`python bench/reproduce_section.py {args.results} --write docs/results.md` "
            "(the Markdown of `mfsched report`; figures in `docs/figures/`)\n")
    print(head + body)
    if args.write is not None:
        replace_section(args.write, "reproduce", head + body)


if __name__ == "__main__":
    main()
