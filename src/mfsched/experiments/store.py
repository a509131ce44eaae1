"""A results directory: what ``mfsched reproduce`` writes and ``mfsched report`` reads.

Layout of one experiment's directory::

    experiment.json          the experiment as run (grid, schedulers, claims), its digest,
                             and per run (first and each --resume) mfsched version and commit
    points/KEY.parquet       one finished point: a row per scheduler (and the reference)
    points/KEY.requests.parquet, points/KEY.layers.parquet
                             per-request and per-batch-layer values (experiments with details)
    results.parquet          every point's rows in grid order: the experiment's table
    requests.parquet, layers.parquet
                             the same for the details

Each point is written as it finishes (by the driver process, whatever executor ran it): to a
temporary name, flushed to disk, then renamed, details first and the summary last, so a point is
either wholly there or not at all and a killed sweep loses only the points still running.
:meth:`ResultStore.open` with ``resume`` lists the points that are there (and refuses a directory
made by a different grid); ``results.parquet`` is rebuilt from the point files at the end.

Rows carry ``experiment``, ``grid`` (full or quick), ``point``, the mfsched version, the git
commit (and whether the work tree had changes) when mfsched runs from a git checkout, and the
point's whole :class:`~mfsched.experiments.config.SimConfig` as JSON. pandas
(``pd.read_parquet``) and polars (``pl.read_parquet``) read every table.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import __version__
from ..errors import UserError
from .points import Point, PointResult
from .spec import Experiment, experiment_digest

__all__ = ["DETAIL_TABLES", "Provenance", "ResultStore", "provenance", "read_table"]

DETAIL_TABLES = ("requests", "layers")
_META_KEY = b"mfsched.digest"


@dataclass(frozen=True)
class Provenance:
    mfsched_version: str
    git_commit: str | None
    git_dirty: bool | None


def provenance() -> Provenance:
    """The running mfsched's version and, from a git checkout, its commit."""
    here = Path(__file__).resolve().parent
    commit = dirty = None
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0:
            commit = out.stdout.strip()
            status = subprocess.run(["git", "-C", str(here), "status", "--porcelain",
                                     "--untracked-files=no"], capture_output=True, text=True,
                                    timeout=10)
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return Provenance(__version__, commit, dirty)


class ResultStore:
    """One experiment's results directory (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.points_dir = self.root / "points"
        self.warnings: list[str] = []  # for the user, set by open()

    # ------------------------------------------------------------------ writing

    def open(self, exp: Experiment, quick: bool, resume: bool, prov: Provenance) -> set[str]:
        """Prepare the directory; return the keys of the points already finished."""
        if self.root.exists() and not self.root.is_dir():
            raise UserError("exists and is not a directory", where=str(self.root))
        digest = experiment_digest(exp, quick)
        meta_path = self.root / "experiment.json"
        finished = self.finished_keys(digest)
        runs: list[dict] = []
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
            except ValueError as e:
                raise UserError(f"unreadable: {e}", where=str(meta_path)) from None
            if meta.get("digest") != digest:
                raise UserError(f"holds results of a different grid ({meta.get('name')}, "
                                f"{meta.get('grid')}); choose another --out",
                                where=str(self.root))
            if finished and not resume:
                raise UserError(f"already holds {len(finished)} finished point(s) of this "
                                "experiment; pass --resume to complete it, or choose another "
                                "--out", where=str(self.root))
            runs = list(meta.get("runs", []))
            before = {r.get("git_commit") for r in runs if r.get("git_commit")}
            if finished and prov.git_commit and before - {prov.git_commit}:
                self.warnings.append(
                    f"{len(finished)} finished point(s) in {self.root} were computed by commit "
                    f"{', '.join(c[:12] for c in sorted(before))}, this run is "
                    f"{prov.git_commit[:12]}: the table mixes both (each row has git_commit)")
        elif resume and finished:
            raise UserError("has point files but no experiment.json; choose another --out",
                            where=str(self.root))
        self.points_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.points_dir.glob(".*.tmp"):  # left by a killed run
            stale.unlink()
        runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                     "mfsched_version": prov.mfsched_version, "git_commit": prov.git_commit,
                     "git_dirty": prov.git_dirty, "points_done_before": len(finished)})
        meta = {"name": exp.name, "grid": "quick" if quick else "full", "digest": digest,
                "mfsched_version": prov.mfsched_version, "git_commit": prov.git_commit,
                "git_dirty": prov.git_dirty, "runs": runs, "experiment": exp.to_json()}
        _write_atomic(meta_path, (json.dumps(meta, indent=2) + "\n").encode())
        return finished

    def finished_keys(self, digest: str | None = None) -> set[str]:
        """Keys of the finished points (of the grid with ``digest``, when given)."""
        keys = set()
        if not self.points_dir.is_dir():
            return keys
        for path in self.points_dir.glob("*.parquet"):
            key = path.name[:-len(".parquet")]
            if any(key.endswith(f".{t}") for t in DETAIL_TABLES):
                continue
            if digest is not None:
                meta = pq.read_schema(path).metadata or {}
                if meta.get(_META_KEY, b"").decode() != digest:
                    continue
            keys.add(key)
        return keys

    def write_point(self, exp: Experiment, quick: bool, point: Point, result: PointResult,
                    prov: Provenance) -> None:
        """Store one finished point: details first, the summary (the point's marker) last."""
        cfg = point.config
        common = {"experiment": exp.name, "grid": "quick" if quick else "full",
                  "point": point.key}
        where = {"model": cfg.model_name, "workload": cfg.workload,
                 "rate_per_gpu": cfg.rate_per_gpu, "seed": cfg.seed}
        digest = experiment_digest(exp, quick)
        for name in DETAIL_TABLES:
            rows = getattr(result, name)
            if rows:
                table = pa.Table.from_pylist([{**common, **where, **r} for r in rows])
                self._write_table(self.points_dir / f"{point.key}.{name}.parquet", table, digest)
        config_json = json.dumps(cfg.to_dict(), sort_keys=True)
        rows = [{**common, **r, "mfsched_version": prov.mfsched_version,
                 "git_commit": prov.git_commit, "git_dirty": prov.git_dirty,
                 "config_json": config_json} for r in result.rows]
        self._write_table(self.points_dir / f"{point.key}.parquet", _rows_table(rows), digest)

    def combine(self, points: list[Point]) -> Path:
        """Write ``results.parquet`` (and the detail tables) from the point files, grid order."""
        tables = [pq.read_table(self.points_dir / f"{p.key}.parquet") for p in points]
        out = self.root / "results.parquet"
        self._write_table(out, pa.concat_tables(tables, promote_options="default"), None)
        for name in DETAIL_TABLES:
            parts = [self.points_dir / f"{p.key}.{name}.parquet" for p in points]
            parts = [pq.read_table(f) for f in parts if f.exists()]
            if parts:
                self._write_table(self.root / f"{name}.parquet",
                                  pa.concat_tables(parts, promote_options="default"), None)
        return out

    @staticmethod
    def _write_table(path: Path, table: pa.Table, digest: str | None) -> None:
        if digest is not None:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                   _META_KEY: digest.encode()})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        _write_atomic(path, sink.getvalue().to_pybytes())


def read_table(root: Path, name: str = "results") -> tuple[pa.Table | None, bool]:
    """An experiment's table and whether it is complete: ``results.parquet`` when the run
    finished, else the finished points' files (an interrupted run: complete is False)."""
    root = Path(root)
    path = root / f"{name}.parquet"
    if path.exists():
        return pq.read_table(path), True
    files = sorted(f for f in (root / "points").glob("*.parquet")
                   if not any(f.name.endswith(f".{t}.parquet") for t in DETAIL_TABLES))
    if name != "results":  # details of finished points only (a killed run may leave orphans)
        files = [f.with_name(f"{f.name[:-len('.parquet')]}.{name}.parquet") for f in files]
        files = [f for f in files if f.exists()]
    if not files:
        return None, False
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default"), False


def _rows_table(rows: list[dict]) -> pa.Table:
    table = pa.Table.from_pylist(rows)
    # columns that are null in every row still get a stable type (a later point may have values)
    fixes = {"git_commit": pa.string(), "git_dirty": pa.bool_()}
    for name, typ in fixes.items():
        i = table.schema.get_field_index(name)
        if i >= 0 and table.schema.field(i).type != typ:
            table = table.set_column(i, name, table.column(i).cast(typ))
    return table


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
