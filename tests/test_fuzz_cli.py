"""Fuzzing the command line (issue 14): random and mutated trace files and random option
combinations through the real entry point (:func:`mfsched.cli.main`, see ``cli_harness``).

Property: exit 0 with valid JSON, or exit 2 with one line and no traceback, within a wall-clock
bound. Legal values are drawn small (a few requests, one scheduler, no tiny bandwidth scale or
one-token batches), so that every legal run finishes well inside the bound even on a loaded
machine; legal runs that are merely huge are not hangs (they announce their size, and Ctrl-C
stops them: ``test_signals.py``).

Every failure found here is kept in ``fuzz_corpus/`` and replayed by
``test_corpus_case`` (the cases listed in issue 14 are there too). Set
``MFSCHED_FUZZ_EXAMPLES`` to search longer than CI does.
"""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cli_harness import run_cli

FIX = Path(__file__).parent / "fixtures"
CORPUS = Path(__file__).parent / "fuzz_corpus"
EXAMPLES = int(os.environ.get("MFSCHED_FUZZ_EXAMPLES", "12"))
BOUND_S = 150.0  # wall clock per command; legal runs here take 1-10 s on a busy 2-core box

FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# --- trace files --------------------------------------------------------------------------------

WILD = st.one_of(
    st.integers(-5, 70000),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 10**30, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e13, 1.7e12, 1e308, -1e308, 5e-324]),
    st.text(max_size=4), st.none(), st.booleans(), st.lists(st.integers(0, 3), max_size=3))


@st.composite
def jsonl_record(draw, block_tokens: int, qwen: bool) -> dict:
    """Mostly well-formed records (so that runs happen), with fields dropped or made wild."""
    tokens = draw(st.integers(1, 40000))
    rec = {"timestamp": draw(st.floats(0, 1e7)), "input_length": tokens,
           "output_length": draw(st.integers(0, 3000)),
           "hash_ids": list(range(math.ceil(tokens / block_tokens)))}
    if qwen:
        rec.update(chat_id=draw(st.integers(0, 99)), parent_chat_id=draw(st.integers(-1, 99)),
                   turn=draw(st.integers(1, 5)), type="text")
    damaged = draw(st.integers(0, 3)) == 0  # one record in four
    for key in draw(st.lists(st.sampled_from(sorted(rec)), min_size=int(damaged),
                             max_size=2 * damaged, unique=True)):
        if draw(st.booleans()):
            del rec[key]
        else:
            rec[key] = draw(WILD)
    return rec


@st.composite
def jsonl_trace(draw) -> tuple[bytes, str]:
    fmt = draw(st.sampled_from(["mooncake", "qwen"]))
    records = draw(st.lists(jsonl_record(512 if fmt == "mooncake" else 16, fmt == "qwen"),
                            min_size=1, max_size=6))
    text = "\n".join(json.dumps(r) for r in records) + "\n"
    if draw(st.integers(0, 9)) == 0:
        text = text.replace("10000000000000000000000000000000000", "1" + "0" * 5000)
    return text.encode(), fmt


CSV_TIME = st.one_of(st.just("2023-11-16 18:15:46.6805900"), st.text(max_size=12),
                     st.sampled_from(["0001-01-01 00:00:00", "9999-12-31 23:59:59", "", "nan"]))
CSV_INT = st.one_of(st.integers(-3, 40000).map(str), st.sampled_from(["1e9", "", "9" * 40, "x"]))


@st.composite
def csv_trace(draw) -> tuple[bytes, str]:
    header = draw(st.sampled_from(["TIMESTAMP,ContextTokens,GeneratedTokens"] * 3
                                  + ["TS,Ctx,Gen", "", "TIMESTAMP,ContextTokens"]))
    rows = draw(st.lists(st.tuples(CSV_TIME, CSV_INT, CSV_INT), min_size=1, max_size=6))
    lines = [header] + [",".join(r) for r in rows]
    return ("\n".join(lines) + "\n").encode(), "azure"


@st.composite
def mutated(draw, base: st.SearchStrategy) -> tuple[bytes, str]:
    """Byte-level damage: flips, insertions (NULs, invalid UTF-8), truncation, or noise."""
    data, fmt = draw(base)
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(min_size=1, max_size=300)), fmt
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(buf)))
        op = draw(st.sampled_from(["flip", "insert", "cut"]))
        if op == "flip" and pos < len(buf):
            buf[pos] ^= draw(st.integers(1, 255))
        elif op == "insert":
            buf[pos:pos] = draw(st.sampled_from([b"\x00", b"\xff\xfe", b"\n", b"\r", b'"',
                                                 b",", b"{", b"\xe2\x82"]))
        else:
            del buf[pos:]
    return bytes(buf), fmt


def fixture(name: str, fmt: str) -> st.SearchStrategy:
    return st.just(((FIX / name).read_bytes(), fmt))


TRACES = st.one_of(
    jsonl_trace(), csv_trace(), mutated(jsonl_trace()), mutated(csv_trace()),
    mutated(fixture("mooncake_head20.jsonl", "mooncake")),
    mutated(fixture("qwen_tiny.jsonl", "qwen")),
    mutated(fixture("azure_conv_head20.csv", "azure")))


@FUZZ
@given(trace=TRACES, wrong_format=st.integers(0, 7), keep=st.booleans(),
       drop=st.booleans(), requests=st.integers(1, 4), warmup=st.integers(0, 2))
def test_random_and_mutated_traces(tmp_path, trace, wrong_format, keep, drop, requests,
                                   warmup):
    data, fmt = trace
    path = tmp_path / "trace.dat"
    path.write_bytes(data)
    if wrong_format == 0:
        fmt = {"mooncake": "azure", "qwen": "mooncake", "azure": "qwen"}[fmt]
    args = ["simulate", "--json", "--scheduler", "fs", "--trace", str(path), "--trace-format",
            fmt, "--requests", str(requests), "--warmup", str(warmup), "--slo", "1"]
    args += ["--keep-timestamps"] * keep + ["--over-context", "drop"] * drop
    out = run_cli(*args, timeout_s=BOUND_S)
    rows = out.check()
    event(f"exit {out.code}")
    if rows is not None:
        assert [r["scheduler"] for r in rows] == ["fs"]
        assert 1 <= rows[0]["requests_evaluated"] <= requests
        assert 0.0 <= rows[0]["slo_attainment"] <= 1.0


# --- options -------------------------------------------------------------------------------------

# (legal, illegal) candidates per option; legal ones small enough to finish fast
OPTIONS: dict[str, tuple[list[str], list[str]]] = {
    "--requests": (["1", "3"], ["0", "-1", "1000001", "1e3", "x", "10000000000000"]),
    "--warmup": (["0", "1"], ["-1", "2.5", "1000001"]),
    "--rate": (["0.5", "2", "1e-3"], ["0", "-1", "nan", "inf", "1e-9", "1e6", "x"]),
    "--seed": (["0", "7", "18446744073709551615"], ["-1", "18446744073709551616", "1.5"]),
    "--levels": (["1", "2", "64"], ["0", "65", "1000"]),
    "--tp": (["1", "2"], ["0", "3", "-1"]),
    "--ep": (["4", "8"], ["0", "3", "-2"]),
    "--sp": (["1"], ["0", "2"]),
    "--servers": (["8", "16"], ["0", "1", "5000"]),
    "--prefill-instances": (["1", "2"], ["0", "99"]),
    "--nic-gbps": (["25", "400"], ["0", "-5", "nan", "1e9"]),
    "--bandwidth-scale": (["0.5", "2"], ["0", "1e-5", "1e5"]),
    "--slo": (["0.2", "30"], ["0", "-1", "nan", "1e7"]),
    "--slo-scale": (["1", "3", "1000"], ["0", "1e7", "inf"]),
    "--max-batched-tokens": (["2048", "8192", "1048576"], ["0", "-1", "2000000"]),
    "--reuse-lookahead": (["0", "2", "1024"], ["-1", "5000"]),
    "--scheduler": (["fs", "mfs", "pias", "karuna", "edf", "sjf", "oracle", "fs,fs"],
                    ["nope", "", ","]),
    "--policy-option": (["mfs.rli=false", "mfs.pruning=off", "mfs.drop_budget=0"],
                        ["mfs.rli=maybe", "foo.x=1", "mfs", "mfs.nope=1", "fs.num_levels=3",
                         "mfs.p2d_refresh_s=-1", "karuna.ratio=1e300", "pias.ratio=nan",
                         "mfs.drop_budget=1.5"]),
    "--scenario": (["testbed", "TESTBED"], ["nope"]),
    "--model": (["mixtral-8x7b", "dbrx"], ["gpt-9", "llama-3-8b"]),  # llama-3-8b needs sp
    "--workload": (["agent", "conv"], ["nope"]),
    "--ep-backend": (["allgather", "alltoall"], ["pplx"]),
    "--ring-channels": (["1", "64"], ["0", "65"]),
    "--kv-connections": (["1", "2", "64"], ["0", "100"]),
    "--collective-layout": (["ring", "mesh"], ["tree"]),
    "--over-context": (["refuse", "drop"], ["maybe"]),
    "--trace": (["{fixture}"], ["{dir}", "/no/such.jsonl", "{binary}"]),
    "--trace-format": (["qwen"], ["mooncake", "azure", "csv"]),  # legal for the fixture
    "--out": (["{fresh}"], ["{file}", "/proc/nope/out", "{dir}"]),
}
FLAGS = ["--keep-timestamps", "--per-flow", "--bogus-flag", "--json"]


@FUZZ
@given(picked=st.dictionaries(st.sampled_from(sorted(OPTIONS)),
                              st.tuples(st.integers(0, 3), st.integers(0, 99)), max_size=5),
       flags=st.lists(st.sampled_from(FLAGS), max_size=2, unique=True))
def test_random_option_combinations(tmp_path, picked, flags):
    """Options drawn legal three times in four, so that many combinations run."""
    (tmp_path / "noise.jsonl").write_bytes(bytes(range(256)))
    places = {"{fixture}": str(FIX / "qwen_tiny.jsonl"), "{dir}": str(tmp_path),
              "{fresh}": str(tmp_path / "run"), "{file}": str(FIX / "qwen_tiny.jsonl"),
              "{binary}": str(tmp_path / "noise.jsonl")}
    args = ["simulate", "--json"]
    base = {"--requests": "2", "--warmup": "1", "--scheduler": "fs"}
    for opt, (illegal, i) in picked.items():
        values = OPTIONS[opt][illegal == 0]
        base[opt] = places.get(values[i % len(values)], values[i % len(values)])
    for opt, value in base.items():
        args += [opt, value]
    out = run_cli(*args, *flags, timeout_s=BOUND_S)
    rows = out.check()
    event(f"exit {out.code}")
    if rows is not None:
        assert rows and all(0.0 <= r["slo_attainment"] <= 1.0 for r in rows)
        if "--out" in picked and base["--out"] == str(tmp_path / "run"):
            assert json.loads((tmp_path / "run" / "config.json").read_text())


SWEEP_OPTIONS = {
    "--rate": ["1", "0.5,1", "x", "-1", "1,,", ""],
    "--seeds": ["0", "0,1", "1.5", "-1", "a"],
    "--bandwidth-scale": ["1", "0", "0.5,1", "y"],
    "--jobs": ["1", "0", "-1", "257"],
    "--workload": ["agent", "conv,agent", "nope", ","],
    "--out": ["{fresh}", "{dir}", "/proc/nope/rows.json"],
    "--rows-from": ["{simjson}", "{nojson}", "{dir}", "{rows}"],
}


@FUZZ
@given(picked=st.dictionaries(st.sampled_from(sorted(SWEEP_OPTIONS)), st.integers(0, 99),
                              max_size=3))
def test_random_sweep_options(tmp_path, picked):
    (tmp_path / "sim.json").write_text('[{"scheduler": "fs", "slo_attainment": 1.0}]')
    (tmp_path / "no.json").write_bytes(b"\xff\x00{")
    (tmp_path / "rows.json").write_text(json.dumps([
        {"workload": "agent", "bandwidth_scale": 1.0, "rate_per_gpu": 1.0, "scheduler": "fs",
         "slo_attainment": 0.5, "seed": 0}]))
    places = {"{fresh}": str(tmp_path / "rows-out.json"), "{dir}": str(tmp_path),
              "{simjson}": str(tmp_path / "sim.json"), "{nojson}": str(tmp_path / "no.json"),
              "{rows}": str(tmp_path / "rows.json")}
    base = {"--rate": "1", "--workload": "agent", "--requests": "2", "--warmup": "0",
            "--scheduler": "fs"}
    for opt, i in picked.items():
        values = SWEEP_OPTIONS[opt]
        base[opt] = places.get(values[i % len(values)], values[i % len(values)])
    args = ["sweep", "--json", "--no-reference"]
    for opt, value in base.items():
        args += [opt, value]
    out = run_cli(*args, timeout_s=BOUND_S)
    out.check()
    event(f"exit {out.code}")


# --- the corpus of past failures -----------------------------------------------------------------


def _cases() -> list[Path]:
    return sorted(CORPUS.glob("*.json"))


@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.stem)
def test_corpus_case(tmp_path, case):
    """A kept failure (or a case of issue 14): it must now satisfy the contract, with the exit
    code and message it records."""
    doc = json.loads(case.read_text())
    names = {}
    for name, spec in doc.get("files", {}).items():
        path = tmp_path / name
        if "base64" in spec:
            path.write_bytes(base64.b64decode(spec["base64"]))
        else:
            path.write_text(spec["text"])
        names["{" + name + "}"] = str(path)
    names["{tmp}"] = str(tmp_path)
    args = [names.get(a, a.replace("{tmp}", str(tmp_path))) for a in doc["args"]]
    out = run_cli(*args, timeout_s=BOUND_S)
    out.check()
    assert out.code == doc["exit"], out.err
    if "stderr" in doc:
        assert doc["stderr"].replace("{tmp}", str(tmp_path)) in out.err
