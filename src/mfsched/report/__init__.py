"""The reproduction report: results directories of ``mfsched reproduce`` -> one HTML page with
figures (and the PNGs beside it). Called by ``mfsched report`` (``mfsched.cli_experiments``).

Downstream of everything else (workload -> engine -> records -> metrics -> report): it reads the
Parquet tables the experiments wrote and imports matplotlib, which is the optional ``report``
extra (``pip install 'mfsched[report]'``); nothing in mfsched imports this package but the CLI.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_report"]


def write_report(results_dir: Path, out_dir: Path | None = None) -> Path:
    """Write ``report.html`` and ``figures/*.png`` (default: ``results_dir/report``)."""
    from .data import find_experiments
    from .html import render

    experiments = find_experiments(Path(results_dir))
    out = Path(out_dir) if out_dir is not None else Path(results_dir) / "report"
    out.mkdir(parents=True, exist_ok=True)
    return render(experiments, out, Path(results_dir))
