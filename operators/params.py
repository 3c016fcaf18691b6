"""Declarative operator parameters: every field of a ``Params`` dataclass says its bounds and meaning.

Each field is made with :func:`param`, which records, next to the default, one line of
documentation, an optional unit, and the constraints: ``min`` / ``max`` for numbers, ``choices``
for strings with a fixed set of values and ``pattern`` for strings of a shape (the device). The
configuration loader reads the same metadata, so ``vigil config check`` and a direct construction
apply one schema; :func:`validate` checks a built ``Params`` (nested ones included) and raises
:class:`ParamError` naming the key.

>>> from dataclasses import dataclass
>>> @dataclass
... class Example:
...     alpha: float = param(0.02, "EWMA weight of a new value", min=1e-9, max=1.0)
...     device: str = param("auto", "where the kernel runs", pattern=DEVICE_PATTERN)
>>> validate(Example(alpha=0.5))
>>> validate(Example(alpha=-1.0))
Traceback (most recent call last):
...
operators.params.ParamError: alpha: -1.0 is out of range (must be between 1e-09 and 1.0)
>>> validate(Example(device="gpu"))
Traceback (most recent call last):
...
operators.params.ParamError: device: 'gpu' is not allowed (auto, cpu, cuda or cuda:N)
>>> describe(Example)[0]
('alpha', 'float', 0.02, 'EWMA weight of a new value', 'between 1e-09 and 1.0')
"""
from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any, Literal
from collections.abc import Mapping

DEVICE_PATTERN = r"auto|cpu|cuda(:[0-9]+)?"
_PATTERN_HINTS = {DEVICE_PATTERN: "auto, cpu, cuda or cuda:N"}


class ParamError(ValueError):
    """A parameter value the operator cannot use; ``key`` is its dotted path inside ``params``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def param(default: Any, doc: str, *, min: float | None = None, max: float | None = None,  # noqa: A002 - schema words
          choices: tuple[str, ...] | None = None, pattern: str | None = None, unit: str | None = None) -> Any:
    """A dataclass field with its documentation and constraints (mutable defaults become factories)."""
    metadata = {"doc": doc, "min": min, "max": max, "choices": choices, "pattern": pattern, "unit": unit}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=type(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def bounds_text(meta: Mapping[str, Any]) -> str:
    """The numeric constraint in words ('' when unbounded)."""
    low, high = meta.get("min"), meta.get("max")
    if low is None and high is None:
        return ""
    if high is None:
        return f"at least {low}"
    if low is None:
        return f"at most {high}"
    return f"between {low} and {high}"


def check_value(value: Any, meta: Mapping[str, Any]) -> str | None:
    """Why ``value`` breaks the field's constraints, or None when it keeps them."""
    low, high = meta.get("min"), meta.get("max")
    if (low is not None or high is not None) and isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or (low is not None and value < low) or (high is not None and value > high):
            return f"{value!r} is out of range (must be {bounds_text(meta)})"
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        return f"{value!r} is not allowed (one of {', '.join(map(repr, choices))})"
    pattern = meta.get("pattern")
    if pattern is not None and not (isinstance(value, str) and re.fullmatch(pattern, value)):
        return f"{value!r} is not allowed ({_PATTERN_HINTS.get(pattern, 'must match ' + pattern)})"
    return None


def scalar_type_ok(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` fits the scalar type ``hint`` (bool, int, float, or str; an int is a float, a bool is
    neither number), or None when ``hint`` is not one of them."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {bool: isinstance(value, bool), int: number and isinstance(value, int), float: number,
            str: isinstance(value, str)}.get(hint)


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (dict, list):
        return isinstance(value, origin)
    return scalar_type_ok(value, hint) is not False


def validate(params: Any, prefix: str = "") -> None:
    """Check every field of a ``Params`` dataclass (recursively) against its type and constraints."""
    hints = typing.get_type_hints(type(params))
    for spec in dataclasses.fields(params):
        value, key = getattr(params, spec.name), f"{prefix}{spec.name}"
        if dataclasses.is_dataclass(value):
            validate(value, f"{key}.")
            continue
        hint = hints[spec.name]
        if typing.get_origin(hint) is Literal and value not in typing.get_args(hint):
            raise ParamError(key, f"{value!r} is not allowed (one of {', '.join(map(repr, typing.get_args(hint)))})")
        if not _type_ok(value, hint):
            raise ParamError(key, f"expected {getattr(hint, '__name__', hint)}, got {value!r}")
        problem = check_value(value, spec.metadata)
        if problem:
            raise ParamError(key, problem)


def describe(params_class: type) -> list[tuple[str, str, Any, str, str]]:
    """One row per field: name, type, default, documentation, constraint (for docs and ``--help``)."""
    hints = typing.get_type_hints(params_class)
    rows = []
    for spec in dataclasses.fields(params_class):
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        hint = hints[spec.name]
        literal = typing.get_origin(hint) is Literal
        type_name = " | ".join(map(repr, typing.get_args(hint))) if literal else getattr(hint, "__name__", str(hint))
        meta = spec.metadata
        constraint = bounds_text(meta) or (f"one of {', '.join(meta['choices'])}" if meta.get("choices") else "") \
            or (_PATTERN_HINTS.get(meta["pattern"], meta["pattern"]) if meta.get("pattern") else "")
        unit = f" ({meta['unit']})" if meta.get("unit") else ""
        rows.append((spec.name, type_name, default, meta.get("doc", "") + unit, constraint))
    return rows
