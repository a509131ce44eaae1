"""Build a cluster from a config, load the workload, run schedulers, summarise.

``run(config, schedulers)`` is what ``mfsched simulate`` calls. Static parts (topology,
deployment, planner, the request stream, the prefix caches warmed by the stream's history and
the isolated-TTFT memo behind the SLOs) are built once and shared by all scheduler runs, so
every scheduler sees exactly the same requests: each run starts from a copy of the warmed
caches (:class:`~mfsched.sim.serving.WarmCaches`), and the memo (:mod:`mfsched.sim.slomemo`) is
kept on disk for the next run of the same cluster.

With ``jobs`` > 1 the schedulers run in parallel worker processes of the process executor
(:mod:`mfsched.experiments.executors`, the one ``sweep`` and ``reproduce`` use). The workers
are forked after the stream is prepared and the caches warmed, so they inherit both instead of
rebuilding them; each returns its result and the memo entries it computed, which the driver
merges (and saves), and streams its progress to the driver. Results are identical to a
sequential run: every run is deterministic and the memo's entries are the same whoever
computes them (``tests/test_equivalence.py`` runs both ways). They start longest first, by
the wall times of the cluster's last run (:mod:`mfsched.experiments.runtimes`).
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property

import numpy as np

from ..errors import UserError
from ..metrics import Summary, summarize
from ..policy import SCHEDULERS, make_policy
from ..records import RunRecords
from ..sim.network import load_kernels
from ..sim.serving import IsolatedTtft, Serving, SimCluster, SimStats, SloFn, WarmCaches, prewarm
from ..sim.slomemo import SloStore
from ..sim.topology import TOPOLOGIES, build_topology, scale_bandwidth
from ..units import gbps
from ..validate import MAX_SIMULATED_S
from ..workload.comm import CommModel, default_comm
from ..workload.compute import ComputeModel
from ..workload.deployment import build_deployment, kv_cache_tokens_per_unit
from ..workload.hardware import GPUS
from ..workload.models import MODELS
from ..workload.requests import Request, ideal_reuse_ratio, poisson_retime
from ..workload.stages import StagePlanner
from ..workload.synthetic import SessionTiming, generate, history_requests
from ..workload.traces import TraceLimits, load_trace
from . import runtimes
from .config import MAX_STREAM_REQUESTS, SimConfig

__all__ = ["CONTENTION_FREE", "MAX_ARRIVAL_SPAN_S", "Prepared", "RunResult", "Stream",
           "build_cluster", "check_policy_options", "comm_model", "load_requests",
           "make_slo_fn", "prepare", "resolved", "run", "run_contention_free", "run_scheduler",
           "scheduler_names", "slo_rule", "topology_config"]

# Arrivals get the first half of the time the simulator's clock resolves in nanosecond steps
# (mfsched.validate.MAX_SIMULATED_S), the drain after the last arrival the rest.
MAX_ARRIVAL_SPAN_S = MAX_SIMULATED_S / 2

# The analysis reference: fair sharing with every flow as if alone on its path. Not a
# scheduler and not a strict bound (batching reacts to faster batches), but it shows what
# network contention costs at all.
CONTENTION_FREE = "no-contention"


@dataclass(frozen=True)
class RunResult:
    scheduler: str
    config: SimConfig
    summary: Summary
    stats: SimStats
    # None where the caller of run() did not keep them (keep_records=False): a parallel run
    # would otherwise pickle them back to the driver, 3.7 MB per scheduler on the default run
    records: RunRecords | None
    ideal_reuse: float = float("nan")  # the evaluated window's reuse with an infinite cache

    @classmethod
    def of(cls, p: Prepared, scheduler: str, records: RunRecords, stats: SimStats) -> RunResult:
        """The result of one run on ``p``, summarised."""
        return cls(scheduler, p.config, summarize(records, len(p.cluster.deployment.instances)),
                   stats, records, p.ideal_reuse)

    def to_json(self) -> dict:
        c, s = self.config, self.summary
        return {
            "scheduler": self.scheduler,
            "scenario": c.scenario,
            "model": c.model_name,
            "parallelism": c.parallelism.label(),
            "workload": c.trace or c.workload,
            "rate_per_gpu": c.rate_per_gpu,
            "seed": c.seed,
            "slo_rule": slo_rule(c),
            "requests_evaluated": s.requests_evaluated,
            "slo_attainment": s.slo_attainment,
            "ttft_mean_s": s.ttft_mean_s,
            "ttft_p50_s": s.ttft_p50_s,
            "ttft_p99_s": s.ttft_p99_s,
            "stage2_cct_mean_s": s.stage2_cct_mean_s,
            "p2d_earliness_mean": s.p2d_earliness_mean,
            "pruned_fraction": s.pruned_fraction,
            "prefix_reuse": s.prefix_reuse,
            "ideal_prefix_reuse": self.ideal_reuse,
            "instance_request_share": list(s.instance_request_share),
            "instance_batch_share": list(s.instance_batch_share),
            "wall_time_s": self.stats.wall_time_s,
            "simulated_time_s": self.stats.simulated_time_s,
            "events": self.stats.events,
        }


def scheduler_names(spec: str) -> list[str]:
    """``all``, one name, or a comma-separated list -> registered names (validated)."""
    if spec.lower() == "all":
        return SCHEDULERS.names()
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    for n in names:
        SCHEDULERS.get(n)
    if not names:
        raise UserError("no scheduler given")
    return names


def check_policy_options(cfg: SimConfig, schedulers: Sequence[str]) -> None:
    """Refuse ``--policy-option`` settings that would fail later or be silently ignored: a
    malformed item, an unknown scheduler (a typo), a scheduler this run does not include, an
    unknown key or a value its config refuses."""
    cfg.options_for("")  # the SCHEDULER.KEY=VALUE form of every item
    for item in cfg.policy_options:
        target = item.partition(".")[0].strip().lower()
        if target not in SCHEDULERS:
            raise UserError(f"--policy-option {item!r}: unknown scheduler {target!r}; known: "
                            f"{', '.join(SCHEDULERS.names())}")
        if target not in schedulers:
            raise UserError(f"--policy-option {item!r}: scheduler {target!r} is not part of "
                            f"this run (--scheduler {','.join(schedulers)})")
    for name in schedulers:
        make_policy(name, cfg.num_levels, cfg.options_for(name))


def topology_config(cfg: SimConfig):
    """The scenario's topology config (``TestbedConfig``, ``FatTreeConfig``) with the
    config's overrides."""
    overrides = {}
    if cfg.servers is not None:
        overrides["servers"] = cfg.servers
    if cfg.nic_gbps is not None:
        overrides["nic_bps"] = gbps(cfg.nic_gbps)
    return TOPOLOGIES.get(cfg.scenario)(**overrides)


def build_cluster(cfg: SimConfig) -> SimCluster:
    topology = build_topology(topology_config(cfg))
    if cfg.bandwidth_scale != 1.0:
        topology = scale_bandwidth(topology, cfg.bandwidth_scale)
    model = MODELS.get(cfg.model_name)
    par = cfg.parallelism
    deployment = build_deployment(model, par, topology.num_gpus, topology.gpus_per_server,
                                  cfg.prefill_instances)
    gpu = GPUS.get(topology.gpu)
    compute = ComputeModel(gpu, cfg.flops_efficiency, cfg.memory_efficiency)
    planner = StagePlanner(deployment, compute, topology.intra_server_bps / 8, comm_model(cfg, gpu,
                                                                                       topology))
    kv_tokens = kv_cache_tokens_per_unit(model, par, gpu.mem_bytes)
    return SimCluster(topology, deployment, compute, planner, cfg.serving, kv_tokens)


def comm_model(cfg: SimConfig, gpu, topology) -> CommModel:
    """The scenario hardware's defaults (:func:`default_comm`) with the config's overrides."""
    base = default_comm(gpu.gpudirect_rdma, topology.nccl_rings)
    overrides = {k: v for k, v in (("ep_backend", cfg.ep_backend),
                                   ("ring_channels", cfg.ring_channels),
                                   ("kv_connections", cfg.kv_connections),
                                   ("ring_collectives", cfg.ring_collectives)) if v is not None}
    return replace(base, **overrides)


def session_timing(cfg: SimConfig, cluster: SimCluster) -> SessionTiming:
    """The offered rate and the model's time per generated token (one decode step reading the
    weights once; batching and long contexts make real decode steps somewhat slower)."""
    d = cluster.deployment
    per_token = cluster.compute.decode_step_s(d.model, d.parallelism.tp, 0)
    return SessionTiming(cfg.rate_per_gpu * d.prefill_gpus, per_token)


@dataclass(frozen=True)
class Stream:
    """The requests of a run: ``warmup`` of them first, then ``evaluated`` ones, then a tail;
    ``history`` warms the prefix caches before (synthetic workloads: the sessions' earlier
    turns, see :func:`mfsched.workload.synthetic.history_requests`; traces: none);
    ``dropped_lines`` are the trace lines of requests longer than the model's context that
    ``--over-context drop`` left out."""

    requests: list[Request]
    warmup: int
    evaluated: int
    history: list[Request]
    dropped_lines: tuple[int, ...] = ()


def load_requests(cfg: SimConfig, cluster: SimCluster) -> Stream:
    """The request stream of ``cfg``, checked against what the cluster's model can serve
    (context window) and what the simulator's clock resolves (arrival span)."""
    gen_seed, arrival_seed = np.random.SeedSequence(cfg.seed).spawn(2)
    wanted = cfg.warmup + cfg.requests + cfg.tail_requests
    model = cluster.deployment.model
    history: list[Request] = []
    dropped: tuple[int, ...] = ()
    if cfg.trace is not None:
        limits = TraceLimits(model.max_context_tokens, model.name, cfg.over_context == "drop",
                             MAX_ARRIVAL_SPAN_S if cfg.keep_timestamps else None)
        trace = load_trace(cfg.trace, cfg.trace_format, wanted, limits)
        requests, dropped = trace.requests, trace.dropped_lines
        if len(requests) <= cfg.warmup:
            raise UserError(f"the trace has {len(requests)} requests"
                            f"{' that fit the context window' if dropped else ''}, not more "
                            f"than the {cfg.warmup} warm-up requests (--warmup)",
                            where=cfg.trace)
    else:
        timing = session_timing(cfg, cluster)
        burn = history_requests(cfg.workload, timing)
        if burn + wanted > MAX_STREAM_REQUESTS:
            raise UserError(f"--rate {cfg.rate_per_gpu:g}: at {timing.rate_per_s:g} requests/s "
                            f"the {cfg.workload} workload's sessions need {burn:,} requests of "
                            f"history before the run's {wanted:,}, more than the "
                            f"{MAX_STREAM_REQUESTS:,} one run can hold; lower --rate")
        stream = generate(cfg.workload, burn + wanted, np.random.default_rng(gen_seed), timing,
                          model.max_context_tokens)
        history, requests = stream[:burn], stream[burn:]
    evaluated = min(cfg.requests, len(requests) - cfg.warmup)
    if not cfg.keep_timestamps:
        rate = cfg.rate_per_gpu * cluster.deployment.prefill_gpus
        requests = poisson_retime(requests, rate, np.random.default_rng(arrival_seed))
        if requests[-1].arrival_s > MAX_ARRIVAL_SPAN_S:
            raise UserError(f"--rate {cfg.rate_per_gpu:g}: {len(requests):,} requests at "
                            f"{rate:.3g} requests/s arrive over {requests[-1].arrival_s:.3g} s, "
                            f"more than the {MAX_ARRIVAL_SPAN_S:.3g} s the simulator resolves "
                            f"in nanosecond steps; raise --rate or lower --requests")
    return Stream(requests, cfg.warmup, evaluated, history, dropped)


def slo_rule(cfg: SimConfig) -> str:
    """The TTFT SLO of ``cfg`` in words (tables and config.json say what the run assumed)."""
    if cfg.slo_s is not None:
        return f"TTFT <= {cfg.slo_s:g} s (--slo)"
    return (f"TTFT <= {cfg.slo_scale:g} x the request's TTFT alone on the idle cluster "
            f"(--slo-scale)")


def make_slo_fn(cfg: SimConfig, cluster: SimCluster,
                isolated: IsolatedTtft | None = None) -> SloFn:
    """The SLO rule of ``cfg``; ``isolated`` is the memo to use (a fresh in-memory one if
    None)."""
    if cfg.slo_s is not None:
        slo = cfg.slo_s
        return lambda _req, _route: slo
    isolated = IsolatedTtft(cluster) if isolated is None else isolated
    scale = cfg.slo_scale
    return lambda req, route: scale * isolated(req, route)


def run_scheduler(p: Prepared, scheduler: str, *, record_flows: bool = False,
                  check_invariants: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> RunResult:
    """One scheduler on the prepared cluster and requests (options from ``p.config``)."""
    cfg = p.config
    policy = make_policy(scheduler, cfg.num_levels, cfg.options_for(scheduler))
    sim = Serving(p.cluster, policy, p.requests, p.slo_fn, warmup=p.warmup,
                  evaluated=p.evaluated, warm=p.warm, record_flows=record_flows,
                  check_invariants=check_invariants, progress=progress)
    records, stats = sim.run()
    return RunResult.of(p, scheduler, records, stats)


@dataclass(frozen=True)
class Prepared:
    """Everything shared by the scheduler runs of one config."""

    config: SimConfig
    cluster: SimCluster
    requests: list[Request]
    warmup: int
    evaluated: int
    slo_fn: SloFn
    history: list[Request]  # served before the run: only warms the prefix caches
    dropped_lines: tuple[int, ...] = ()  # trace lines dropped for the context (Stream)
    # the memo behind slo_fn (None with a constant SLO)
    isolated: IsolatedTtft | None = field(default=None, compare=False, repr=False)

    @cached_property
    def warm(self) -> WarmCaches:
        """The prefix caches after the history (routed once; each run gets a copy)."""
        return prewarm(self.cluster, self.history,
                       self.requests[0].block_tokens if self.requests else 16)

    def save_memo(self) -> None:
        """Keep the isolated TTFTs computed so far for the next run of this cluster."""
        if self.isolated is not None:
            self.isolated.store.save()

    @cached_property
    def ideal_reuse(self) -> float:
        """The prompt reuse an infinite cache would give the evaluated requests (having seen
        the history and the requests before them): the workload's intended reuse."""
        seen = {h for r in self.history for h in r.block_hashes}
        seen.update(h for r in self.requests[:self.warmup] for h in r.block_hashes)
        return ideal_reuse_ratio(self.requests[self.warmup:self.warmup + self.evaluated], seen)


def resolved(p: Prepared, schedulers: Sequence[str] = ()) -> dict:
    """Every value the run resolved from its config and the scenario's defaults, as JSON
    (config.json): cluster, deployment, network model, request counts, SLO rule and the
    settings of each scheduler's policy."""
    cfg, c = p.config, p.cluster
    d = c.deployment
    topo = topology_config(cfg)
    return {
        "model": cfg.model_name,
        "max_context_tokens": d.model.max_context_tokens,
        "parallelism": asdict(cfg.parallelism),
        "topology": asdict(topo),
        "gpus": c.topology.num_gpus,
        "prefill_instances": len(d.instances),
        "decode_instances": len(d.instances),
        "prefill_gpus": d.prefill_gpus,
        "prefill_units": len(d.units),
        "kv_cache_tokens_per_unit": c.kv_cache_tokens_per_unit,
        "comm": asdict(c.planner.comm),
        "serving": asdict(c.serving),
        "arrival_rate_per_s": cfg.rate_per_gpu * d.prefill_gpus,
        "requests": {"history": len(p.history), "warmup": p.warmup, "evaluated": p.evaluated,
                     "tail": len(p.requests) - p.warmup - p.evaluated,
                     "dropped_over_context": len(p.dropped_lines)},
        "slo": slo_rule(cfg),
        "tail": cfg.tail_requests,
        "policies": {name: asdict(make_policy(name, cfg.num_levels,
                                              cfg.options_for(name)).config)
                     for name in schedulers},
    }


def prepare(cfg: SimConfig) -> Prepared:
    """Build the cluster and the request stream; raises UserError for bad input. The SLO memo
    starts from the cluster's on-disk entries (:class:`~mfsched.sim.slomemo.SloStore`)."""
    cluster = build_cluster(cfg)
    s = load_requests(cfg, cluster)
    isolated = None if cfg.slo_s is not None else IsolatedTtft(cluster,
                                                               SloStore.for_cluster(cluster))
    return Prepared(cfg, cluster, s.requests, s.warmup, s.evaluated,
                    make_slo_fn(cfg, cluster, isolated), s.history, s.dropped_lines, isolated)


def run_contention_free(p: Prepared, *, record_flows: bool = False) -> RunResult:
    """Fair sharing on the same requests, every flow running as if alone on its path."""
    cluster = replace(p.cluster, serving=replace(p.cluster.serving, contention_free=True))
    sim = Serving(cluster, make_policy("fs", p.config.num_levels), p.requests, p.slo_fn,
                  warmup=p.warmup, evaluated=p.evaluated, warm=p.warm,
                  record_flows=record_flows)
    records, stats = sim.run()
    p.save_memo()
    return RunResult.of(p, CONTENTION_FREE, records, stats)


def run(cfg: SimConfig | Prepared, schedulers: Sequence[str], *, record_flows: bool = False,
        keep_records: bool = True, progress: Callable[[str, int, int], None] | None = None,
        jobs: int = 1) -> list[RunResult]:
    """Every scheduler on the same prepared requests, in order; ``jobs`` > 1 runs them in
    that many worker processes at once (module docstring). With ``keep_records=False`` the
    results hold their summaries and statistics but no records (``records`` is None)."""
    if record_flows and not keep_records:
        raise ValueError("record_flows needs keep_records")
    p = cfg if isinstance(cfg, Prepared) else prepare(cfg)
    jobs = min(jobs, len(schedulers))
    if jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
        results = _run_parallel(p, schedulers, record_flows, keep_records, progress, jobs)
    else:
        results = []
        for name in schedulers:
            cb = None if progress is None else (lambda d, t, n=name: progress(n, d, t))
            results.append(_kept(run_scheduler(p, name, record_flows=record_flows,
                                               progress=cb), keep_records))
    p.save_memo()
    return results


def _kept(result: RunResult, keep_records: bool) -> RunResult:
    return result if keep_records else replace(result, records=None)


# What the workers of _run_parallel inherit when they are forked: the prepared point, whether
# to record flows and to keep the records, and the queue their progress goes to.
_SHARED: tuple[Prepared, bool, bool, object] | None = None


def _run_parallel(p: Prepared, schedulers: Sequence[str], record_flows: bool,
                  keep_records: bool, progress: Callable[[str, int, int], None] | None,
                  jobs: int) -> list[RunResult]:
    from .executors import execute  # runner is imported by executors' callers, not vice versa

    global _SHARED
    p.warm  # noqa: B018 (route the history once, in the driver: the workers inherit it)
    load_kernels()  # and compile or load the kernels once, too
    queue = multiprocessing.get_context("fork").SimpleQueue()
    _SHARED = (p, record_flows, keep_records, queue)
    results: list[RunResult | None] = [None] * len(schedulers)

    def keep(i: int, out: tuple[RunResult, dict[str, float]]) -> None:
        results[i], entries = out
        if p.isolated is not None:
            p.isolated.store.merge(entries)

    def relay() -> None:  # progress messages from the workers, until the driver's None
        while (msg := queue.get()) is not None:
            if progress is not None:
                progress(*msg)

    listener = threading.Thread(target=relay, name="mfsched-progress", daemon=True)
    listener.start()
    order = runtimes.longest_first(p.cluster, schedulers)  # (changes only the wall time)
    try:
        execute(_run_in_worker, [schedulers[i] for i in order], executor="process", jobs=jobs,
                on_result=lambda k, out: keep(order[k], out))
    finally:
        queue.put(None)
        listener.join()
        _SHARED = None
    done = [r for r in results if r is not None]
    runtimes.record(p.cluster, {r.scheduler: r.stats.wall_time_s for r in done})
    return done


def _run_in_worker(scheduler: str) -> tuple[RunResult, dict[str, float]]:
    """In a forked worker: one scheduler on the inherited point; its result and the SLO memo
    entries it computed."""
    assert _SHARED is not None, "workers are forked by _run_parallel"
    p, record_flows, keep_records, queue = _SHARED
    store = p.isolated.store if p.isolated is not None else None
    if store is not None:
        store.new.clear()  # what the driver had not saved yet is the driver's to save
    result = run_scheduler(p, scheduler, record_flows=record_flows,
                           progress=lambda done, total: queue.put((scheduler, done, total)))
    return _kept(result, keep_records), dict(store.new) if store is not None else {}
