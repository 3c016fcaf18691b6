"""Kernel timing hooks.

Kernels report how long each call took through :func:`timed`; whoever runs them (the pipeline's
metrics module) subscribes with :func:`add_observer`. Kernels thus stay free of any metrics backend.

>>> seen = []
>>> add_observer(lambda kernel, device, seconds: seen.append(kernel))
>>> with timed("demo", "cpu"):
...     pass
>>> seen
['demo']
>>> clear_observers()
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from collections.abc import Callable, Iterator

Observer = Callable[[str, str, float], None]
_observers: list[Observer] = []


def add_observer(observer: Observer) -> None:
    if observer not in _observers:
        _observers.append(observer)


def remove_observer(observer: Observer) -> None:
    if observer in _observers:
        _observers.remove(observer)


def clear_observers() -> None:
    _observers.clear()


@contextmanager
def timed(kernel: str, device: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        for observer in _observers:
            observer(kernel, device, elapsed)
