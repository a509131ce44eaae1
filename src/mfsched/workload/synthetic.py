"""Synthetic request generators that look like the paper's Qwen workloads.

The real Qwen-Bailian traces are not redistributed here, so two presets reproduce their
published shape (paper §6.1 and the trace README):

* ``conv`` (like QwenA-Conv): multi-turn conversations. Each conversation starts from one of a
  few shared system prompts and every turn re-sends the whole history plus a new message, so
  later turns reuse earlier ones. Mean prompt about 2k tokens, about 50% prompt reuse.
* ``agent`` (like QwenB-Agent): agent tasks built on tool/template prefixes whose popularity
  is Zipf-skewed (a few hot prefixes dominate, which creates "victim" prefill units), followed
  by short multi-step tool-call chains. Mean prompt about 1k tokens, about 65% reuse.

Two more presets of the same two generators stand in for the Mooncake workloads the paper runs
on Llama-3-8B with sequence parallelism (paper §6.1: about 15k and 9k tokens of context, about
40% and 65% reuse), with the Mooncake traces' 512-token hash blocks:

* ``mooncake-conv``: long conversations (documents pasted into chats), ~15k tokens, ~40% reuse.
* ``mooncake-agent``: tool-agent sessions on long tool templates, ~9k tokens, ~65% reuse.

Prompts are sequences of content segments; block hashes are interned prefix chains over
``block_tokens``-token blocks, so equal ids mean equal prefixes exactly as in the trace
formats. ``tests/test_synthetic.py`` checks that the presets hit the target statistics.
All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..registry import Registry
from .requests import Request

__all__ = ["WORKLOADS", "AgentPreset", "ConvPreset", "generate"]

Segment = tuple[int, int]  # (content id, tokens)


class _BlockInterner:
    """Maps block contents (parent block id + the segment pieces inside it) to stable ids."""

    def __init__(self) -> None:
        self._ids: dict[tuple, int] = {}

    def hashes(self, segments: list[Segment], block_tokens: int) -> tuple[int, ...]:
        out: list[int] = []
        parent = -1
        pieces: list[tuple[int, int, int]] = []
        filled = 0
        for seg_id, seg_tokens in segments:
            offset = 0
            while offset < seg_tokens:
                take = min(block_tokens - filled, seg_tokens - offset)
                pieces.append((seg_id, offset, offset + take))
                offset += take
                filled += take
                if filled == block_tokens:
                    parent = self._intern(parent, pieces)
                    out.append(parent)
                    pieces, filled = [], 0
        if pieces:
            out.append(self._intern(parent, pieces))
        return tuple(out)

    def _intern(self, parent: int, pieces: list[tuple[int, int, int]]) -> int:
        key = (parent, tuple(pieces))
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self._ids)
        return found


def _lognormal_int(rng: np.random.Generator, mean: float, sigma: float, low: int) -> int:
    """A lognormal sample with the given mean (not median), at least ``low``."""
    mu = np.log(mean) - sigma**2 / 2
    return max(low, int(rng.lognormal(mu, sigma)))


def _zipf_weights(n: int, exponent: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** exponent
    return w / w.sum()


@dataclass(frozen=True, slots=True)
class ConvPreset:
    """Multi-turn chat. Defaults calibrated to mean ~2k tokens and ~50% reuse."""

    system_prompts: int = 16
    system_prompt_zipf: float = 1.0
    system_tokens_mean: float = 220
    message_tokens_mean: float = 880
    output_tokens_mean: float = 250
    mean_turns: float = 1.8
    active_sessions: int = 64
    block_tokens: int = 16


@dataclass(frozen=True, slots=True)
class AgentPreset:
    """Agent/tool workload with hot prefixes. Defaults: mean ~1k tokens, ~65% reuse."""

    templates: int = 48
    template_zipf: float = 1.3
    template_tokens_mean: float = 440
    task_tokens_mean: float = 440
    step_tokens_mean: float = 140
    output_tokens_mean: float = 60
    mean_steps: float = 1.8
    active_tasks: int = 32
    block_tokens: int = 16


WORKLOADS: Registry[object] = Registry("workload")
WORKLOADS.add("conv", ConvPreset(), "multi-turn conversation, ~2k tokens, ~50% reuse (QwenA)")
WORKLOADS.add("agent", AgentPreset(), "agent/tool calls, ~1k tokens, ~65% reuse, hot prefixes "
              "(QwenB)")
# Calibrated by tests/test_synthetic.py against the paper's Mooncake statistics (§6.1).
WORKLOADS.add("mooncake-conv",
              ConvPreset(system_tokens_mean=800, message_tokens_mean=8800,
                         output_tokens_mean=350, mean_turns=1.65, block_tokens=512),
              "long conversations, ~15k tokens, ~40% reuse, 512-token blocks (Mooncake conv)")
WORKLOADS.add("mooncake-agent",
              AgentPreset(template_tokens_mean=4300, task_tokens_mean=3700,
                          step_tokens_mean=1100, output_tokens_mean=180, block_tokens=512),
              "tool-agent sessions, ~9k tokens, ~65% reuse, 512-token blocks (Mooncake agent)")


class _Ids:
    def __init__(self) -> None:
        self.next = 0

    def new(self) -> int:
        self.next += 1
        return self.next


def _conv_stream(p: ConvPreset, n: int, rng: np.random.Generator):
    ids = _Ids()
    sys_ids = [ids.new() for _ in range(p.system_prompts)]
    sys_len = [_lognormal_int(rng, p.system_tokens_mean, 0.4, 32) for _ in sys_ids]
    sys_w = _zipf_weights(p.system_prompts, p.system_prompt_zipf)
    p_end = 1.0 / p.mean_turns

    def new_session() -> list[Segment]:
        k = int(rng.choice(p.system_prompts, p=sys_w))
        return [(sys_ids[k], sys_len[k])]

    sessions = [new_session() for _ in range(p.active_sessions)]
    for _ in range(n):
        i = int(rng.integers(len(sessions)))
        history = sessions[i]
        prompt = [*history, (ids.new(), _lognormal_int(rng, p.message_tokens_mean, 0.8, 8))]
        output = _lognormal_int(rng, p.output_tokens_mean, 0.7, 1)
        yield prompt, output
        if rng.random() < p_end:
            sessions[i] = new_session()
        else:
            sessions[i] = [*prompt, (ids.new(), output)]


def _agent_stream(p: AgentPreset, n: int, rng: np.random.Generator):
    ids = _Ids()
    tpl_ids = [ids.new() for _ in range(p.templates)]
    tpl_len = [_lognormal_int(rng, p.template_tokens_mean, 0.5, 64) for _ in tpl_ids]
    tpl_w = _zipf_weights(p.templates, p.template_zipf)
    p_end = 1.0 / p.mean_steps

    def new_task() -> list[Segment]:
        k = int(rng.choice(p.templates, p=tpl_w))
        return [(tpl_ids[k], tpl_len[k]),
                (ids.new(), _lognormal_int(rng, p.task_tokens_mean, 0.6, 8))]

    tasks = [new_task() for _ in range(p.active_tasks)]
    for _ in range(n):
        i = int(rng.integers(len(tasks)))
        prompt = tasks[i]
        output = _lognormal_int(rng, p.output_tokens_mean, 0.6, 1)
        yield prompt, output
        if rng.random() < p_end:
            tasks[i] = new_task()
        else:
            step = _lognormal_int(rng, p.step_tokens_mean, 0.6, 8)
            tasks[i] = [*prompt, (ids.new(), output), (ids.new(), step)]


def generate(name: str, n: int, rng: np.random.Generator) -> list[Request]:
    """``n`` requests of a registered preset, arrival times all 0 (retime them afterwards)."""
    preset = WORKLOADS.get(name)
    stream = _conv_stream if isinstance(preset, ConvPreset) else _agent_stream
    interner = _BlockInterner()
    out = []
    for i, (segments, output) in enumerate(stream(preset, n, rng)):
        tokens = sum(t for _, t in segments)
        hashes = interner.hashes(segments, preset.block_tokens)
        out.append(Request(i, 0.0, tokens, output, hashes, preset.block_tokens))
    return out
