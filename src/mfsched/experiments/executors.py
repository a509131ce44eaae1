"""Where the points of a sweep run: local processes or a Ray cluster. One mechanism for both
``mfsched sweep`` (:func:`mfsched.experiments.sweep.run_sweep`) and ``mfsched reproduce``
(:func:`mfsched.experiments.reproduce.reproduce`).

:func:`execute` runs a picklable function over independent items and calls ``on_result(index,
result)`` *in the calling process* as each item finishes, in completion order. The caller
streams results to disk there, so whatever finished is kept if the run is interrupted.

* ``process`` (default): ``jobs`` forked worker processes, each with a pipe to the driver;
  the driver hands out item indexes as workers free up and reads their results. With
  ``jobs == 1`` items run one after the other in the calling process (no worker to start, and
  a debugger or profiler sees the simulation). Workers are forked (Linux, macOS): they start
  in milliseconds and inherit the driver's memory, so items and ``fn`` are not pickled, and the
  runner's parallel scheduler runs rely on it (:func:`mfsched.experiments.runner.run`: the
  prepared point and its warmed caches are not rebuilt or copied per worker). Only results
  travel, pickled. The driver owns its workers outright, with no thread in between: whatever
  ends the run (done, an error, Ctrl-C, SIGTERM), every worker is stopped and reaped before
  ``execute`` returns or raises, and a Ctrl-C or SIGTERM that arrives while a worker is forked
  is held until the fork is done (:func:`_signals_held`). (``ProcessPoolExecutor`` did this job
  until stop 20: a Ctrl-C during its fork was dropped, and its manager thread could keep an
  interrupted run from exiting; docs/design.md section 13.)
* ``ray``: one Ray task per item (one CPU each). ``address`` joins an existing cluster (its
  workers need the same mfsched installed); without it a local Ray instance with ``jobs`` CPUs is
  started and shut down again. Ray is an optional extra: ``pip install 'mfsched[ray]'``.

The first failing item stops the run: pending items are dropped and the exception propagates
(results handed to ``on_result`` before that are kept), with the worker's traceback as its
cause. On an interrupt the workers are stopped (Ctrl-C at a terminal reaches them too; they
ignore it) and the driver's ``KeyboardInterrupt`` propagates.

``EXECUTORS`` is the registry; a new backend is one function with :data:`ExecuteFn`'s signature
and one ``EXECUTORS.add`` line.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from multiprocessing import connection
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any, TypeVar

from ..errors import UserError
from ..registry import Registry

__all__ = ["EXECUTORS", "ExecuteFn", "check", "default_jobs", "execute"]

T = TypeVar("T")
R = TypeVar("R")
OnResult = Callable[[int, Any], None]
ExecuteFn = Callable[[Callable[[Any], Any], Sequence[Any], int, "str | None", OnResult], None]

EXECUTORS: Registry[ExecuteFn] = Registry("executor")
_LOCAL_OBJECT_STORE_BYTES = 512 * 2**20


def default_jobs() -> int:
    """The CPUs this process may use (its affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def check(executor: str, jobs: int, address: str | None) -> None:
    """Raise :class:`UserError` for options that cannot work (before anything is started)."""
    EXECUTORS.get(executor)
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    if address is not None and executor != "ray":
        raise UserError("--ray-address needs --executor ray")
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError("--executor ray needs Ray: pip install 'mfsched[ray]'") from None


def execute(fn: Callable[[T], R], items: Sequence[T], *, executor: str = "process",
            jobs: int = 1, address: str | None = None,
            on_result: Callable[[int, R], None]) -> None:
    """Run ``fn`` over ``items`` on ``executor``; ``on_result(i, fn(items[i]))`` as each ends."""
    check(executor, jobs, address)
    if items:
        EXECUTORS.get(executor)(fn, items, jobs, address, on_result)


def _process(fn, items, jobs, _address, on_result) -> None:
    if jobs == 1 or len(items) == 1:
        for i, item in enumerate(items):
            on_result(i, fn(item))
        return
    workers: list[_Worker] = []
    # Everything alive at the fork goes to the collector's permanent generation (the Python
    # documentation's advice before fork() without exec()): the workers' collections then
    # never walk the prepared stream, caches and kernels they inherit, nor touch their pages
    # (measured: 3-4% of one scheduler's run on one core; the default run's two workers,
    # 9.4-10.5 -> 7.6-7.8 s).
    try:
        gc.freeze()
        try:
            for _ in range(min(jobs, len(items))):
                workers.append(_Worker.fork(fn, items, [w.conn for w in workers]))
        finally:
            gc.unfreeze()  # the driver's own objects are collected as before
        todo = iter(range(len(items)))
        for w in workers:
            w.give(next(todo))
        busy = {w.conn: w for w in workers}
        while busy:
            for conn in connection.wait(list(busy)):
                w = busy[conn]
                index, result = w.take()
                on_result(index, result)
                nxt = next(todo, None)
                if nxt is None:
                    del busy[conn]
                else:
                    w.give(nxt)
    except BaseException:
        _stop(workers, at_once=True)  # an error or an interrupt: a running point is redone
        raise
    _stop(workers, at_once=False)


class _Worker:
    """One forked worker: it runs ``fn(items[i])`` for each index the driver sends on its pipe
    and sends back ``(ok, result or (exception, traceback))``; it ends when the pipe closes
    (the driver is done, or gone)."""

    def __init__(self, proc: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.proc, self.conn, self.index = proc, conn, -1

    @classmethod
    def fork(cls, fn: Callable, items: Sequence, others: list[Connection]) -> _Worker:
        """Fork a worker, with Ctrl-C and SIGTERM held (:func:`_signals_held`). Workers
        are daemonic, so the interpreter's exit ends one that escaped :func:`_stop` (an
        interrupt between the fork and the worker's registration); the price: a worker
        cannot fork workers of its own (no caller nests executors)."""
        ours, theirs = multiprocessing.Pipe()
        fork = multiprocessing.get_context("fork")
        proc = fork.Process(target=_work, args=(fn, items, theirs, [ours, *others]),
                            name="mfsched-worker", daemon=True)
        try:
            with _signals_held():
                proc.start()
        finally:
            theirs.close()  # the child's end lives in the child only: its death is our EOF
        return cls(proc, ours)

    def give(self, index: int) -> None:
        self.index = index
        self.conn.send(index)

    def take(self) -> tuple[int, Any]:
        """The result of the item this worker ran; raises what the item raised."""
        try:
            ok, value = self.conn.recv()
        except EOFError:
            self.proc.join(1)
            raise RuntimeError(f"a worker process died (exit code {self.proc.exitcode}) "
                               f"while running item {self.index}") from None
        if not ok:
            exc, where = value
            raise exc from (WorkerTraceback(where) if where else None)
        return self.index, value


class WorkerTraceback(Exception):
    """The cause of an exception re-raised in the driver: its traceback in the worker."""


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM across a fork and act on them after it. They are blocked in
    this thread, so the child inherits them blocked and sets its own handlers before it takes
    one; and, in the main thread, their Python handlers only record them meanwhile: another
    thread of the driver (a progress bar's) may take the signal, and the handler would then run
    inside the fork's at-fork hooks, which report and drop exceptions (measured with
    ``ProcessPoolExecutor``: a Ctrl-C there was lost and the sweep ran to its end)."""
    held: list[int] = []
    saved = {}
    if threading.current_thread() is threading.main_thread():
        saved = {s: signal.signal(s, lambda sig, _frame: held.append(sig))
                 for s in _STOP_SIGNALS}
    masked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, masked)
        for sig, handler in saved.items():
            signal.signal(sig, handler)  # runs what is pending first: it is recorded
        if held:
            handler = saved[held[0]]
            if callable(handler):
                handler(held[0], None)  # KeyboardInterrupt, raised here
            elif handler == signal.SIG_DFL:
                signal.raise_signal(held[0])


def _work(fn: Callable, items: Sequence, conn: Connection, inherited: list[Connection]) -> None:
    """A worker's life (in the child). It ignores Ctrl-C, which a terminal sends to the whole
    process group: the driver, which gets it too, stops the workers. SIGTERM ends it at once
    (the CLI's own handler, inherited through the fork, would turn it into an interrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    for c in inherited:  # the driver's ends: with them closed here, the driver's exit is an EOF
        c.close()
    while True:
        try:
            index = conn.recv()
        except EOFError:
            return
        try:
            out = (True, fn(items[index]))
        except Exception as e:
            out = (False, (e, traceback.format_exc()))
        try:
            payload = ForkingPickler.dumps(out)  # what conn.send would pickle
        except Exception as e:  # a result or an exception that cannot be pickled
            what = "result" if out[0] else f"exception ({out[1][0]!r})"
            payload = ForkingPickler.dumps((False, (RuntimeError(
                f"item {index}: its {what} cannot be sent to the driver: {e}"), "")))
        try:
            conn.send_bytes(payload)
        except OSError:  # the driver is gone: nobody to tell
            return


def _stop(workers: list[_Worker], *, at_once: bool) -> None:
    """Close the workers' pipes (an idle worker reads EOF and ends), terminate them if
    ``at_once``, and reap them all (killing one still there after :data:`_REAP_S`)."""
    for w in workers:
        w.conn.close()
        if at_once:
            w.proc.terminate()
    for w in workers:
        w.proc.join(_REAP_S)
        if w.proc.exitcode is None:  # pragma: no cover - stuck in the kernel, or SIGTERM lost
            w.proc.kill()
            w.proc.join()


_REAP_S = 5.0


def _ray(fn, items, jobs, address, on_result) -> None:
    import ray

    started = not ray.is_initialized()
    if started:
        opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                "logging_level": logging.ERROR}
        if address is None:
            # points return small row lists: a small object store spares the machine's memory
            opts.update(num_cpus=jobs, object_store_memory=_LOCAL_OBJECT_STORE_BYTES)
        try:
            ray.init(address=address, **opts)
        except (ConnectionError, ValueError, RuntimeError) as e:
            where = address or "a local Ray instance"
            raise UserError(f"cannot start or join {where}: {e}", where="--ray-address"
                            if address else None) from None
    pending: dict[Any, int] = {}
    try:
        task = ray.remote(num_cpus=1)(fn)
        pending = {task.remote(item): i for i, item in enumerate(items)}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                on_result(pending.pop(ref), ray.get(ref))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


EXECUTORS.add("process", _process, "local processes (concurrent.futures); --jobs workers")
EXECUTORS.add("ray", _ray, "Ray tasks: a local instance with --jobs CPUs, or --ray-address")
