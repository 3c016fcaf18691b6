"""Clean stop on SIGTERM and SIGINT.

The first signal sets :data:`STOP`. Every source checks it and ends its partitions, so the dataflow
drains as it does at the end of a bounded input: pending micro-batches are scored, sinks flush, and
Bytewax takes a final snapshot (which the Kafka source also commits to its consumer group). A second
signal stops at once, as a crash would; recovery then resumes from the last snapshot.

A step that stops the run on an error (an undeliverable output, a failed write, too many operator failures) sets
:data:`FAILED` before it raises. While Bytewax then closes the dataflow, sources do not commit their read position
(what was read after the last snapshot was not all written) and sinks do not wait on deliveries.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger("vigil")

STOP = threading.Event()
FAILED = threading.Event()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Install the handlers for the duration of a run (main thread only) and clear :data:`STOP` and :data:`FAILED`."""
    STOP.clear()
    FAILED.clear()

    def handle(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if STOP.is_set():
            log.warning("%s again: stopping now, without draining", name)
            raise KeyboardInterrupt
        log.info("%s: stopping; finishing in-flight batches, flushing sinks, taking a final snapshot", name)
        STOP.set()

    if threading.current_thread() is not threading.main_thread():
        yield STOP
        return
    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield STOP
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
