"""Snapshot river estimators as plain data and load them back.

river objects keep their state in instance attributes: numbers, deques, ``random.Random``
generators, nested river objects (``stats.Mean``) and, for the Rust-backed ones such as ADWIN, a
helper whose state is a byte string. :func:`to_plain` turns those into numbers, strings, bytes,
lists and dicts; :func:`load_plain` writes them into a freshly constructed object of the same
parameters. Bound methods and other callables are left out: the constructor re-creates them.

>>> from river import drift
>>> original, copy = drift.PageHinkley(), drift.PageHinkley()
>>> for x in range(50):
...     _ = original.update(x % 7)
>>> load_plain(copy, to_plain(original))
>>> copy._sum_increase == original._sum_increase and copy._x_mean.get() == original._x_mean.get()
True
"""
from __future__ import annotations

import gc
import random
import sys
import types
from collections import deque
from typing import Any

import numpy as np

_SKIP = object()


def to_plain(obj: Any) -> dict[str, Any]:
    state = {}
    for name, value in vars(obj).items():
        encoded = _encode(value)
        if encoded is not _SKIP:
            state[name] = encoded
    return state


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, deque):
        return {"deque": [_encode(item) for item in value], "maxlen": value.maxlen}
    if isinstance(value, list):
        return [_encode(item) for item in value]
    if isinstance(value, random.Random):
        version, internal, gauss_next = value.getstate()
        return {"random": [version, list(internal), gauss_next]}
    if callable(value):
        return _SKIP
    if type(value).__module__.startswith("river._river_rust"):
        return {"native": bytes(value.__getstate__())}
    if hasattr(value, "__dict__"):
        return {"object": to_plain(value)}
    raise TypeError(f"cannot snapshot attribute of type {type(value).__name__} as plain data")


def load_plain(obj: Any, state: dict[str, Any]) -> None:
    for name, encoded in state.items():
        current = getattr(obj, name, None)
        if isinstance(encoded, dict) and "object" in encoded:
            load_plain(current, encoded["object"])
        elif isinstance(encoded, dict) and "native" in encoded:
            current.__setstate__(encoded["native"])
        elif isinstance(encoded, dict) and "random" in encoded:
            version, internal, gauss_next = encoded["random"]
            current.setstate((version, tuple(internal), gauss_next))
        elif isinstance(encoded, dict) and "deque" in encoded:
            setattr(obj, name, deque(encoded["deque"], maxlen=encoded["maxlen"]))
        else:
            setattr(obj, name, encoded)


_NOT_STATE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def object_bytes(root: Any, shared: set[int] = frozenset()) -> int:
    """``sys.getsizeof`` summed over the objects reachable from ``root`` (each once), leaving out classes,
    functions, singletons, the cached small ints and the objects in ``shared``."""
    seen = set(shared)
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if obj is None or obj.__class__ is bool or isinstance(obj, _NOT_STATE):
            continue
        if obj.__class__ is int and -5 <= obj <= 256:
            continue
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total
