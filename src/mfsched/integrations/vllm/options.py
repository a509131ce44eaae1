"""The MFS connector's settings: ``kv_connector_extra_config["mfs"]``, validated once.

The connector reads them in both roles (scheduler and worker) through :func:`parse_options`, so
a typo fails at engine start-up in both processes with a one-line error naming the known keys.
Pure: no vLLM import, so the settings are unit-tested without vLLM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ...errors import UserError

__all__ = ["GATE_DAEMON_PREFIX", "MFSOptions", "parse_options"]

GATE_DAEMON_PREFIX = "daemon:"


@dataclass(frozen=True, slots=True)
class MFSOptions:
    """What the connector needs besides vLLM's own config.

    * ``policy``, ``num_levels``, ``policy_options``: which scheduler of the policy registry to
      run (``make_policy(policy, num_levels, policy_options)``); ``"mfs"`` by default.
    * ``default_slo_s``: the TTFT budget of a request that names none (see
      :func:`mfsched.integrations.vllm.planner.request_deadline_s` for the order of sources).
    * ``slo_by_priority_s``: vLLM request ``priority`` -> TTFT budget, for deployments that
      express SLO classes as priorities.
    * ``gate``: ``"inprocess"`` or ``"daemon:<unix socket path>"`` (the data-plane host daemon).
    * ``link_gbps``: capacity of one NIC lane, used for the MLU and the feasibility check.
    * ``layer_compute_s_per_token``: estimate of one layer's compute per scheduled token, for the
      feasibility check (0: compute is not counted, only the network).
    * ``kv_bytes_per_token_per_layer``: override of the KV size per token, per layer and per TP
      rank (0: derived from the model config: 2 x KV heads x head size x cache dtype bytes).
    * ``trace_path``: JSONL file that records every decision of both roles (None: off).
    * ``kv_staging_bytes``, ``kv_ttl_s``, ``decode_server`` (``MFSKVConnector`` only): the most
      KV bytes a prefill worker keeps staged for its daemon (a save beyond it fails with
      :class:`~mfsched.dataplane.kvstore.KVStoreFull`); how long a staged flow may wait for its
      receiver before it is cancelled and freed; the decode host's daemon server number when
      ``kv_transfer_params`` names none (``mfs_decode_server``; -1: it must name one).
    """

    policy: str = "mfs"
    num_levels: int = 8
    policy_options: tuple[tuple[str, str], ...] = ()
    default_slo_s: float = 1.0
    slo_by_priority_s: tuple[tuple[int, float], ...] = ()
    gate: str = "inprocess"
    link_gbps: float = 100.0
    layer_compute_s_per_token: float = 0.0
    kv_bytes_per_token_per_layer: int = 0
    trace_path: str | None = None
    kv_staging_bytes: int = 1 << 30
    kv_ttl_s: float = 60.0
    decode_server: int = -1

    def __post_init__(self) -> None:
        if self.num_levels < 1:
            raise ValueError("num_levels must be at least 1")
        if not self.default_slo_s > 0:
            raise ValueError("default_slo_s must be > 0")
        if any(not slo > 0 for _, slo in self.slo_by_priority_s):
            raise ValueError("every slo_by_priority_s value must be > 0")
        if not self.link_gbps > 0:
            raise ValueError("link_gbps must be > 0")
        if self.layer_compute_s_per_token < 0 or self.kv_bytes_per_token_per_layer < 0:
            raise ValueError("layer_compute_s_per_token and kv_bytes_per_token_per_layer "
                             "must be >= 0")
        if self.kv_staging_bytes < 1 or not self.kv_ttl_s > 0 or self.decode_server < -1:
            raise ValueError("kv_staging_bytes must be >= 1, kv_ttl_s > 0, decode_server >= -1")
        daemon = self.gate.startswith(GATE_DAEMON_PREFIX) and \
            len(self.gate) > len(GATE_DAEMON_PREFIX)
        if self.gate != "inprocess" and not daemon:
            raise ValueError(f"gate must be 'inprocess' or '{GATE_DAEMON_PREFIX}<socket path>', "
                             f"not {self.gate!r}")

    @property
    def link_bps(self) -> float:
        return self.link_gbps * 1e9

    def slo_for_priority_s(self, priority: int) -> float | None:
        for prio, slo in self.slo_by_priority_s:
            if prio == priority:
                return slo
        return None


def parse_options(raw: Mapping[str, Any] | None) -> MFSOptions:
    """Build :class:`MFSOptions` from the JSON object under ``kv_connector_extra_config["mfs"]``.

    ``policy_options`` is an object of text values, ``slo_by_priority_s`` an object whose keys
    are priorities (JSON keys are text). Unknown keys and bad values raise :class:`UserError`.
    """
    raw = dict(raw or {})
    known = {f.name for f in fields(MFSOptions)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(f"unknown MFS connector option(s) {unknown}; known: {sorted(known)}")
    if "policy_options" in raw:
        raw["policy_options"] = tuple(sorted(
            (str(k), str(v)) for k, v in dict(raw["policy_options"]).items()))
    if "slo_by_priority_s" in raw:
        raw["slo_by_priority_s"] = tuple(sorted(
            (int(k), float(v)) for k, v in dict(raw["slo_by_priority_s"]).items()))
    try:
        return MFSOptions(**raw)
    except (TypeError, ValueError) as e:
        raise UserError(f"MFS connector options: {e}") from None
