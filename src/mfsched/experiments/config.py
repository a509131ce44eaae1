"""The run configuration: one frozen, validated tree, written next to every run's results.

Scenario defaults follow the paper: ``testbed`` runs Mixtral-8x7B TP1/EP8 on RTX 3090s (two
prefill instances on 16 GPUs, two decode instances), ``fattree`` runs the paper's 256-server
cluster with A100s and the per-model parallelism of its Table (Mixtral-8x22B TP4/EP8 ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import UserError
from ..sim.serving import ServingConfig
from ..sim.topology import TOPOLOGIES
from ..validate import integer, number
from ..workload.deployment import Parallelism
from ..workload.models import MODELS
from ..workload.synthetic import WORKLOADS
from ..workload.traces import TRACE_FORMATS

__all__ = ["MAX_BATCHED_TOKENS", "MAX_DEGREE", "MAX_STREAM_REQUESTS", "OVER_CONTEXT",
           "PAPER_PARALLELISM", "SCENARIO_DEFAULTS", "SimConfig"]

# The paper's §6.1 table; Mixtral-8x7B is its testbed set-up; Llama-3-70B is ours.
PAPER_PARALLELISM: dict[str, Parallelism] = {
    "mixtral-8x7b": Parallelism(tp=1, ep=8),
    "mixtral-8x22b": Parallelism(tp=4, ep=8),
    "grok-2": Parallelism(tp=4, ep=8),
    "dbrx": Parallelism(tp=2, ep=16),
    "qwen3-coder-480b-a35b": Parallelism(tp=1, ep=32),
    "llama-3-8b": Parallelism(tp=4, sp=4),
    "llama-3-70b": Parallelism(tp=8),
}

SCENARIO_DEFAULTS = {"testbed": "mixtral-8x7b", "fattree": "mixtral-8x22b"}

# What a run may ask for. A request costs about 3 KB and 0.2-2 ms to generate, so one stream
# (history + warm-up + evaluated + tail) of a million requests needs about 3 GB; beyond that a
# run would exhaust memory before it starts. The other bounds keep every quantity where the
# model means something and floating point resolves it (rates, capacities, degrees).
MAX_STREAM_REQUESTS = 1_000_000
_MAX_SERVERS = 4096  # 32,768 GPUs on the fat-tree; the paper's cluster has 256 servers
MAX_DEGREE = 1024  # tp, ep, sp; layers of Stage-1 lookahead
_MAX_LEVELS = 64  # strict priority levels; switches have 8 queues
_MAX_SEED = 2**64 - 1
MAX_BATCHED_TOKENS = 1 << 20
_MAX_CONNECTIONS = 64  # NCCL_MAX_NCHANNELS
# What happens to a request longer than the model's context window: refused (naming the trace
# line), or dropped as a serving engine rejects it (vLLM answers such requests with an error).
OVER_CONTEXT = ("refuse", "drop")


@dataclass(frozen=True)
class SimConfig:
    scenario: str = "testbed"
    model: str | None = None  # None: the scenario's default model
    tp: int | None = None  # None: the model's default parallelism
    ep: int | None = None
    sp: int | None = None
    prefill_instances: int | None = None  # None: half of the GPUs do prefill
    servers: int | None = None  # None: the topology's default
    nic_gbps: float | None = None  # line rate of one NIC port; None: the topology's default
    bandwidth_scale: float = 1.0  # multiplies every link capacity (network-bound studies)
    workload: str = "agent"
    trace: str | None = None
    trace_format: str = "mooncake"
    keep_timestamps: bool = False
    rate_per_gpu: float = 1.0
    requests: int = 1024
    warmup: int = 512
    tail: int | None = None  # requests after the evaluated window (None: requests // 4)
    slo_scale: float = 3.0
    slo_s: float | None = None  # a global constant SLO instead of slo_scale x isolated TTFT
    seed: int = 0
    num_levels: int = 8
    policy_options: tuple[str, ...] = ()  # "SCHEDULER.KEY=VALUE", e.g. "mfs.red_tiebreak=false"
    flops_efficiency: float = 0.6
    memory_efficiency: float = 0.8
    # how the stack moves bytes (workload.comm); None: what it does on the scenario's hardware
    ep_backend: str | None = None
    ring_channels: int | None = None
    kv_connections: int | None = None
    ring_collectives: bool | None = None
    over_context: str = "refuse"  # requests longer than the model's context (OVER_CONTEXT)
    serving: ServingConfig = field(default_factory=ServingConfig)

    def __post_init__(self) -> None:
        """Every field in its range (one line naming the option otherwise): the edge of every
        run, whether it comes from the command line or from Python."""
        number("--rate", self.rate_per_gpu, 0, 1e5, lo_open=True)
        number("--slo-scale", self.slo_scale, 0, 1e6, lo_open=True)
        number("--bandwidth-scale", self.bandwidth_scale, 1e-4, 1e4)
        if self.nic_gbps is not None:
            number("--nic-gbps", self.nic_gbps, 1e-3, 1e5)
        if self.slo_s is not None:
            number("--slo", self.slo_s, 0, 1e6, lo_open=True)
        integer("--requests", self.requests, 1, MAX_STREAM_REQUESTS)
        integer("--warmup", self.warmup, 0, MAX_STREAM_REQUESTS)
        if self.tail is not None:
            integer("tail", self.tail, 0, MAX_STREAM_REQUESTS)
        total = self.warmup + self.requests + self.tail_requests
        if total > MAX_STREAM_REQUESTS:
            raise UserError(f"--warmup + --requests (+ a tail of {self.tail_requests}) come to "
                            f"{total:,} requests, more than the {MAX_STREAM_REQUESTS:,} one run "
                            f"can hold in memory")
        integer("--seed", self.seed, 0, _MAX_SEED)
        integer("--levels", self.num_levels, 1, _MAX_LEVELS)
        for flag, value in (("--tp", self.tp), ("--ep", self.ep), ("--sp", self.sp)):
            if value is not None:
                integer(flag, value, 1, MAX_DEGREE)
        if self.servers is not None:
            integer("--servers", self.servers, 1, _MAX_SERVERS)
        if self.prefill_instances is not None:
            integer("--prefill-instances", self.prefill_instances, 1, _MAX_SERVERS * 8)
        for flag, value in (("--ring-channels", self.ring_channels),
                            ("--kv-connections", self.kv_connections)):
            if value is not None:
                integer(flag, value, 1, _MAX_CONNECTIONS)
        integer("--max-batched-tokens", self.serving.max_batched_tokens, 1,
                MAX_BATCHED_TOKENS)
        integer("--reuse-lookahead", self.serving.reuse_lookahead_layers, 0, MAX_DEGREE)
        TOPOLOGIES.get(self.scenario)
        MODELS.get(self.model_name)
        if self.trace is None:
            WORKLOADS.get(self.workload)
            if self.keep_timestamps:
                raise UserError("--keep-timestamps replays a trace's arrival times: it needs "
                                "--trace")
        TRACE_FORMATS.get(self.trace_format)
        if self.over_context not in OVER_CONTEXT:
            raise UserError(f"--over-context must be one of {', '.join(OVER_CONTEXT)}, got "
                            f"{self.over_context!r}")

    def options_for(self, scheduler: str) -> dict[str, str]:
        """The ``--policy-option`` settings addressed to ``scheduler``."""
        out = {}
        for item in self.policy_options:
            target, _, rest = item.partition(".")
            key, eq, value = rest.partition("=")
            if not (target and key and eq):
                raise UserError(f"--policy-option {item!r}: expected SCHEDULER.KEY=VALUE")
            if target.lower() == scheduler.lower():
                out[key.strip()] = value.strip()
        return out

    @property
    def model_name(self) -> str:
        return (self.model or SCENARIO_DEFAULTS[self.scenario]).lower()

    @property
    def parallelism(self) -> Parallelism:
        base = PAPER_PARALLELISM.get(self.model_name, Parallelism())
        return Parallelism(tp=base.tp if self.tp is None else self.tp,
                           ep=base.ep if self.ep is None else self.ep,
                           sp=base.sp if self.sp is None else self.sp)

    @property
    def tail_requests(self) -> int:
        return self.requests // 4 if self.tail is None else self.tail

    def to_dict(self) -> dict:
        d = asdict(self)
        d["resolved"] = {"model": self.model_name, "parallelism": asdict(self.parallelism),
                         "tail": self.tail_requests}
        return d
