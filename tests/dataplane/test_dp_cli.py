"""The data-plane commands through the real `mfsched` CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mfsched.dataplane.commands import comparison, relative_error


def dp(*args):
    return subprocess.run([sys.executable, "-m", "mfsched", *args],
                          capture_output=True, text=True, timeout=600)


def test_relative_error_and_comparison_rows():
    assert relative_error(1.1, 1.0) == pytest.approx(0.1)
    assert relative_error(1.0, 0.0) != relative_error(1.0, 0.0)  # NaN: no testbed value
    rows = comparison([{"scheduler": "fs", "slo_attainment": 0.5, "ttft_mean_s": 0.2,
                        "stage2_cct_mean_s": 0.002}],
                      [{"scheduler": "fs", "slo_attainment": 0.4, "ttft_mean_s": 0.25,
                        "stage2_cct_mean_s": 0.002}])
    assert rows[0]["rel_err_ttft_mean_s"] == pytest.approx(-0.2)
    assert rows[0]["rel_err_slo_attainment"] == pytest.approx(0.25)
    assert rows[0]["rel_err_stage2_cct_mean_s"] == pytest.approx(0.0)


@pytest.mark.parametrize("args,fragment", [
    (["testbed", "--scenario", "fattree"], "--scenario: the emulated testbed runs the 'testbed'"),
    (["testbed", "--scale", "0.5"], "scale factor must be within"),
    (["testbed", "--window-kib", "1", "--chunk-kib", "32"], "window >= chunk"),
    (["compare", "--scheduler", "nope"], "unknown scheduler 'nope'"),
    (["net", "clean", "--prefix", "x-"], "refusing to clean"),
    (["testbed", "--key-file", "/no/such/key"], "/no/such/key: cannot open the key file"),
    (["testbed", "--key-file", "k", "--no-auth"], "--key-file and --no-auth exclude each other"),
])
def test_bad_options_are_one_line_errors(args, fragment):
    res = dp(*args)
    assert res.returncode == 2, res.stderr
    assert fragment in res.stderr and res.stderr.startswith("mfsched: error: ")
    assert "Traceback" not in res.stderr


def test_a_key_file_others_can_read_is_refused(tmp_path):
    key = tmp_path / "run.key"
    key.write_text("ab" * 32)
    key.chmod(0o644)
    res = dp("testbed", "--key-file", str(key))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{key}: readable or writable by others (mode 0644); chmod 600 it" in res.stderr


@pytest.mark.netns
@pytest.mark.usefixtures("netns_ok")
def test_compare_json_has_the_simulator_keys_for_both():
    res = dp("compare", "--json", "--scheduler", "fs", "--requests", "2", "--warmup", "0")
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)
    (sim,), (tb,), (cmp_row,) = doc["simulator"], doc["testbed"], doc["comparison"]
    assert sim.keys() == tb.keys() and sim["scheduler"] == tb["scheduler"] == "fs"
    assert tb["requests_evaluated"] == 2 and tb["simulated_time_s"] > 0
    assert cmp_row["sim_ttft_mean_s"] == sim["ttft_mean_s"]
    assert cmp_row["testbed_ttft_mean_s"] == tb["ttft_mean_s"]
