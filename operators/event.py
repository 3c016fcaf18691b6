"""Records that cross the operator boundary: events in, alerts out.

Both are msgspec structs, so the pipeline encodes and decodes them without per-field Python code.
"""
from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta, timezone
from typing import Annotated

import msgspec

FieldValue = float | str
Label = str | int | bool | None


class SourcePosition(msgspec.Struct, frozen=True, omit_defaults=True):
    """Where a record came from: a topic, partition and offset, or a file and line; and ``item``, the event's index
    within the record when one record holds several events (an OTLP message: one event per data point), else None.

    ``item`` is left out of the JSON when None and shows as ``#<item>`` in the text form, so alert ids (which hash
    the text form) differ between the events of one record and stay as they were for one-event records:

    >>> str(SourcePosition(topic="t", partition=0, offset=7)), str(SourcePosition(file="m.jsonl", line=3, item=2))
    ('t/0@7', 'm.jsonl:3#2')
    >>> msgspec.json.encode(SourcePosition(topic="t", partition=0, offset=7))
    b'{"topic":"t","partition":0,"offset":7}'
    """

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    file: str | None = None
    line: int | None = None
    item: int | None = None

    def sort_key(self) -> tuple[str, int, int, int]:
        """Source order: by topic or file, partition, offset or line, then item (a record without one first)."""
        item = -1 if self.item is None else self.item
        if self.file is not None:
            return (self.file, 0, self.line or 0, item)
        return (self.topic or "", self.partition or 0, self.offset or 0, item)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.file is not None else f"{self.topic}/{self.partition}@{self.offset}"
        return where if self.item is None else f"{where}#{self.item}"


class Event(msgspec.Struct):
    """A decoded, validated event. ``ts_ms`` is event time in epoch milliseconds (UTC)."""

    key: str
    ts_ms: int
    fields: dict[str, FieldValue]
    source: SourcePosition
    label: Label = None
    group: str | None = None
    id: str | None = None


class Expectation(msgspec.Struct):
    """A field's value and what the operator expected of it: the expected value and the band around it."""

    value: float
    expected: float
    lower: float
    upper: float


class Alert(msgspec.Struct):
    """An operator's finding about one event.

    ``id`` is derived from the source position and the operator name only, so a replay or a
    re-delivery of the same record produces the same id and consumers can deduplicate.
    """

    id: str
    key: str
    ts: str
    operator: str
    kind: str
    score: float
    severity: str
    reason: str
    fields: list[str]
    source: SourcePosition
    p_value: float | None = None  # calibrated p-value of the score (outlier operators)
    # Per field it names, where the operator models a level: the value, the expected value and band.
    expected: dict[str, Expectation] | None = None


def alert_id(source: SourcePosition, operator: str) -> str:
    """Deterministic 16-hex-digit id.

    >>> alert_id(SourcePosition(topic="t", partition=0, offset=7), "outlier")
    '23b6b20e95433a20'
    """
    digest = hashlib.blake2b(f"{source}|{operator}".encode(), digest_size=8)
    return digest.hexdigest()


def format_ts(ts_ms: int) -> str:
    """RFC 3339 UTC with milliseconds.

    >>> format_ts(1767225600000)
    '2026-01-01T00:00:00.000Z'
    """
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


# An RFC 3339 time that must carry an offset; naive times are rejected.
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLISECOND = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """Exact epoch milliseconds of an aware datetime (no float rounding).

    >>> epoch_ms(datetime(2026, 1, 1, 0, 0, 0, 999000, tzinfo=timezone.utc))
    1767225600999
    """
    return (moment - _EPOCH) // _MILLISECOND


# Epoch numbers: milliseconds per unit, and the plausible range that says a unit was misdeclared.
MS_PER_UNIT = {"s": 1000, "ms": 1, "us": 1e-3, "ns": 1e-6}
EPOCH_DIVISOR = {"ms": 1, "us": 1000, "ns": 1_000_000}
YEAR_2000_MS, YEAR_2100_MS = 946_684_800_000, 4_102_444_800_000


def epoch_number_ms(value: int | float, unit: str) -> int:
    """Epoch milliseconds of a finite number of ``unit``, to the nearest (halves up); integers exactly, as an epoch in
    nanoseconds has more digits than a float holds.

    >>> epoch_number_ms(1764583200, "s"), epoch_number_ms(1764583200123500, "us"), epoch_number_ms(1.5, "ms")
    (1764583200000, 1764583200124, 2)
    """
    if value.__class__ is int:
        return value * 1000 if unit == "s" else (value + EPOCH_DIVISOR[unit] // 2) // EPOCH_DIVISOR[unit]
    return math.floor(value * MS_PER_UNIT[unit] + 0.5)


def plausible_unit(value: float) -> str | None:
    """The unit under which the epoch number ``value`` falls between 2000 and 2100, if one does.

    >>> plausible_unit(1764583200), plausible_unit(1764583200000), plausible_unit(1.7645832e18), plausible_unit(0.42)
    ('s', 'ms', 'ns', None)
    """
    return next((unit for unit, scale in MS_PER_UNIT.items() if YEAR_2000_MS <= value * scale <= YEAR_2100_MS), None)


def parse_ts_ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 time with an offset; ValueError otherwise.

    >>> parse_ts_ms("2026-01-01T01:00:00.250+01:00")
    1767225600250
    """
    try:
        return epoch_ms(msgspec.json.decode(msgspec.json.encode(text), type=AwareDatetime))
    except msgspec.ValidationError as error:
        raise ValueError(f"{text!r} is not an RFC 3339 time with an offset") from error
