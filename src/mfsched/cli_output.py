"""What the command line prints: tables that explain themselves, progress bars, notices.

* Tables (:func:`print_results`, :func:`print_sweep`) state the SLO rule, mark the best
  scheduler per column (the clairvoyant oracle and the contention-free reference are shown but
  never marked best) and end with one line saying who won; attainment is a percentage in every
  table (JSON keeps the fraction ``slo_attainment`` in 0..1).
* Progress bars name what they count (:func:`progress`); notices on stderr say when the first
  run compiles the simulator's kernels, when it computes the isolated TTFTs behind the SLOs
  (the first run of a cluster; later runs read them from disk) and how big a large run is.

Result files are :mod:`mfsched.cli_files`'. Callers: :mod:`mfsched.cli` and
:mod:`mfsched.dataplane.commands`; this module imports neither.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["NOT_RANKED", "compile_notice", "err_console", "memo_notice", "pct", "print_results",
           "print_sweep", "progress", "size_notice", "stdout_console", "ticker", "verdict"]

err_console = Console(stderr=True)

# shown in tables, never marked best: the oracle knows the future, the reference is no
# scheduler (every flow as if alone on its path)
NOT_RANKED = ("oracle", "no-contention")
LARGE_RUN_REQUESTS = 20_000  # above this many simulated requests a run says how big it is


def stdout_console() -> Console:
    """Standard output; wide enough for the tables when it is not a terminal."""
    out = Console()
    return out if out.is_terminal else Console(width=max(out.width, 132))


def pct(fraction: float) -> str:
    """Attainment as every table shows it."""
    return "n/a" if fraction != fraction else f"{fraction:.1%}"


# --- progress and notices ---------------------------------------------------------------------


def progress(enabled: bool, unit: str) -> Progress:
    """A progress display on stderr whose counter names its ``unit``."""
    return Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn(unit), TimeElapsedColumn(), console=err_console,
                    disable=not enabled, transient=False)


def ticker(bar: Progress) -> Callable[[str, int, int], None]:
    """A progress callback ``(name, done, total)`` with one bar per scheduler."""
    tasks: dict[str, int] = {}

    def tick(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=total)
        bar.update(tasks[name], completed=min(done, total))

    return tick


def compile_notice() -> None:
    """Say so when the next run compiles the simulator's kernels (numba, cached on disk): only
    where they run from source (``MFSCHED_PURE_PYTHON=1``, a build without a compiler, or
    sources edited since the build: :mod:`mfsched._compiled`); the compiled core has none."""
    import mfsched.sim.engine  # noqa: F401  (imports every kernel)
    from mfsched._jit import kernels_cached

    if not kernels_cached():
        err_console.print("compiling the simulator's kernels (first run only, a few seconds)")


def memo_notice(prepared) -> None:
    """Say so when the SLOs' isolated TTFTs of this cluster are not on disk yet (the first run
    of a scenario computes them, later runs read them)."""
    isolated = prepared.isolated
    if isolated is not None and not isolated.store.entries:
        where = isolated.store.path.parent if isolated.store.path else "memory only"
        err_console.print(f"computing the isolated TTFTs behind the SLOs (first run of this "
                          f"cluster; kept in {where})", soft_wrap=True)


def size_notice(requests: int, schedulers: int) -> None:
    """Say how big a large run is, and that Ctrl-C stops it cleanly."""
    if requests > LARGE_RUN_REQUESTS:
        err_console.print(f"a large run: {requests:,} simulated requests x {schedulers} "
                          f"scheduler{'s' if schedulers != 1 else ''} (the default run has "
                          f"1,792 x 7); Ctrl-C stops it and writes nothing")


# --- tables -----------------------------------------------------------------------------------

# (column, row key, format, better) of the results table; better: "max", "min" or None
_COLUMNS: tuple[tuple[str, str, Callable[[float], str], str | None], ...] = (
    ("SLO met", "slo_attainment", pct, "max"),
    ("TTFT mean", "ttft_mean_s", lambda v: f"{1e3 * v:.1f}", "min"),
    ("p50", "ttft_p50_s", lambda v: f"{1e3 * v:.1f}", "min"),
    ("p99", "ttft_p99_s", lambda v: f"{1e3 * v:.1f}", "min"),
    ("Stage-2 CCT", "stage2_cct_mean_s", lambda v: f"{1e3 * v:.2f}", "min"),
    ("earliness", "p2d_earliness_mean", lambda v: f"{v:+.2f}", None),
    ("pruned", "pruned_fraction", lambda v: f"{v:.1%}", None),
    ("sim s", "simulated_time_s", lambda v: f"{v:.1f}", None),
    ("wall s", "wall_time_s", lambda v: f"{v:.1f}", None),
    ("events", "events", lambda v: f"{v:,}", None),
)


def _best(rows: Sequence[dict], key: str, better: str) -> float | None:
    values = [r[key] for r in rows if r["scheduler"] not in NOT_RANKED and r[key] == r[key]]
    if not values:
        return None
    return max(values) if better == "max" else min(values)


def print_results(rows: Sequence[dict], console: Console | None = None) -> None:
    """The per-scheduler table of ``simulate`` and ``testbed``: what the run assumed in the
    title and caption, the best value per column marked ``*``, and who won below."""
    if not rows:
        return
    first = rows[0]
    title = (f"{first['scenario']} | {first['model']} {first['parallelism']} | "
             f"{first['workload']} | {first['rate_per_gpu']:g} req/s per prefill GPU | "
             f"{first['requests_evaluated']} requests | seed {first['seed']}")
    ranked = [r["scheduler"] for r in rows if r["scheduler"] not in NOT_RANKED]
    notes = [f"SLO: {first['slo_rule']}; 'SLO met' = share of the "
             f"{first['requests_evaluated']} evaluated requests within it",
             "times in ms; earliness = (P2D deadline - P2D end) / SLO"]
    if len(ranked) > 1:
        notes.append("* best in its column, where they differ" + (
            " (the oracle knows the future: not ranked)" if "oracle" in
            {r["scheduler"] for r in rows} else ""))
    table = Table()
    table.add_column("scheduler", justify="left")
    for name, *_ in _COLUMNS:
        table.add_column(name, justify="right")
    best = {key: _best(rows, key, better) for _, key, _, better in _COLUMNS if better}
    spread = {key for key in best  # columns where the ranked schedulers differ at all
              if len({r[key] for r in rows if r["scheduler"] not in NOT_RANKED}) > 1}
    for r in rows:
        cells = []
        for _, key, fmt, _better in _COLUMNS:
            mark = (key in spread and r["scheduler"] not in NOT_RANKED
                    and r[key] == best[key])
            cells.append(fmt(r[key]) + ("*" if mark else " "))
        table.add_row(r["scheduler"], *cells)
    out = console or stdout_console()
    out.print(title, style="italic", soft_wrap=True)  # lines of their own: a table's title
    out.print(table)  # and caption would wrap at its width
    for line in [*notes, verdict(rows)]:
        if line:
            out.print(line, soft_wrap=True)


def verdict(rows: Sequence[dict]) -> str:
    """One line: the scheduler that met the most SLOs (ties broken by mean TTFT), and how MFS
    fared against it."""
    ranked = sorted((r for r in rows if r["scheduler"] not in NOT_RANKED),
                    key=lambda r: (-r["slo_attainment"], r["ttft_mean_s"]))
    if len(ranked) < 2:
        return ""
    top = ranked[0]
    tied = [r for r in ranked if r["slo_attainment"] == top["slo_attainment"]]
    if len(tied) == len(ranked):
        line = (f"all {len(ranked)} schedulers meet {pct(top['slo_attainment'])} of the SLOs; "
                f"{top['scheduler']} has the lowest mean TTFT ({1e3 * top['ttft_mean_s']:.1f} ms)")
    elif len(tied) > 1:
        line = (f"{', '.join(r['scheduler'] for r in tied)} tie on the most SLOs met "
                f"({pct(top['slo_attainment'])}); {top['scheduler']} has the lowest mean TTFT "
                f"({1e3 * top['ttft_mean_s']:.1f} ms)")
    else:
        second = ranked[1]
        line = (f"{top['scheduler']} meets the most SLOs: {pct(top['slo_attainment'])}, "
                f"{_points(top, second)} ahead of {second['scheduler']}")
    mfs = next((r for r in ranked if r["scheduler"] == "mfs"), None)
    if mfs is not None and mfs not in tied and not (len(tied) == 1 and mfs is ranked[1]):
        line += f"; mfs: {pct(mfs['slo_attainment'])} ({_points(top, mfs)} behind)"
    oracle = next((r for r in rows if r["scheduler"] == "oracle"), None)
    if oracle is not None:
        line += f"; oracle (clairvoyant): {pct(oracle['slo_attainment'])}"
    return line + f" (one run, seed {rows[0]['seed']})"


def _points(a: dict, b: dict) -> str:
    return f"{100 * (a['slo_attainment'] - b['slo_attainment']):.1f} points"


def print_sweep(rows: Sequence[dict], scenario: str, console: Console | None = None) -> None:
    """``sweep``'s attainment tables, one per workload and bandwidth scale: percent, the best
    scheduler per rate marked ``*``, seeds averaged (and said so)."""
    from .experiments.sweep import attainment_table

    out = console or stdout_console()
    for (wl, bw), per_rate in attainment_table(rows).items():
        cols = list(dict.fromkeys(s for per in per_rate.values() for s in per))
        seeds = sorted({r.get("seed", 0) for r in rows
                        if (r["workload"], r["bandwidth_scale"]) == (wl, bw)})
        what = (f"seed {seeds[0]}" if len(seeds) == 1
                else f"mean of seeds {', '.join(map(str, seeds))}")
        slo = next((r.get("slo_rule") for r in rows if r["workload"] == wl), None)
        # title and notes as lines of their own: a narrow table would wrap them
        out.print(f"SLO attainment | {scenario} | {wl} | bandwidth x{bw:g} | {what}",
                  style="italic", soft_wrap=True)
        table = Table()
        table.add_column("req/s/GPU", justify="right")
        for c in cols:
            table.add_column(c, justify="right")
        for rate, per in sorted(per_rate.items()):
            ranked = [v for c, v in per.items() if c not in NOT_RANKED]
            best = max(ranked) if ranked else None
            table.add_row(f"{rate:g}", *(
                pct(per[c]) + ("*" if c not in NOT_RANKED and per[c] == best
                               and len(set(ranked)) > 1 else " ") if c in per else "-"
                for c in cols))
        out.print(table)
        if slo:
            out.print(f"SLO: {slo}", soft_wrap=True)
        out.print("* best per rate, where they differ" + (
            f" ({', '.join(c for c in cols if c in NOT_RANKED)} not ranked)"
            if set(cols) & set(NOT_RANKED) else ""), soft_wrap=True)
