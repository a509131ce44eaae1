"""Command-line commands of the data plane: ``testbed``, ``compare`` and ``net clean``.

``register(app)`` adds them to the ``mfsched`` Typer app; ``mfsched.cli.main`` calls it before
dispatching, so ``mfsched testbed``, ``mfsched compare`` and ``mfsched net clean`` share the
simulator's error handling and output. Options mirror ``mfsched simulate`` where
they make sense, plus the emulation knobs (``--scale``, ``--mtu``, ...). The printed table,
``--json`` and ``--out`` are the simulator's (same helpers, same keys).

Heavy imports happen inside the commands, so registering costs nothing at start-up.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from ..errors import UserError

__all__ = ["compare", "net_app", "net_clean", "register", "testbed"]

net_app = typer.Typer(add_completion=False, no_args_is_help=True,
                      help="The emulated network (namespaces, veth, HTB queues).")

DEFAULT_SCHEDULERS = "fs,mfs"


_SIM_OPTIONS = ("scenario", "model", "tp", "ep", "sp", "servers", "prefill_instances",
                "workload", "trace", "trace_format", "keep_timestamps", "rate", "requests",
                "warmup", "slo_scale", "slo", "levels", "max_batched_tokens", "reuse_lookahead",
                "per_flow", "seed")
_EMU_OPTIONS = ("scale", "mtu", "chunk_kib", "window_kib", "no_coordinator", "log_dir", "nice",
                "key_file", "no_auth")


def _setup(options: dict):
    """From a command's options: the scenario, the emulation, the scheduler names and the
    prepared run (bad options raise UserError before anything is built)."""
    from ..cli import check_out_dir, sim_config
    from ..experiments.runner import prepare, scheduler_names

    check_out_dir(options["out"])
    if options["scenario"].lower() != "testbed":
        raise UserError("the emulated testbed runs the 'testbed' scenario only",
                        where="--scenario")
    cfg = sim_config(**{k: options[k] for k in _SIM_OPTIONS})
    emu = _emulation(*(options[k] for k in _EMU_OPTIONS))
    return cfg, emu, scheduler_names(options["scheduler"]), prepare(cfg)


def _emulation(scale, mtu, chunk_kib, window_kib, no_coordinator, log_dir, nice, key_file,
               no_auth):
    from .sender import SenderConfig
    from .testbed import EmulationConfig

    try:
        sender = SenderConfig(chunk_bytes=int(chunk_kib * 1024),
                              window_bytes=int(window_kib * 1024))
        if no_auth and key_file is not None:
            raise UserError("--key-file and --no-auth exclude each other")
        if key_file is not None:
            from .auth import RunKey

            RunKey.from_file(str(key_file))  # a bad key file fails now, not after the fabric
        return EmulationConfig(scale=scale, mtu=mtu, sender=sender,
                               coordinator=not no_coordinator,
                               log_dir=None if log_dir is None else str(log_dir), nice=nice,
                               authenticate=not no_auth,
                               key_file=None if key_file is None else str(key_file))
    except ValueError as e:
        raise UserError(str(e)) from None


# Options shared by testbed and compare (a function signature cannot be shared in Typer).
Scenario = Annotated[str, typer.Option(help="Cluster: only 'testbed' (8 servers x 4 GPUs, 2 "
                                            "NICs per server) can be emulated.")]
Model = Annotated[str | None, typer.Option(help="Model name. Default: mixtral-8x7b.")]
Tp = Annotated[int | None, typer.Option(help="Tensor-parallel degree per unit.")]
Ep = Annotated[int | None, typer.Option(help="Expert-parallel degree.")]
Sp = Annotated[int | None, typer.Option(help="Sequence-parallel degree (dense models).")]
Servers = Annotated[int | None, typer.Option(help="Servers (namespaces). Default: 8.")]
Prefill = Annotated[int | None, typer.Option(help="Prefill instances. Default: half the GPUs.")]
Workload = Annotated[str, typer.Option(help="Synthetic workload: 'conv' or 'agent'.")]
Trace = Annotated[Path | None, typer.Option(help="Request trace file instead of a workload.")]
TraceFormat = Annotated[str, typer.Option(help="mooncake, qwen or azure.")]
KeepTs = Annotated[bool, typer.Option(help="Replay the trace's own arrival times.")]
Scheduler = Annotated[str, typer.Option(
    help="Scheduler name, comma-separated names, or 'all' (each run takes about 20 s of wall "
         "time per simulated second).")]
Rate = Annotated[float, typer.Option(help="Requests/s per prefill GPU (Poisson), model time.")]
Requests = Annotated[int, typer.Option(help="Number of evaluated requests.")]
Warmup = Annotated[int, typer.Option(help="Warm-up requests before the evaluated ones.")]
SloScale = Annotated[float, typer.Option(help="TTFT SLO = this x the request's TTFT alone on "
                                              "the idle cluster (simulated).")]
Slo = Annotated[float | None, typer.Option(help="A constant TTFT SLO in seconds.")]
Levels = Annotated[int, typer.Option(help="Strict priority levels K of the policies.")]
Mbt = Annotated[int, typer.Option(help="New tokens per prefill unit per batch.")]
Lookahead = Annotated[int, typer.Option(help="Stage-1 lookahead in layers; 0 = batch start.")]
PerFlow = Annotated[bool, typer.Option(help="Every member of a collective is its own flow.")]
Seed = Annotated[int, typer.Option(help="Seed for workload generation and arrivals.")]
ScaleOpt = Annotated[float, typer.Option(
    help="The one scaling factor s: sizes / s, durations x s, link rates / s^2 (s=20: "
         "100 Gbit/s NICs become 250 Mbit/s).")]
Mtu = Annotated[int, typer.Option(help="MTU of the emulated links (jumbo frames keep the "
                                       "packet rate within what two cores can switch).")]
ChunkKib = Annotated[float, typer.Option(help="Transport chunk size in KiB (a priority change "
                                              "takes effect at the next chunk).")]
WindowKib = Annotated[float, typer.Option(help="Unacknowledged KiB in flight per NIC and "
                                               "hardware class.")]
NoCoord = Annotated[bool, typer.Option(help="Run without the coordinator (no global RED "
                                            "order, no pruning).")]
LogDir = Annotated[Path | None, typer.Option(help="Keep daemon and coordinator logs here.")]
Nice = Annotated[int, typer.Option(
    help="Scheduling niceness of the emulation's processes (negative: ahead of other jobs; "
         "timing fidelity needs free cores, see the 'late' figures of --out).")]
KeyFile = Annotated[Path | None, typer.Option(
    help="The run's data-plane key: 64 hex digits in a file only you can read (default: a "
         "fresh random key per run).")]
NoAuth = Annotated[bool, typer.Option(help="Data connections without authentication and "
                                           "encryption (to measure what they cost).")]
Out = Annotated[Path | None, typer.Option(help="Write records (Parquet), config and summary "
                                                "here, as 'mfsched simulate --out' does.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")]


def testbed(
    scenario: Scenario = "testbed", model: Model = None, tp: Tp = None, ep: Ep = None,
    sp: Sp = None, servers: Servers = None, prefill_instances: Prefill = None,
    workload: Workload = "agent", trace: Trace = None, trace_format: TraceFormat = "mooncake",
    keep_timestamps: KeepTs = False, scheduler: Scheduler = DEFAULT_SCHEDULERS,
    rate: Rate = 1.0, requests: Requests = 32, warmup: Warmup = 8, slo_scale: SloScale = 3.0,
    slo: Slo = None, levels: Levels = 8, max_batched_tokens: Mbt = 8192,
    reuse_lookahead: Lookahead = 0, per_flow: PerFlow = False, seed: Seed = 0,
    scale: ScaleOpt = 20.0, mtu: Mtu = 9000, chunk_kib: ChunkKib = 32.0,
    window_kib: WindowKib = 256.0, no_coordinator: NoCoord = False, log_dir: LogDir = None,
    nice: Nice = 0, key_file: KeyFile = None, no_auth: NoAuth = False, out: Out = None,
    as_json: AsJson = False,
) -> None:
    """Run the scenario on the emulated testbed: namespaces, HTB priority queues, daemons, real TCP.

    Needs root. Defaults (fs and mfs, 32 requests after 8 warm-up) take about 2.5 minutes on two idle cores. Prints the simulator's table; --json prints the simulator's JSON keys.
    """  # noqa: E501 (one paragraph per line: the help formatter keeps line breaks)
    cfg, emu, names, prepared = _setup(locals())  # first: locals() holds just the options
    from ..cli import _print_table, _progress, _write_out, err_console, ticker
    from .testbed import run_testbed

    with _progress(enabled=not as_json or err_console.is_terminal) as bar:
        runs = run_testbed(prepared, names, emu, progress=ticker(bar))
    _warn_if_late(runs, err_console)
    results = [r.result for r in runs]
    rows = [r.to_json() for r in results]
    if out is not None:
        _write_out(out, cfg, results, rows)
        _write_dataplane(out, runs, emu)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        _print_table(rows)


def compare(
    scenario: Scenario = "testbed", model: Model = None, tp: Tp = None, ep: Ep = None,
    sp: Sp = None, servers: Servers = None, prefill_instances: Prefill = None,
    workload: Workload = "agent", trace: Trace = None, trace_format: TraceFormat = "mooncake",
    keep_timestamps: KeepTs = False, scheduler: Scheduler = DEFAULT_SCHEDULERS,
    rate: Rate = 1.0, requests: Requests = 32, warmup: Warmup = 8, slo_scale: SloScale = 3.0,
    slo: Slo = None, levels: Levels = 8, max_batched_tokens: Mbt = 8192,
    reuse_lookahead: Lookahead = 0, per_flow: PerFlow = False, seed: Seed = 0,
    scale: ScaleOpt = 20.0, mtu: Mtu = 9000, chunk_kib: ChunkKib = 32.0,
    window_kib: WindowKib = 256.0, no_coordinator: NoCoord = False, log_dir: LogDir = None,
    nice: Nice = 0, key_file: KeyFile = None, no_auth: NoAuth = False, out: Out = None,
    as_json: AsJson = False,
) -> None:
    """Run the identical scenario in the simulator and on the emulated testbed; print both.

    Per scheduler: SLO attainment, mean TTFT and mean Stage-2 CCT of each, and the simulator's relative error (simulator - testbed) / testbed. Needs root.
    """  # noqa: E501
    cfg, emu, names, prepared = _setup(locals())  # first: locals() holds just the options
    from ..cli import _progress, _write_out, err_console, ticker
    from ..experiments.runner import run
    from .testbed import run_testbed

    sim = run(prepared, names, record_flows=out is not None)  # also warms the SLO memo
    with _progress(enabled=not as_json or err_console.is_terminal) as bar:
        runs = run_testbed(prepared, names, emu, progress=ticker(bar), warm=False)
    _warn_if_late(runs, err_console)
    sim_rows = [r.to_json() for r in sim]
    tb_rows = [r.result.to_json() for r in runs]
    table = comparison(sim_rows, tb_rows)
    if out is not None:
        _write_out(out / "simulator", cfg, sim, sim_rows)
        _write_out(out / "testbed", cfg, [r.result for r in runs], tb_rows)
        _write_dataplane(out / "testbed", runs, emu)
        (out / "comparison.json").write_text(json.dumps(table, indent=2) + "\n")
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
    from rich.console import Console
    from rich.table import Table

    title = "simulator vs emulated testbed"
    if first is not None:
        title += (f" | {first['model']} {first['parallelism']} | {first['workload']} | "
                  f"{first['rate_per_gpu']:g} req/s per prefill GPU | "
                  f"{first['requests_evaluated']} requests")
    t = Table(title=title, caption="times in ms; err = (simulator - testbed) / testbed")
    for col in ("scheduler", "SLO sim", "SLO testbed", "err", "TTFT sim", "TTFT testbed", "err",
                "CCT sim", "CCT testbed", "err"):
        t.add_column(col, justify="left" if col == "scheduler" else "right")
    for r in table:
        t.add_row(r["scheduler"],
                  f"{r['sim_slo_attainment']:.1%}", f"{r['testbed_slo_attainment']:.1%}",
                  _pct(r["rel_err_slo_attainment"]),
                  f"{1e3 * r['sim_ttft_mean_s']:.1f}", f"{1e3 * r['testbed_ttft_mean_s']:.1f}",
                  _pct(r["rel_err_ttft_mean_s"]),
                  f"{1e3 * r['sim_stage2_cct_mean_s']:.2f}",
                  f"{1e3 * r['testbed_stage2_cct_mean_s']:.2f}",
                  _pct(r["rel_err_stage2_cct_mean_s"]))
    out = Console()
    if not out.is_terminal:
        out = Console(width=max(out.width, 132))
    out.print(t)


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


@net_app.command("clean")
def net_clean(prefix: Annotated[str, typer.Option(
        help="Namespace name prefix (must start with 'mfs-').")] = "mfs-") -> None:
    """Delete leftover emulated networks: every namespace whose name starts with the prefix, after stopping the processes still running inside it."""  # noqa: E501
    import os

    from .netns import clean

    if os.geteuid() != 0:
        raise UserError("needs root")
    try:
        result = clean(prefix)
    except ValueError as e:
        raise UserError(str(e)) from None
    for ns, pids in result.items():
        typer.echo(f"deleted {ns}" + (f" (stopped pids {', '.join(map(str, pids))})"
                                      if pids else ""))
    if not result:
        typer.echo("nothing to clean")


def register(app: typer.Typer) -> None:
    """Add ``testbed``, ``compare`` and ``net`` to the ``mfsched`` app (idempotent)."""
    names = {c.name for c in app.registered_commands}
    if "testbed" not in names:
        app.command("testbed")(testbed)
    if "compare" not in names:
        app.command("compare")(compare)
    if all(g.name != "net" for g in app.registered_groups):
        app.add_typer(net_app, name="net")
