"""Experiment files, the executors, resume after an interruption, the results table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from mfsched.errors import UserError
from mfsched.experiments.executors import execute
from mfsched.experiments.reproduce import default_out_dir, reproduce
from mfsched.experiments.spec import (
    CLAIM_METRICS,
    Experiment,
    experiment_digest,
    experiment_names,
    load_experiment,
    parse_experiment,
)
from mfsched.experiments.store import read_table
from mfsched.metrics import sustainable_rate

from subprocs import children, finish, start

PAPER = ["fig10-testbed", "fig11-conv", "fig12-agent", "fig13-llama-sp", "fig14-breakdown",
         "fig15-breakdown", "fig5-contention"]

# A small grid on the testbed; each point runs in a fraction of a second.
TINY = """
description = "tiny grid"
figure = "Fig. T"
kind = "attainment"
scenario = "testbed"
models = ["mixtral-8x7b"]
workloads = ["agent"]
rates_per_gpu = [0.5, 1.0, 1.5]
schedulers = ["fs", "mfs"]
reference = true
details = true
seeds = [0, 1]
warmup = 10
requests = {requests}
[config]
tail = 0
[quick]
rates_per_gpu = [1.0]
seeds = [0]
"""


TINY_TEXT = TINY.format(requests=16)


def summaries(folder: Path) -> list[Path]:
    """The finished points' summary files (KEY.parquet; not details, not temporary files)."""
    return [p for p in folder.glob("*.parquet") if not p.name.startswith(".")
            and not p.name.endswith((".requests.parquet", ".layers.parquet"))]


def mfsched(*args, **kw):
    return subprocess.run([sys.executable, "-m", "mfsched.cli", *args], capture_output=True,
                          text=True, **kw)


def tiny(tmp_path: Path, requests: int = 16) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(requests=requests))
    return path


def comparable(table) -> pd.DataFrame:
    """A results table without what legitimately differs between two runs: the wall time, and
    the work tree's state (a commit made while the tests run)."""
    return table.to_pandas().drop(columns=["wall_time_s", "git_commit", "git_dirty"],
                                  errors="ignore")


# ------------------------------------------------------------------ experiment files

def test_paper_experiments_are_shipped_and_valid():
    assert experiment_names() == sorted(PAPER)
    for name in PAPER:
        exp = load_experiment(name)
        assert exp.name == name and exp.description and "\n" not in exp.description
        assert Experiment.from_json(json.loads(json.dumps(exp.to_json()))) == exp
        for quick in (False, True):
            keys = [p.key for p in exp.points(quick)]
            assert len(keys) == len(set(keys)) > 0
        full, quick = exp.grid(False), exp.grid(True)
        assert set(quick.models) <= set(full.models)
        assert len(exp.points(True)) <= len(exp.points(False))
        assert {c.metric for c in exp.claims} <= set(CLAIM_METRICS)
    grid = load_experiment("fig11-conv").full
    assert (grid.warmup, grid.requests) == (512, 1024)
    assert set(load_experiment("fig11-conv").schedulers) >= {"fs", "sjf", "edf", "karuna",
                                                             "mfs"}
    f14 = load_experiment("fig14-breakdown")
    assert f14.details and f14.full.models == ("dbrx",) and f14.full.rates_per_gpu == (0.7,)
    f15 = load_experiment("fig15-breakdown").full
    assert f15.models == ("llama-3-8b",) and f15.rates_per_gpu == (0.5,)


def test_claim_metrics_are_all_implemented_by_the_report():
    from mfsched.report.claims import CLAIM_FUNCS

    assert set(CLAIM_FUNCS) == set(CLAIM_METRICS)


BAD = [
    ("description = 'x'\n", None, "figure: missing (required)"),
    (TINY_TEXT.replace('kind = "attainment"', 'kind = "pie"'), 4, "kind: unknown kind 'pie'"),
    (TINY_TEXT.replace('["mixtral-8x7b"]', '["gpt-9"]'), 6, "models: unknown model 'gpt-9'"),
    (TINY_TEXT.replace('rates_per_gpu = [0.5, 1.0, 1.5]', 'rates_per_gpu = [0.5, -1]'), 8,
     "rates_per_gpu: -1.0 is not positive"),
    (TINY_TEXT.replace('["fs", "mfs"]', '["fs", "nope"]'), 9, "schedulers: unknown scheduler"),
    (TINY_TEXT.replace("warmup = 10", "warmup = 'ten'"), 13,
     "warmup: expected an integer, got a string"),
    (TINY_TEXT.replace("tail = 0", "tial = 0"), 16, "config.tial: unknown key"),
    (TINY_TEXT.replace("tail = 0", "slo_scale = -3"), 16, "config.slo_scale: must be a positive"),
    (TINY_TEXT.replace("[quick]\n", "[quick]\nmodel = ['x']\n"), 18, "quick.model: unknown key"),
    (TINY_TEXT.replace("seeds = [0]\n", "seeds = [0, 0]\n"), 19,
     "quick.seeds: lists a value twice"),
    (TINY_TEXT + "[[claims]]\ntext = 'x'\nmetric = 'magic'\npaper_low = 1.0\n", 22,
     "claims[0].metric: unknown metric 'magic'"),
    (TINY_TEXT + "[[claims]]\ntext = 'x'\nmetric = 'mean_ratio'\npaper_low = 1.0\n"
     "denominator = 'fs'\n", None, "claims[0].column: metric 'mean_ratio' needs a column"),
    (TINY_TEXT.replace('kind = "attainment"', 'kind = "breakdown"').replace("details = true",
                                                                        "details = false"),
     11, "details: kind 'breakdown' needs details = true"),
    ("description = 'x'\nfigure = [", None, "not valid TOML"),
]


@pytest.mark.parametrize("text,line,fragment", BAD)
def test_experiment_file_errors_name_file_line_key_and_reason(text, line, fragment):
    with pytest.raises(UserError) as err:
        parse_experiment(text, "exp.toml", "exp")
    message = str(err.value)
    where = "exp.toml:" if line is None else f"exp.toml:{line}: "
    assert message.startswith(where), message
    assert fragment in message, message


def test_reproduce_cli_errors_are_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_TEXT.replace('["mixtral-8x7b"]', '["gpt-9"]'))
    for args, fragment in [(["nope"], "unknown experiment 'nope'; known: fig10-testbed"),
                           ([str(bad)], "bad.toml:6: models: unknown model 'gpt-9'"),
                           ([str(tmp_path / "missing.toml")], "missing.toml: cannot read"),
                           ([str(tiny(tmp_path)), "--executor", "mpi"],
                            "unknown executor 'mpi'"),
                           ([str(tiny(tmp_path)), "--ray-address", "auto"],
                            "--ray-address needs --executor ray"),
                           (["fig11-conv", "--models", "dbrx,gpt-9"],
                            "--models: fig11-conv runs the models mixtral-8x22b, grok-2, dbrx, "
                            "qwen3-coder-480b-a35b; not gpt-9")]:
        res = mfsched("reproduce", *args, "--out", str(tmp_path / "o"))
        assert res.returncode == 2, res.stderr
        assert res.stderr.startswith("mfsched: error: ") and res.stderr.count("\n") == 1
        assert fragment in res.stderr and "Traceback" not in res.stderr


def test_reproduce_list():
    res = mfsched("reproduce", "--list", "--json", check=True)
    listed = json.loads(res.stdout)
    assert [e["name"] for e in listed] == sorted(PAPER)
    assert all(e["description"] and e["points"] >= e["quick_points"] > 0 for e in listed)
    text = mfsched("reproduce", "--list", check=True).stdout
    assert all(name in text for name in PAPER)


# ------------------------------------------------------------------ metrics

def test_sustainable_rate_interpolates_the_first_crossing():
    def sr(rates, att, threshold=0.5):
        r = sustainable_rate(rates, att, threshold)
        return round(r.rate, 9), r.bound

    assert sr([0.2, 0.4, 0.6], [0.9, 0.6, 0.2]) == (0.45, "")
    assert sr([0.6, 0.2, 0.4], [0.2, 0.9, 0.6]) == (0.45, "")  # sorted by rate
    assert sr([1, 2, 3, 4], [0.8, 0.4, 0.7, 0.3]) == (1.75, "")  # where it first falls below
    assert sr([1, 2], [0.9, 0.8]) == (2, ">=")  # never fell below: the grid's top
    assert sr([1, 2], [0.3, 0.1]) == (1, "<")  # below from the start
    assert sr([1, 2], [0.5, 0.1]) == (1, "")


# ------------------------------------------------------------------ executors and store

def _square(x: int) -> int:
    return x * x


def test_process_executor_streams_every_result_once():
    got: dict[int, int] = {}

    def keep(i, value):
        assert i not in got
        got[i] = value

    execute(_square, list(range(7)), executor="process", jobs=2, on_result=keep)
    assert got == {i: i * i for i in range(7)}
    assert children(os.getpid()) == set()


def _fails_on_three(x: int) -> int:
    if x == 3:
        raise UserError("item three is bad")
    return x


def _dies_on_two(x: int) -> int:
    if x == 2:
        os._exit(7)
    return x


def _unpicklable(x: int):
    return (lambda: x) if x == 1 else x


@pytest.mark.parametrize("fn,bad,error,match", [
    (_fails_on_three, 3, UserError, "item three is bad"),
    (_dies_on_two, 2, RuntimeError, r"a worker process died \(exit code 7\) while running item 2"),
    (_unpicklable, 1, RuntimeError, "item 1: its result cannot be sent to the driver"),
])
def test_process_executor_stops_at_the_first_failure_and_leaves_no_worker(fn, bad, error,
                                                                           match):
    """The item's own exception (with the worker's traceback as its cause), a worker that died,
    a result that cannot travel: each stops the run, and every worker is reaped."""
    got: list[int] = []
    with pytest.raises(error, match=match) as info:
        execute(fn, list(range(8)), executor="process", jobs=2,
                on_result=lambda i, v: got.append(i))
    if fn is _fails_on_three:
        assert "_fails_on_three" in str(info.value.__cause__)  # where it was raised
    assert bad not in got
    assert children(os.getpid()) == set()


def test_process_executor_interrupt_in_the_driver_stops_the_workers():
    def interrupt(i, value):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(time.sleep, [0.0, 30.0, 30.0], executor="process", jobs=3, on_result=interrupt)
    assert children(os.getpid()) == set()


def test_a_worker_whose_driver_is_gone_ends_quietly():
    """The driver's end closes while the worker runs its item: sending the result fails, and
    the worker ends with exit code 0 (no traceback on the terminal)."""
    from mfsched.experiments.executors import _Worker

    w = _Worker.fork(time.sleep, [0.3], [])
    w.give(0)
    w.conn.close()
    w.proc.join(10)
    assert w.proc.exitcode == 0


@pytest.mark.parametrize("taken_by", ["this thread", "another thread"])
def test_a_ctrl_c_while_forking_is_raised_after_the_fork(taken_by):
    """Held across the fork, then acted on; also when another thread of the driver takes the
    signal (its Python handler would otherwise run in the main thread inside the block)."""
    from mfsched.experiments.executors import _signals_held

    other_done = threading.Event()
    other = threading.Thread(target=other_done.wait)
    other.start()
    reached = False
    try:
        with pytest.raises(KeyboardInterrupt), _signals_held():
            if taken_by == "this thread":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                signal.pthread_kill(other.ident, signal.SIGINT)
            until = time.monotonic() + 0.05
            while time.monotonic() < until:  # bytecodes at which an unheld handler would run
                pass
            reached = True
    finally:
        other_done.set()
        other.join()
    assert reached
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sweep_runs_on_the_shared_executor_and_keeps_config_order():
    from mfsched.experiments.config import SimConfig
    from mfsched.experiments.sweep import SweepSpec, run_sweep

    spec = SweepSpec(SimConfig(requests=8, warmup=2, tail=0), ("agent",), (0.5, 1.0, 1.5),
                     schedulers=("fs",))
    serial = run_sweep(spec, jobs=1)
    pooled = run_sweep(spec, jobs=2)
    assert [r["rate_per_gpu"] for r in pooled] == [0.5, 1.0, 1.5]
    strip = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in serial]
    assert strip == [{k: v for k, v in r.items() if k != "wall_time_s"} for r in pooled]


def test_results_table_rows_and_provenance(tmp_path):
    exp = load_experiment(str(tiny(tmp_path)))
    out = reproduce(exp, quick=True, out_dir=tmp_path / "r", jobs=1)
    assert (out.points_total, out.points_run) == (1, 1)
    df = pd.read_parquet(out.results_path)
    assert list(df["scheduler"]) == ["fs", "mfs", "no-contention"]
    assert set(df["grid"]) == {"quick"} and set(df["experiment"]) == {"tiny"}
    assert set(df["mfsched_version"]) == {__import__("mfsched").__version__}
    cfg = json.loads(df["config_json"][0])
    assert cfg["rate_per_gpu"] == 1.0 and cfg["requests"] == 16 and cfg["tail"] == 0
    assert (df["requests_evaluated"] == 16).all()
    req = pd.read_parquet(tmp_path / "r" / "requests.parquet")
    assert len(req) == 3 * 16 and {"ttft_s", "p2d_earliness", "met"} <= set(req.columns)
    # the per-request values average to the summary's (one formula in mfsched.metrics)
    for sched, row in df.set_index("scheduler").iterrows():
        mine = req[req["scheduler"] == sched]
        assert mine["ttft_s"].mean() == pytest.approx(row["ttft_mean_s"])
        assert mine["p2d_earliness"].mean() == pytest.approx(row["p2d_earliness_mean"])
        assert mine["met"].mean() == pytest.approx(row["slo_attainment"])
    layers = pd.read_parquet(tmp_path / "r" / "layers.parquet")
    for sched, row in df.set_index("scheduler").iterrows():
        assert layers[layers["scheduler"] == sched]["stage2_cct_s"].mean() == \
            pytest.approx(row["stage2_cct_mean_s"])


def test_resume_refuses_another_grid_and_ignores_partial_files(tmp_path):
    exp = load_experiment(str(tiny(tmp_path)))
    out = tmp_path / "r"
    reproduce(exp, quick=True, out_dir=out, jobs=1)
    with pytest.raises(UserError, match="already holds 1 finished point"):
        reproduce(exp, quick=True, out_dir=out, jobs=1)
    with pytest.raises(UserError, match="different grid"):
        reproduce(exp, quick=False, out_dir=out, jobs=1, resume=True)
    # what a killed run leaves: a half-written temporary file and details without a summary
    (out / "points" / ".x.parquet.123.tmp").write_bytes(b"PAR1 half")
    (out / "points" / "mixtral-8x7b__agent__r9__s0.requests.parquet").write_bytes(b"junk")
    again = reproduce(exp, quick=True, out_dir=out, jobs=1, resume=True)
    assert (again.points_run, again.points_reused) == (0, 1)
    assert not list((out / "points").glob(".*.tmp"))
    table, complete = read_table(out, "requests")
    assert complete and table.num_rows == 3 * 16


def _wait_for_points(folder: Path, proc: subprocess.Popen, at_least: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(summaries(folder)) >= at_least:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {proc.stderr.read()}")
        time.sleep(0.02)
    pytest.fail("no point finished within 120 s")


@pytest.mark.parametrize("how", ["kill", "ctrl-c", "sigint-to-driver"])
def test_interrupted_sweep_resumes_only_the_missing_points(tmp_path, how):
    """Kill (SIGKILL, serial) or interrupt (Ctrl-C: SIGINT to the process group; or SIGINT to
    the driver alone; two worker processes) a sweep mid-way: an interrupt ends at once, with no
    worker left behind; --resume runs only the missing points and the final table equals an
    uninterrupted run's, point for point."""
    toml = tiny(tmp_path, requests=60)
    out = tmp_path / "run"
    jobs = "1" if how == "kill" else "2"
    args = ["reproduce", str(toml), "--out", str(out), "--jobs", jobs, "--json"]
    proc = start(*args, session=True)
    try:
        _wait_for_points(out / "points", proc, 1)
        if how == "sigint-to-driver":
            workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                     text=True).stdout.split()
            proc.send_signal(signal.SIGINT)
        else:
            os.killpg(proc.pid, signal.SIGKILL if how == "kill" else signal.SIGINT)
        _, stderr = finish(proc, 60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if how == "kill":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, stderr
        assert "run the same command with --resume" in stderr and "Traceback" not in stderr
    if how == "sigint-to-driver":
        time.sleep(0.5)
        assert workers and not [w for w in workers if Path(f"/proc/{w}").exists()]
    finished = {p.name: p.stat().st_mtime_ns for p in summaries(out / "points")}
    assert 1 <= len(finished) < 6, "the sweep was not interrupted mid-way"
    assert not (out / "results.parquet").exists()

    res = subprocess.run([sys.executable, "-m", "mfsched", *args, "--resume"],
                         capture_output=True, text=True, check=True)
    summary = json.loads(res.stdout)
    assert summary["points_reused"] == len(finished)
    assert summary["points_run"] == 6 - len(finished)
    for name, mtime in finished.items():  # finished points were not redone
        assert (out / "points" / name).stat().st_mtime_ns == mtime

    clean = reproduce(load_experiment(str(toml)), quick=False, out_dir=tmp_path / "clean",
                      jobs=1)
    for name in ("results", "requests", "layers"):
        resumed, complete = read_table(out, name)
        reference, _ = read_table(clean.out_dir, name)
        assert complete
        pd.testing.assert_frame_equal(comparable(resumed), comparable(reference))


def test_ray_executor_equals_process_executor(tmp_path):
    """A small grid on a local Ray instance gives the process executor's results, point for
    point (Ray is the optional 'ray' extra; CI installs it)."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed in CI (scripts/install-test-deps.sh installs it)")
        pytest.skip("ray is not installed (pip install 'mfsched[ray]')")
    text = TINY.format(requests=12).replace("rates_per_gpu = [0.5, 1.0, 1.5]",
                                            "rates_per_gpu = [0.5, 1.5]")
    (tmp_path / "tiny.toml").write_text(text)
    exp = load_experiment(str(tmp_path / "tiny.toml"))
    local = reproduce(exp, quick=False, out_dir=tmp_path / "process", executor="process",
                      jobs=2)
    on_ray = reproduce(exp, quick=False, out_dir=tmp_path / "ray", executor="ray", jobs=2)
    assert on_ray.points_run == local.points_run == 4
    import ray

    assert not ray.is_initialized()  # the local instance was shut down again
    for name in ("results", "requests", "layers"):
        a, _ = read_table(local.out_dir, name)
        b, _ = read_table(on_ray.out_dir, name)
        pd.testing.assert_frame_equal(comparable(a), comparable(b))


def test_quick_grid_overrides_only_what_it_names():
    exp = parse_experiment(TINY_TEXT.replace("[quick]\n", "[quick]\nschedulers = ['fs']\n"
                                             "requests = 4\n"), "x.toml", "x")
    assert exp.schedulers_of(False) == ("fs", "mfs") and exp.schedulers_of(True) == ("fs",)
    (point,) = exp.points(True)
    assert point.schedulers == ("fs",) and point.config.requests == 4
    assert point.config.warmup == 10 and point.config.tail == 0  # inherited from the full grid
    assert [p.config.rate_per_gpu for p in exp.points(False)] == [0.5, 0.5, 1, 1, 1.5, 1.5]
    assert Experiment.from_json(json.loads(json.dumps(exp.to_json()))) == exp


def test_a_model_subset_is_its_own_grid():
    exp = load_experiment("fig11-conv")
    two = exp.with_models(("dbrx", "mixtral-8x22b"))
    assert {p.config.model for p in two.points(False)} == {"dbrx", "mixtral-8x22b"}
    assert two.points(True)[0].config.model == "dbrx"  # the order given
    assert len(two.points(False)) == len(exp.points(False)) // 2
    assert [p.key for p in two.points(False)] == [p.key for p in exp.points(False)
                                                 if p.config.model == "dbrx"] + [
        p.key for p in exp.points(False) if p.config.model == "mixtral-8x22b"]
    assert experiment_digest(two, False) != experiment_digest(exp, False)
    assert str(default_out_dir(two, True, ("dbrx", "mixtral-8x22b"))) == \
        "results/fig11-conv+dbrx+mixtral-8x22b-quick"
    from mfsched.report.sections import _command  # the command the report prints

    assert _command(exp, True) == "mfsched reproduce fig11-conv --quick"
    assert _command(two, False) == "mfsched reproduce fig11-conv --models dbrx,mixtral-8x22b"


@pytest.mark.parametrize("blocked,args,fragment", [
    ("ray", ["reproduce", "{toml}", "--executor", "ray", "--out", "{out}"],
     "--executor ray needs Ray: pip install 'mfsched[ray]'"),
    ("matplotlib", ["report", "{out}"],
     "mfsched report needs matplotlib: pip install 'mfsched[report]'")])
def test_a_missing_extra_is_a_one_line_error(tmp_path, blocked, args, fragment):
    """Without the optional extra (simulated: the import fails), one line and exit code 2."""
    args = [a.format(toml=tiny(tmp_path), out=tmp_path / "o") for a in args]
    code = (f"import sys; sys.modules[{blocked!r}] = None; sys.argv = ['mfsched', *{args!r}]; "
            "from mfsched.cli import main; main()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert res.stderr == f"mfsched: error: {fragment}\n"
