"""Command-line commands of the data plane: ``testbed``, ``compare`` and ``net clean``.

``register(app)`` adds them to the ``mfsched`` Typer app; ``mfsched.cli.main`` calls it before
dispatching, so ``mfsched testbed``, ``mfsched compare`` and ``mfsched net clean`` share the
simulator's error handling and output. Their options are the simulator's scenario options
(:class:`mfsched.cli_options.ScenarioOptions`, ``--policy-option`` included) plus the emulation
knobs (:class:`mfsched.cli_options.EmulationOptions`); the printed table, ``--json`` and
``--out`` are the simulator's (:mod:`mfsched.cli_output`, :mod:`mfsched.cli_files`, same
keys). This module imports
nothing from :mod:`mfsched.cli`.

Heavy imports happen inside the commands, so registering costs nothing at start-up.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated

import typer

from ..cli_files import check_out_dir, config_doc, write_out_dir, write_run
from ..cli_options import (
    AsJson,
    Command,
    EmulationOptions,
    Group,
    RunDir,
    ScenarioOptions,
    Scheduler,
    with_groups,
)
from ..cli_output import err_console, pct, print_results, progress, stdout_console, ticker
from ..errors import UserError

__all__ = ["compare", "net_app", "net_clean", "register", "testbed"]

net_app = typer.Typer(cls=Group, add_completion=False, no_args_is_help=True,
                      help="The emulated network (namespaces, veth, HTB queues).")

DEFAULT_SCHEDULERS = "fs,mfs"
# scenario options the emulation cannot follow: its NICs are the testbed's (scaled by --scale)
_NOT_EMULATED = ("nic_gbps",)
_PROGRESS_UNIT = "requests (warm-up + evaluated)"



def _setup(sc: ScenarioOptions, emu_options: EmulationOptions, scheduler: str,
           out: Path | None):
    """The scenario, the emulation, the scheduler names and the prepared run; bad options
    raise UserError before anything is built."""
    from ..experiments.runner import check_policy_options, prepare, scheduler_names

    check_out_dir(out)
    if sc.scenario.lower() != "testbed":
        raise UserError("the emulated testbed runs the 'testbed' scenario only",
                        where="--scenario")
    cfg = sc.config()
    emu = emu_options.config()
    names = scheduler_names(scheduler)
    check_policy_options(cfg, names)
    if os.geteuid() != 0:  # before any work (compare would simulate first)
        raise UserError("the emulated testbed needs root (network namespaces and tc)")
    return cfg, emu, names, prepare(cfg)


@with_groups(exclude=_NOT_EMULATED, requests=32, warmup=8)
def testbed(sc: ScenarioOptions, emu: EmulationOptions,
            scheduler: Scheduler = DEFAULT_SCHEDULERS, out: RunDir = None,
            as_json: AsJson = False) -> None:
    """Run the scenario on the emulated testbed: namespaces, HTB priority queues, daemons, real TCP.

    Needs root. Each scheduler's run takes about 20 s of wall time per simulated second: the defaults (fs and mfs, 32 requests after 8 warm-up) about 2.5 minutes on two idle cores. Prints the simulator's table; --json prints the simulator's JSON keys.
    """  # noqa: E501 (one paragraph per line: the help formatter keeps line breaks)
    _, emulation, names, prepared = _setup(sc, emu, scheduler, out)
    from .testbed import run_testbed

    with progress(not as_json or err_console.is_terminal, _PROGRESS_UNIT) as bar:
        runs = run_testbed(prepared, names, emulation, progress=ticker(bar))
    _warn_if_late(runs, err_console)
    results = [r.result for r in runs]
    rows = [r.to_json() for r in results]
    if out is not None:
        doc = config_doc(prepared, names)

        def fill(d: Path) -> None:
            write_run(d, doc, results, rows)
            _write_dataplane(d, runs, emulation)

        write_out_dir(out, fill)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        print_results(rows)


@with_groups(exclude=_NOT_EMULATED, requests=32, warmup=8)
def compare(sc: ScenarioOptions, emu: EmulationOptions,
            scheduler: Scheduler = DEFAULT_SCHEDULERS, out: RunDir = None,
            as_json: AsJson = False) -> None:
    """Run the identical scenario in the simulator and on the emulated testbed; print both.

    Per scheduler: SLO attainment, mean TTFT and mean Stage-2 CCT of each, and the simulator's relative error (simulator - testbed) / testbed. Needs root.
    """  # noqa: E501
    _, emulation, names, prepared = _setup(sc, emu, scheduler, out)
    from ..cli_output import compile_notice
    from ..experiments.runner import run
    from .testbed import run_testbed

    compile_notice()
    sim = run(prepared, names, record_flows=out is not None)  # also warms the SLO memo
    with progress(not as_json or err_console.is_terminal, _PROGRESS_UNIT) as bar:
        runs = run_testbed(prepared, names, emulation, progress=ticker(bar), warm=False)
    _warn_if_late(runs, err_console)
    sim_rows = [r.to_json() for r in sim]
    tb_rows = [r.result.to_json() for r in runs]
    table = comparison(sim_rows, tb_rows)
    if out is not None:
        doc = config_doc(prepared, names)

        def fill(d: Path) -> None:
            write_run(d / "simulator", doc, sim, sim_rows)
            write_run(d / "testbed", doc, [r.result for r in runs], tb_rows)
            _write_dataplane(d / "testbed", runs, emulation)
            (d / "comparison.json").write_text(json.dumps(table, indent=2) + "\n")

        write_out_dir(out, fill)
    if as_json:
        typer.echo(json.dumps({"simulator": sim_rows, "testbed": tb_rows,
                               "comparison": table}, indent=2))
    else:
        _print_comparison(table, sim_rows[0] if sim_rows else None)


def comparison(sim_rows: list[dict], tb_rows: list[dict]) -> list[dict]:
    """Per scheduler: both values and the simulator's relative error for the headline metrics."""
    out = []
    for s, t in zip(sim_rows, tb_rows, strict=True):
        row = {"scheduler": s["scheduler"]}
        for key in ("slo_attainment", "ttft_mean_s", "stage2_cct_mean_s"):
            row[f"sim_{key}"] = s[key]
            row[f"testbed_{key}"] = t[key]
            row[f"rel_err_{key}"] = relative_error(s[key], t[key])
        out.append(row)
    return out


def relative_error(sim: float, real: float) -> float:
    """(simulator - testbed) / testbed; NaN if the testbed value is 0 or not a number."""
    if not (math.isfinite(sim) and math.isfinite(real)) or real == 0:
        return float("nan")
    return (sim - real) / real


def _print_comparison(table: list[dict], first: dict | None) -> None:
    from rich.table import Table

    title = "simulator vs emulated testbed"
    if first is not None:
        title += (f" | {first['model']} {first['parallelism']} | {first['workload']} | "
                  f"{first['rate_per_gpu']:g} req/s per prefill GPU | "
                  f"{first['requests_evaluated']} requests")
    caption = "times in ms; err = (simulator - testbed) / testbed"
    if first is not None:
        caption = f"SLO: {first['slo_rule']}\n" + caption
    t = Table(title=title, caption=caption)
    for col in ("scheduler", "SLO sim", "SLO testbed", "err", "TTFT sim", "TTFT testbed", "err",
                "CCT sim", "CCT testbed", "err"):
        t.add_column(col, justify="left" if col == "scheduler" else "right")
    for r in table:
        t.add_row(r["scheduler"],
                  pct(r["sim_slo_attainment"]), pct(r["testbed_slo_attainment"]),
                  _pct(r["rel_err_slo_attainment"]),
                  f"{1e3 * r['sim_ttft_mean_s']:.1f}", f"{1e3 * r['testbed_ttft_mean_s']:.1f}",
                  _pct(r["rel_err_ttft_mean_s"]),
                  f"{1e3 * r['sim_stage2_cct_mean_s']:.2f}",
                  f"{1e3 * r['testbed_stage2_cct_mean_s']:.2f}",
                  _pct(r["rel_err_stage2_cct_mean_s"]))
    stdout_console().print(t)


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:+.1%}"


LATE_MEAN_S = 50e-6  # model time; 1 ms of wall time at the default scale


def _warn_if_late(runs, console) -> None:
    """Say so when timers fired late: the machine was too busy for a faithful emulation."""
    for r in runs:
        late = r.lateness
        if late["mean_s"] > LATE_MEAN_S:
            console.print(f"warning: {r.result.scheduler}: timers fired "
                          f"{1e6 * late['mean_s']:.0f} us (model time) late on average, "
                          f"{late['share_over_100us']:.0%} over 100 us: the machine was busy, "
                          "so the emulation is less faithful (try --nice -10 or a larger "
                          "--scale)")


def _write_dataplane(out: Path, runs, emu) -> None:
    """Data-plane counters per scheduler and daemon, next to the simulator-style outputs."""
    from dataclasses import asdict

    doc = {"emulation": asdict(emu),
           "runs": [{"scheduler": r.result.scheduler, "engine_reconnects": r.engine_reconnects,
                     "timer_lateness": r.lateness, "load_avg_1min": r.load_avg,
                     "errors": r.errors, "daemons": r.daemons}
                    for r in runs]}
    (out / "dataplane.json").write_text(json.dumps(doc, indent=2) + "\n")


@net_app.command("clean", cls=Command)
def net_clean(
    prefix: Annotated[str, typer.Option(
        help="Namespace name prefix (must start with 'mfs-').")] = "mfs-",
    force: Annotated[bool, typer.Option(
        "--force", help="Also remove namespaces of runs that are still alive, and namespaces "
                        "with no recorded owner.")] = False,
) -> None:
    """Delete the emulated networks that killed runs left behind: the namespaces whose owning run is gone, after stopping the processes still inside them.

    A live run's namespaces, and namespaces with no recorded owner, are kept and listed; --force removes them too.
    """  # noqa: E501
    from .netns import clean

    if os.geteuid() != 0:
        raise UserError("needs root")
    try:
        result = clean(prefix, force=force)
    except ValueError as e:
        raise UserError(str(e)) from None
    for ns, pids in result.deleted.items():
        typer.echo(f"deleted {ns}" + (f" (stopped pids {', '.join(map(str, pids))})"
                                      if pids else ""))
    for ns, why in result.kept.items():
        typer.echo(f"kept {ns}: {why} (--force removes it)")
    if not result.deleted and not result.kept:
        typer.echo("nothing to clean")


def register(app: typer.Typer) -> None:
    """Add ``testbed``, ``compare`` and ``net`` to the ``mfsched`` app (idempotent)."""
    names = {c.name for c in app.registered_commands}
    if "testbed" not in names:
        app.command("testbed", cls=Command)(testbed)
    if "compare" not in names:
        app.command("compare", cls=Command)(compare)
    if all(g.name != "net" for g in app.registered_groups):
        app.add_typer(net_app, name="net")
