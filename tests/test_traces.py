"""Trace readers: the three formats, and one-line errors for malformed input."""

import statistics
from pathlib import Path

import numpy as np
import pytest

from mfsched.errors import UserError
from mfsched.workload.requests import Request, ideal_reuse_ratio, poisson_retime
from mfsched.workload.traces import read_trace

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
