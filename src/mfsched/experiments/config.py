"""The run configuration: one frozen, validated tree, written next to every run's results.

Scenario defaults follow the paper: ``testbed`` runs Mixtral-8x7B TP1/EP8 on RTX 3090s (two
prefill instances on 16 GPUs, two decode instances), ``fattree`` runs the paper's 256-server
cluster with A100s and the per-model parallelism of its Table (Mixtral-8x22B TP4/EP8 ...).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..errors import UserError
from ..sim.serving import ServingConfig
from ..workload.deployment import Parallelism

__all__ = ["PAPER_PARALLELISM", "SCENARIO_DEFAULTS", "SimConfig"]

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
    serving: ServingConfig = field(default_factory=ServingConfig)

    def __post_init__(self) -> None:
        positive = {"--rate": self.rate_per_gpu, "--slo-scale": self.slo_scale,
                    "--bandwidth-scale": self.bandwidth_scale,
                    "--nic-gbps": 1.0 if self.nic_gbps is None else self.nic_gbps}
        for flag, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise UserError(f"{flag} must be a positive number, got {value}")
        if self.slo_s is not None and not self.slo_s > 0:
            raise UserError(f"--slo must be positive, got {self.slo_s}")
        if self.requests < 1:
            raise UserError(f"--requests must be at least 1, got {self.requests}")
        if self.warmup < 0:
            raise UserError(f"--warmup must be >= 0, got {self.warmup}")
        if self.tail is not None and self.tail < 0:
            raise UserError(f"tail must be >= 0, got {self.tail}")
        if self.num_levels < 1:
            raise UserError(f"--levels must be at least 1, got {self.num_levels}")

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
        return Parallelism(tp=self.tp or base.tp, ep=self.ep or base.ep, sp=self.sp or base.sp)

    @property
    def tail_requests(self) -> int:
        return self.requests // 4 if self.tail is None else self.tail

    def to_dict(self) -> dict:
        d = asdict(self)
        d["resolved"] = {"model": self.model_name, "parallelism": asdict(self.parallelism),
                         "tail": self.tail_requests}
        return d
