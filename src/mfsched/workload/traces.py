"""Readers for public request-trace formats.

* ``mooncake`` — JSONL, ``timestamp`` in ms, ``input_length``, ``output_length``, ``hash_ids``
  (one id per 512-token block; equal ids = reusable prefix KV). kvcache-ai/Mooncake traces.
* ``qwen`` — JSONL as in alibaba-edu/qwen-bailian-usagetraces-anon: ``chat_id``,
  ``parent_chat_id``, ``timestamp`` in s, ``input_length``, ``output_length``, ``type``,
  ``turn``, ``hash_ids`` (16-token blocks).
* ``azure`` — CSV of Azure/AzurePublicDataset 2023: ``TIMESTAMP``, ``ContextTokens``,
  ``GeneratedTokens``; no reuse information (requests get no block hashes).

Each reader returns requests sorted by arrival time (stable), with arrival times relative to
the first request, and raises :class:`~mfsched.errors.UserError` naming the file, the line and
the reason for anything malformed. Callers: :mod:`mfsched.workload.sources`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from ..errors import UserError
from ..registry import Registry
from .requests import Request

__all__ = ["TRACE_FORMATS", "read_trace"]

TraceReader = Callable[[Path, int | None], list[Request]]
TRACE_FORMATS: Registry[TraceReader] = Registry("trace format")


def read_trace(path: str | Path, fmt: str, limit: int | None = None) -> list[Request]:
    """Read at most ``limit`` requests (the first ones in file order) from a trace."""
    p = Path(path)
    reader = TRACE_FORMATS.get(fmt)
    if not p.is_file():
        raise UserError("no such trace file", where=str(p))
    requests = reader(p, limit)
    if not requests:
        raise UserError("the trace has no requests", where=str(p))
    requests.sort(key=lambda r: r.arrival_s)
    t0 = requests[0].arrival_s
    return [
        Request(i, r.arrival_s - t0, r.input_tokens, r.output_tokens, r.block_hashes,
                r.block_tokens)
        for i, r in enumerate(requests)
    ]


def _jsonl_rows(path: Path, limit: int | None) -> Iterator[tuple[int, dict]]:
    with path.open("r", encoding="utf-8") as f:
        count = 0
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if limit is not None and count >= limit:
                return
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"not valid JSON ({e.msg})", where=str(path), line=lineno) from None
            if not isinstance(row, dict):
                raise UserError("expected a JSON object", where=str(path), line=lineno)
            count += 1
            yield lineno, row


def _field(row: dict, name: str, kind: type, path: Path, lineno: int):
    if name not in row:
        raise UserError(f"missing field {name!r}", where=str(path), line=lineno)
    value = row[name]
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserError(
            f"field {name!r} should be {kind.__name__}, got {value!r}", where=str(path),
            line=lineno)
    if kind in (int, float) and (value < 0 or (kind is float and not math.isfinite(value))):
        raise UserError(f"field {name!r} must be a finite non-negative number, got {value!r}",
                        where=str(path), line=lineno)
    return value


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


def _read_jsonl(path: Path, limit: int | None, seconds_per_unit: float, block_tokens: int,
                check=None) -> list[Request]:
    """The JSONL formats: timestamp, input_length, output_length, hash_ids per line."""
    out = []
    for lineno, row in _jsonl_rows(path, limit):
        ts = _field(row, "timestamp", float, path, lineno)
        inp, outp = _positive_tokens(row, path, lineno)
        if check is not None:
            check(row, path, lineno)
        hashes = _hashes(row, path, lineno, inp, block_tokens)
        out.append(Request(len(out), ts * seconds_per_unit, inp, outp, hashes, block_tokens))
    return out


@TRACE_FORMATS.register("mooncake", help="Mooncake JSONL (timestamp ms, 512-token hash_ids)")
def read_mooncake(path: Path, limit: int | None = None) -> list[Request]:
    return _read_jsonl(path, limit, 1e-3, 512)


def _check_qwen(row: dict, path: Path, lineno: int) -> None:
    _field(row, "chat_id", int, path, lineno)
    _field(row, "turn", int, path, lineno)
    parent = row.get("parent_chat_id")
    if not isinstance(parent, int) or isinstance(parent, bool):
        # -1 marks the first turn of a conversation, so negative ids are allowed here.
        raise UserError("field 'parent_chat_id' should be an integer", where=str(path),
                        line=lineno)


@TRACE_FORMATS.register("qwen", help="Qwen-Bailian JSONL (timestamp s, 16-token hash_ids)")
def read_qwen(path: Path, limit: int | None = None) -> list[Request]:
    return _read_jsonl(path, limit, 1.0, 16, _check_qwen)


@TRACE_FORMATS.register("azure", help="Azure LLM inference 2023 CSV (no reuse information)")
def read_azure(path: Path, limit: int | None = None) -> list[Request]:
    out = []
    with path.open("r", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        want = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
        if header is None or [h.strip() for h in header] != want:
            raise UserError(f"expected header {','.join(want)}, got {header!r}",
                            where=str(path), line=1)
        for row in reader:
            lineno = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if limit is not None and len(out) >= limit:
                break
            if len(row) != 3:
                raise UserError(f"expected 3 columns, got {len(row)}", where=str(path),
                                line=lineno)
            try:
                ts = datetime.fromisoformat(row[0].strip()).timestamp()
            except ValueError:
                raise UserError(f"bad TIMESTAMP {row[0]!r}", where=str(path),
                                line=lineno) from None
            try:
                inp, outp = int(row[1]), int(row[2])
            except ValueError:
                raise UserError("token counts must be integers", where=str(path),
                                line=lineno) from None
            if inp <= 0 or outp < 0:
                raise UserError("ContextTokens must be >= 1 and GeneratedTokens >= 0",
                                where=str(path), line=lineno)
            out.append(Request(len(out), ts, inp, outp, (), 16))
    return out
