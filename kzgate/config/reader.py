"""Reading a parsed YAML document: errors are collected, never raised one by one.

One run reports every mistake at once, each naming the file and the dotted key
path, so that an operator can fix the whole file in one pass.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration is wrong; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class Bad(Exception):
    """A value is wrong; the message says how. The table adds file and key."""


class Errors:
    def __init__(self, source: Path) -> None:
        self.source = source
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        where = f"{self.source}: {key}" if key else str(self.source)
        self.items.append(f"{where}: {message}")


_ABSENT: Any = object()


class Table:
    """One YAML mapping being read.

    Every key asked for becomes known; ``close`` reports the keys nobody asked
    for. A wrong value is recorded and replaced by the default (or a
    placeholder), so that reading goes on and finds the other mistakes too.
    """

    def __init__(self, errors: Errors, path: str, data: object) -> None:
        self._errors = errors
        self.path = path
        self._data: dict[str, object] = {}
        self._known: list[str] = []
        if data is not None and not isinstance(data, dict):
            errors.add(path, f"must be a mapping (got {describe(data)})")
        elif data:
            for key, value in data.items():
                if isinstance(key, str):
                    self._data[key] = value
                else:
                    errors.add(path, f"key {describe(key)} must be a string")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def _raw(self, name: str) -> object:
        self._known.append(name)
        return self._data.get(name, _ABSENT)

    def _convert(self, key: str, value: object, conv: Callable[[object], T], fallback: T) -> T:
        try:
            return conv(value)
        except Bad as exc:
            self._errors.add(key, str(exc))
            return fallback

    def get(self, name: str, conv: Callable[[object], T], default: T) -> T:
        value = self._raw(name)
        if value is _ABSENT:
            return default
        return self._convert(self.key(name), value, conv, default)

    def optional(self, name: str, conv: Callable[[object], T]) -> T | None:
        """A key whose absence, or an explicit null, means "not set"."""
        value = self._raw(name)
        if value is _ABSENT or value is None:
            return None
        return self._convert(self.key(name), value, conv, None)

    def require(self, name: str, conv: Callable[[object], T], placeholder: T) -> T:
        value = self._raw(name)
        if value is _ABSENT or value is None:
            self._errors.add(self.key(name), "required")
            return placeholder
        return self._convert(self.key(name), value, conv, placeholder)

    def get_list(
        self, name: str, item: Callable[[object], T], default: tuple[T, ...]
    ) -> tuple[T, ...]:
        """A list whose items are checked one by one, each error naming its index."""
        value = self._raw(name)
        if value is _ABSENT:
            return default
        if isinstance(value, str):  # one address written without brackets is a one-item list
            value = [value]
        if not isinstance(value, list):
            self._errors.add(self.key(name), f"must be a list (got {describe(value)})")
            return default
        items = [
            self._convert(f"{self.key(name)}[{i}]", v, item, _ABSENT) for i, v in enumerate(value)
        ]
        return tuple(v for v in items if v is not _ABSENT)

    def child(self, name: str) -> Table:
        value = self._raw(name)
        return Table(self._errors, self.key(name), None if value is _ABSENT else value)

    def optional_child(self, name: str) -> Table | None:
        """A mapping whose absence, or an explicit null, means "not set"."""
        value = self._raw(name)
        return (
            None
            if value is _ABSENT or value is None
            else Table(self._errors, self.key(name), value)
        )

    def children(self, name: str) -> list[Table]:
        """A required, non-empty list of mappings."""
        value = self._raw(name)
        if value is _ABSENT or value is None:
            self._errors.add(self.key(name), "required (a list with at least one item)")
            return []
        if not isinstance(value, list) or not value:
            self._errors.add(self.key(name), f"must be a non-empty list (got {describe(value)})")
            return []
        return [Table(self._errors, f"{self.key(name)}[{i}]", v) for i, v in enumerate(value)]

    def error(self, name: str, message: str) -> None:
        self._errors.add(self.key(name), message)

    def close(self) -> None:
        for key in self._data:
            if key not in self._known:
                near = difflib.get_close_matches(key, self._known, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                self._errors.add(self.key(key), f"unknown key {key!r}{hint}")


def describe(value: object) -> str:
    """A YAML value as an error message quotes it: short, and saying its type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, dt.datetime | dt.date):
        return f"{type(value).__name__} {value.isoformat()}"
    return type(value).__name__
