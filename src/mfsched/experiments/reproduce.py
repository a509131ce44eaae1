"""Run one of the paper's experiments: its grid's points on an executor, streamed to a results
directory, resumable. Called by ``mfsched reproduce`` (``mfsched.cli_experiments``).

The experiment comes from :mod:`mfsched.experiments.spec`, the points run through
:func:`mfsched.experiments.executors.execute` (the same mechanism as ``mfsched sweep``), and each
finished point goes straight to :class:`mfsched.experiments.store.ResultStore` in the driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..policy import make_policy
from .executors import check, execute
from .points import PointResult, run_point
from .runner import prepare
from .spec import Experiment
from .store import ResultStore, provenance

__all__ = ["Outcome", "default_out_dir", "reproduce"]


@dataclass(frozen=True)
class Outcome:
    out_dir: Path
    results_path: Path
    points_total: int
    points_run: int
    points_reused: int  # finished by an earlier, interrupted run (--resume)
    warnings: tuple[str, ...] = ()


def default_out_dir(exp: Experiment, quick: bool, models: tuple[str, ...] = ()) -> Path:
    """results/NAME[-quick], with the models appended when the run is restricted to some."""
    name = exp.name + "".join(f"+{m}" for m in models)
    return Path("results") / (f"{name}-quick" if quick else name)


def reproduce(exp: Experiment, *, quick: bool, out_dir: Path, executor: str = "process",
              jobs: int = 1, address: str | None = None, resume: bool = False,
              on_start: Callable[[int, int, tuple[str, ...]], None] | None = None,
              on_point: Callable[[str], None] | None = None) -> Outcome:
    """Run every missing point of the grid and write the experiment's table.

    ``on_start(total, already_done, warnings)`` is called once before the first point runs,
    ``on_point(key)`` after each point is on disk.
    """
    check(executor, jobs, address)
    points = exp.points(quick)
    _check_inputs(exp, points[0].config)
    prov = provenance()
    store = ResultStore(out_dir)
    done = store.open(exp, quick, resume, prov)
    todo = [p for p in points if p.key not in done]
    if on_start:
        on_start(len(points), len(points) - len(todo), tuple(store.warnings))

    def keep(i: int, result: PointResult) -> None:
        store.write_point(exp, quick, todo[i], result, prov)
        if on_point:
            on_point(todo[i].key)

    execute(run_point, todo, executor=executor, jobs=jobs, address=address, on_result=keep)
    results = store.combine(points)
    return Outcome(Path(out_dir), results, len(points), len(todo), len(points) - len(todo),
                   tuple(store.warnings))


def _check_inputs(exp: Experiment, cfg) -> None:
    """Fail fast, before any worker starts: scheduler options and the request stream."""
    for name in {s for q in (False, True) for s in exp.schedulers_of(q)}:
        make_policy(name, cfg.num_levels, cfg.options_for(name))
    prepare(replace(cfg, requests=1, warmup=0, tail=0))
