"""Readers for public request-trace formats.

* ``mooncake`` — JSONL, ``timestamp`` in ms, ``input_length``, ``output_length``, ``hash_ids``
  (one id per 512-token block; equal ids = reusable prefix KV). kvcache-ai/Mooncake traces.
* ``qwen`` — JSONL as in alibaba-edu/qwen-bailian-usagetraces-anon: ``chat_id``,
  ``parent_chat_id``, ``timestamp`` in s, ``input_length``, ``output_length``, ``type``,
  ``turn``, ``hash_ids`` (16-token blocks).
* ``azure`` — CSV of Azure/AzurePublicDataset 2023: ``TIMESTAMP``, ``ContextTokens``,
  ``GeneratedTokens``; no reuse information (requests get no block hashes).

A reader yields ``(line, request)`` for every record of the file and raises
:class:`~mfsched.errors.UserError` naming the file, the line and the reason for anything
malformed, binary noise and extreme numbers included. :func:`load_trace` takes the first
records, checks each against what the model can serve (:class:`TraceLimits`: the context
window, and with the trace's own timestamps a span the simulator's clock resolves) and returns
them sorted by arrival time (stable), times relative to the first request; :func:`read_trace`
is the same without limits. Callers: :mod:`mfsched.experiments.runner` (the request stream),
the tests.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..errors import UserError
from ..registry import Registry
from .requests import Request

__all__ = ["TRACE_FORMATS", "LoadedTrace", "TraceLimits", "load_trace", "read_trace"]

Record = tuple[int, Request]  # (line number, request)
# (input tokens, output tokens, line) -> keep the request? (raises to refuse it)
LengthCheck = Callable[[int, int, int], bool]
TraceReader = Callable[[Path, LengthCheck], Iterator[Record]]
TRACE_FORMATS: Registry[TraceReader] = Registry("trace format")


@dataclass(frozen=True, slots=True)
class TraceLimits:
    """What the run can serve. ``max_request_tokens``: the model's context window (prompt plus
    output must fit; ``model`` names it in messages); longer requests are refused, or dropped
    with ``drop_longer`` as a serving engine rejects them. ``max_span_s``: the largest span of
    arrival times (only when the trace's own timestamps are replayed)."""

    max_request_tokens: int | None = None
    model: str = "the model"
    drop_longer: bool = False
    max_span_s: float | None = None


@dataclass(frozen=True, slots=True)
class LoadedTrace:
    """The requests (sorted, relative times, ids 0..n-1) and the lines of dropped requests."""

    requests: list[Request]
    dropped_lines: tuple[int, ...] = ()


def read_trace(path: str | Path, fmt: str, limit: int | None = None) -> list[Request]:
    """Read at most ``limit`` requests (the first ones in file order) from a trace."""
    return load_trace(path, fmt, limit).requests


def load_trace(path: str | Path, fmt: str, limit: int | None = None,
               limits: TraceLimits = TraceLimits()) -> LoadedTrace:
    """The first ``limit`` requests of a trace that pass ``limits``."""
    p = Path(path)
    reader = TRACE_FORMATS.get(fmt)
    if p.is_dir():
        raise UserError("is a directory, not a trace file", where=str(p))
    if not p.is_file():
        raise UserError("no such trace file", where=str(p))
    dropped: list[int] = []

    def keep(input_tokens: int, output_tokens: int, lineno: int) -> bool:
        if _fits(input_tokens, output_tokens, limits, p, lineno):
            return True
        dropped.append(lineno)
        return False

    records: list[Record] = []
    stream = reader(p, keep)
    while limit is None or len(records) < limit:
        record = next(stream, None)
        if record is None:
            break
        records.append(record)
    if not records:
        raise UserError("the trace has no requests" + (
            f" within {limits.model}'s context window" if dropped else ""), where=str(p))
    records.sort(key=lambda rec: rec[1].arrival_s)
    if limits.max_span_s is not None:
        _check_span(records, limits.max_span_s, p)
    t0 = records[0][1].arrival_s
    return LoadedTrace([
        Request(i, r.arrival_s - t0, r.input_tokens, r.output_tokens, r.block_hashes,
                r.block_tokens)
        for i, (_, r) in enumerate(records)
    ], tuple(dropped))


def _fits(input_tokens: int, output_tokens: int, limits: TraceLimits, path: Path,
          lineno: int) -> bool:
    cap = limits.max_request_tokens
    if cap is None or input_tokens + output_tokens <= cap:
        return True
    if limits.drop_longer:
        return False
    raise UserError(f"{input_tokens} + {output_tokens} tokens (prompt + output) do not "
                    f"fit {limits.model}'s context window of {cap} tokens; pick a model with "
                    f"a longer context, or drop such requests with --over-context drop",
                    where=str(path), line=lineno)


def _check_span(records: list[Record], max_span_s: float, path: Path) -> None:
    (first_line, first), (last_line, last) = records[0], records[-1]
    span = last.arrival_s - first.arrival_s
    if span > max_span_s:
        raise UserError(f"the timestamps span {span:.4g} s (line {first_line} to line "
                        f"{last_line}), more than the {max_span_s:.4g} s the simulator resolves "
                        f"in nanosecond steps; are times mixed up (e.g. 0 and epoch ms)? "
                        f"Without --keep-timestamps arrivals are Poisson at --rate",
                        where=str(path), line=last_line)


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file; binary noise is a one-line error, not a crash."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"not UTF-8 text (byte {raw[e.start]:#04x} at column "
                                f"{e.start + 1}); is this a trace file?", where=str(path),
                                line=lineno) from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    for lineno, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"not valid JSON ({e.msg})", where=str(path), line=lineno) from None
        except (ValueError, RecursionError) as e:  # 5000-digit integers, deep nesting
            reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
            raise UserError(f"not a usable JSON object ({reason})", where=str(path),
                            line=lineno) from None
        if not isinstance(row, dict):
            raise UserError("expected a JSON object", where=str(path), line=lineno)
        yield lineno, row


def _field(row: dict, name: str, kind: type, path: Path, lineno: int):
    if name not in row:
        raise UserError(f"missing field {name!r}", where=str(path), line=lineno)
    value = row[name]
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # may overflow: ints beyond 1e308
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(
            f"field {name!r} should be {kind.__name__}, got {_short(value)}", where=str(path),
            line=lineno)
    if kind in (int, float) and (value < 0 or (kind is float and not math.isfinite(value))):
        raise UserError(f"field {name!r} must be a finite non-negative number, got "
                        f"{_short(value)}", where=str(path), line=lineno)
    return value


def _float_field(row: dict, name: str, path: Path, lineno: int) -> float:
    try:
        return _field(row, name, float, path, lineno)
    except OverflowError:
        raise UserError(f"field {name!r} is too large a number", where=str(path),
                        line=lineno) from None


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _hashes(row: dict, path: Path, lineno: int, input_tokens: int, block_tokens: int) -> tuple:
    ids = _field(row, "hash_ids", list, path, lineno)
    if not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
        raise UserError("'hash_ids' must be a list of integers", where=str(path), line=lineno)
    expected = math.ceil(input_tokens / block_tokens)
    if len(ids) != expected:
        raise UserError(
            f"{len(ids)} hash_ids for {input_tokens} tokens, expected {expected} "
            f"({block_tokens}-token blocks)", where=str(path), line=lineno)
    return tuple(ids)


def _positive_tokens(row: dict, path: Path, lineno: int) -> tuple[int, int]:
    input_tokens = _field(row, "input_length", int, path, lineno)
    output_tokens = _field(row, "output_length", int, path, lineno)
    if input_tokens == 0:
        raise UserError("'input_length' must be at least 1", where=str(path), line=lineno)
    return input_tokens, output_tokens


def _read_jsonl(path: Path, keep: LengthCheck, seconds_per_unit: float, block_tokens: int,
                check=None) -> Iterator[Record]:
    """The JSONL formats: timestamp, input_length, output_length, hash_ids per line. Hash ids
    are read after the lengths, so that a request too long for the model is refused for its
    length rather than for the ids it would need."""
    for lineno, row in _jsonl_rows(path):
        ts = _float_field(row, "timestamp", path, lineno)
        inp, outp = _positive_tokens(row, path, lineno)
        if check is not None:
            check(row, path, lineno)
        if not keep(inp, outp, lineno):
            continue
        hashes = _hashes(row, path, lineno, inp, block_tokens)
        yield lineno, Request(lineno, ts * seconds_per_unit, inp, outp, hashes, block_tokens)


@TRACE_FORMATS.register("mooncake", help="Mooncake JSONL (timestamp ms, 512-token hash_ids)")
def read_mooncake(path: Path, keep: LengthCheck) -> Iterator[Record]:
    return _read_jsonl(path, keep, 1e-3, 512)


def _check_qwen(row: dict, path: Path, lineno: int) -> None:
    _field(row, "chat_id", int, path, lineno)
    _field(row, "turn", int, path, lineno)
    parent = row.get("parent_chat_id")
    if not isinstance(parent, int) or isinstance(parent, bool):
        # -1 marks the first turn of a conversation, so negative ids are allowed here.
        raise UserError("field 'parent_chat_id' should be an integer", where=str(path),
                        line=lineno)


@TRACE_FORMATS.register("qwen", help="Qwen-Bailian JSONL (timestamp s, 16-token hash_ids)")
def read_qwen(path: Path, keep: LengthCheck) -> Iterator[Record]:
    return _read_jsonl(path, keep, 1.0, 16, _check_qwen)


_AZURE_HEADER = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]


@TRACE_FORMATS.register("azure", help="Azure LLM inference 2023 CSV (no reuse information)")
def read_azure(path: Path, keep: LengthCheck) -> Iterator[Record]:
    lines = _text_lines(path)
    numbers: list[int] = []  # the file line of each CSV line the csv module reads

    def text() -> Iterable[str]:
        for lineno, line in lines:
            numbers.append(lineno)
            yield line

    reader = csv.reader(text())
    try:
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != _AZURE_HEADER:
            raise UserError(f"expected header {','.join(_AZURE_HEADER)}, got "
                            f"{_short(header)}", where=str(path), line=1)
        for row in reader:
            lineno = numbers[-1] if numbers else 1
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 3:
                raise UserError(f"expected 3 columns, got {len(row)}", where=str(path),
                                line=lineno)
            req = _azure_request(row, path, lineno)
            if keep(req.input_tokens, req.output_tokens, lineno):
                yield lineno, req
    except csv.Error as e:
        raise UserError(f"not valid CSV ({e})", where=str(path),
                        line=numbers[-1] if numbers else 1) from None


def _azure_request(row: list[str], path: Path, lineno: int) -> Request:
    try:
        ts = datetime.fromisoformat(row[0].strip()).timestamp()
    except (ValueError, OverflowError, OSError):
        raise UserError(f"bad TIMESTAMP {_short(row[0])}", where=str(path),
                        line=lineno) from None
    try:
        inp, outp = int(row[1]), int(row[2])
    except ValueError:
        raise UserError("token counts must be integers", where=str(path),
                        line=lineno) from None
    if inp <= 0 or outp < 0:
        raise UserError("ContextTokens must be >= 1 and GeneratedTokens >= 0",
                        where=str(path), line=lineno)
    return Request(lineno, ts, inp, outp, (), 16)
