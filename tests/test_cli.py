"""The CLI contract: JSON keys, errors (one line, exit 2), --out, list."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

FIX = Path(__file__).parent / "fixtures"
KEYS = {"scheduler", "scenario", "model", "rate_per_gpu", "requests_evaluated", "slo_attainment",
        "ttft_mean_s", "ttft_p50_s", "ttft_p99_s", "stage2_cct_mean_s", "wall_time_s",
        "simulated_time_s", "events"}


def mfsched(*args, check=False):
    return subprocess.run([sys.executable, "-m", "mfsched.cli", *args], capture_output=True,
                          text=True, check=check)


def test_json_output_has_contract_keys():
    res = mfsched("simulate", "--json", "--requests", "30", "--warmup", "10", "--scheduler",
                  "all", check=True)
    rows = json.loads(res.stdout)
    assert isinstance(rows, list) and rows
    for row in rows:
        assert row.keys() >= KEYS
        assert row["requests_evaluated"] == 30 and row["scenario"] == "testbed"
        assert 0.0 <= row["slo_attainment"] <= 1.0


def test_trace_json_and_out(tmp_path):
    # 5 of the fixture's 20 requests are longer than Mixtral-8x7B's 32k context
    res = mfsched("simulate", "--json", "--trace", str(FIX / "mooncake_head20.jsonl"),
                  "--trace-format", "mooncake", "--over-context", "drop", "--requests", "10",
                  "--warmup", "5", "--scheduler", "fs", "--out", str(tmp_path / "run"),
                  check=True)
    (row,) = json.loads(res.stdout)
    assert row["requests_evaluated"] == 10
    out = tmp_path / "run"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["trace_format"] == "mooncake" and cfg["resolved"]["model"] == "mixtral-8x7b"
    reqs = pq.read_table(out / "fs" / "requests.parquet")
    assert reqs.num_rows >= 10 and "ttft_s" in reqs.column_names
    flows = pq.read_table(out / "fs" / "flows.parquet")
    assert set(flows.column("stage").to_pylist()) >= {2, 3}


def test_table_output():
    res = mfsched("simulate", "--requests", "20", "--warmup", "5", "--scheduler", "fs",
                  check=True)
    assert "SLO met" in res.stdout and "fs" in res.stdout


@pytest.mark.parametrize("args,fragment", [
    (["--rate", "-1"], "--rate must be a positive number"),
    (["--scheduler", "nope"], "unknown scheduler 'nope'"),
    (["--model", "gpt-9"], "unknown model 'gpt-9'"),
    (["--trace", "/no/such/file.jsonl"], "/no/such/file.jsonl: no such trace file"),
    (["--trace", str(FIX / "azure_conv_head20.csv"), "--trace-format", "mooncake"],
     "azure_conv_head20.csv:1: not valid JSON"),
    (["--requests", "0"], "--requests must be an integer in 1..1000000, got 0"),
    (["--bogus"], "No such option: --bogus"),
    (["--scenario", "fattree", "--model", "grok-2", "--tp", "1", "--ep", "8", "--servers", "4"],
     "does not fit"),
])
def test_bad_input_is_one_line_exit_2(args, fragment):
    res = mfsched("simulate", *args)
    assert res.returncode == 2
    assert fragment in res.stderr
    assert res.stderr.startswith("mfsched: error: ") and res.stderr.count("\n") == 1
    assert "Traceback" not in res.stderr


def test_empty_trace(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = mfsched("simulate", "--trace", str(empty))
    assert res.returncode == 2 and "the trace has no requests" in res.stderr


def test_list_and_help():
    assert "fs" in mfsched("list", "schedulers", check=True).stdout
    assert "mixtral-8x22b" in mfsched("list", "models", check=True).stdout
    assert mfsched("list", "nothing").returncode == 2
    help_text = mfsched("simulate", "--help", check=True).stdout
    for option in ("--rate", "--requests", "--warmup", "--slo-scale", "--json", "--out"):
        assert option in help_text


def test_policy_option():
    res = mfsched("simulate", "--policy-option", "mfs.nope=1", "--requests", "5")
    assert res.returncode == 2 and "unknown option 'nope'" in res.stderr
    res = mfsched("simulate", "--policy-option", "mfs.red_tiebreak", "--requests", "5")
    assert res.returncode == 2 and "expected SCHEDULER.KEY=VALUE" in res.stderr
    mfsched("simulate", "--policy-option", "mfs.pruning=off", "--scheduler", "mfs",
            "--requests", "5", "--warmup", "1", check=True)


def test_out_summary_reports_instance_shares(tmp_path):
    res = mfsched("simulate", "--json", "--requests", "40", "--warmup", "10", "--scheduler",
                  "fs", "--out", str(tmp_path / "run"), check=True)
    (row,) = json.loads(res.stdout)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for r in (row, summary[0]):
        assert len(r["instance_request_share"]) == len(r["instance_batch_share"]) == 2
        assert sum(r["instance_request_share"]) == pytest.approx(1.0)
        assert sum(r["instance_batch_share"]) == pytest.approx(1.0)


def test_calibrate_json():
    res = mfsched("calibrate", "--seeds", "0", "--json", check=True)
    out = json.loads(res.stdout)
    assert out["seeds"] == [0]
    assert out["ttft_ratio"] == pytest.approx(out["ttft_mean_s"] / out["ttft_contention_free_s"])
    assert out["cct_ratio"] > 1.0 and out["ttft_ratio"] > 1.0  # contention costs something


def test_bad_comm_options_are_one_line_errors():
    for args in (["--ep-backend", "pplx"], ["--ring-channels", "0"],
                 ["--collective-layout", "tree"]):
        res = mfsched("simulate", "--requests", "5", "--warmup", "0", *args)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
