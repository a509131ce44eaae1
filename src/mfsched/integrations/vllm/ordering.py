"""Present the inner connector's per-request work in MFS order.

Who calls this: the scheduler side of :class:`~mfsched.integrations.vllm.connector.MFSConnector`
in ``build_connector_meta``. Connectors do their per-request work (files written, NIXL reads
issued) in the order of their metadata, which they build either from the step's
``SchedulerOutput`` (ExampleConnector: its new and cached requests, in order) or from their own
per-request dicts (NixlConnector: ``reqs_to_recv`` and friends, keyed by request id). So MFS
order is applied twice, without knowing the inner connector's classes:

1. :func:`ordered_view` gives the inner connector a shallow copy of the ``SchedulerOutput``
   whose new requests and cached requests (all parallel lists) are in MFS order; attributes the
   inner connector *reassigns* on that copy are written back to the real output
   (:func:`write_back`), as vLLM allows a connector to trim ``new_block_ids_to_zero``.
2. :func:`reorder_metadata` reorders, in the inner metadata it built, every dict keyed by
   request id and every list of per-request entries that name their request (an attribute or
   key ``req_id`` / ``request_id``).

Pure: works on any objects with those shapes; no vLLM import.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

__all__ = ["ordered_view", "reorder_metadata", "snapshot", "write_back"]

_ID_NAMES = ("req_id", "request_id")


def _rank(order: Sequence[str]):
    ranks = {rid: i for i, rid in enumerate(order)}
    last = len(ranks)
    return lambda rid: ranks.get(rid, last)


def _item_id(item: Any) -> str | None:
    for name in _ID_NAMES:
        value = item.get(name) if isinstance(item, dict) else getattr(item, name, None)
        if isinstance(value, str):
            return value
    return None


def ordered_view(scheduler_output: Any, order: Sequence[str]) -> Any:
    """A shallow copy of a ``SchedulerOutput`` with its requests in ``order`` (stable; ids not
    in ``order`` keep their relative order after those that are)."""
    rank = _rank(order)
    view = copy.copy(scheduler_output)
    new_reqs = list(getattr(scheduler_output, "scheduled_new_reqs", []) or [])
    view.scheduled_new_reqs = sorted(new_reqs, key=lambda r: rank(r.req_id))
    cached = getattr(scheduler_output, "scheduled_cached_reqs", None)
    if cached is not None and dataclasses.is_dataclass(cached) and len(cached.req_ids) > 1:
        n = len(cached.req_ids)
        perm = sorted(range(n), key=lambda i: rank(cached.req_ids[i]))
        changes = {f.name: [getattr(cached, f.name)[i] for i in perm]
                   for f in dataclasses.fields(cached)
                   if isinstance(getattr(cached, f.name), list)
                   and len(getattr(cached, f.name)) == n}
        view.scheduled_cached_reqs = dataclasses.replace(cached, **changes)
    return view


def snapshot(obj: Any) -> dict[str, int]:
    """Identities of an object's attributes, to see later which ones were reassigned."""
    return {k: id(v) for k, v in vars(obj).items()}


def write_back(view: Any, before: dict[str, int], target: Any,
               skip: tuple[str, ...] = ("scheduled_new_reqs", "scheduled_cached_reqs")) -> None:
    """Copy onto ``target`` the attributes of ``view`` reassigned since ``before``."""
    for name, value in vars(view).items():
        if name not in skip and before.get(name) != id(value):
            setattr(target, name, value)


def reorder_metadata(metadata: Any, order: Sequence[str]) -> Any:
    """Reorder the per-request collections of a connector's metadata object (its attributes are
    reassigned): dicts with text keys of which some are request ids of ``order`` (other keys
    keep their relative order after those), and lists whose items all name their request.
    Returns ``metadata``."""
    if metadata is None or not hasattr(metadata, "__dict__"):
        return metadata
    rank = _rank(order)
    known = set(order)
    for name, value in list(vars(metadata).items()):
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value) \
                and known.intersection(value):
            setattr(metadata, name, {k: value[k] for k in sorted(value, key=rank)})
        elif isinstance(value, list) and len(value) > 1:
            ids = [_item_id(item) for item in value]
            if all(i is not None for i in ids):
                perm = sorted(range(len(value)), key=lambda i: rank(ids[i]))
                setattr(metadata, name, [value[i] for i in perm])
    return metadata
