"""Where the points of a sweep run: local processes or a Ray cluster. One mechanism for both
``mfsched sweep`` (:func:`mfsched.experiments.sweep.run_sweep`) and ``mfsched reproduce``
(:func:`mfsched.experiments.reproduce.reproduce`).

:func:`execute` runs a picklable function over independent items and calls ``on_result(index,
result)`` *in the calling process* as each item finishes, in completion order. The caller
streams results to disk there, so whatever finished is kept if the run is interrupted.

* ``process`` (default): a :class:`concurrent.futures.ProcessPoolExecutor` with ``jobs``
  workers; with ``jobs == 1`` items run one after the other in the calling process (no pool to
  start, and a debugger or profiler sees the simulation). Workers are forked where the platform
  can (Linux): they start in milliseconds and inherit the driver's memory, which the runner's
  parallel scheduler runs rely on (:func:`mfsched.experiments.runner.run`: the prepared point
  and its warmed caches are not rebuilt or copied per worker).
* ``ray``: one Ray task per item (one CPU each). ``address`` joins an existing cluster (its
  workers need the same mfsched installed); without it a local Ray instance with ``jobs`` CPUs is
  started and shut down again. Ray is an optional extra: ``pip install 'mfsched[ray]'``.

The first failing item stops the run: pending items are cancelled and the exception propagates
(results handed to ``on_result`` before that are kept). On an interrupt the pool's workers are
stopped (Ctrl-C at a terminal reaches them too; they end silently) and the driver's
``KeyboardInterrupt`` propagates.

``EXECUTORS`` is the registry; a new backend is one function with :data:`ExecuteFn`'s signature
and one ``EXECUTORS.add`` line.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
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
    others = set(multiprocessing.active_children())
    context = (multiprocessing.get_context("fork")
               if "fork" in multiprocessing.get_all_start_methods() else None)
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=context,
                               initializer=_quiet_interrupt)
    try:
        pending: dict[Future, int] = {pool.submit(fn, item): i for i, item in enumerate(items)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                on_result(pending.pop(fut), fut.result())
    except BaseException:
        # an error or an interrupt: drop what has not started and stop what runs (its points are
        # redone on resume); a signal sent to the driver alone would otherwise leave the exit
        # waiting for every running point
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in set(multiprocessing.active_children()) - others:
            worker.terminate()
        # with its workers gone the pool's manager thread ends; wait for it, or the
        # interpreter's exit would wake it through a pipe it may have closed (a traceback)
        pool.shutdown(wait=True)
        raise
    pool.shutdown(wait=True)


def _quiet_interrupt() -> None:
    """In a pool worker: ignore Ctrl-C (which a terminal sends to the whole process group) and
    let the driver, which gets it too, stop the workers with ``terminate()``; SIGTERM ends a
    worker at once (a forked worker inherits the CLI's SIGTERM handler, which would turn
    ``terminate()`` into an interrupt it survives). A worker that ended on Ctrl-C by itself
    raced the driver: under load the pool could report the dead worker (BrokenProcessPool, exit
    1) before the driver's own KeyboardInterrupt (exit 130) was raised."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
