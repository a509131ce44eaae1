"""The command line's options, each declared once.

An *option group* is a frozen dataclass whose fields are Typer options (type, help and default
in one place) and which turns itself into the object the run needs:
:class:`ScenarioOptions` (what is simulated) -> :class:`~mfsched.experiments.config.SimConfig`,
:class:`EmulationOptions` (how the data plane emulates it) -> ``EmulationConfig``. A command
takes a group as one parameter and :func:`with_groups` spreads its fields into the command's
signature, so ``simulate``, ``sweep``, ``testbed`` and ``compare`` share every declaration
(with per-command defaults, e.g. 32 requests on the emulated testbed). Options of a single
command stay in its signature; those that several commands share as they are (``--json``,
``--scheduler``, ``--out`` of a run, ``--seeds``, the executor's, the network model's
overrides) are the ``Annotated`` aliases below, each declared once.

Callers: :mod:`mfsched.cli`, :mod:`mfsched.dataplane.commands` and
:mod:`mfsched.cli_experiments`; this module imports none of them.
Heavy imports happen inside the methods, so that ``mfsched --help`` stays fast.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer
from typer.core import TyperCommand, TyperGroup

from .errors import UserError
from .validate import integer, number

__all__ = ["MAX_JOBS", "AsJson", "Command", "EmulationOptions", "EpBackend", "Executor", "Group",
           "Jobs", "KvConnections", "RayAddress", "RingChannels", "RunDir", "ScenarioOptions",
           "Scheduler", "Seeds", "floats", "ints", "jobs_or_default", "with_groups"]


# --- help output: no "<bool>" label on flags ------------------------------------------------


class _QuietFlags:
    """Flags take no value, so their help shows no type label (Typer prints ``<bool>``)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for p in params:
            if getattr(p, "is_flag", False) and p.metavar is None:
                p.metavar = ""
        return params


class Command(_QuietFlags, TyperCommand):
    """The class of every ``mfsched`` command (``app.command(cls=Command)``)."""


class Group(_QuietFlags, TyperGroup):
    """The class of ``mfsched`` and its sub-groups (``typer.Typer(cls=Group)``)."""


# --- options shared as they are -------------------------------------------------------------

AsJson = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout (progress, "
                                                     "if any, goes to stderr).")]
Scheduler = Annotated[str, typer.Option(
    help="Scheduler name, comma-separated names, or 'all' (see 'mfsched list schedulers').")]
RunDir = Annotated[Path | None, typer.Option(
    "--out",
    help="Write per-request, per-flow, per-collective and per-batch records (Parquet), the "
         "resolved config and the summary into this directory (compare: into its simulator/ "
         "and testbed/ subdirectories).")]
Seeds = Annotated[str, typer.Option(
    help="Comma-separated seeds (whole numbers); tables show the mean over them.")]
# where runs and grid points run (simulate, sweep, reproduce)
MAX_JOBS = 256
Executor = Annotated[str, typer.Option(
    help="Where the points run: 'process' (local worker processes) or 'ray' (needs the ray "
         "extra: pip install 'mfsched\\[ray]').")]
Jobs = Annotated[int | None, typer.Option(
    help=f"Runs at once (1..{MAX_JOBS}): worker processes, or the CPUs of a local Ray "
         "instance; the results do not depend on it. Default: the CPUs this process may "
         "use.")]
RayAddress = Annotated[str | None, typer.Option(
    help="Join this Ray cluster (e.g. 'auto' or 'ray://head:10001') instead of starting a "
         "local instance; its workers need the same mfsched installed.")]
# the network model's overrides (the scenario options; calibrate takes them alone)
EpBackend = Annotated[str | None, typer.Option(
    help="How EP dispatch/combine move bytes: 'allgather' (vLLM's default "
         "allgather_reducescatter on NCCL rings) or 'alltoall' (routed, DeepEP style). "
         "Default: what the stack does on the scenario's GPUs (testbed: allgather, "
         "fattree: alltoall).")]
RingChannels = Annotated[int | None, typer.Option(
    help="NCCL channels (connections per ring edge). Default: NCCL's choice for the "
         "hardware (testbed 2, fattree 16).")]
KvConnections = Annotated[int | None, typer.Option(
    help="Connections a KV transfer is striped over. Default: 2 (Mooncake's queue pairs per "
         "endpoint).")]


def jobs_or_default(jobs: int | None) -> int:
    """The value of a :data:`Jobs` option: checked, or the CPUs this process may use."""
    if jobs is None:
        from .experiments.executors import default_jobs

        return default_jobs()
    integer("--jobs", jobs, 1, MAX_JOBS)
    return jobs


# --- option groups ----------------------------------------------------------------------------


class OptionGroup:
    """Base of the option groups (a marker for :func:`with_groups`)."""


@dataclass(frozen=True)
class ScenarioOptions(OptionGroup):
    """What is simulated: cluster, model, workload, load, SLO, policies, serving and network
    model, seed."""

    scenario: Annotated[str, typer.Option(
        help="Cluster: 'testbed' (8 servers x 4 RTX 3090, 2 x 100 Gb/s NICs per server) or "
             "'fattree' (256 servers x 8 A100, one 200 Gb/s NIC per GPU).")] = "testbed"
    model: Annotated[str | None, typer.Option(
        help="Model name (see 'mfsched list models'). Default: the scenario's "
             "(testbed: mixtral-8x7b, fattree: mixtral-8x22b).")] = None
    tp: Annotated[int | None, typer.Option(
        help="Tensor-parallel degree per unit. Default: the paper's setting for the model.")] \
        = None
    ep: Annotated[int | None, typer.Option(
        help="Expert-parallel degree (units per MoE instance). Default: the paper's.")] = None
    sp: Annotated[int | None, typer.Option(
        help="Sequence-parallel degree (dense models). Default: the paper's.")] = None
    servers: Annotated[int | None, typer.Option(
        help="Number of servers in the topology. Default: testbed 8, fattree 256.")] = None
    nic_gbps: Annotated[float | None, typer.Option(
        help="Line rate of one NIC port in Gb/s. Default: testbed 100, fattree 200.")] = None
    prefill_instances: Annotated[int | None, typer.Option(
        help="Prefill instances (decode instances match 1:1). Default: half the GPUs.")] = None
    workload: Annotated[str, typer.Option(
        help="Synthetic workload when no --trace: 'conv' (~2k tokens, ~50% reuse) or "
             "'agent' (~1k tokens, ~65% reuse, hot prefixes).")] = "agent"
    trace: Annotated[Path | None, typer.Option(
        help="Request trace file to replay instead of a synthetic workload.")] = None
    trace_format: Annotated[str, typer.Option(
        help="Trace format: mooncake (JSONL, ms), qwen (JSONL, s) or azure (CSV).")] \
        = "mooncake"
    keep_timestamps: Annotated[bool, typer.Option(
        "--keep-timestamps",
        help="Replay the trace's own arrival times instead of Poisson arrivals at --rate.")] \
        = False
    over_context: Annotated[str, typer.Option(
        help="Trace requests longer than the model's context window: 'refuse' them (naming "
             "the line) or 'drop' them, as a serving engine rejects them.")] = "refuse"
    rate: Annotated[float, typer.Option(
        help="Request rate in requests/s per prefill GPU (Poisson arrivals).")] = 1.0
    requests: Annotated[int, typer.Option(help="Number of evaluated requests.")] = 1024
    warmup: Annotated[int, typer.Option(
        help="Warm-up requests simulated before the evaluated ones, not counted.")] = 512
    slo_scale: Annotated[float, typer.Option(
        help="TTFT SLO = this x the request's TTFT alone on the idle cluster.")] = 3.0
    slo: Annotated[float | None, typer.Option(
        help="A global constant TTFT SLO in seconds instead of --slo-scale.")] = None
    levels: Annotated[int, typer.Option(
        help="Strict priority levels K (a scavenger class comes below them).")] = 8
    policy_option: Annotated[list[str] | None, typer.Option(
        help="Set a scheduler's option, SCHEDULER.KEY=VALUE (repeatable), e.g. "
             "mfs.red_tiebreak=false. Options: the fields of the scheduler's config "
             "(docs/design.md).")] = None
    bandwidth_scale: Annotated[float, typer.Option(
        help="Multiply every link capacity by this factor (network-bound studies).")] = 1.0
    max_batched_tokens: Annotated[int, typer.Option(
        help="Continuous batching: new tokens per prefill unit per batch.")] = 8192
    reuse_lookahead: Annotated[int, typer.Option(
        help="Stage-1 lookahead in layers; 0 fetches every layer at batch start.")] = 0
    per_flow: Annotated[bool, typer.Option(
        "--per-flow",
        help="Reference mode: every member of a collective is its own flow (slower).")] = False
    ep_backend: EpBackend = None
    ring_channels: RingChannels = None
    kv_connections: KvConnections = None
    collective_layout: Annotated[str | None, typer.Option(
        help="'ring' (NCCL's rings, the default) or 'mesh' (every rank straight to every "
             "other; to measure what the rings change).")] = None
    seed: Annotated[int, typer.Option(help="Seed for workload generation and arrivals.")] = 0

    def config(self):
        """The run configuration (:class:`~mfsched.experiments.config.SimConfig`); bad values
        raise a one-line UserError naming the option."""
        from .experiments.config import MAX_BATCHED_TOKENS, MAX_DEGREE, SimConfig
        from .sim.serving import ServingConfig

        if self.collective_layout not in (None, "ring", "mesh"):
            raise UserError(f"--collective-layout must be 'ring' or 'mesh', got "
                            f"{self.collective_layout!r}")
        # before ServingConfig, whose own checks do not name the options
        integer("--max-batched-tokens", self.max_batched_tokens, 1, MAX_BATCHED_TOKENS)
        integer("--reuse-lookahead", self.reuse_lookahead, 0, MAX_DEGREE)
        serving = ServingConfig(max_batched_tokens=self.max_batched_tokens,
                                reuse_lookahead_layers=self.reuse_lookahead,
                                grouped_flows=not self.per_flow)
        return SimConfig(
            scenario=self.scenario.lower(), model=self.model, tp=self.tp, ep=self.ep,
            sp=self.sp, prefill_instances=self.prefill_instances, servers=self.servers,
            nic_gbps=self.nic_gbps, bandwidth_scale=self.bandwidth_scale,
            workload=self.workload, trace=None if self.trace is None else str(self.trace),
            trace_format=self.trace_format, keep_timestamps=self.keep_timestamps,
            rate_per_gpu=self.rate, requests=self.requests, warmup=self.warmup,
            slo_scale=self.slo_scale, slo_s=self.slo, seed=self.seed, num_levels=self.levels,
            policy_options=tuple(self.policy_option or ()), ep_backend=self.ep_backend,
            ring_channels=self.ring_channels, kv_connections=self.kv_connections,
            ring_collectives=None if self.collective_layout is None
            else self.collective_layout == "ring",
            over_context=self.over_context, serving=serving)


@dataclass(frozen=True)
class EmulationOptions(OptionGroup):
    """How the emulated testbed runs the scenario (``testbed``, ``compare``)."""

    scale: Annotated[float, typer.Option(
        help="The one scaling factor s: sizes / s, durations x s, link rates / s^2 (s=20: "
             "100 Gbit/s NICs become 250 Mbit/s).")] = 20.0
    mtu: Annotated[int, typer.Option(
        help="MTU of the emulated links (jumbo frames keep the packet rate within what two "
             "cores can switch).")] = 9000
    chunk_kib: Annotated[float, typer.Option(
        help="Transport chunk size in KiB (a priority change takes effect at the next "
             "chunk).")] = 32.0
    window_kib: Annotated[float, typer.Option(
        help="Unacknowledged KiB in flight per NIC and hardware class.")] = 256.0
    coordinator: Annotated[bool, typer.Option(
        "--coordinator/--no-coordinator",
        help="Run the coordinator (global RED order and pruning); without it every daemon "
             "ranks only its own flows.")] = True
    log_dir: Annotated[Path | None, typer.Option(
        help="Keep daemon and coordinator logs here.")] = None
    nice: Annotated[int, typer.Option(
        help="Scheduling niceness of the emulation's processes (negative: ahead of other "
             "jobs; timing fidelity needs free cores, see the 'late' figures of --out).")] = 0
    key_file: Annotated[Path | None, typer.Option(
        help="The run's data-plane key: 64 hex digits in a file only you can read (default: "
             "a fresh random key per run).")] = None
    auth: Annotated[bool, typer.Option(
        "--auth/--no-auth",
        help="Authenticate and encrypt data connections (--no-auth: to measure what they "
             "cost).")] = True

    def config(self):
        """The ``EmulationConfig`` of :mod:`mfsched.dataplane.testbed`."""
        from .dataplane.sender import SenderConfig
        from .dataplane.testbed import EmulationConfig

        number("--chunk-kib", self.chunk_kib, 1 / 1024, 64 * 1024)
        number("--window-kib", self.window_kib, 1 / 1024, 1024 * 1024)
        if not self.auth and self.key_file is not None:
            raise UserError("--key-file and --no-auth exclude each other")
        if self.key_file is not None:
            from .dataplane.auth import RunKey

            RunKey.from_file(str(self.key_file))  # a bad key file fails now, not after setup
        try:
            sender = SenderConfig(chunk_bytes=int(self.chunk_kib * 1024),
                                  window_bytes=int(self.window_kib * 1024))
            return EmulationConfig(scale=self.scale, mtu=self.mtu, sender=sender,
                                   coordinator=self.coordinator,
                                   log_dir=None if self.log_dir is None else str(self.log_dir),
                                   nice=self.nice, authenticate=self.auth,
                                   key_file=None if self.key_file is None
                                   else str(self.key_file))
        except ValueError as e:
            raise UserError(str(e)) from None


def with_groups(*, exclude: tuple[str, ...] = (), **defaults: Any):
    """Spread the option groups a command takes into its signature, for Typer.

    A parameter annotated with an :class:`OptionGroup` subclass becomes that group's fields
    (keyword options, in declaration order); the command is called with the group built from
    them. ``defaults`` override a field's default for this command; ``exclude`` leaves fields
    out (the command declares its own, e.g. ``sweep``'s lists of rates), and the group gets
    their defaults.
    """
    def deco(fn):
        sig = inspect.signature(fn)
        hints = get_type_hints(fn, include_extras=True)
        params: list[inspect.Parameter] = []
        groups: dict[str, type] = {}
        for name, prm in sig.parameters.items():
            ann = hints.get(name, prm.annotation)
            if isinstance(ann, type) and issubclass(ann, OptionGroup):
                groups[name] = ann
                ghints = get_type_hints(ann, include_extras=True)
                for f in fields(ann):
                    if f.name not in exclude:
                        params.append(inspect.Parameter(
                            f.name, inspect.Parameter.KEYWORD_ONLY,
                            default=defaults.get(f.name, f.default), annotation=ghints[f.name]))
            else:
                params.append(prm.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=ann))
        unknown = set(defaults) - {p.name for p in params}
        if unknown:
            raise TypeError(f"defaults for options {fn.__name__} does not have: {unknown}")

        @functools.wraps(fn)
        def command(**kwargs: Any):
            for name, cls in groups.items():
                own = {f.name for f in fields(cls)} - set(exclude)
                kwargs[name] = cls(**{k: kwargs.pop(k) for k in list(kwargs) if k in own})
            return fn(**kwargs)

        command.__signature__ = sig.replace(parameters=params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # Typer must see the spread signature, not fn's
        return command

    return deco


# --- comma-separated lists --------------------------------------------------------------------


def floats(text: str, option: str) -> tuple[float, ...]:
    """``"0.5,1,1.5"`` -> (0.5, 1.0, 1.5); a one-line error naming the option otherwise."""
    values = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        try:
            values.append(float(item))
        except ValueError:
            raise UserError(f"{option}: expected comma-separated numbers, got {item!r} in "
                            f"{text!r}") from None
    if not values:
        raise UserError(f"{option}: no values given")
    return tuple(values)


def ints(text: str, option: str, lo: int = 0) -> tuple[int, ...]:
    """``"0,1,2"`` -> (0, 1, 2): whole numbers only (``1.5`` is an error, not seed 1)."""
    values = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        try:
            value = int(item)
        except ValueError:
            raise UserError(f"{option}: expected comma-separated integers, got {item!r} in "
                            f"{text!r}") from None
        values.append(integer(option, value, lo))
    if not values:
        raise UserError(f"{option}: no values given")
    return tuple(values)
