"""Trace readers: the three formats, and one-line errors for malformed input."""

import json
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mfsched.errors import UserError
from mfsched.workload.requests import Request, ideal_reuse_ratio, poisson_retime
from mfsched.workload.traces import TraceLimits, load_trace, read_trace

FIX = Path(__file__).parent / "fixtures"


def test_mooncake_fixture():
    reqs = read_trace(FIX / "mooncake_head20.jsonl", "mooncake")
    assert len(reqs) == 20
    assert reqs[0].input_tokens == 40160 and reqs[0].block_tokens == 512
    assert len(reqs[0].block_hashes) == 79
    assert reqs[2].arrival_s == pytest.approx(0.040)  # 40 ms
    assert [r.request_id for r in reqs] == list(range(20))


def test_mooncake_limit():
    assert len(read_trace(FIX / "mooncake_head20.jsonl", "mooncake", limit=5)) == 5


def test_qwen_fixture_reuse():
    reqs = read_trace(FIX / "qwen_tiny.jsonl", "qwen")
    assert [r.input_tokens for r in reqs] == [40, 70, 33, 100, 16]
    assert reqs[1].arrival_s == pytest.approx(0.25)
    assert reqs[0].block_tokens == 16
    # request 2 reuses 2 blocks of request 1 (32 tokens of 70), etc.
    assert 0 < ideal_reuse_ratio(reqs) < 1


def test_azure_fixture():
    reqs = read_trace(FIX / "azure_conv_head20.csv", "azure")
    assert len(reqs) == 20
    assert reqs[0].input_tokens == 374 and reqs[0].output_tokens == 44
    assert reqs[1].arrival_s == pytest.approx(4.314579, abs=1e-5)
    assert all(r.block_hashes == () for r in reqs)


@pytest.mark.parametrize("fmt,content,line,reason", [
    ("mooncake", '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n'
                 "{not json}\n", 2, "not valid JSON"),
    ("mooncake", '{"timestamp": 0, "output_length": 1, "hash_ids": [1]}\n', 1,
     "missing field 'input_length'"),
    ("mooncake", '{"timestamp": -5, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n',
     1, "non-negative"),
    ("mooncake", '{"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [1]}\n',
     1, "expected 2"),
    ("mooncake", '{"timestamp": 0, "input_length": "x", "output_length": 1, "hash_ids": []}\n',
     1, "should be int"),
    ("qwen", '{"chat_id": 1, "timestamp": 0, "input_length": 16, "output_length": 1, '
             '"turn": 1, "hash_ids": [5]}\n', 1, "parent_chat_id"),
    ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,12,3\n"
              "2023-11-16 18:15:47.00,abc,3\n", 3, "integers"),
    ("azure", "TS,Ctx,Gen\n", 1, "expected header"),
])
def test_malformed_lines_name_file_and_line(tmp_path, fmt, content, line, reason):
    path = tmp_path / "bad.trace"
    path.write_text(content)
    with pytest.raises(UserError) as info:
        read_trace(path, fmt)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{line}: ") and reason in msg
    assert "\n" not in msg


def test_empty_trace_and_missing_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="no requests"):
        read_trace(empty, "mooncake")
    with pytest.raises(UserError, match="no such trace file"):
        read_trace(tmp_path / "nope.jsonl", "mooncake")
    with pytest.raises(UserError, match="unknown trace format"):
        read_trace(empty, "csv")


def test_poisson_retime_rate_and_order():
    reqs = [Request(i, 0.0, 10, 1) for i in range(20000)]
    out = poisson_retime(reqs, 50.0, np.random.default_rng(1))
    gaps = np.diff([r.arrival_s for r in out])
    assert (gaps >= 0).all()
    assert statistics.mean(gaps) == pytest.approx(1 / 50, rel=0.03)
    assert [r.request_id for r in out] == list(range(20000))


# --- issue 14: what the model can serve, and input that is not a trace at all ----------------


def _mooncake(path, *rows):
    path.write_text("".join(json.dumps({"timestamp": ts, "input_length": n, "output_length": o,
                                        "hash_ids": list(range(-(-n // 512)))}) + "\n"
                            for ts, n, o in rows))
    return path


def test_requests_longer_than_the_context_are_refused_or_dropped(tmp_path):
    path = _mooncake(tmp_path / "t.jsonl", (0, 100, 10), (1, 32000, 769), (2, 32000, 768),
                     (3, 50, 5))
    limits = TraceLimits(32768, "mixtral-8x7b")
    with pytest.raises(UserError) as info:
        load_trace(path, "mooncake", limits=limits)
    assert str(info.value).startswith(f"{path}:2: 32000 + 769 tokens (prompt + output) do not "
                                      f"fit mixtral-8x7b's context window of 32768 tokens")
    got = load_trace(path, "mooncake", limits=replace(limits, drop_longer=True))
    assert got.dropped_lines == (2,)
    assert [r.input_tokens for r in got.requests] == [100, 32000, 50]  # 32000 + 768 fits
    # the limit counts kept requests: the dropped one does not use up one of the three
    assert len(load_trace(path, "mooncake", 3, replace(limits, drop_longer=True)).requests) == 3


def test_a_trace_whose_every_request_is_too_long(tmp_path):
    path = _mooncake(tmp_path / "t.jsonl", (0, 40000, 1))
    with pytest.raises(UserError, match="the trace has no requests within m's context window"):
        load_trace(path, "mooncake", limits=TraceLimits(32768, "m", drop_longer=True))


def test_the_span_of_kept_timestamps_is_checked_with_its_lines(tmp_path):
    path = _mooncake(tmp_path / "t.jsonl", (5, 10, 1), (1e13, 10, 1), (0, 10, 1))
    with pytest.raises(UserError) as info:
        load_trace(path, "mooncake", limits=TraceLimits(max_span_s=4e6))
    assert str(info.value).startswith(f"{path}:2: the timestamps span 1e+10 s (line 3 to "
                                      f"line 2), more than the 4e+06 s")


@pytest.mark.parametrize("fmt,data,line,reason", [
    ("mooncake", bytes(range(128, 256)), 1, "not UTF-8 text (byte 0x80 at column 1)"),
    ("mooncake", b'{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [1]}\n'
                 b"\xff\n", 2, "not UTF-8 text"),
    ("mooncake", b"[" * 100000 + b"\n", 1, "nested too deeply"),
    ("mooncake", b'{"timestamp": ' + b"1" * 5000 + b"}\n", 1, "not a usable JSON object"),
    ("mooncake", b'{"timestamp": 1' + b"0" * 400 + b', "input_length": 1, "output_length": 1,'
                 b' "hash_ids": [1]}\n', 1, "field 'timestamp' is too large a number"),
    ("mooncake", b'{"timestamp": NaN, "input_length": 1, "output_length": 1, "hash_ids": [1]}\n',
     1, "finite non-negative"),
    ("azure", b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,1\x00,3\n", 2,
     "token counts must be integers"),
    ("azure", b'TIMESTAMP,ContextTokens,GeneratedTokens\n"' + b"9" * 200000 + b'",1,3\n', 2,
     "not valid CSV (field larger than field limit"),
    ("azure", b"TIMESTAMP,ContextTokens,GeneratedTokens\n99999-01-01,1,3\n", 2,
     "bad TIMESTAMP"),
])
def test_noise_and_extreme_numbers_are_one_line_errors(tmp_path, fmt, data, line, reason):
    path = tmp_path / "bad.trace"
    path.write_bytes(data)
    with pytest.raises(UserError) as info:
        read_trace(path, fmt)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{line}: ") and reason in msg and "\n" not in msg


def test_a_directory_is_not_a_trace(tmp_path):
    with pytest.raises(UserError, match="is a directory, not a trace file"):
        read_trace(tmp_path, "mooncake")


def test_synthetic_requests_fit_the_context_and_streams_that_fit_are_unchanged():
    from mfsched.workload.synthetic import SessionTiming, generate

    timing = SessionTiming(16, 0.02)
    free = generate("conv", 3000, np.random.default_rng(0), timing)
    assert max(r.input_tokens + r.output_tokens for r in free) > 8192  # the limit matters
    capped = generate("conv", 3000, np.random.default_rng(0), timing, 8192)
    assert max(r.input_tokens + r.output_tokens for r in capped) <= 8192
    assert generate("conv", 3000, np.random.default_rng(0), timing, 32768) == free
