"""Outputs that explain themselves (issue 14): the table states the SLO rule and who won,
attainment is a percentage in every table, progress counts what it says, help is printed once
and without type labels on flags, --version, config.json with every resolved value, LICENSE,
and a word when the first run compiles."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from mfsched.cli_output import print_results, print_sweep, verdict
from mfsched.experiments import runner
from mfsched.experiments.config import SimConfig
from mfsched.policy.fair import FairSharing
from mfsched.sim.serving import Serving

from cli_harness import run_cli

ROOT = Path(__file__).resolve().parents[1]
SLO_RULE = "TTFT <= 3 x the request's TTFT alone on the idle cluster (--slo-scale)"


def _row(scheduler: str, attainment: float, ttft_s: float, **kw) -> dict:
    return {"scheduler": scheduler, "scenario": "testbed", "model": "mixtral-8x7b",
            "parallelism": "TP1/EP8", "workload": "agent", "rate_per_gpu": 1.0, "seed": 0,
            "slo_rule": SLO_RULE, "requests_evaluated": 1000, "slo_attainment": attainment,
            "ttft_mean_s": ttft_s, "ttft_p50_s": ttft_s, "ttft_p99_s": 2 * ttft_s,
            "stage2_cct_mean_s": 0.001, "p2d_earliness_mean": 0.1, "pruned_fraction": 0.0,
            "simulated_time_s": 60.0, "wall_time_s": 30.0, "events": 1000, **kw}


def _render(fn, *args) -> str:
    buf = io.StringIO()
    fn(*args, console=Console(file=buf, width=200))
    return buf.getvalue()


def test_the_table_states_the_slo_and_that_sjf_edges_mfs():
    rows = [_row("fs", 0.850, 0.30), _row("sjf", 0.912, 0.25), _row("mfs", 0.908, 0.20),
            _row("oracle", 0.990, 0.10)]
    text = _render(print_results, rows)
    assert f"SLO: {SLO_RULE}; 'SLO met' = share of the 1000 evaluated requests" in text
    cells = {line.split("│")[1].strip(): line.split("│")[2].strip()
             for line in text.splitlines() if line.count("│") > 5}
    assert cells == {"fs": "85.0%", "sjf": "91.2%*", "mfs": "90.8%", "oracle": "99.0%"}
    ttft = {line.split("│")[1].strip(): line.split("│")[3].strip()
            for line in text.splitlines() if line.count("│") > 5}
    assert ttft["mfs"] == "200.0*" and ttft["oracle"] == "100.0"  # the oracle is not ranked
    assert ("sjf meets the most SLOs: 91.2%, 0.4 points ahead of mfs; oracle (clairvoyant): "
            "99.0% (one run, seed 0)") in text


def test_verdict_ties_and_mfs_behind():
    assert verdict([_row("fs", 1.0, 0.3), _row("mfs", 1.0, 0.2)]) == (
        "all 2 schedulers meet 100.0% of the SLOs; mfs has the lowest mean TTFT (200.0 ms) "
        "(one run, seed 0)")
    assert verdict([_row("fs", 0.5, 0.3), _row("sjf", 0.7, 0.2), _row("mfs", 0.6, 0.1)]) == (
        "sjf meets the most SLOs: 70.0%, 10.0 points ahead of mfs (one run, seed 0)")
    assert verdict([_row("fs", 0.8, 0.3), _row("sjf", 0.8, 0.2), _row("mfs", 0.6, 0.1)]) == (
        "sjf, fs tie on the most SLOs met (80.0%); sjf has the lowest mean TTFT (200.0 ms); "
        "mfs: 60.0% (20.0 points behind) (one run, seed 0)")


def test_simulate_default_table_through_the_cli():
    out = run_cli("simulate", "--requests", "20", "--warmup", "5", "--scheduler",
                  "fs,sjf,mfs,oracle")
    assert out.code == 0, out.err
    assert f"SLO: {SLO_RULE}" in out.out
    assert re.search(r"^(\S+) meets the most SLOs|^\S+(, \S+)* tie|^all 3 schedulers meet",
                     out.out, re.M)
    assert "seed 0" in out.out


def test_sweep_tables_show_percent_and_say_they_are_means():
    rows = [{"workload": "agent", "bandwidth_scale": 1.0, "rate_per_gpu": 1.0, "scheduler": s,
             "slo_attainment": a, "seed": seed, "slo_rule": SLO_RULE}
            for seed in (0, 1) for s, a in (("fs", 0.5), ("mfs", 0.75))]
    text = _render(print_sweep, rows, "testbed")
    assert "mean of seeds 0, 1" in text and f"SLO: {SLO_RULE}" in text
    assert "75.0%*" in text and "50.0% " in text
    assert not re.search(r"\b0\.\d{3}\b", text)  # no fractions


def test_sweep_through_the_cli_counts_configurations(tmp_path):
    out = run_cli("sweep", "--workload", "agent", "--rate", "1", "--seeds", "0,1", "--requests",
                  "3", "--warmup", "0", "--scheduler", "fs,mfs", "--no-reference")
    assert out.code == 0, out.err
    assert "2/2 configurations" in out.err
    assert "requests" not in out.err.replace("requests/s", "")
    assert "mean of seeds 0, 1" in out.out and "%" in out.out


def test_progress_counts_warmup_and_evaluated_requests_and_never_overshoots():
    p = runner.prepare(SimConfig(requests=24, warmup=8, tail=12))  # a tail of 12 follows
    calls = []
    Serving(p.cluster, FairSharing(), p.requests, p.slo_fn, warmup=p.warmup,
            evaluated=p.evaluated, history=p.history,
            progress=lambda done, total: calls.append((done, total))).run()
    assert {total for _, total in calls} == {32}
    assert [done for done, _ in calls] == list(range(1, len(calls) + 1))
    assert len(calls) <= 32


@pytest.mark.parametrize("args", [[], ["net"]])
def test_help_is_printed_once(args):
    out = run_cli(*args)
    assert out.code == 0 and out.out.count("Usage: mfsched") == 1 and out.err == ""


def _every_command() -> list[list[str]]:
    """The bare app, every command and every sub-group's commands, as registered."""
    from mfsched.cli import app
    from mfsched.cli_experiments import register as register_experiments
    from mfsched.dataplane.commands import register

    register(app)  # what mfsched.cli.main does before it runs (both idempotent)
    register_experiments(app)
    out: list[list[str]] = [[]]
    out += [[c.name or c.callback.__name__] for c in app.registered_commands]
    for g in app.registered_groups:
        out.append([g.name])
        out += [[g.name, c.name or c.callback.__name__]
                for c in g.typer_instance.registered_commands]
    return out


@pytest.mark.parametrize("command", _every_command(), ids=" ".join)
def test_help_has_no_bool_labels_and_no_double_negatives(command):
    out = run_cli(*command, "--help")
    assert out.code == 0
    assert "<bool>" not in out.out and "--no-no-" not in out.out


def test_testbed_help_names_the_coordinator_switch():
    out = run_cli("testbed", "--help")
    assert "--coordinator" in out.out and "--no-coordinator" in out.out
    assert "--policy-option" in out.out  # every command that runs a policy has it
    assert "--policy-option" in run_cli("compare", "--help").out


def test_version():
    out = run_cli("--version")
    assert out.code == 0
    assert re.fullmatch(r"mfsched \d+\.\d+\.\d+( \(git [0-9a-f]{7}(, modified)?\))?\n", out.out)
    if (ROOT / ".git").exists():
        assert "(git " in out.out


def test_config_json_has_every_resolved_value_and_the_version(tmp_path):
    out = run_cli("simulate", "--json", "--requests", "3", "--warmup", "1", "--scheduler",
                  "fs,mfs", "--policy-option", "mfs.rli=false", "--out", str(tmp_path / "run"))
    assert out.code == 0, out.err
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    res = cfg["resolved"]
    assert res["topology"]["servers"] == 8 and res["topology"]["nic_bps"] == 100e9
    assert res["prefill_instances"] == 2 and res["decode_instances"] == 2
    assert res["prefill_gpus"] == 16 and res["parallelism"] == {"tp": 1, "ep": 8, "sp": 1}
    assert res["comm"]["ep_backend"] == "allgather" and res["comm"]["kv_connections"] == 2
    assert res["requests"] == {"history": res["requests"]["history"], "warmup": 1,
                               "evaluated": 3, "tail": 0, "dropped_over_context": 0}
    assert res["max_context_tokens"] == 32768 and res["slo"] == SLO_RULE
    assert res["policies"]["mfs"]["rli"] is False and res["policies"]["fs"]["num_levels"] == 8
    prov = cfg["provenance"]
    assert prov["mfsched_version"] == "0.1.0"
    assert prov["argv"][0] == "simulate"
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", prov["git_commit"])
    null = [k for k, v in res.items() if v is None]
    assert not null, f"unresolved: {null}"


def test_license_is_the_apache_license_the_metadata_names():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("pure", [True, False], ids=["from-source", "compiled"])
def test_the_first_run_says_it_compiles(tmp_path, pure):
    """From source, with an empty numba cache, the first run says it compiles and the second,
    cached, does not; the compiled core (what ``pip install .`` builds) never compiles."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    if pure:
        env["MFSCHED_PURE_PYTHON"] = "1"
    notice = "compiling the simulator's kernels (first run only, a few seconds)"
    args = [sys.executable, "-m", "mfsched", "simulate", "--json", "--requests", "2",
            "--warmup", "0", "--scheduler", "fs"]
    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    assert (notice in first.stderr) == pure
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0 and notice not in second.stderr


def test_the_first_run_of_a_cluster_says_it_fills_the_slo_memo(tmp_path):
    """With an empty cache directory the SLO memo's notice appears (on one line, naming where
    the entries are kept); the second run reads them and says nothing."""
    env = dict(os.environ, MFSCHED_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("MFSCHED_NO_DISK_CACHE", None)
    from mfsched.cachedir import cache_root

    # the compiled kernels stay where they are (only the SLO memo starts empty)
    env["NUMBA_CACHE_DIR"] = os.environ.get("NUMBA_CACHE_DIR") or str(cache_root() / "numba")
    notice = (f"computing the isolated TTFTs behind the SLOs (first run of this cluster; kept "
              f"in {tmp_path / 'cache' / 'slo'})")
    args = [sys.executable, "-m", "mfsched", "simulate", "--json", "--requests", "3",
            "--warmup", "0", "--scheduler", "fs"]
    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    assert notice in first.stderr.splitlines()
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0 and "isolated TTFTs" not in second.stderr
