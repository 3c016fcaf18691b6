"""The synthetic stream as the records of one topic partition, for :class:`~pipeline.engine.sources.IteratorSource`.

Offsets are the stream's own: record ``n`` of the stream is at offset ``n`` of partition 0 of the
topic, so a resumed run continues from the snapshotted offset with the same bytes.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from pipeline.demo.synthetic import SyntheticStream


def stream_records(stream: SyntheticStream) -> Callable[[int], Iterator[tuple[int, bytes]]]:
    """The factory ``records(start_offset)``: the stream's ``(offset, payload)`` pairs from that offset on."""

    def records(start: int) -> Iterator[tuple[int, bytes]]:
        return ((record.offset, record.payload) for record in stream.payloads(start=start))

    return records
