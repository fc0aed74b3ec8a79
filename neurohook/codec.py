"""One JSON codec for every result class: dataclasses to plain dicts and back, guided by type hints.

Encoding turns dataclasses into dicts (recursively), tuples into lists and NumPy scalars into Python
numbers; a class may add derived keys with ``_json_extra`` (e.g. a statistic's mean and std).
Decoding rebuilds the annotated types (``int``, ``float``, ``str``, ``bool``, ``X | None``,
``list[X]``, ``tuple[...]``, ``dict[str, X]``, nested dataclasses); keys a class does not declare are
ignored and a missing field takes its default (None when it has none).

Example::

    @dataclass
    class Point(JSONResult):
        x: float
        tags: list[str]

    Point.from_dict(Point(1.0, ["a"]).to_dict()) == Point(1.0, ["a"])
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar, Union

import numpy as np

from neurohook.atomic import atomic_write_text

__all__ = ["JSONResult", "decode", "encode"]

T = TypeVar("T", bound="JSONResult")


def encode(value: Any) -> Any:
    """A JSON-ready copy of ``value`` (dataclasses, mappings, sequences, NumPy values, primitives)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        extra = getattr(value, "_json_extra", None)
        return {**extra(), **out} if extra else out
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [encode(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode(hint: Any, value: Any) -> Any:
    """``value`` (from JSON) as the type ``hint`` says; TypeError/ValueError when it cannot be."""
    if value is None or hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return decode(options[0], value) if len(options) == 1 else value
    if origin is list:
        return [decode(args[0] if args else Any, v) for v in _sequence(value, hint)]
    if origin is tuple:
        items = _sequence(value, hint)
        kinds = [args[0]] * len(items) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(kinds) != len(items):
            raise ValueError(f"expected {len(kinds)} values for {hint}, got {len(items)}")
        return tuple(decode(k, v) for k, v in zip(kinds, items))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object for {hint}, got {type(value).__name__}")
        return {str(k): decode(args[1] if args else Any, v) for k, v in value.items()}
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, value)
    if hint in (int, float, str):
        if isinstance(value, (dict, list, bool)) or (hint is not str and isinstance(value, str)):
            raise TypeError(f"expected {hint.__name__}, got {type(value).__name__} {value!r}")
        return hint(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value
    return value


def _sequence(value: Any, hint: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"expected a list for {hint}, got {type(value).__name__}")
    return list(value)


def _decode_dataclass(cls: type, value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected an object for {cls.__name__}, got {type(value).__name__}")
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            kwargs[f.name] = decode(hints[f.name], value[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[f.name] = None
    return cls(**kwargs)


class JSONResult:
    """``to_dict`` / ``from_dict``, ``to_json`` / ``from_json`` and atomic ``save`` / ``load`` for a dataclass."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (nested dataclasses become dicts, tuples lists)."""
        return encode(self)

    @classmethod
    def from_dict(cls: type[T], d: Mapping[str, Any]) -> T:
        """Inverse of :meth:`to_dict`."""
        return decode(cls, d)

    def to_json(self, indent: int | None = 2) -> str:
        """The result as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls: type[T], text: str) -> T:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as JSON, atomically (temporary file, then rename)."""
        atomic_write_text(path, self.to_json())
        return Path(path)

    @classmethod
    def load(cls: type[T], path: str | os.PathLike[str]) -> T:
        """Read what :meth:`save` wrote."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
