"""The ``mfsched`` command line: parse -> config -> runner -> print/write. Nothing else.

Options are declared once in :mod:`mfsched.cli_options`, tables are printed by
:mod:`mfsched.cli_output` and result files written by :mod:`mfsched.cli_files`; the data-plane
commands (``testbed``, ``compare``, ``net``) live in :mod:`mfsched.dataplane.commands` and are
added by :func:`main`. None of those modules imports this one.

:func:`main` is the one place that turns outcomes into exit codes, each with at most one line
on stderr: 0 success; 2 bad input (:class:`~mfsched.errors.UserError` and usage errors,
raised before any work starts); 3 a run that went past its bounds
(:class:`~mfsched.errors.SimulationStuck`, a bug to report); 130 Ctrl-C and 143 SIGTERM (the
run stops at once and writes nothing half-done). Anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from .cli_files import (
    check_out_dir,
    check_out_file,
    config_doc,
    write_file,
    write_out_dir,
    write_run,
)
from .cli_options import (
    AsJson,
    Command,
    EpBackend,
    Executor,
    Group,
    Jobs,
    KvConnections,
    RayAddress,
    RingChannels,
    RunDir,
    ScenarioOptions,
    Scheduler,
    Seeds,
    floats,
    ints,
    jobs_or_default,
    with_groups,
)
from .cli_output import (
    compile_notice,
    err_console,
    memo_notice,
    pct,
    print_results,
    print_sweep,
    progress,
    size_notice,
    stdout_console,
    ticker,
)
from .errors import SimulationStuck, UserError

app = typer.Typer(cls=Group, add_completion=False, no_args_is_help=True,
                  help="MFS: multi-stage flow scheduling for disaggregated LLM serving.")

_PROGRESS_UNIT = "requests (warm-up + evaluated)"


def _version(value: bool) -> None:
    if value:
        from .provenance import version_line

        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_version,
        help="Print the version (and git commit, when known) and exit.")] = False) -> None:
    """MFS: multi-stage flow scheduling for disaggregated LLM serving."""


def _show_progress(as_json: bool) -> bool:
    return not as_json or err_console.is_terminal


def _dropped_notice(prepared) -> None:
    """Say how many trace requests ``--over-context drop`` left out."""
    lines = prepared.dropped_lines
    if lines:
        model = prepared.cluster.deployment.model
        err_console.print(f"dropped {len(lines)} trace requests longer than {model.name}'s "
                          f"{model.max_context_tokens}-token context window (first at line "
                          f"{lines[0]}; --over-context drop)")


@app.command(cls=Command)
@with_groups()
def simulate(
    sc: ScenarioOptions,
    scheduler: Scheduler = "all",
    out: RunDir = None,
    jobs: Jobs = None,
    as_json: AsJson = False,
) -> None:
    """Simulate a disaggregated prefill cluster and report TTFT SLO attainment per scheduler.

    With no options: the paper's testbed, Mixtral-8x7B TP1/EP8 on 16 prefill GPUs, the agent workload at 1 request/s per prefill GPU, every registered scheduler. The table states the SLO rule and marks the best scheduler per column.
    """  # noqa: E501 (one paragraph per line: the help formatter keeps line breaks)
    from .experiments.runner import check_policy_options, prepare, run, scheduler_names

    check_out_dir(out)
    jobs = jobs_or_default(jobs)
    cfg = sc.config()
    names = scheduler_names(scheduler)
    check_policy_options(cfg, names)
    size_notice(cfg.warmup + cfg.requests + cfg.tail_requests, len(names))
    prepared = prepare(cfg)
    _dropped_notice(prepared)
    compile_notice()
    memo_notice(prepared)
    with progress(_show_progress(as_json), _PROGRESS_UNIT) as bar:
        # the records travel back from the workers only where they are written
        results = run(prepared, names, record_flows=out is not None,
                      keep_records=out is not None, progress=ticker(bar), jobs=jobs)
    rows = [r.to_json() for r in results]
    if out is not None:
        doc = config_doc(prepared, names)
        write_out_dir(out, lambda d: write_run(d, doc, results, rows))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        print_results(rows)


_ROW_KEYS = ("workload", "bandwidth_scale", "rate_per_gpu", "scheduler", "slo_attainment")


def _sweep_rows(path: Path) -> list[dict]:
    """The rows of an earlier ``sweep --out`` file, checked."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise UserError(f"cannot read sweep rows ({type(e).__name__}: {e})",
                        where=str(path)) from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UserError("expected a JSON array of row objects, as 'mfsched sweep --out' "
                        "writes", where=str(path))
    for i, r in enumerate(rows):
        missing = [k for k in _ROW_KEYS if k not in r]
        if missing:
            raise UserError(f"row {i} lacks {', '.join(missing)}: not the rows of "
                            f"'mfsched sweep --out' (a 'simulate' JSON has no bandwidth_scale)",
                            where=str(path))
    return rows


@app.command(cls=Command)
@with_groups(exclude=("workload", "rate", "bandwidth_scale", "seed"))
def sweep(
    sc: ScenarioOptions,
    workload: Annotated[str, typer.Option(help="Comma-separated synthetic workloads.")]
        = "conv,agent",
    rate: Annotated[str, typer.Option(
        help="Comma-separated request rates, requests/s per prefill GPU.")]
        = "0.25,0.5,0.75,1.0,1.25",
    bandwidth_scale: Annotated[str, typer.Option(
        help="Comma-separated factors applied to every link capacity.")] = "1.0",
    seeds: Seeds = "0",
    scheduler: Scheduler = "all",
    reference: Annotated[bool, typer.Option(
        "--reference/--no-reference",
        help="Add the contention-free reference (fair sharing, every flow alone on its "
             "path).")] = True,
    jobs: Jobs = None,
    executor: Executor = "process",
    ray_address: RayAddress = None,
    out: Annotated[Path | None, typer.Option(help="Write all rows as JSON to this file.")]
        = None,
    as_json: AsJson = False,
    markdown: Annotated[bool, typer.Option(
        "--markdown", help="Print the tables as Markdown.")] = False,
    rows_from: Annotated[Path | None, typer.Option(
        help="Do not run: tabulate the rows of an earlier --out file.")] = None,
) -> None:
    """Sweep rates (and workloads, bandwidth scales, seeds) under every scheduler; print the SLO attainment table.

    Every other option is the scenario option of 'mfsched simulate'. Tables show attainment in percent, averaged over the seeds.
    """  # noqa: E501 (the help formatter keeps line breaks)
    from .experiments.executors import check
    from .experiments.runner import check_policy_options, prepare, scheduler_names
    from .experiments.sweep import SweepSpec, markdown_tables, run_sweep

    if rows_from is not None:
        rows = _sweep_rows(rows_from)
        typer.echo(markdown_tables(rows) if markdown else json.dumps(rows, indent=2))
        return
    check_out_file(out)
    jobs = jobs_or_default(jobs)
    names = tuple(scheduler_names(scheduler))
    check(executor, jobs, ray_address)
    base = sc.config()
    check_policy_options(base, names)
    workloads = (tuple(w.strip() for w in workload.split(",") if w.strip())
                 if sc.trace is None else (str(sc.trace),))
    if not workloads:
        raise UserError("--workload: no values given")
    spec = SweepSpec(base, workloads, floats(rate, "--rate"),
                     floats(bandwidth_scale, "--bandwidth-scale"), ints(seeds, "--seeds"),
                     names, reference)
    configs = spec.configs()  # every value checked (SimConfig)
    size_notice(len(configs) * (base.warmup + base.requests + base.tail_requests), len(names))
    # the inputs each configuration reads, at the extremes the checks depend on: the lowest
    # rate (arrival span) and the highest (session history)
    for wl in workloads:
        for r in {min(spec.rates), max(spec.rates)}:
            prepare(replace(next(c for c in configs if c.workload == wl), rate_per_gpu=r))
    compile_notice()
    with progress(_show_progress(as_json), "configurations") as bar:
        task = bar.add_task("sweep", total=len(configs))
        rows = run_sweep(spec, jobs, lambda done, total: bar.update(task, completed=done),
                         executor=executor, address=ray_address)
    if out is not None:
        write_file(out, json.dumps(rows, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif markdown:
        typer.echo(markdown_tables(rows))
    else:
        print_sweep(rows, base.scenario)


@app.command(cls=Command)
def calibrate(
    seeds: Seeds = "0,1,2",
    ep_backend: EpBackend = None,
    ring_channels: RingChannels = None,
    kv_connections: KvConnections = None,
    as_json: AsJson = False,
) -> None:
    """What contention costs in the paper's Fig. 5 set-up (testbed, Mixtral-8x7B, agent at 1 req/s per GPU): TTFT and all-to-all CCT with and without contention, next to the paper's.

    'With' is fair sharing, 'without' the contention-free reference on the same requests. bench/calibrate.py also switches each contention mechanism off and writes docs/results.md.
    """  # noqa: E501 (one paragraph per line: the help formatter keeps line breaks)
    from rich.table import Table

    from .experiments.calibrate import FIG5, PAPER_FIG5, TARGET_RANGES, contention_cost
    from .experiments.runner import prepare

    seed_list = ints(seeds, "--seeds")
    cfg = replace(FIG5, ep_backend=ep_backend, ring_channels=ring_channels,
                  kv_connections=kv_connections)
    prepare(replace(cfg, seed=seed_list[0]))  # bad overrides fail before any run
    compile_notice()
    with progress(_show_progress(as_json), "runs") as bar:
        task = bar.add_task("runs", total=2 * len(seed_list))
        cost = contention_cost(cfg, seed_list, "this model",
                               on_run=lambda: bar.advance(task))
    if as_json:
        typer.echo(json.dumps(cost.to_json(), indent=2))
        return
    lo_t, hi_t = TARGET_RANGES["ttft_ratio"]
    lo_c, hi_c = TARGET_RANGES["cct_ratio"]
    what = (f"seed {seed_list[0]}" if len(seed_list) == 1
            else f"means of seeds {', '.join(map(str, seed_list))}")
    table = Table(title=f"Fig. 5 set-up, fair sharing against the contention-free reference "
                        f"({what})",
                  caption=f"times in ms; accepted as a reproduction: TTFT {lo_t:g}-{hi_t:g}x, "
                          f"CCT {lo_c:g}-{hi_c:g}x")
    for col in ("", "TTFT with / without", "TTFT ratio", "Stage-2 CCT with / without",
                "CCT ratio", "SLO met with / without"):
        table.add_column(col, justify="left" if not col else "right")
    table.add_row("paper (Fig. 5)", "", f"~{PAPER_FIG5['ttft_ratio']:.2f}x", "",
                  f"{PAPER_FIG5['cct_ratio']:.2f}x", "")
    table.add_row("this model", f"{1e3 * cost.ttft_s:.1f} / {1e3 * cost.ttft_free_s:.1f}",
                  f"{cost.ttft_ratio:.2f}x",
                  f"{1e3 * cost.cct_s:.2f} / {1e3 * cost.cct_free_s:.2f}",
                  f"{cost.cct_ratio:.2f}x",
                  f"{pct(cost.attainment)} / {pct(cost.attainment_free)}")
    stdout_console().print(table)


@app.command("list", cls=Command)
def list_(what: Annotated[str, typer.Argument(
        help="schedulers, models, gpus, topologies, workloads or trace-formats")]
        = "schedulers") -> None:
    """List what is registered at an extension point."""
    from rich.table import Table

    from .policy import SCHEDULERS
    from .sim.topology import TOPOLOGIES
    from .workload.hardware import GPUS
    from .workload.models import MODELS
    from .workload.synthetic import WORKLOADS
    from .workload.traces import TRACE_FORMATS

    registries = {"schedulers": SCHEDULERS, "models": MODELS, "gpus": GPUS,
                  "topologies": TOPOLOGIES, "workloads": WORKLOADS,
                  "trace-formats": TRACE_FORMATS}
    reg = registries.get(what.lower())
    if reg is None:
        raise UserError(f"unknown list {what!r}; choose from {', '.join(registries)}")
    table = Table(show_header=False, box=None)
    for entry in reg.entries():
        extra = ([f"{entry.obj.max_context_tokens:,}-token context"] if reg is MODELS else [])
        table.add_row(entry.name, entry.help, *extra)
    stdout_console().print(table)


# --- the entry point --------------------------------------------------------------------------

_terminated = False


def _on_sigterm(signum, frame) -> None:
    """SIGTERM stops a run as Ctrl-C does (every ``finally`` runs), and is reported as such."""
    global _terminated
    _terminated = True
    raise KeyboardInterrupt


def _fail(message: str, code: int = 2) -> None:
    print(f"mfsched: error: {message}", file=sys.stderr)
    sys.exit(code)


def _stopped(code: int | None = None) -> None:
    """One line and exit 130 (Ctrl-C) or 143 (SIGTERM)."""
    if code == 143 or _terminated:
        print("mfsched: terminated (SIGTERM); nothing half-written was left", file=sys.stderr)
        sys.exit(143)
    print("mfsched: interrupted (Ctrl-C); nothing half-written was left", file=sys.stderr)
    sys.exit(130)


def main() -> None:
    from .cli_experiments import register as register_experiments
    from .dataplane.commands import register

    register(app)
    register_experiments(app)
    signal.signal(signal.SIGTERM, _on_sigterm)
    args = sys.argv[1:] or ["--help"]  # bare 'mfsched': the help, once
    try:
        code = app(args=args, prog_name="mfsched", standalone_mode=False)
    except KeyboardInterrupt:
        _stopped()
    except UserError as e:
        _fail(str(e))
    except SimulationStuck as e:
        _fail(f"the simulation is stuck, a bug to report: {e}", 3)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        _stopped()
    except SystemExit as e:  # the emulated testbed's own SIGTERM handler ends this way
        if e.code in (130, 143):
            _stopped(e.code)
        raise
    except typer.TyperException as e:  # usage errors (unknown option, bad type): one line
        if type(e).__name__ == "NoArgsIsHelpError":  # a group with no command: its help was
            sys.exit(0)  # printed when the error was made
        fmt = getattr(e, "format_message", None)
        _fail(" ".join((fmt() if fmt is not None else str(e)).split()),
              getattr(e, "exit_code", 2))
    else:
        # typer returns (not raises) the code of an Exit, and turns Ctrl-C into Exit(130)
        if isinstance(code, int) and code:
            if code == 130:
                _stopped()
            sys.exit(code)


if __name__ == "__main__":
    main()
