"""The columnar micro-batch that crosses the operator boundary.

A :class:`Batch` holds one shard's events as arrays, one row per event, in stream order:

* ``keys`` (object array of str) and ``slots`` (int64): the entity key and its slot in the shard's
  :class:`~operators.entities.EntityIndex`. Per-entity state is indexed by slot;
* ``ts_ms`` (int64): event time in epoch milliseconds;
* ``origin`` (object: topic or file name), ``partition`` (int64, -1 for a file) and ``offset``
  (int64: the offset, or the line of a file): the source position, from which alert ids derive;
* ``item`` (int64): the event's index within its record where one record holds several events (an OTLP message,
  one event per data point), ``NO_ITEM`` (-1) on rows of one-event records (the usual case);
* ``numeric``: one float64 column per numeric field asked for, NaN where the field is missing or
  not a number; ``text``: one object column per text field asked for, None where it is missing or
  not a string;
* ``label``, ``group``, ``ids`` (object arrays, None where absent): the optional event attributes;
* ``scores``: columns published by operators (``score:<name>`` for later operators);
* ``bands``: per outlier operator that models a level, its :class:`Band`: the value it expected each field to take and
  the band around it, per row.

Operators read and write arrays only: a batch exposes no event objects. :meth:`Batch.from_events`
builds one from :class:`~operators.event.Event` records (tests, docs, and the engine until it decodes
straight into columns).

>>> from operators.event import Event, SourcePosition
>>> events = [Event("a", 1000, {"cpu": 1.5, "host": "h1"}, SourcePosition(topic="t", partition=0, offset=7)),
...           Event("b", 2000, {"cpu": "n/a"}, SourcePosition(file="f.jsonl", line=3), group="web")]
>>> batch = Batch.from_events(events, numeric=["cpu"], text=["host"])
>>> batch.column("cpu").tolist(), batch.text("host").tolist(), batch.slots.tolist()
([1.5, nan], ['h1', None], [0, 1])
>>> str(batch.source(0)), str(batch.source(1)), batch.group.tolist()
('t/0@7', 'f.jsonl:3', [None, 'web'])
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from operators.event import Event, SourcePosition

SCORE_PREFIX = "score:"
P_VALUE_SUFFIX = ".p"  # score:<operator>.p is the calibrated p-value of score:<operator>
ALERT_SUFFIX = ".alert"  # score:<operator>.alert: a gated score in [0, 1], nonzero where a burst first crosses
FILE_PARTITION = -1  # the partition column of rows read from a file (offset is then the line)
NO_ITEM = -1  # the item column of a row whose record holds one event

_NUMBER_TYPES = (float, int)


class Band(NamedTuple):
    """What an operator expected its ``fields`` to take on each row, before it learned the row: the expected value and
    the band it considered normal, arrays of shape (rows, fields), NaN where it did not know yet."""

    fields: tuple[str, ...]
    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    @classmethod
    def concat(cls, bands: Sequence[Band]) -> Band:
        """The bands of consecutive row ranges as one."""
        return cls(bands[0].fields, *(np.concatenate([getattr(band, part) for band in bands])
                                      for part in ("expected", "lower", "upper")))

    def describe(self, row: int, fields: Sequence[str]) -> str:
        """The expectation for ``fields`` on ``row``, as an alert says it ("expected 180 [150, 210]"); "" if unknown.

        >>> band = Band(("cpu",), np.array([[180.0]]), np.array([[150.0]]), np.array([[210.0]]))
        >>> band.describe(0, ["cpu"])
        'expected 180 [150, 210]'
        """
        known = [(name, self.fields.index(name)) for name in fields if name in self.fields]
        known = [(name, j) for name, j in known if np.isfinite(self.expected[row, j])]
        parts = [f"{name + ' ' if len(known) > 1 else ''}{self.expected[row, j]:.4g} "
                 f"[{self.lower[row, j]:.4g}, {self.upper[row, j]:.4g}]" for name, j in known]
        return "expected " + ", ".join(parts) if parts else ""


def _objects(values: Iterable) -> np.ndarray:
    items = list(values)
    column = np.empty(len(items), dtype=object)
    column[:] = items
    return column


class Batch:
    """One shard's micro-batch as columns (module docstring)."""

    def __init__(self, keys: np.ndarray, slots: np.ndarray, ts_ms: np.ndarray, origin: np.ndarray,
                 partition: np.ndarray, offset: np.ndarray, *, numeric: dict[str, np.ndarray] | None = None,
                 text: dict[str, np.ndarray] | None = None, label: np.ndarray | None = None,
                 group: np.ndarray | None = None, ids: np.ndarray | None = None,
                 item: np.ndarray | None = None) -> None:
        n = len(keys)
        self.keys = keys
        self.slots = slots
        self.ts_ms = ts_ms
        self.origin = origin
        self.partition = partition
        self.offset = offset
        self.numeric = numeric or {}
        self.text_columns = text or {}
        none = np.full(n, None, dtype=object)
        self.label = none if label is None else label
        self.group = none if group is None else group
        self.ids = none if ids is None else ids
        self.item = np.full(n, NO_ITEM, dtype=np.int64) if item is None else item
        self.scores: dict[str, np.ndarray] = {}
        self.bands: dict[str, Band] = {}

    @classmethod
    def from_events(cls, events: Sequence[Event], *, numeric: Sequence[str] | None = None,
                    text: Sequence[str] | None = None, slots: np.ndarray | None = None) -> Batch:
        """Columns of ``events``. ``numeric`` / ``text``: the fields to extract (default: every field
        seen, both ways). ``slots``: entity slots; by default each key's rank of first appearance,
        which suits a single batch (a stream goes through :class:`~operators.registry.OperatorChain`,
        whose entity index assigns slots)."""
        fields = [event.fields for event in events]
        if numeric is None or text is None:
            seen = list(dict.fromkeys(name for f in fields for name in f))
            numeric = seen if numeric is None else numeric
            text = seen if text is None else text
        sources = [event.source for event in events]
        from_file = [s.file is not None for s in sources]
        items = np.fromiter((NO_ITEM if s.item is None else s.item for s in sources), dtype=np.int64,
                            count=len(sources))
        batch = cls.from_records(
            events, np.fromiter((event.ts_ms for event in events), dtype=np.int64, count=len(events)),
            _objects(s.file if f else s.topic for s, f in zip(sources, from_file)),
            np.fromiter((FILE_PARTITION if f else s.partition for s, f in zip(sources, from_file)), dtype=np.int64,
                        count=len(sources)),
            np.fromiter(((s.line if f else s.offset) or 0 for s, f in zip(sources, from_file)), dtype=np.int64,
                        count=len(sources)),
            numeric=numeric, text=text, item=items)
        if slots is None:
            first_seen: dict[str, int] = {}
            slots = np.fromiter((first_seen.setdefault(k, len(first_seen)) for k in batch.keys), dtype=np.int64,
                                count=len(batch))
        batch.slots = np.asarray(slots, dtype=np.int64)
        return batch

    @classmethod
    def from_records(cls, records: Sequence, ts_ms: np.ndarray, origin: np.ndarray, partition: np.ndarray,
                     offset: np.ndarray, *, numeric: Sequence[str], text: Sequence[str],
                     item: np.ndarray | None = None) -> Batch:
        """Columns of records that have ``key``, ``fields``, ``label``, ``group`` and ``id`` attributes (events, or
        the decoder's wire records), with their event times and source positions (``item`` too, when they have
        one) given as arrays; slots are 0 until the shard's entity index assigns them."""
        fields = [record.fields for record in records]
        n = len(records)
        return cls(
            _objects(record.key for record in records),
            np.zeros(n, dtype=np.int64),
            ts_ms,
            origin,
            partition,
            offset,
            numeric={name: np.fromiter((v if (v := f.get(name)).__class__ in _NUMBER_TYPES else np.nan for f in fields),
                                       dtype=np.float64, count=n) for name in numeric},
            text={name: _objects(v if (v := f.get(name)).__class__ is str else None for f in fields) for name in text},
            label=_objects(record.label for record in records),
            group=_objects(record.group for record in records),
            ids=_objects(record.id for record in records),
            item=item,
        )

    @classmethod
    def concat(cls, parts: Sequence[Batch]) -> Batch:
        """Rows of several batches with the same columns, in order (published scores are not carried)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        join = lambda name: np.concatenate([getattr(part, name) for part in parts])  # noqa: E731
        return cls(join("keys"), join("slots"), join("ts_ms"), join("origin"), join("partition"), join("offset"),
                   numeric={k: np.concatenate([part.numeric[k] for part in parts]) for k in first.numeric},
                   text={k: np.concatenate([part.text_columns[k] for part in parts]) for k in first.text_columns},
                   label=join("label"), group=join("group"), ids=join("ids"), item=join("item"))

    _OBJECT_COLUMNS = ("keys", "origin", "label", "group", "ids")
    _NUMBER_COLUMNS = ("slots", "ts_ms", "partition", "offset", "item")

    def to_plain(self) -> dict:
        """The rows as plain data (lists and numeric arrays), for snapshots of batches not processed yet."""
        return {**{name: getattr(self, name).tolist() for name in self._OBJECT_COLUMNS},
                **{name: getattr(self, name).copy() for name in self._NUMBER_COLUMNS},
                "numeric": {k: v.copy() for k, v in self.numeric.items()},
                "text": {k: v.tolist() for k, v in self.text_columns.items()}}

    @classmethod
    def from_plain(cls, state: dict) -> Batch:
        objects = {name: _objects(state[name]) for name in cls._OBJECT_COLUMNS}
        # A snapshot taken before batches had an item column has none: its rows are one-event records.
        numbers = {name: np.asarray(state[name], dtype=np.int64) for name in cls._NUMBER_COLUMNS if name in state}
        return cls(objects["keys"], numbers["slots"], numbers["ts_ms"], objects["origin"], numbers["partition"],
                   numbers["offset"], numeric={k: np.asarray(v, dtype=np.float64) for k, v in state["numeric"].items()},
                   text={k: _objects(v) for k, v in state["text"].items()}, label=objects["label"],
                   group=objects["group"], ids=objects["ids"], item=numbers.get("item"))

    def __len__(self) -> int:
        return len(self.keys)

    def column(self, name: str) -> np.ndarray:
        """A numeric column: an event field asked for as numeric, or ``score:<operator>``."""
        if name.startswith(SCORE_PREFIX):
            return self.scores[name[len(SCORE_PREFIX) :]]
        try:
            return self.numeric[name]
        except KeyError:
            raise KeyError(f"numeric field {name!r} was not extracted into this batch") from None

    def matrix(self, names: Sequence[str]) -> np.ndarray:
        """The numeric columns ``names`` side by side (rows x len(names), float64)."""
        if not names:
            return np.empty((len(self), 0))
        return np.column_stack([self.column(name) for name in names])

    def text(self, name: str) -> np.ndarray:
        """A text column (object array; None where missing or not a string)."""
        try:
            return self.text_columns[name]
        except KeyError:
            raise KeyError(f"text field {name!r} was not extracted into this batch") from None

    def source(self, row: int) -> SourcePosition:
        """The source position of one row (for alert records)."""
        origin, partition, offset = self.origin[row], int(self.partition[row]), int(self.offset[row])
        item = int(self.item[row])
        item = None if item == NO_ITEM else item
        if partition == FILE_PARTITION:
            return SourcePosition(file=origin, line=offset, item=item)
        return SourcePosition(topic=origin, partition=partition, offset=offset, item=item)

    def row_of(self, source: SourcePosition) -> int:
        """The row at a source position (an alert's), the first if several share it."""
        in_file = source.file is not None
        candidates = np.flatnonzero(self.offset == (source.line if in_file else source.offset))
        partition = FILE_PARTITION if in_file else source.partition
        origin = source.file if in_file else source.topic
        item = NO_ITEM if source.item is None else source.item
        for row in candidates.tolist():
            if self.partition[row] == partition and self.origin[row] == origin and self.item[row] == item:
                return row
        raise KeyError(f"no row of the batch is at {source}")

    def rows(self, start: int, stop: int) -> Batch:
        """Rows ``[start, stop)`` as a batch of views (published scores and bands included)."""
        return self.take(slice(start, stop))

    def take(self, part: slice | np.ndarray) -> Batch:
        """The rows selected by a slice (views) or an index array (copies), published scores and bands included."""
        sub = Batch(self.keys[part], self.slots[part], self.ts_ms[part], self.origin[part], self.partition[part],
                    self.offset[part], numeric={k: v[part] for k, v in self.numeric.items()},
                    text={k: v[part] for k, v in self.text_columns.items()}, label=self.label[part],
                    group=self.group[part], ids=self.ids[part], item=self.item[part])
        sub.scores = {k: v[part] for k, v in self.scores.items()}
        sub.bands = {k: Band(band.fields, band.expected[part], band.lower[part], band.upper[part])
                     for k, band in self.bands.items()}
        return sub


def row_max(per_field: np.ndarray) -> np.ndarray:
    """The largest finite value per row of a (rows, fields) array, NaN where there is none."""
    finite = np.where(np.isnan(per_field), -np.inf, per_field)
    out = finite.max(axis=1, initial=-np.inf)
    out[out == -np.inf] = np.nan
    return out
