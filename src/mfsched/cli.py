"""The ``mfsched`` command line: parse -> config -> runner -> print/write. Nothing else.

User mistakes raise :class:`~mfsched.errors.UserError` somewhere below; ``main`` turns them
into one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="MFS: multi-stage flow scheduling for disaggregated LLM serving.")
err_console = Console(stderr=True)


@app.command()
def simulate(
    scenario: Annotated[str, typer.Option(
        help="Cluster: 'testbed' (8 servers x 4 RTX 3090, 2 x 100 Gb/s NICs per server) or "
             "'fattree' (256 servers x 8 A100, one 200 Gb/s NIC per GPU).")] = "testbed",
    model: Annotated[str | None, typer.Option(
        help="Model name (see 'mfsched list models'). Default: the scenario's "
             "(testbed: mixtral-8x7b, fattree: mixtral-8x22b).")] = None,
    tp: Annotated[int | None, typer.Option(help="Tensor-parallel degree per unit. Default: "
                                                "the paper's setting for the model.")] = None,
    ep: Annotated[int | None, typer.Option(help="Expert-parallel degree (units per MoE "
                                                "instance). Default: the paper's.")] = None,
    sp: Annotated[int | None, typer.Option(help="Sequence-parallel degree (dense models). "
                                                "Default: the paper's.")] = None,
    servers: Annotated[int | None, typer.Option(
        help="Number of servers in the topology. Default: testbed 8, fattree 256.")] = None,
    nic_gbps: Annotated[float | None, typer.Option(
        help="Line rate of one NIC port in Gb/s. Default: testbed 100, fattree 200.")] = None,
    prefill_instances: Annotated[int | None, typer.Option(
        help="Prefill instances (decode instances match 1:1). Default: half the GPUs.")] = None,
    workload: Annotated[str, typer.Option(
        help="Synthetic workload when no --trace: 'conv' (~2k tokens, ~50% reuse) or "
             "'agent' (~1k tokens, ~65% reuse, hot prefixes).")] = "agent",
    trace: Annotated[Path | None, typer.Option(help="Request trace file to replay instead "
                                                    "of a synthetic workload.")] = None,
    trace_format: Annotated[str, typer.Option(
        help="Trace format: mooncake (JSONL, ms), qwen (JSONL, s) or azure (CSV).")]
        = "mooncake",
    keep_timestamps: Annotated[bool, typer.Option(
        help="Replay the trace's own arrival times instead of Poisson arrivals at --rate.")]
        = False,
    scheduler: Annotated[str, typer.Option(
        help="Scheduler name, comma-separated names, or 'all' (see 'mfsched list "
             "schedulers').")] = "all",
    rate: Annotated[float, typer.Option(
        help="Request rate in requests/s per prefill GPU (Poisson arrivals).")] = 1.0,
    requests: Annotated[int, typer.Option(help="Number of evaluated requests.")] = 1024,
    warmup: Annotated[int, typer.Option(
        help="Warm-up requests simulated before the evaluated ones, not counted.")] = 512,
    slo_scale: Annotated[float, typer.Option(
        help="TTFT SLO = this x the request's TTFT alone on the idle cluster.")] = 3.0,
    slo: Annotated[float | None, typer.Option(
        help="A global constant TTFT SLO in seconds instead of --slo-scale.")] = None,
    levels: Annotated[int, typer.Option(
        help="Strict priority levels K (a scavenger class comes below them).")] = 8,
    policy_option: Annotated[list[str] | None, typer.Option(
        help="Set a scheduler's option, SCHEDULER.KEY=VALUE (repeatable), e.g. "
             "mfs.red_tiebreak=false. Options: the fields of the scheduler's config "
             "(docs/design.md).")] = None,
    bandwidth_scale: Annotated[float, typer.Option(
        help="Multiply every link capacity by this factor (network-bound studies).")] = 1.0,
    max_batched_tokens: Annotated[int, typer.Option(
        help="Continuous batching: new tokens per prefill unit per batch.")] = 8192,
    reuse_lookahead: Annotated[int, typer.Option(
        help="Stage-1 lookahead in layers; 0 fetches every layer at batch start.")] = 0,
    per_flow: Annotated[bool, typer.Option(
        help="Reference mode: every member of a collective is its own flow (slower).")]
        = False,
    ep_backend: Annotated[str | None, typer.Option(
        help="How EP dispatch/combine move bytes: 'allgather' (vLLM's default "
             "allgather_reducescatter on NCCL rings) or 'alltoall' (routed, DeepEP style). "
             "Default: what the stack does on the scenario's GPUs (testbed: allgather, "
             "fattree: alltoall).")] = None,
    ring_channels: Annotated[int | None, typer.Option(
        help="NCCL channels (connections per ring edge). Default: NCCL's choice for the "
             "hardware (testbed 2, fattree 16).")] = None,
    kv_connections: Annotated[int | None, typer.Option(
        help="Connections a KV transfer is striped over. Default: 2 (Mooncake's queue pairs "
             "per endpoint).")] = None,
    collective_layout: Annotated[str | None, typer.Option(
        help="'ring' (NCCL's rings, the default) or 'mesh' (every rank straight to every "
             "other; to measure what the rings change).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for workload generation and arrivals.")] = 0,
    out: Annotated[Path | None, typer.Option(
        help="Write per-request, per-flow, per-collective and per-batch records (Parquet), "
             "the resolved config and the summary into this directory.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print only a JSON array (one object per scheduler) on stdout.")]
        = False,
) -> None:
    """Simulate a disaggregated prefill cluster and report TTFT SLO attainment per scheduler.

    With no options: the paper's testbed, Mixtral-8x7B TP1/EP8 on 16 prefill GPUs, the agent workload at 1 request/s per prefill GPU, every registered scheduler.
    """  # noqa: E501 (one paragraph per line: the help formatter keeps line breaks)
    from .experiments.runner import prepare, run, scheduler_names

    check_out_dir(out)
    cfg = sim_config(scenario=scenario, model=model, tp=tp, ep=ep, sp=sp, servers=servers,
                     nic_gbps=nic_gbps, prefill_instances=prefill_instances, workload=workload,
                     trace=trace, trace_format=trace_format, keep_timestamps=keep_timestamps,
                     rate=rate, requests=requests, warmup=warmup, slo_scale=slo_scale, slo=slo,
                     seed=seed, levels=levels, max_batched_tokens=max_batched_tokens,
                     reuse_lookahead=reuse_lookahead, per_flow=per_flow,
                     policy_options=tuple(policy_option or ()),
                     bandwidth_scale=bandwidth_scale, ep_backend=ep_backend,
                     ring_channels=ring_channels, kv_connections=kv_connections,
                     collective_layout=collective_layout)
    for name in scheduler_names(scheduler):  # reject bad --policy-option before running
        from .policy import make_policy

        make_policy(name, levels, cfg.options_for(name))
    names = scheduler_names(scheduler)
    prepared = prepare(cfg)
    with _progress(enabled=not as_json or err_console.is_terminal) as bar:
        results = run(prepared, names, record_flows=out is not None, progress=ticker(bar))
    rows = [r.to_json() for r in results]
    if out is not None:
        _write_out(out, cfg, results, rows)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print_table(rows)


def check_out_dir(out: Path | None) -> None:
    if out is not None and out.exists() and not out.is_dir():
        raise UserError("exists and is not a directory", where=str(out))


def sim_config(*, scenario: str, trace: Path | None, rate: float, slo: float | None,
               levels: int, max_batched_tokens: int, reuse_lookahead: int, per_flow: bool,
               collective_layout: str | None = None, **same_name):
    """The scenario from command-line options (``simulate``, ``testbed``, ``compare``); options
    named like their :class:`SimConfig` field pass through ``same_name``."""
    from .experiments.config import SimConfig
    from .sim.serving import ServingConfig

    if max_batched_tokens < 1:
        raise UserError(f"--max-batched-tokens must be at least 1, got {max_batched_tokens}")
    if reuse_lookahead < 0:
        raise UserError(f"--reuse-lookahead must be >= 0, got {reuse_lookahead}")
    if collective_layout not in (None, "ring", "mesh"):
        raise UserError(f"--collective-layout must be 'ring' or 'mesh', got "
                        f"{collective_layout!r}")
    serving = ServingConfig(max_batched_tokens=max_batched_tokens,
                            reuse_lookahead_layers=reuse_lookahead, grouped_flows=not per_flow)
    return SimConfig(scenario=scenario.lower(), trace=None if trace is None else str(trace),
                     rate_per_gpu=rate, slo_s=slo, num_levels=levels, serving=serving,
                     ring_collectives=None if collective_layout is None
                     else collective_layout == "ring", **same_name)


def ticker(bar: Progress):
    """A progress callback ``(name, done, total)`` with one bar per scheduler."""
    tasks: dict[str, int] = {}

    def tick(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=total)
        bar.update(tasks[name], completed=done)

    return tick


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("requests"), TimeElapsedColumn(), console=err_console,
                    disable=not enabled, transient=False)


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    first = rows[0]
    title = (f"{first['scenario']} | {first['model']} {first['parallelism']} | "
             f"{first['workload']} | {first['rate_per_gpu']:g} req/s per prefill GPU | "
             f"{first['requests_evaluated']} requests")
    table = Table(title=title, caption="times in ms; earliness = (P2D deadline - P2D end) / SLO")
    for col in ("scheduler", "SLO met", "TTFT mean", "p50", "p99", "Stage-2 CCT",
                "earliness", "pruned", "sim s", "wall s", "events"):
        table.add_column(col, justify="left" if col == "scheduler" else "right")
    for r in rows:
        table.add_row(r["scheduler"], f"{r['slo_attainment']:.1%}",
                      f"{1e3 * r['ttft_mean_s']:.1f}", f"{1e3 * r['ttft_p50_s']:.1f}",
                      f"{1e3 * r['ttft_p99_s']:.1f}", f"{1e3 * r['stage2_cct_mean_s']:.2f}",
                      f"{r['p2d_earliness_mean']:+.2f}", f"{r['pruned_fraction']:.1%}",
                      f"{r['simulated_time_s']:.1f}", f"{r['wall_time_s']:.1f}",
                      f"{r['events']:,}")
    _stdout().print(table)


def _stdout() -> Console:
    """Standard output; wide enough for the tables when it is not a terminal."""
    out = Console()
    return out if out.is_terminal else Console(width=max(out.width, 132))


def _write_out(out: Path, cfg, results, rows: list[dict]) -> None:
    import pyarrow.parquet as pq

    from .records import (
        FLOW_COLUMNS,
        BatchRecord,
        CollectiveRecord,
        RequestRecord,
        to_table,
    )

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    for res in results:
        d = out / res.scheduler
        d.mkdir(exist_ok=True)
        rec = res.records
        pq.write_table(to_table(rec.requests, RequestRecord), d / "requests.parquet")
        pq.write_table(to_table(rec.collectives, CollectiveRecord), d / "collectives.parquet")
        pq.write_table(to_table(rec.batches, BatchRecord), d / "batches.parquet")
        if rec.flows is not None:
            pq.write_table(to_table(rec.flows, columns=FLOW_COLUMNS), d / "flows.parquet")


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"{option}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise UserError(f"{option}: no values given")
    return values


@app.command()
def sweep(
    workload: Annotated[str, typer.Option(help="Comma-separated synthetic workloads.")]
        = "conv,agent",
    rate: Annotated[str, typer.Option(
        help="Comma-separated request rates, requests/s per prefill GPU.")]
        = "0.25,0.5,0.75,1.0,1.25",
    bandwidth_scale: Annotated[str, typer.Option(
        help="Comma-separated factors applied to every link capacity.")] = "1.0",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0",
    scheduler: Annotated[str, typer.Option(help="Scheduler names or 'all'.")] = "all",
    scenario: Annotated[str, typer.Option(help="testbed or fattree.")] = "testbed",
    model: Annotated[str | None, typer.Option(help="Model (default: the scenario's).")] = None,
    trace: Annotated[Path | None, typer.Option(help="Replay this trace instead of "
                                                    "--workload.")] = None,
    trace_format: Annotated[str, typer.Option(help="Trace format.")] = "mooncake",
    requests: Annotated[int, typer.Option(help="Evaluated requests per run.")] = 1024,
    warmup: Annotated[int, typer.Option(help="Warm-up requests per run.")] = 512,
    reference: Annotated[bool, typer.Option(
        help="Add the contention-free reference (fair sharing, every flow alone on its "
             "path).")] = True,
    jobs: Annotated[int, typer.Option(help="Configurations run at once (worker processes, "
                                           "or the CPUs of a local Ray instance).")] = 1,
    executor: Annotated[str, typer.Option(
        help="Where configurations run: 'process' or 'ray' (the ray extra), as for "
             "'mfsched reproduce'.")] = "process",
    ray_address: Annotated[str | None, typer.Option(
        help="Join this Ray cluster instead of starting a local instance.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write all rows as JSON to this file.")]
        = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON rows.")] = False,
    markdown: Annotated[bool, typer.Option(help="Print the tables as Markdown.")] = False,
    rows_from: Annotated[Path | None, typer.Option(
        help="Do not run: tabulate the rows of an earlier --out file.")] = None,
) -> None:
    """Sweep rates (and workloads, bandwidth scales, seeds) under every scheduler; print the SLO attainment table."""  # noqa: E501 (the help formatter keeps line breaks)
    from .experiments.config import SimConfig
    from .experiments.runner import scheduler_names
    from .experiments.sweep import SweepSpec, attainment_table, markdown_tables, run_sweep

    if rows_from is not None:
        try:
            rows = json.loads(rows_from.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read sweep rows: {e}", where=str(rows_from)) from None
        typer.echo(markdown_tables(rows) if markdown else json.dumps(rows, indent=2))
        return
    names = tuple(scheduler_names(scheduler))
    from .experiments.executors import check

    check(executor, jobs, ray_address)
    rates = _floats(rate, "--rate")
    if min(rates) <= 0:
        raise UserError("--rate values must be positive")
    base = SimConfig(scenario=scenario.lower(), model=model, requests=requests, warmup=warmup,
                     trace=None if trace is None else str(trace), trace_format=trace_format)
    spec = SweepSpec(base, tuple(w.strip() for w in workload.split(",") if w.strip())
                     if trace is None else (str(trace),), rates,
                     _floats(bandwidth_scale, "--bandwidth-scale"),
                     tuple(int(s) for s in _floats(seeds, "--seeds")), names, reference)
    for cfg in spec.configs()[:1]:
        from .experiments.runner import prepare

        prepare(replace(cfg, requests=1, warmup=0, tail=0))  # fail fast on bad input
    with _progress(enabled=not as_json or err_console.is_terminal) as bar:
        task = bar.add_task("sweep", total=len(spec.configs()))
        rows = run_sweep(spec, jobs, lambda done, total: bar.update(task, completed=done),
                         executor=executor, address=ray_address)
    if out is not None:
        out.write_text(json.dumps(rows, indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if markdown:
        typer.echo(markdown_tables(rows))
        return
    console = _stdout()
    for (wl, bw), per_rate in attainment_table(rows).items():
        cols = list(dict.fromkeys(s for per in per_rate.values() for s in per))
        table = Table(title=f"SLO attainment | {scenario} | {wl} | bandwidth x{bw:g}")
        table.add_column("req/s/GPU", justify="right")
        for c in cols:
            table.add_column(c, justify="right")
        for r, per in sorted(per_rate.items()):
            table.add_row(f"{r:g}", *(f"{per.get(c, float('nan')):.3f}" for c in cols))
        console.print(table)


@app.command()
def calibrate(
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds (the table averages them).")]
        = "0,1,2",
    ep_backend: Annotated[str | None, typer.Option(
        help="Override the EP backend ('allgather' or 'alltoall').")] = None,
    ring_channels: Annotated[int | None, typer.Option(help="Override NCCL channels.")] = None,
    kv_connections: Annotated[int | None, typer.Option(
        help="Override the connections of a KV transfer.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """What contention costs in the paper's Fig. 5 set-up (testbed, Mixtral-8x7B, agent at 1 req/s per GPU): TTFT and all-to-all CCT with and without contention, next to the paper's.

    'With' is fair sharing, 'without' the contention-free reference on the same requests. bench/calibrate.py also switches each contention mechanism off and writes docs/results.md.
    """  # noqa: E501 (one paragraph per line: the help formatter keeps line breaks)
    from .experiments.calibrate import FIG5, PAPER_FIG5, TARGET_RANGES, contention_cost

    seed_list = tuple(int(x) for x in _floats(seeds, "--seeds"))
    cfg = replace(FIG5, ep_backend=ep_backend, ring_channels=ring_channels,
                  kv_connections=kv_connections)
    with _progress(enabled=not as_json or err_console.is_terminal) as bar:
        task = bar.add_task("runs", total=2 * len(seed_list))
        cost = contention_cost(cfg, seed_list, "this model",
                               on_run=lambda: bar.advance(task))
    if as_json:
        typer.echo(json.dumps(cost.to_json(), indent=2))
        return
    lo_t, hi_t = TARGET_RANGES["ttft_ratio"]
    lo_c, hi_c = TARGET_RANGES["cct_ratio"]
    table = Table(title=f"Fig. 5 set-up, fair sharing against the contention-free reference "
                        f"(means of seeds {seeds})",
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
                  f"{cost.cct_ratio:.2f}x", f"{cost.attainment:.1%} / {cost.attainment_free:.1%}")
    _stdout().print(table)


@app.command("list")
def list_(what: Annotated[str, typer.Argument(
        help="schedulers, models, gpus, topologies, workloads or trace-formats")]
        = "schedulers") -> None:
    """List what is registered at an extension point."""
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
        table.add_row(entry.name, entry.help)
    Console().print(table)


def _fail(message: str, code: int = 2) -> None:
    print(f"mfsched: error: {message}", file=sys.stderr)
    sys.exit(code)


def main() -> None:
    from .cli_experiments import register as register_experiments
    from .dataplane.commands import register

    register(app)
    register_experiments(app)
    try:
        code = app(standalone_mode=False)
        # typer returns (not raises) the code of an Exit here, and turns Ctrl-C into Exit(130)
        if isinstance(code, int) and code:
            if code == 130:
                _fail("interrupted", 130)
            sys.exit(code)
    except UserError as e:
        _fail(str(e))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        _fail("aborted", 130)
    except typer.TyperException as e:  # usage errors (unknown option, bad type): one line
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            sys.exit(0)
        fmt = getattr(e, "format_message", None)
        _fail(" ".join((fmt() if fmt is not None else str(e)).split()),
              getattr(e, "exit_code", 2))


if __name__ == "__main__":
    main()
