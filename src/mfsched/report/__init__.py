"""The reproduction report: results directories of ``mfsched reproduce`` -> one HTML page with
figures, the same as Markdown, and the PNGs beside them. Called by ``mfsched report``
(``mfsched.cli_experiments``).

Downstream of everything else (workload -> engine -> records -> metrics -> report): it reads the
Parquet tables the experiments wrote and imports matplotlib, which is the optional ``report``
extra (``pip install 'mfsched[report]'``); nothing in mfsched imports this package but the CLI.
Modules: ``data`` (load, aggregate), ``claims`` (our value of the paper's numbers), ``tables``,
``figures`` (matplotlib), ``sections`` (what is said per experiment), ``html``, ``markdown``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_report"]


def write_report(results_dir: Path, out_dir: Path | None = None) -> Path:
    """Write ``report.html``, ``report.md`` and ``figures/*.png`` (default folder:
    ``results_dir/report``); return the HTML page's path."""
    from .data import find_experiments
    from .html import render_html
    from .markdown import render_markdown
    from .sections import INTRO, build_sections

    experiments = find_experiments(Path(results_dir))
    out = Path(out_dir) if out_dir is not None else Path(results_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    sections = build_sections(experiments, out)
    render_markdown(sections, out, INTRO)
    return render_html(sections, out, Path(results_dir), INTRO)
