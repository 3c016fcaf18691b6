"""The synthetic stream as the records of one topic partition, for :class:`~pipeline.engine.sources.IteratorSource`.

Offsets are the stream's own: record ``n`` of the stream is at offset ``n`` of partition 0 of the
topic, so a resumed run continues from the snapshotted offset with the same bytes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from operators.event import SourcePosition
from pipeline.demo.synthetic import SyntheticStream
from pipeline.engine.sources import RawRecord


def stream_records(stream: SyntheticStream, topic: str) -> Callable[[int], Iterator[RawRecord]]:
    """The factory ``records(start_offset)``: the stream's payloads from that offset on, positioned in ``topic``."""

    def records(start: int) -> Iterator[RawRecord]:
        for record in stream.payloads(start=start):
            yield RawRecord(record.payload, SourcePosition(topic=topic, partition=0, offset=record.offset))

    return records
