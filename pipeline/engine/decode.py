"""Wire format: decode and validate JSON events, turn failures into dead letters.

An event on the wire is a JSON object::

    {"key": "host-7", "ts": "2026-01-01T00:00:00Z" | 1767225600000,
     "fields": {"cpu": 41.5, "region": "eu"}, "label": "spike", "group": "web", "id": "..."}

``key``, ``ts`` and ``fields`` are required; ``ts`` is an RFC 3339 string with an offset or epoch
milliseconds; field values are numbers or strings. Decoding uses msgspec, which validates types while
parsing. Any failure becomes a :class:`DeadLetter` carrying the original bytes, a reason from
:data:`REASONS` (a bounded set, used as a metric label) and the source position.

Sources hand over :class:`RecordBatch` es (the payloads of one read of one partition) and
:func:`decode_batch` turns each into one columnar :class:`~operators.batch.Batch` of the valid events
plus the dead letters, with exactly the outcome :func:`decode_event` gives record by record.
"""
from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, NamedTuple

import msgspec
import numpy as np

from operators.batch import FILE_PARTITION, Batch
from operators.event import AwareDatetime, Event, FieldValue, Label, SourcePosition, epoch_ms

REASONS = (
    "oversized",
    "bad_json",
    "not_an_object",
    "missing_key",
    "bad_key",
    "bad_timestamp",
    "bad_fields",
    "non_finite",
    "bad_schema",
)

# Epoch milliseconds from 1970 to 9999-12-31, so every timestamp formats as RFC 3339.
_MAX_TS_MS = 253_402_300_799_999


class RecordBatch(NamedTuple):
    """Undecoded payloads read together from one source partition: a Kafka topic partition (``partition`` >= 0,
    ``offsets`` are record offsets) or a file (``partition`` is ``FILE_PARTITION``, ``offsets`` are line numbers)."""

    origin: str
    partition: int
    offsets: np.ndarray  # int64, one per payload
    payloads: list[bytes]
    keys: list[bytes | None] | None = None  # the Kafka records' keys, when the schema reads them
    timestamps: np.ndarray | None = None  # the Kafka records' timestamps (epoch ms), when the schema reads them

    @property
    def part(self) -> str:
        """The name of the source partition it was read from (``<partition>-<topic>``, or the file's path)."""
        return self.origin if self.partition == FILE_PARTITION else f"{self.partition}-{self.origin}"

    def position(self, row: int) -> SourcePosition:
        offset = int(self.offsets[row])
        if self.partition == FILE_PARTITION:
            return SourcePosition(file=self.origin, line=offset)
        return SourcePosition(topic=self.origin, partition=self.partition, offset=offset)


class WireEvent(msgspec.Struct):
    key: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    ts: AwareDatetime | int
    fields: dict[str, FieldValue]
    label: Label = None
    group: str | None = None
    id: str | None = None


class DeadLetter(msgspec.Struct):
    """A record that could not be used. ``payload`` is the original bytes, as UTF-8 text when they
    are valid UTF-8 (``payload_encoding = "utf-8"``), else base64."""

    reason: str
    detail: str
    source: SourcePosition
    payload: str
    payload_encoding: str

    @classmethod
    def of(cls, raw: bytes, reason: str, detail: str, source: SourcePosition) -> DeadLetter:
        try:
            return cls(reason, detail, source, raw.decode("utf-8"), "utf-8")
        except UnicodeDecodeError:
            return cls(reason, detail, source, base64.b64encode(raw).decode("ascii"), "base64")

    def original_bytes(self) -> bytes:
        if self.payload_encoding == "utf-8":
            return self.payload.encode("utf-8")
        return base64.b64decode(self.payload)


_decoder = msgspec.json.Decoder(WireEvent)


def _reason_for(message: str) -> str:
    if "Number out of range" in message:  # e.g. 1e999, which would decode to infinity
        return "non_finite"
    if "Expected `object`" in message and "at `$" not in message:
        return "not_an_object"
    if "missing required field `key`" in message:
        return "missing_key"
    if "`$.key`" in message:
        return "bad_key"
    if "`$.ts`" in message or "missing required field `ts`" in message:
        return "bad_timestamp"
    if "`$.fields" in message or "missing required field `fields`" in message:
        return "bad_fields"
    return "bad_schema"


def _decode_one(raw: bytes, source: SourcePosition, max_bytes: int) -> tuple[WireEvent, int] | DeadLetter:
    """A payload's wire record and event time, or its dead letter."""
    if len(raw) > max_bytes:
        return DeadLetter.of(raw, "oversized", f"{len(raw)} bytes exceeds the {max_bytes}-byte limit", source)
    try:
        wire = _decoder.decode(raw)
    except msgspec.ValidationError as error:
        return DeadLetter.of(raw, _reason_for(str(error)), str(error), source)
    except msgspec.DecodeError as error:
        return DeadLetter.of(raw, "bad_json", str(error), source)
    except RecursionError:  # msgspec skips an unknown field's value recursively: '{"x":[[[[...' a thousand deep
        return DeadLetter.of(raw, "bad_json", "JSON is nested too deeply", source)
    if isinstance(wire.ts, datetime):
        ts_ms = epoch_ms(wire.ts)
    else:
        ts_ms = wire.ts
    if not 0 <= ts_ms <= _MAX_TS_MS:
        return DeadLetter.of(raw, "bad_timestamp", f"timestamp {wire.ts!r} is outside 1970..9999", source)
    for name, value in wire.fields.items():  # msgspec refuses 1e999 already; this guards other paths to inf
        if value.__class__ is float and not math.isfinite(value):
            return DeadLetter.of(raw, "non_finite", f"field {name!r} is {value}", source)
    return wire, ts_ms


def decode_event(raw: bytes, source: SourcePosition, max_bytes: int) -> Event | DeadLetter:
    """Decode one payload; never raises for bad input.

    >>> pos = SourcePosition(topic="t", partition=0, offset=1)
    >>> decode_event(b'{"key":"a","ts":1000,"fields":{"x":1}}', pos, 1024).fields
    {'x': 1.0}
    >>> decode_event(b'{"key":"a","ts":"yesterday","fields":{}}', pos, 1024).reason
    'bad_timestamp'
    """
    result = _decode_one(raw, source, max_bytes)
    if isinstance(result, DeadLetter):
        return result
    wire, ts_ms = result
    return Event(wire.key, ts_ms, wire.fields, source, wire.label, wire.group, wire.id)


class _Irregular(Exception):
    """A batch the fast path does not take as a whole (a bad or oversized payload, an out-of-range time)."""


def decode_batch(records: RecordBatch, numeric: Sequence[str], text: Sequence[str],
                 max_bytes: int) -> tuple[Batch, list[DeadLetter]]:
    """The valid events of ``records`` as columns (the ``numeric`` and ``text`` fields asked for) and the dead
    letters, in record order; the same outcome as :func:`decode_event` per record.

    The common case, a batch of good payloads, is one pass of msgspec decoding and column building; a batch
    with anything irregular is decoded record by record to find and explain the bad ones.

    >>> good, bad = b'{"key":"a","ts":1000,"fields":{"x":1}}', b'{"key":"a","ts":"soon","fields":{}}'
    >>> batch, dead = decode_batch(RecordBatch("t", 0, np.array([7, 8]), [good, bad]), ["x"], [], 1024)
    >>> batch.column("x").tolist(), batch.offset.tolist(), [(d.reason, str(d.source)) for d in dead]
    ([1.0], [7], [('bad_timestamp', 't/0@8')])
    """
    payloads = records.payloads
    dead: list[DeadLetter] = []
    try:
        if any(len(raw) > max_bytes for raw in payloads):
            raise _Irregular
        wires = [_decoder.decode(raw) for raw in payloads]
        ts_ms = np.array([w.ts if w.ts.__class__ is int else epoch_ms(w.ts) for w in wires], dtype=np.int64)
        if len(ts_ms) and not (0 <= ts_ms.min() and ts_ms.max() <= _MAX_TS_MS):
            raise _Irregular
        offsets = records.offsets
    except (_Irregular, msgspec.ValidationError, msgspec.DecodeError, OverflowError, RecursionError):
        wires, times, kept = [], [], []
        for row, raw in enumerate(payloads):
            result = _decode_one(raw, records.position(row), max_bytes)
            if isinstance(result, DeadLetter):
                dead.append(result)
            else:
                wires.append(result[0])
                times.append(result[1])
                kept.append(row)
        ts_ms = np.array(times, dtype=np.int64)
        offsets = records.offsets[np.array(kept, dtype=np.int64)]
    n = len(wires)
    batch = Batch.from_records(wires, ts_ms, np.full(n, records.origin, dtype=object),
                               np.full(n, records.partition, dtype=np.int64), np.asarray(offsets, dtype=np.int64),
                               numeric=numeric, text=text)
    return batch, dead
