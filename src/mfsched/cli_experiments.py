"""``mfsched reproduce`` and ``mfsched report``: the paper's experiments and their report.

:func:`register` adds both commands to the ``mfsched`` app; ``mfsched.cli.main`` calls it (as it
does for the data-plane commands). This module imports nothing from ``mfsched.cli``: the only
coupling is that one call. Parsing and printing happen here; the work is done by
:mod:`mfsched.experiments.reproduce` (grid -> executor -> results directory) and
:mod:`mfsched.report` (results directory -> HTML and PNGs). Bad input raises
:class:`~mfsched.errors.UserError`, which ``cli.main`` prints as one line with exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .cli_options import AsJson, Command, Executor, Jobs, RayAddress, jobs_or_default
from .errors import UserError

__all__ = ["register"]

_err = Console(stderr=True)


def reproduce(
    name: Annotated[str | None, typer.Argument(
        help="Experiment name (see --list) or the path of an experiment .toml file.")] = None,
    list_: Annotated[bool, typer.Option(
        "--list", help="List the paper's experiments with a one-line description each.")]
        = False,
    quick: Annotated[bool, typer.Option(
        help="Run the experiment's reduced grid (minutes on a laptop, the same shape) instead "
             "of the paper's full grid.")] = False,
    out: Annotated[Path | None, typer.Option(
        help="Results directory. Default: results/NAME (results/NAME-quick with --quick).")]
        = None,
    models: Annotated[str | None, typer.Option(
        help="Run only these of the experiment's models (comma-separated); the results go to "
             "their own directory (default results/NAME+MODEL...).")] = None,
    executor: Executor = "process",
    jobs: Jobs = None,
    ray_address: RayAddress = None,
    resume: Annotated[bool, typer.Option(
        help="Complete an interrupted run in --out: only the points not yet on disk run.")]
        = False,
    as_json: AsJson = False,
) -> None:
    """Reproduce one of the paper's experiments (Figs. 5, 10-15) as a grid of simulations.

    Every grid point (model x workload x rate x seed, all schedulers on the same requests) is one task; each finished point is written to --out at once, so an interrupted run continues with --resume. The experiment's table is --out/results.parquet (one row per scheduler, point and seed); 'mfsched report DIR' turns it into an HTML page with figures.
    """  # noqa: E501 (one paragraph per line: the help formatter keeps line breaks)
    from .experiments.executors import check
    from .experiments.spec import experiment_names, load_experiment

    if list_:
        exps = [load_experiment(n) for n in experiment_names()]
        if as_json:
            typer.echo(json.dumps([{"name": e.name, "figure": e.figure, "kind": e.kind,
                                    "description": e.description,
                                    "points": len(e.points(False)),
                                    "quick_points": len(e.points(True))} for e in exps],
                                  indent=2))
            return
        table = Table(show_header=True, box=None)
        for col in ("name", "points", "quick", "description"):
            table.add_column(col, justify="right" if col in ("points", "quick") else "left")
        for e in exps:
            table.add_row(e.name, str(len(e.points(False))), str(len(e.points(True))),
                          e.description)
        Console(width=max(Console().width, 140)).print(table)
        return
    if name is None:
        raise UserError("name an experiment (mfsched reproduce --list shows them)")
    exp = load_experiment(name)
    only = tuple(m.strip() for m in models.split(",")) if models is not None else ()
    if models is not None:
        exp = exp.with_models(only)
    jobs = jobs_or_default(jobs)
    check(executor, jobs, ray_address)
    from .experiments.reproduce import default_out_dir
    from .experiments.reproduce import reproduce as run

    out_dir = out if out is not None else default_out_dir(exp, quick, only)
    grid = "quick" if quick else "full"
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("points"), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn(), console=_err, transient=False,
                   disable=not _err.is_terminal,
                   # points take minutes: estimate the speed over the whole run, not 30 s
                   speed_estimate_period=24 * 3600)
    state: dict[str, int] = {"done": 0, "total": 0}

    def on_start(total: int, already: int, warnings: tuple[str, ...]) -> None:
        state.update(done=already, total=total)
        for w in warnings:
            _err.print(f"warning: {w}", highlight=False, soft_wrap=True)
        _err.print(f"{exp.name} ({grid} grid): {total} points x {len(exp.schedulers_of(quick))} "
                   f"schedulers{' + reference' if exp.reference else ''}, {already} already "
                   f"done; executor {executor}, {jobs} at once; results in {out_dir}",
                   highlight=False, soft_wrap=True)
        state["task"] = bar.add_task(exp.name, total=total, completed=already)

    def on_point(key: str) -> None:
        state["done"] += 1
        bar.update(state["task"], completed=state["done"])
        if not _err.is_terminal:  # a log line per point where there is no live bar
            _err.print(f"{exp.name}: point {state['done']}/{state['total']} done ({key})",
                       highlight=False, soft_wrap=True)

    try:
        with bar:
            outcome = run(exp, quick=quick, out_dir=out_dir, executor=executor, jobs=jobs,
                          address=ray_address, resume=resume, on_start=on_start,
                          on_point=on_point)
    except KeyboardInterrupt:
        _err.print(f"interrupted: {state['done']} of {state['total']} points are saved in "
                   f"{out_dir}; run the same command with --resume to complete it",
                   highlight=False, soft_wrap=True)
        sys.exit(130)
    if as_json:
        typer.echo(json.dumps({"experiment": exp.name, "grid": grid,
                               "out_dir": str(outcome.out_dir),
                               "results": str(outcome.results_path),
                               "points": outcome.points_total, "points_run": outcome.points_run,
                               "points_reused": outcome.points_reused}, indent=2))
        return
    _print_attainment(outcome.results_path, exp.name)
    typer.echo(f"results: {outcome.results_path}  ({outcome.points_run} points run, "
               f"{outcome.points_reused} reused)\nreport:  mfsched report {outcome.out_dir}")


def _print_attainment(results: Path, title: str) -> None:
    """SLO attainment per (model, workload): rates x schedulers, mean over seeds."""
    import pyarrow.parquet as pq

    rows = pq.read_table(results, columns=["model", "workload", "rate_per_gpu", "scheduler",
                                           "slo_attainment"]).to_pylist()
    acc: dict[tuple, dict[float, dict[str, list[float]]]] = {}
    for r in rows:
        acc.setdefault((r["model"], r["workload"]), {}).setdefault(
            r["rate_per_gpu"], {}).setdefault(r["scheduler"], []).append(r["slo_attainment"])
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 132))
    for (model, workload), per_rate in acc.items():
        cols = list(dict.fromkeys(s for per in per_rate.values() for s in per))
        table = Table(title=f"{title} | SLO attainment | {model} | {workload}")
        table.add_column("req/s/GPU", justify="right")
        for c in cols:
            table.add_column(c, justify="right")
        for rate, per in sorted(per_rate.items()):
            table.add_row(f"{rate:g}", *(f"{sum(per[c]) / len(per[c]):.3f}" if c in per
                                         else "" for c in cols))
        console.print(table)


def report(
    results_dir: Annotated[Path, typer.Argument(
        help="A results directory of 'mfsched reproduce', or a folder holding several.")],
    out: Annotated[Path | None, typer.Option(
        help="Where to write report.html, report.md and figures/*.png. Default: "
             "RESULTS_DIR/report.")] = None,
) -> None:
    """Write an HTML report (figures embedded, PNGs beside it, and report.md) of reproduced experiments.

    Per experiment: SLO attainment against rate (one panel per model, one line per scheduler, the contention-free reference dashed, the seeds' range as a band), the sustainable-rate table with MFS / Karuna, the breakdowns of Figs. 14-15, and the paper's stated numbers next to ours.
    """  # noqa: E501
    try:
        import matplotlib  # noqa: F401  (the report extra)
    except ImportError:
        raise UserError("mfsched report needs matplotlib: pip install 'mfsched[report]'") \
            from None
    from .report import write_report

    target = write_report(results_dir, out)
    typer.echo(str(target))


def register(app: typer.Typer) -> None:
    """Add ``reproduce`` and ``report`` to the ``mfsched`` app (idempotent)."""
    names = {c.name for c in app.registered_commands}
    if "reproduce" not in names:
        app.command("reproduce", cls=Command)(reproduce)
    if "report" not in names:
        app.command("report", cls=Command)(report)
