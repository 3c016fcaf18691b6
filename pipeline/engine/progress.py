"""A dependency-free progress bar for bounded runs.

On a terminal it redraws one line at most five times a second; elsewhere (CI logs, pipes) it prints
a plain line at every tenth of the way, so logs stay short.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, label: str = "events", stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = max(1, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.interactive = self.stream.isatty()
        self.done = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_tenth = -1
        self._lock = threading.Lock()

    def start(self, total: int) -> None:
        """Count towards ``total`` from now on: for a source that knows its size only once it is built."""
        with self._lock:
            self.total = max(1, total)
            self.started = time.monotonic()

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            if self.enabled:
                self._maybe_draw()

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        fraction = min(1.0, self.done / self.total)
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        bar = "#" * int(fraction * 30)
        return (f"[{bar:<30}] {fraction:6.1%} {self.done}/{self.total} {self.label} "
                f"{rate / 1000:6.1f}k/s ETA {eta:5.0f}s")

    def _maybe_draw(self) -> None:
        now = time.monotonic()
        if self.interactive:
            if now - self._last_draw >= 0.2 or self.done >= self.total:
                self._last_draw = now
                self.stream.write("\r" + self._line())
                self.stream.flush()
        else:
            tenth = min(10, self.done * 10 // self.total)
            if tenth > self._last_tenth:
                self._last_tenth = tenth
                self.stream.write(self._line() + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.interactive:
            self.stream.write("\r" + self._line() + "\n")
            self.stream.flush()
