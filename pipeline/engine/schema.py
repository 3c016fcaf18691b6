"""Declared event schemas (``[source.schema]``) compiled into batch decoders.

A :class:`~pipeline.config.SchemaConfig` names where an event's key, time, fields and optional attributes are in a
JSON payload. :func:`compile_schema` turns it, together with the fields the operators read, into a
:class:`SchemaDecoder`: a msgspec ``Struct`` type generated for exactly the paths it needs (nested paths become
nested structs, every other part of the payload is skipped by msgspec's parser without building Python objects),
and attribute getters that build the batch's columns from the decoded structs. Vigil's own format (the default
schema) keeps the decoder of :mod:`pipeline.engine.decode`, unchanged.

Field layouts, set by the preset:

* ``paths`` (``flat``): a field name is a dotted path from the payload's root;
* ``map`` (``telegraf``): the fields are the numeric and string entries of one object (``fields``);
* ``sample`` (``prometheus``): one sample per message, the field named by ``name`` and its value in ``value`` (a
  number, or a number as text as the adapters write it); samples of metrics no operator reads are counted as
  ignored, not dead-lettered;
* ``otlp``: OTLP/JSON export requests, one event per data point (:mod:`pipeline.engine.otlp`), each with its
  ``item`` in the source position.

:meth:`SchemaDecoder.decode_events` gives one payload's events under any layout (a list: none, one, or one per data
point); :meth:`SchemaDecoder.decode_event` serves the one-event layouts only.

>>> from pipeline.config import SchemaConfig
>>> schema = SchemaConfig(preset="flat", key=["host"], time="ts", time_unit="s")
>>> decoder = compile_schema(schema, numeric=["cpu", "disk.used"], text=[])
>>> records = RecordBatch("t", 0, np.array([5]), [b'{"host":"web-1","ts":1764583200,"cpu":0.42,"disk":{"used":7}}'])
>>> batch, dead, ignored = decoder.decode_batch(records, 1024)
>>> batch.keys.tolist(), batch.ts_ms.tolist(), batch.column("cpu").tolist(), batch.column("disk.used").tolist()
(['web-1'], [1764583200000], [0.42], [7.0])
"""
from __future__ import annotations

import logging
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, NamedTuple

import msgspec
import numpy as np

from operators.batch import Batch, _objects
from operators.event import (EPOCH_DIVISOR, MS_PER_UNIT, YEAR_2000_MS, YEAR_2100_MS, AwareDatetime, Event, FieldValue,
                             Label, SourcePosition, epoch_ms, epoch_number_ms, plausible_unit)
from pipeline.config import KAFKA_KEY, KAFKA_TIMESTAMP, SchemaConfig
from pipeline.engine.decode import _MAX_TS_MS, DeadLetter, RecordBatch, _reason_for, decode_batch, decode_event

log = logging.getLogger("vigil")

LAYOUTS = {"vigil": "vigil", "flat": "paths", "telegraf": "map", "prometheus": "sample", "otlp": "otlp"}
MAP_PATH = "fields"  # telegraf's fields object
SAMPLE_NAME, SAMPLE_VALUE = "name", "value"  # the Prometheus adapters' metric name and value
_MAX_KEY = 1024

KeyPart = Annotated[str, msgspec.Meta(max_length=_MAX_KEY)] | int
Timestamp = AwareDatetime | int | float


class Decoded(NamedTuple):
    batch: Batch
    dead: list[DeadLetter]
    ignored: int  # valid samples of metrics that no operator reads


class _Row(NamedTuple):
    """One decoded event before it becomes columns."""

    key: str
    ts_ms: int
    fields: dict[str, FieldValue]
    label: Label
    group: str | None
    id: str | None


@dataclass
class _Node:
    """A JSON object in the generated struct: its children by JSON name, a leaf's type and whether it is required."""

    children: dict[str, _Node] = field(default_factory=dict)
    leaf: Any = None
    required: bool = False

    def add(self, path: str, leaf: Any, required: bool) -> None:
        node = self
        parts = path.split(".")
        for part in parts:
            if node.leaf is not None:
                raise ValueError(f"{path!r} goes inside {part!r}, which another path names as a value")
            node = node.children.setdefault(part, _Node())
            node.required |= required
        if node.children:
            raise ValueError(f"{path!r} names an object that other paths go inside")
        node.leaf = node.leaf or leaf  # a path named twice (a key part that is also a text field) keeps its first type

    def struct(self, name: str = "Payload") -> type:
        spec = []
        for index, (json_name, child) in enumerate(self.children.items()):
            kind = child.leaf if child.leaf is not None else child.struct(f"{name}_{index}")
            if child.required:
                default = msgspec.field(name=json_name)
            elif child.leaf is None:
                default = msgspec.field(name=json_name, default_factory=kind)
            else:
                default = msgspec.field(name=json_name, default=None)
            spec.append((f"f{index}", kind if child.required or child.leaf is None else kind | None, default))
        return msgspec.defstruct(name, spec, kw_only=True)

    def attribute(self, path: str) -> str:
        """The generated attribute chain of a JSON path (``a.b`` -> ``f0.f1``)."""
        node, names = self, []
        for part in path.split("."):
            names.append(f"f{list(node.children).index(part)}")
            node = node.children[part]
        return ".".join(names)


def _getter(root: _Node, path: str) -> Callable[[Any], Any]:
    return operator.attrgetter(root.attribute(path))


class SchemaDecoder:
    """Decodes payloads of one declared schema into batches of the ``numeric`` and ``text`` fields asked for."""

    def __init__(self, schema: SchemaConfig, numeric: Sequence[str], text: Sequence[str]) -> None:
        self.schema = schema = schema.resolved()
        self.layout = LAYOUTS[schema.preset]
        self.numeric, self.text = list(numeric), list(text)
        self.kafka_key = schema.key == [KAFKA_KEY]
        self.kafka_time = schema.time == KAFKA_TIMESTAMP
        self.unit = schema.time_unit
        self.warned_unit = False
        self._roles: list[tuple[str, str]] = []  # (JSON path, dead-letter reason when it is missing or wrong)
        if self.layout == "otlp":
            from pipeline.engine.otlp import OtlpLayout

            self.otlp = OtlpLayout(self)  # its key parts and time, checked now
            return
        if self.layout == "vigil":
            return
        root = _Node()
        self.key_parts: list[tuple[Callable[[Any], Any], bool]] = []  # (getter, whole object)
        for part in [] if self.kafka_key else schema.key:
            whole = part.endswith(".*") or part == "*"
            path = part[:-2] if part.endswith(".*") else part
            if part == "*":
                raise ValueError("a key part '*' (every top-level entry) is not supported; name the object, e.g. tags.*")
            root.add(path, dict[str, KeyPart] if whole else KeyPart, required=True)
            self._roles.append((path, "key"))
            self.key_parts.append((path, whole))
        if not self.kafka_time:
            root.add(schema.time, Timestamp, required=True)
            self._roles.append((schema.time, "ts"))
        if self.layout == "paths":
            for name in dict.fromkeys(self.numeric + self.text):
                root.add(name, FieldValue | None, required=False)
                self._roles.append((name, "fields"))
        elif self.layout == "map":
            root.add(MAP_PATH, dict[str, FieldValue], required=True)
            self._roles.append((MAP_PATH, "fields"))
        else:  # sample
            root.add(SAMPLE_NAME, str, required=True)
            root.add(SAMPLE_VALUE, float | str, required=True)
            self._roles += [(SAMPLE_NAME, "fields"), (SAMPLE_VALUE, "fields")]
        self.optional = {}
        for name in ("label", "group", "id"):
            path = getattr(schema, name)
            if path:
                root.add(path, Label if name == "label" else str | None, required=False)
                self.optional[name] = path
        self._decoder = msgspec.json.Decoder(root.struct())
        self.key_parts = [(_getter(root, path), whole) for path, whole in self.key_parts]
        self.time_of = None if self.kafka_time else _getter(root, schema.time)
        self.optional = {name: _getter(root, path) for name, path in self.optional.items()}
        if self.layout == "paths":
            self.field_of = {name: _getter(root, name) for name in dict.fromkeys(self.numeric + self.text)}
        elif self.layout == "map":
            self.map_of = _getter(root, MAP_PATH)
        else:
            self.name_of, self.value_of = _getter(root, SAMPLE_NAME), _getter(root, SAMPLE_VALUE)
        self._roles.sort(key=lambda role: -len(role[0]))

    # ---- one record ----

    def _reason(self, message: str) -> str:
        """The dead-letter reason of a msgspec error, from the declared role of the path it is about."""
        if "Number out of range" in message:
            return _reason_for(message)
        missing = re.search(r"missing required field `([^`]*)`(?: - at `\$([^`]*)`)?", message)
        at = re.search(r"at `\$([^`]*)`", message)
        if missing:
            path = ((missing.group(2) or "") + "." + missing.group(1)).lstrip(".")
        elif at:
            path = at.group(1).lstrip(".")
        else:
            return _reason_for(message)  # not an object, numbers out of range
        for declared, role in self._roles:
            if path == declared or path.startswith((declared + ".", declared + "[")) or declared.startswith(path + "."):
                if role == "key":
                    return "missing_key" if missing else "bad_key"
                return "bad_timestamp" if role == "ts" else "bad_fields"
        return "bad_schema"

    def _key(self, wire: Any, kafka_key: bytes | None) -> str:
        if self.kafka_key:
            if kafka_key is None:
                raise _Bad("missing_key", "the Kafka record has no key")
            try:
                return kafka_key.decode("utf-8")
            except UnicodeDecodeError:
                raise _Bad("bad_key", "the Kafka record's key is not UTF-8") from None
        parts = []
        for getter, whole in self.key_parts:
            value = getter(wire)
            if value == "" and not whole:
                raise _Bad("bad_key", "a part of the key is empty")
            parts.append(",".join(f"{k}={v}" for k, v in sorted(value.items())) if whole else str(value))
        key = self.schema.key_separator.join(parts)
        if not key or len(key) > _MAX_KEY:
            raise _Bad("bad_key", f"the key is {'empty' if not key else f'longer than {_MAX_KEY} characters'}")
        return key

    def _ts_ms(self, value: Any) -> int:
        if isinstance(value, datetime):
            ts_ms = epoch_ms(value)
        elif self.unit == "rfc3339":
            raise _Bad("bad_timestamp", f"timestamp {value!r} is a number but time_unit is rfc3339 (declare s, ms, "
                       f"us or ns{self._unit_hint(value)})")
        elif value.__class__ is float and not math.isfinite(value * MS_PER_UNIT[self.unit]):
            raise _Bad("bad_timestamp", f"timestamp {value!r} is not finite")
        else:
            ts_ms = epoch_number_ms(value, self.unit)
        if not 0 <= ts_ms <= _MAX_TS_MS:
            raise _Bad("bad_timestamp", f"timestamp {value!r} ({self.unit}) is outside 1970..9999")
        return ts_ms

    def _unit_hint(self, value: float) -> str:
        unit = plausible_unit(value)
        return f"; {unit} would put it between 2000 and 2100" if unit else ""

    def _fields(self, wire: Any) -> dict[str, FieldValue] | None:
        """The event's fields; None for a sample of a metric that no operator reads."""
        if self.layout == "paths":
            fields = {name: value for name, getter in self.field_of.items() if (value := getter(wire)) is not None}
        elif self.layout == "map":
            fields = self.map_of(wire)
        else:
            name, value = self.name_of(wire), self.value_of(wire)
            if name not in self.numeric:
                return None
            if value.__class__ is str:
                try:
                    value = float(value)
                except ValueError:
                    raise _Bad("bad_fields", f"the value of {name!r} is {value!r}, not a number") from None
            fields = {name: value}
        for name, value in fields.items():
            if value.__class__ is float and not math.isfinite(value):
                raise _Bad("non_finite", f"field {name!r} is {value}")
        return fields

    def _row(self, raw: bytes, kafka_key: bytes | None, kafka_ts: int | None) -> _Row | None:
        """One payload's event (None for an ignored sample); raises :class:`_Bad` with the reason otherwise."""
        try:
            wire = self._decoder.decode(raw)
        except msgspec.ValidationError as error:
            raise _Bad(self._reason(str(error)), str(error)) from None
        except msgspec.DecodeError as error:
            raise _Bad("bad_json", str(error)) from None
        except RecursionError:
            raise _Bad("bad_json", "JSON is nested too deeply") from None
        fields = self._fields(wire)
        if fields is None:
            return None
        key = self._key(wire, kafka_key)
        ts_ms = kafka_ts if self.kafka_time else self._ts_ms(self.time_of(wire))
        optional = {name: getter(wire) for name, getter in self.optional.items()}
        return _Row(key, ts_ms, fields, optional.get("label"), optional.get("group"), optional.get("id"))

    def decode_event(self, raw: bytes, source: SourcePosition, max_bytes: int, kafka_key: bytes | None = None,
                     kafka_ts: int | None = None) -> Event | DeadLetter | None:
        """One payload as an event, its dead letter, or None for an ignored sample; never raises for bad input.

        Layouts with one event per payload only: an OTLP message holds many (TypeError; use :meth:`decode_events`)."""
        if self.layout == "vigil":
            return decode_event(raw, source, max_bytes)
        if self.layout == "otlp":
            raise TypeError("an OTLP message holds one event per data point: use decode_events")
        if len(raw) > max_bytes:
            return DeadLetter.of(raw, "oversized", f"{len(raw)} bytes exceeds the {max_bytes}-byte limit", source)
        try:
            row = self._row(raw, kafka_key, kafka_ts)
        except _Bad as bad:
            return DeadLetter.of(raw, bad.reason, bad.detail, source)
        if row is None:
            return None
        return Event(row.key, row.ts_ms, row.fields, source, row.label, row.group, row.id)

    def decode_events(self, raw: bytes, source: SourcePosition, max_bytes: int, kafka_key: bytes | None = None,
                      kafka_ts: int | None = None) -> list[Event] | DeadLetter:
        """One payload's events (every layout: none for an ignored sample, one per data point of an OTLP message,
        each with its ``source.item``; else one) or its dead letter; never raises for bad input."""
        if self.layout == "otlp":
            from pipeline.engine.otlp import decode_otlp_events

            return decode_otlp_events(self, raw, source, max_bytes, kafka_key, kafka_ts)
        result = self.decode_event(raw, source, max_bytes, kafka_key, kafka_ts)
        return [] if result is None else result if isinstance(result, DeadLetter) else [result]

    # ---- a batch ----

    def decode_batch(self, records: RecordBatch, max_bytes: int) -> Decoded:
        """The valid events of ``records`` as columns, the dead letters in record order, and the count of ignored
        samples: the outcome :meth:`decode_event` gives record by record."""
        if self.layout == "vigil":
            batch, dead = decode_batch(records, self.numeric, self.text, max_bytes)
            self._check_unit(batch)
            return Decoded(batch, dead, 0)
        if self.layout == "otlp":
            from pipeline.engine.otlp import decode_otlp_batch

            return decode_otlp_batch(self, records, max_bytes)
        try:
            return self._fast(records, max_bytes)
        except (_Irregular, msgspec.ValidationError, msgspec.DecodeError, RecursionError, TypeError, ValueError,
                AttributeError, OverflowError):
            pass
        rows, kept, dead, ignored = [], [], [], 0
        keys = records.keys if self.kafka_key else None
        times = records.timestamps if self.kafka_time else None
        for index, raw in enumerate(records.payloads):
            if len(raw) > max_bytes:
                dead.append(DeadLetter.of(raw, "oversized", f"{len(raw)} bytes exceeds the {max_bytes}-byte limit",
                                          records.position(index)))
                continue
            try:
                row = self._row(raw, None if keys is None else keys[index], None if times is None else int(times[index]))
            except _Bad as bad:
                dead.append(DeadLetter.of(raw, bad.reason, bad.detail, records.position(index)))
                continue
            if row is None:
                ignored += 1
                continue
            rows.append(row)
            kept.append(index)
        batch = self.columns(rows, records, np.array(kept, dtype=np.int64))
        self._check_unit(batch)
        return Decoded(batch, dead, ignored)

    def _fast(self, records: RecordBatch, max_bytes: int) -> Decoded:
        """A batch of good payloads in one pass of msgspec decoding and column building; raises on anything
        irregular, which :meth:`decode_batch` then decodes record by record to find and explain."""
        payloads = records.payloads
        if any(len(raw) > max_bytes for raw in payloads):
            raise _Irregular
        decode = self._decoder.decode
        wires = [decode(raw) for raw in payloads]
        rows = np.arange(len(wires))
        if self.layout == "sample":  # samples of metrics no operator reads are dropped first
            names = np.array([self.name_of(w) for w in wires] or [""], dtype=object)[: len(wires)]
            rows = np.flatnonzero(np.isin(names, self.numeric))
            wires = [wires[row] for row in rows.tolist()]
            values = np.array([float(self.value_of(w)) for w in wires], dtype=np.float64)
            if not np.isfinite(values).all():
                raise _Irregular
            numeric = {name: np.where(names[rows] == name, values, np.nan) for name in self.numeric}
            text = {}
        elif self.layout == "paths":
            numeric = {name: self._numbers(map(self.field_of[name], wires), len(wires)) for name in self.numeric}
            text = {name: _texts(map(self.field_of[name], wires)) for name in self.text}
        else:
            maps = list(map(self.map_of, wires))
            numeric = {name: self._numbers((f.get(name) for f in maps), len(maps)) for name in self.numeric}
            text = {name: _texts(f.get(name) for f in maps) for name in self.text}
        n = len(wires)
        ts_ms = self._times(wires, records, rows)
        optional = {name: _objects(map(getter, wires)) for name, getter in self.optional.items()}
        batch = Batch(self._keys(wires, records, rows), np.zeros(n, dtype=np.int64), ts_ms,
                      np.full(n, records.origin, dtype=object), np.full(n, records.partition, dtype=np.int64),
                      np.asarray(records.offsets[rows], dtype=np.int64), numeric=numeric, text=text,
                      label=optional.get("label"), group=optional.get("group"), ids=optional.get("id"))
        self._check_unit(batch)
        return Decoded(batch, [], len(payloads) - n)

    @staticmethod
    def _numbers(values, n: int) -> np.ndarray:
        column = np.fromiter((v if v.__class__ is float else np.nan for v in values), dtype=np.float64, count=n)
        if np.isinf(column).any():
            raise _Irregular
        return column

    def _keys(self, wires: list, records: RecordBatch, rows: np.ndarray) -> np.ndarray:
        if self.kafka_key:
            keys = [records.keys[row].decode("utf-8") for row in rows.tolist()]  # None: AttributeError, slow path
        elif len(self.key_parts) == 1 and not self.key_parts[0][1]:
            keys = [str(part) for part in map(self.key_parts[0][0], wires)]
        elif all(not whole for _, whole in self.key_parts):
            columns = [[str(part) for part in map(getter, wires)] for getter, _ in self.key_parts]
            if not all(all(column) for column in columns):
                raise _Irregular
            keys = list(map(self.schema.key_separator.join, zip(*columns)))
        else:
            keys = [self._key(wire, None) for wire in wires]
        if not all(keys) or max(map(len, keys), default=0) > _MAX_KEY:
            raise _Irregular
        return _objects(keys)

    def _times(self, wires: list, records: RecordBatch, rows: np.ndarray) -> np.ndarray:
        if self.kafka_time:
            ts_ms = np.asarray(records.timestamps, dtype=np.int64)[rows]
        elif self.unit == "rfc3339":
            ts_ms = np.array([epoch_ms(value) for value in map(self.time_of, wires)], dtype=np.int64)
        else:
            values = np.array(list(map(self.time_of, wires)))
            if values.dtype.kind == "i" and self.unit == "s":
                ts_ms = values * 1000
            elif values.dtype.kind == "i":
                divisor = EPOCH_DIVISOR[self.unit]
                ts_ms = (values + divisor // 2) // divisor
            elif values.dtype.kind == "f":
                ts_ms = np.floor(values * MS_PER_UNIT[self.unit] + 0.5)
                if not np.isfinite(ts_ms).all() or (len(ts_ms) and np.abs(ts_ms).max() > _MAX_TS_MS):
                    raise _Irregular
                ts_ms = ts_ms.astype(np.int64)
            else:  # datetimes among numbers, integers beyond int64, an empty batch
                raise _Irregular
        if len(ts_ms) and not (ts_ms.min() >= 0 and ts_ms.max() <= _MAX_TS_MS):
            raise _Irregular
        return ts_ms.astype(np.int64, copy=False)

    def columns(self, rows: Sequence[_Row], records: RecordBatch, kept: np.ndarray) -> Batch:
        n = len(rows)
        return Batch.from_records(rows, np.fromiter((row.ts_ms for row in rows), dtype=np.int64, count=n),
                                  np.full(n, records.origin, dtype=object), np.full(n, records.partition, dtype=np.int64),
                                  np.asarray(records.offsets[kept], dtype=np.int64), numeric=self.numeric, text=self.text)

    def _check_unit(self, batch: Batch) -> None:
        """One WARNING per run when the first events' times fall outside 2000..2100 under the declared unit."""
        if self.warned_unit or not len(batch):
            return
        self.warned_unit = True
        first = float(batch.ts_ms[0])
        if YEAR_2000_MS <= first <= YEAR_2100_MS:
            return
        unit = plausible_unit(first / MS_PER_UNIT[self.unit]) if self.unit in MS_PER_UNIT else None
        where = "the Kafka record timestamps" if self.kafka_time else f"{self.schema.time!r}"
        log.warning("the first event times (%s, read as time_unit = %r) fall in %s, outside 2000..2100; %s", where,
                    self.unit, np.datetime64(int(first), "ms").astype("datetime64[D]"),
                    f"time_unit = {unit!r} would fit" if unit else "check source.schema.time and time_unit")


def _texts(values) -> np.ndarray:
    return _objects(v if v.__class__ is str else None for v in values)


class _Irregular(Exception):
    """A batch the fast path does not take as a whole."""


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def compile_schema(schema: SchemaConfig, numeric: Sequence[str], text: Sequence[str]) -> SchemaDecoder:
    """The decoder of ``schema`` for the fields the operators read; ValueError for paths that cannot both hold."""
    return SchemaDecoder(schema, numeric, text)
