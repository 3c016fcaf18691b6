"""Bytewax sources yielding :class:`~pipeline.engine.decode.RecordBatch` es: one item per read of a partition,
its undecoded payloads with their offsets (or line numbers).

Decoding happens in the dataflow, a batch at a time, so every source shares one validation and dead-letter path. Every
source ends its partitions once its ``stop`` event is set (see :mod:`pipeline.engine.shutdown`); the
Kafka source lives in :mod:`pipeline.engine.kafka_source`.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from operators.batch import FILE_PARTITION
from pipeline.engine.decode import RecordBatch

READ_BATCH = 1024


class Pacer:
    """Spreads emission at ``rate`` records per second (0: no pacing)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.started = time.monotonic()

    def allowance(self, emitted: int) -> int:
        if not self.rate:
            return READ_BATCH
        due = int((time.monotonic() - self.started) * self.rate) - emitted
        return max(0, min(READ_BATCH, due))

    def next_awake(self, emitted: int) -> datetime | None:
        if not self.rate:
            return None
        wait = self.started + (emitted + 1) / self.rate - time.monotonic()
        return datetime.now(timezone.utc) + timedelta(seconds=max(0.0, wait))


class _IteratorPartition(StatefulSourcePartition[RecordBatch, int]):
    def __init__(self, records: Iterator[tuple[int, bytes]], topic: str, offset: int, rate: float,
                 on_emit: Callable[[int], None], stop: threading.Event) -> None:
        self.stop = stop
        self.topic = topic
        self.offset = offset
        self.records = records
        self.pacer = Pacer(rate)
        self.emitted = 0
        self.on_emit = on_emit

    def next_batch(self) -> list[RecordBatch]:
        if self.stop.is_set():
            raise StopIteration()
        read = list(itertools.islice(self.records, self.pacer.allowance(self.emitted)))
        if not read and self.pacer.allowance(self.emitted) > 0:
            raise StopIteration()
        if not read:
            return []
        self.emitted += len(read)
        offsets = np.fromiter((offset for offset, _ in read), dtype=np.int64, count=len(read))
        self.offset = int(offsets[-1]) + 1
        self.on_emit(len(read))
        return [RecordBatch(self.topic, 0, offsets, [payload for _, payload in read])]

    def next_awake(self) -> datetime | None:
        return self.pacer.next_awake(self.emitted)

    def snapshot(self) -> int:
        return self.offset


class IteratorSource(FixedPartitionedSource[RecordBatch, int]):
    """A one-partition source over the ``(offset, payload)`` pairs that ``records(start_offset)`` yields, optionally
    paced.

    The records' positions are topic offsets: the partition is named ``0-<topic>`` (like a Kafka partition's), its snapshot is the
    offset after the last record emitted, and a resumed partition asks the factory for the records from
    that offset on.
    """

    def __init__(self, records: Callable[[int], Iterator[tuple[int, bytes]]], *, topic: str, rate: float = 0.0,
                 on_emit: Callable[[int], None] = lambda n: None, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self.records = records
        self.topic = topic
        self.rate = rate
        self.on_emit = on_emit

    def list_parts(self) -> list[str]:
        return [f"0-{self.topic}"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _IteratorPartition:
        offset = resume_state or 0
        return _IteratorPartition(self.records(offset), self.topic, offset, self.rate, self.on_emit, self.stop)


class _FilePartition(StatefulSourcePartition[RecordBatch, int]):
    def __init__(self, path: Path, line: int, stop: threading.Event, on_read: Callable[[int], None]) -> None:
        self.stop = stop
        self.path = path
        self.handle = path.open("rb")
        self.line = 0
        self.lines: Iterator[bytes] = iter(self.handle)
        self.on_read = on_read
        for _ in range(line):  # resume: skip what an earlier run already read
            next(self.lines, None)
            self.line += 1
        if self.line:
            on_read(self.line)

    def next_batch(self) -> list[RecordBatch]:
        if self.stop.is_set():
            raise StopIteration()
        lines, payloads, first = [], [], self.line
        for raw in self.lines:
            self.line += 1
            payload = raw.rstrip(b"\r\n")
            if payload.strip():
                lines.append(self.line)
                payloads.append(payload)
            if len(payloads) >= READ_BATCH:
                break
        self.on_read(self.line - first)
        if not payloads:
            raise StopIteration()
        return [RecordBatch(str(self.path), FILE_PARTITION, np.array(lines, dtype=np.int64), payloads)]

    def snapshot(self) -> int:
        return self.line

    def close(self) -> None:
        self.handle.close()


class JsonLinesSource(FixedPartitionedSource[RecordBatch, int]):
    """One partition per file; a record per non-blank line, positioned by file and line number. ``on_read`` is told
    how many lines (blank ones too) each read consumed."""

    def __init__(self, paths: list[str | Path], stop: threading.Event | None = None,
                 on_read: Callable[[int], None] = lambda n: None) -> None:
        self.stop = stop or threading.Event()
        self.paths = [Path(p) for p in paths]
        self.on_read = on_read
        missing = [p for p in self.paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(_not_found(missing))

    def lines(self) -> int:
        """The lines of the files, as reading them counts them (a last line without a newline too)."""
        total = 0
        for path in self.paths:
            with path.open("rb") as handle:
                last = b"\n"
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    total += chunk.count(b"\n")
                    last = chunk[-1:]
            total += last != b"\n"
        return total

    def list_parts(self) -> list[str]:
        return [str(p) for p in self.paths]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _FilePartition:
        return _FilePartition(Path(for_part), resume_state or 0, self.stop, self.on_read)


def _not_found(paths: list[Path]) -> str:
    """Which files are missing and where Vigil looked for them (a config file's relative paths are resolved against
    its folder when it is read; one given with --set or VIGIL_* is relative to the current directory)."""
    return "source file(s) not found: " + ", ".join(
        str(path) if path.is_absolute() else f"{path} (looked for {path.absolute()}, relative to the current directory)"
        for path in paths) + "; a relative source.path in a config file is relative to that file"
