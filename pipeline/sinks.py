"""Sinks for alerts and dead letters.

Items are msgspec structs (:class:`~operators.event.Alert`, :class:`~pipeline.decode.DeadLetter`);
each sink encodes them as one JSON object per line. :func:`build_sink` picks the implementation from
a sink's configuration, which is where further transports plug in.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from operators.event import SourcePosition

_encoder = msgspec.json.Encoder()


class _LinesPartition(StatelessSinkPartition[Any]):
    def __init__(self, handle: BinaryIO, owns_handle: bool) -> None:
        self.handle = handle
        self.owns_handle = owns_handle

    def write_batch(self, items: list[Any]) -> None:
        if items:
            # One write per batch: appends of whole lines stay intact with several workers.
            self.handle.write(b"".join(_encoder.encode(item) + b"\n" for item in items))
            self.handle.flush()

    def close(self) -> None:
        if self.owns_handle:
            self.handle.close()


class JsonLinesFileSink(DynamicSink[Any]):
    """Appends JSON lines to a file (created with its directory)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LinesPartition:
        return _LinesPartition(open(self.path, "ab", buffering=1 << 16), owns_handle=True)


class JsonLinesStdoutSink(DynamicSink[Any]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LinesPartition:
        return _LinesPartition(sys.stdout.buffer, owns_handle=False)


def build_sink(sink_type: str, path: Path) -> DynamicSink[Any]:
    if sink_type == "stdout":
        return JsonLinesStdoutSink()
    return JsonLinesFileSink(path)


class _Positioned(msgspec.Struct):
    source: SourcePosition
    operator: str = ""


def sort_by_source(path: str | Path) -> int:
    """Rewrite a JSON-lines output in source order (then operator); returns the line count.

    A bounded run calls this when it ends, so that its output file does not depend on how the
    engine interleaved shards and timers: the same input gives byte-identical files.
    """
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_bytes().splitlines()
    decoder = msgspec.json.Decoder(_Positioned)

    def order(line: bytes) -> tuple:
        item = decoder.decode(line)
        return (*item.source.sort_key(), item.operator)

    lines.sort(key=order)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_bytes(b"".join(line + b"\n" for line in lines))
    os.replace(temporary, path)
    return len(lines)
