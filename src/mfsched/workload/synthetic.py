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

Sessions take time: a session's next turn cannot come before its answer was generated and its
user (or tool) took its think time. Given the stream's request rate and the model's decode time
per token (:class:`SessionTiming`), a session is ready again that many requests later; each
request continues the session that became ready first, or opens a new one. The number of open
sessions therefore follows the rate (Little's law), where a fixed pool would send a turn
before its predecessor's answer exists once the rate is high (at the paper's cluster scale,
64 sessions at 700 requests/s would see a turn every 90 ms).

Prompts are sequences of content segments; block hashes are interned prefix chains over
``block_tokens``-token blocks, so equal ids mean equal prefixes exactly as in the trace
formats. ``tests/test_synthetic.py`` checks that the presets hit the target statistics.
All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from ..registry import Registry
from .requests import Request

__all__ = ["WORKLOADS", "AgentPreset", "ConvPreset", "SessionTiming", "generate",
           "history_requests"]

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
    """Multi-turn chat. Defaults calibrated to mean ~2k tokens and ~50% reuse.

    ``think_time_s``: from a chat answer's end to the user's next message: 7.2 s, the median
    of 42k inter-turn gaps in Bailian's production chat trace (qwen3-max, 2026; public analysis
    in the gahow/agentic-kvc repository, figure f3a), in line with Wang et al. (arXiv
    2506.02634): in Bailian's to-C trace most KV reuse happens within minutes.
    """

    system_prompts: int = 16
    system_prompt_zipf: float = 1.0
    system_tokens_mean: float = 220
    message_tokens_mean: float = 880
    output_tokens_mean: float = 250
    mean_turns: float = 1.8
    think_time_s: float = 7.2
    block_tokens: int = 16


@dataclass(frozen=True, slots=True)
class AgentPreset:
    """Agent/tool workload with hot prefixes. Defaults: mean ~1k tokens, ~65% reuse.

    ``think_time_s``: from a step's answer to the next step (the tool call): 1.6 s, the median
    of 783k inter-turn gaps in Bailian's production agentic trace (Qwen3-Coder; same analysis
    as the conv preset's), in line with Wang et al.: in Bailian's to-B trace 80% of reuses
    happen within 10 s.
    """

    templates: int = 48
    template_zipf: float = 1.3
    template_tokens_mean: float = 440
    task_tokens_mean: float = 440
    step_tokens_mean: float = 140
    output_tokens_mean: float = 60
    mean_steps: float = 1.8
    think_time_s: float = 1.6
    block_tokens: int = 16


@dataclass(frozen=True, slots=True)
class SessionTiming:
    """How fast a stream's sessions can proceed: a session's next turn comes after its answer
    (output tokens x ``seconds_per_output_token``) and the preset's think time; at
    ``rate_per_s`` requests per second that is a number of requests later in the stream."""

    rate_per_s: float
    seconds_per_output_token: float

    def __post_init__(self) -> None:
        if not (self.rate_per_s > 0 and self.seconds_per_output_token >= 0):
            raise ValueError("need a positive rate and a non-negative time per output token")

    def gap_requests(self, output_tokens: int, think_time_s: float) -> int:
        gap_s = output_tokens * self.seconds_per_output_token + think_time_s
        return max(1, round(self.rate_per_s * gap_s))


WORKLOADS: Registry[object] = Registry("workload")
WORKLOADS.add("conv", ConvPreset(), "multi-turn conversation, ~2k tokens, ~50% reuse (QwenA)")
WORKLOADS.add("agent", AgentPreset(), "agent/tool calls, ~1k tokens, ~65% reuse, hot prefixes "
              "(QwenB)")
# Calibrated by tests/test_synthetic.py against the paper's Mooncake statistics (§6.1); think
# times are the presets' (Bailian's chat and agent medians).
WORKLOADS.add("mooncake-conv",
              ConvPreset(system_tokens_mean=800, message_tokens_mean=8500,
                         output_tokens_mean=350, mean_turns=1.6, block_tokens=512),
              "long conversations, ~15k tokens, ~40% reuse, 512-token blocks (Mooncake conv)")
WORKLOADS.add("mooncake-agent",
              AgentPreset(template_tokens_mean=3900, task_tokens_mean=3800,
                          step_tokens_mean=1100, output_tokens_mean=180, block_tokens=512),
              "tool-agent sessions, ~9k tokens, ~65% reuse, 512-token blocks (Mooncake agent)")


class _Ids:
    def __init__(self) -> None:
        self.next = 0

    def new(self) -> int:
        self.next += 1
        return self.next


def _tokens(prompt: list[Segment]) -> int:
    return sum(t for _, t in prompt)


def _fit(prompt: list[Segment], output: int, limit: int | None) -> tuple[list[Segment], int]:
    """The request cut to the model's context window: a first prompt longer than the window
    loses the end of its last segment (a client truncating its message), the output stops
    where the window ends (the engine's length limit). A no-op for requests that fit."""
    if limit is None or _tokens(prompt) + output <= limit:
        return prompt, output
    prompt = list(prompt)
    excess = _tokens(prompt) - (limit - 1)
    while excess > 0:
        seg_id, seg_tokens = prompt.pop()
        if seg_tokens > excess:
            prompt.append((seg_id, seg_tokens - excess))
        excess -= seg_tokens
    return prompt, min(output, limit - _tokens(prompt))


def _sessions(n: int, rng: np.random.Generator, timing: SessionTiming, think_time_s: float,
              mean_turns: float, output_mean: float, output_sigma: float, first, follow,
              limit: int | None = None):
    """The session machinery shared by both presets: each request continues the session that
    became ready earliest, or opens a new one (``first()``: its first prompt) if none is
    ready; ``follow(prompt, output)`` makes the session's next prompt. A session ends after a
    turn with probability 1 / ``mean_turns``; otherwise it is ready again
    :meth:`SessionTiming.gap_requests` later. So the number of open sessions follows from the
    rate (Little's law) and no turn arrives before its predecessor's answer could exist.

    ``limit`` is the model's context window in tokens: a session also ends when its next
    prompt would leave no room for an answer (as a chat client must start over), and a first
    prompt is cut to fit (:func:`_fit`). Random draws do not depend on it, so a stream whose
    requests all fit is the same with and without it."""
    ready: list[tuple[int, int, list[Segment]]] = []
    p_end = 1.0 / mean_turns
    for i in range(n):
        prompt = heapq.heappop(ready)[2] if ready and ready[0][0] <= i else first()
        output = _lognormal_int(rng, output_mean, output_sigma, 1)
        prompt, output = _fit(prompt, output, limit)
        yield prompt, output
        if rng.random() >= p_end:
            gap = timing.gap_requests(output, think_time_s)
            nxt = follow(prompt, output)
            if limit is None or _tokens(nxt) < limit:
                heapq.heappush(ready, (i + gap, i, nxt))


def _conv_stream(p: ConvPreset, n: int, rng: np.random.Generator, timing: SessionTiming,
                 limit: int | None):
    ids = _Ids()
    sys_ids = [ids.new() for _ in range(p.system_prompts)]
    sys_len = [_lognormal_int(rng, p.system_tokens_mean, 0.4, 32) for _ in sys_ids]
    sys_w = _zipf_weights(p.system_prompts, p.system_prompt_zipf)

    def message() -> Segment:
        return ids.new(), _lognormal_int(rng, p.message_tokens_mean, 0.8, 8)

    def first() -> list[Segment]:
        k = int(rng.choice(p.system_prompts, p=sys_w))
        return [(sys_ids[k], sys_len[k]), message()]

    def follow(prompt: list[Segment], output: int) -> list[Segment]:
        return [*prompt, (ids.new(), output), message()]

    return _sessions(n, rng, timing, p.think_time_s, p.mean_turns, p.output_tokens_mean, 0.7,
                     first, follow, limit)


def _agent_stream(p: AgentPreset, n: int, rng: np.random.Generator, timing: SessionTiming,
                  limit: int | None):
    ids = _Ids()
    tpl_ids = [ids.new() for _ in range(p.templates)]
    tpl_len = [_lognormal_int(rng, p.template_tokens_mean, 0.5, 64) for _ in tpl_ids]
    tpl_w = _zipf_weights(p.templates, p.template_zipf)

    def first() -> list[Segment]:
        k = int(rng.choice(p.templates, p=tpl_w))
        return [(tpl_ids[k], tpl_len[k]),
                (ids.new(), _lognormal_int(rng, p.task_tokens_mean, 0.6, 8))]

    def follow(prompt: list[Segment], output: int) -> list[Segment]:
        step = _lognormal_int(rng, p.step_tokens_mean, 0.6, 8)
        return [*prompt, (ids.new(), output), (ids.new(), step)]

    return _sessions(n, rng, timing, p.think_time_s, p.mean_steps, p.output_tokens_mean, 0.6,
                     first, follow, limit)


# Sessions span several gaps; five mean gaps of history bring the window's ideal reuse within
# a point of its steady state (measured for both presets at 16 and 700 requests/s).
_HISTORY_GAPS = 5


def history_requests(name: str, timing: SessionTiming) -> int:
    """How many requests of a stream's past to serve (into the prefix caches only) before it
    starts, so that its sessions are as far along as in a service that has been running:
    five mean session gaps."""
    p = WORKLOADS.get(name)
    return _HISTORY_GAPS * timing.gap_requests(round(p.output_tokens_mean), p.think_time_s)


def generate(name: str, n: int, rng: np.random.Generator, timing: SessionTiming,
             max_request_tokens: int | None = None) -> list[Request]:
    """``n`` requests of a registered preset, arrival times all 0 (retime them afterwards at
    ``timing.rate_per_s``, which the session structure assumes). ``max_request_tokens``: the
    model's context window, which every prompt plus its output then fits."""
    preset = WORKLOADS.get(name)
    stream = _conv_stream if isinstance(preset, ConvPreset) else _agent_stream
    interner = _BlockInterner()
    out = []
    for i, (segments, output) in enumerate(stream(preset, n, rng, timing,
                                                  max_request_tokens)):
        tokens = sum(t for _, t in segments)
        hashes = interner.hashes(segments, preset.block_tokens)
        out.append(Request(i, 0.0, tokens, output, hashes, preset.block_tokens))
    return out
