"""One small registry class, one instance per extension point.

Extension points: schedulers (policies), topologies, models, GPUs, trace readers, workloads.
Each module that provides an implementation registers it with a decorator::

    @SCHEDULERS.register("fs", help="fair sharing")
    class FairSharing: ...

Third-party packages can add schedulers through the ``mfsched.schedulers`` entry-point group;
they are loaded lazily the first time the registry is queried.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from .errors import UserError

__all__ = ["Registry", "RegistryEntry"]

T = TypeVar("T")


@dataclass(frozen=True)
class RegistryEntry(Generic[T]):
    name: str
    obj: T
    help: str


class Registry(Generic[T]):
    """Name -> object mapping with helpful errors and optional entry-point discovery."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, RegistryEntry[T]] = {}
        self._group = entry_point_group
        self._loaded_entry_points = entry_point_group is None

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj, help)
            return obj

        return deco

    def add(self, name: str, obj: T, help: str = "") -> None:
        key = name.lower()
        if key in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[key] = RegistryEntry(key, obj, help)

    def _load_entry_points(self) -> None:
        if self._loaded_entry_points:
            return
        self._loaded_entry_points = True
        for ep in entry_points(group=self._group):
            if ep.name.lower() not in self._entries:
                self.add(ep.name, ep.load(), f"(plugin {ep.value})")

    def get(self, name: str) -> T:
        self._load_entry_points()
        try:
            return self._entries[name.lower()].obj
        except KeyError:
            known = ", ".join(self.names())
            raise UserError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name.lower() in self._entries

    def names(self) -> list[str]:
        self._load_entry_points()
        return list(self._entries)

    def entries(self) -> Iterator[RegistryEntry[T]]:
        self._load_entry_points()
        return iter(list(self._entries.values()))
