"""Ctrl-C and SIGTERM (issue 14): a run stops within a second, prints one line, exits 130 or
143 and leaves no half-written result. Real subprocesses, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mfsched.cli_files import write_file, write_out_dir

from subprocs import children, finish, start

STOP_WITHIN_S = 1.0


def _interrupt(proc: subprocess.Popen, sig: int, settle_s: float) -> tuple[float, str]:
    """Wait for the run to announce itself and get going, send ``sig``; (seconds until it
    exited, its stderr)."""
    first = proc.stderr.readline()
    assert first.startswith("a large run:"), first
    time.sleep(settle_s)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    sent = time.monotonic()
    proc.send_signal(sig)
    _, err = finish(proc, 30)
    took = time.monotonic() - sent
    return took, first + err


@pytest.mark.parametrize("sig,code,word", [(signal.SIGINT, 130, "interrupted"),
                                           (signal.SIGTERM, 143, "terminated")])
@pytest.mark.parametrize("settle_s", [0.5, 4.0])  # while preparing, while simulating
@pytest.mark.quiet
def test_simulate_stops_at_once_and_writes_nothing(tmp_path, sig, code, word, settle_s):
    out = tmp_path / "results" / "run"
    proc = start("simulate", "--requests", "30000", "--warmup", "0", "--scheduler", "fs",
                 "--out", str(out))
    took, err = _interrupt(proc, sig, settle_s)
    assert proc.returncode == code
    assert took < STOP_WITHIN_S, f"took {took:.2f} s"
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == f"mfsched: {word} ({'Ctrl-C' if code == 130 else 'SIGTERM'}); " \
                        "nothing half-written was left"
    assert "Traceback" not in err
    assert not (tmp_path / "results").exists()  # no result, no partial, not even the parent


@pytest.mark.quiet
def test_sweep_workers_stop_with_the_sweep(tmp_path):
    """Ctrl-C in a terminal signals the whole process group: the workers ignore it, the
    parent terminates them and stops."""
    proc = start("sweep", "--workload", "agent", "--rate", "1,1.25,1.5,1.75", "--requests",
                 "6000", "--warmup", "0", "--scheduler", "fs", "--no-reference", "--jobs",
                 "2", "--out", str(tmp_path / "rows.json"), session=True)
    first = proc.stderr.readline()
    assert first.startswith("a large run:"), first
    deadline = time.monotonic() + 120
    while len(children(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = children(proc.pid)
    assert len(workers) >= 2, "the pool did not start"
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # its own session: the group is the sweep's
    _, err = finish(proc, 30)
    took = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert took < STOP_WITHIN_S, f"took {took:.2f} s"
    assert err.strip().splitlines()[-1].startswith("mfsched: interrupted")
    assert "Traceback" not in err
    time.sleep(0.5)
    assert not [w for w in workers if Path(f"/proc/{w}").exists()
                and "Z" not in Path(f"/proc/{w}/stat").read_text().split()[2]]
    assert list(tmp_path.iterdir()) == []


def _group_members(pgid: int) -> list[int]:
    """Live processes (not zombies) of process group ``pgid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.quiet
@pytest.mark.parametrize("after_s", [0.0, 0.001, 0.003, 0.01, 0.03, 0.1])
def test_ctrl_c_while_the_workers_fork(tmp_path, after_s):
    """Ctrl-C to the whole group as the first worker appears, and a few moments after: while
    the driver forks its workers and before a worker has set its own handlers. The run ends
    with exit 130 at once, and no process of its group outlives it."""
    proc = start("sweep", "--workload", "agent", "--rate", "1,1.5,2,2.5", "--requests", "3000",
                 "--warmup", "0", "--scheduler", "fs", "--no-reference", "--jobs", "2",
                 "--out", str(tmp_path / "rows.json"), session=True)
    deadline = time.monotonic() + 120
    while not children(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        pass  # spin: the fork is the moment under test
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    end = time.monotonic() + after_s
    while time.monotonic() < end:
        pass
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = finish(proc, 30)
    took = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert took < STOP_WITHIN_S, f"took {took:.2f} s"
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "mfsched: interrupted"), err
    assert _group_members(proc.pid) == []
    assert list(tmp_path.iterdir()) == []


# --- the writers --------------------------------------------------------------------------------


def test_an_interrupted_write_leaves_the_earlier_result(tmp_path):
    out = tmp_path / "run"
    write_out_dir(out, lambda d: (d / "config.json").write_text("old"))

    def half(d: Path) -> None:
        (d / "config.json").write_text("new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_out_dir(out, half)
    assert (out / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no partial directory

    write_out_dir(out, lambda d: (d / "config.json").write_text("new"))
    assert (out / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_interrupted_file_write_leaves_the_earlier_file(tmp_path, monkeypatch):
    target = tmp_path / "rows.json"
    write_file(target, "old")
    real = os.replace

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_file(target, "new")
    monkeypatch.setattr(os, "replace", real)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.json"]
