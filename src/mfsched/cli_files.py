"""The command line's result files: checked before the run, written whole or not at all.

:func:`check_out_dir` and :func:`check_out_file` run before any work (the target can be
created and written, an earlier result may be replaced, nothing else); :func:`write_out_dir`
and :func:`write_file` write under a temporary name beside the target and rename it into place,
so an interrupted or failed run leaves the earlier result and no partial one;
:func:`write_run` is what one run's directory holds (config.json from :func:`config_doc`,
summary.json, Parquet records).

Callers: :mod:`mfsched.cli` and :mod:`mfsched.dataplane.commands`; this module imports neither.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import UserError

__all__ = ["check_out_dir", "check_out_file", "config_doc", "write_file", "write_out_dir",
           "write_run"]


def check_out_dir(out: Path | None) -> None:
    """Before any work: ``out`` can be created (or replaced) and written. An existing
    directory is replaced only if it is empty or holds an earlier result (config.json)."""
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise UserError("exists and is not a directory", where=str(out))
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise UserError("exists and holds files that are not an earlier mfsched result; "
                        "name a new or empty directory", where=str(out))
    _probe(_partial(out), out, directory=True)


def check_out_file(out: Path | None) -> None:
    """Before any work: the file ``out`` can be written (replacing a file, not a directory)."""
    if out is None:
        return
    if out.is_dir():
        raise UserError("is a directory; name a file to write", where=str(out))
    _probe(_partial(out), out, directory=False)


def _partial(out: Path) -> Path:
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def _probe(tmp: Path, out: Path, directory: bool) -> None:
    """Create and remove ``tmp`` beside ``out``, and any missing parent directories, so that
    the run fails now rather than after it is done; nothing stays behind."""
    made: list[Path] = []
    try:
        missing = [d for d in (tmp.parent, *tmp.parent.parents) if not d.exists()]
        for d in reversed(missing):
            d.mkdir()
            made.append(d)
        if directory:
            tmp.mkdir()
            tmp.rmdir()
        else:
            tmp.write_bytes(b"")
            tmp.unlink()
    except OSError as e:
        raise UserError(f"cannot write here ({e.strerror or e})", where=str(out)) from None
    finally:
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()


def write_file(out: Path, text: str) -> None:
    """Write ``text`` to ``out`` under a temporary name, then rename it into place."""
    tmp = _partial(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_out_dir(out: Path, fill: Callable[[Path], None]) -> None:
    """Let ``fill`` write a result directory under a temporary name, then rename it into place
    (replacing an earlier result). An interrupt or error leaves ``out`` as it was."""
    tmp = _partial(out)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        if out.exists():
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def config_doc(prepared, schedulers: Sequence[str]) -> dict:
    """config.json: the config as given, every value resolved from it, and what made it."""
    from .experiments.runner import resolved
    from .provenance import provenance

    doc = prepared.config.to_dict()
    doc["resolved"] = resolved(prepared, schedulers)
    doc["provenance"] = {**provenance(), "argv": sys.argv[1:]}
    return doc


def write_run(d: Path, config: dict, results: Sequence, rows: Sequence[dict]) -> None:
    """One run's files in ``d``: config.json, summary.json and per scheduler the records
    (requests, collectives, batches and, if recorded, flows) as Parquet."""
    import pyarrow.parquet as pq

    from .records import FLOW_COLUMNS, BatchRecord, CollectiveRecord, RequestRecord, to_table

    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (d / "summary.json").write_text(json.dumps(list(rows), indent=2) + "\n")
    for res in results:
        sd = d / res.scheduler
        sd.mkdir(exist_ok=True)
        rec = res.records
        pq.write_table(to_table(rec.requests, RequestRecord), sd / "requests.parquet")
        pq.write_table(to_table(rec.collectives, CollectiveRecord), sd / "collectives.parquet")
        pq.write_table(to_table(rec.batches, BatchRecord), sd / "batches.parquet")
        if rec.flows is not None:
            pq.write_table(to_table(rec.flows, columns=FLOW_COLUMNS), sd / "flows.parquet")
