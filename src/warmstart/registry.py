"""One tiny generic registry, used for models, datasets and strategies.

Each implementation registers itself with one line next to its definition::

    @STRATEGIES.register("full", "every parameter trains")
    def full(...): ...

`warmstart ls` and the parametrised tests read the registries, so a new entry is listed and
tested without touching either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from warmstart.errors import WarmstartError, did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered object with its name and one-line description."""

    name: str
    description: str
    obj: T


class Registry(Generic[T]):
    """A name -> object map whose lookups fail with a suggestion instead of a KeyError."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # "model", "dataset", "strategy": used in messages
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under `name`."""

        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, description, obj)
            return obj

        return decorate

    def get(self, name: str) -> T:
        """Return the object registered as `name`, or raise a WarmstartError with suggestions."""
        try:
            return self._entries[name].obj
        except KeyError:
            hint = did_you_mean(name, self._entries) or (
                f"; run `warmstart ls {self.kind}s` to list them"
            )
            raise WarmstartError(f"unknown {self.kind} {name!r}{hint}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)
