"""OpenTelemetry metrics as OTLP/JSON (``[source.schema] preset = "otlp"``): one event per data point.

A message is an ``ExportMetricsServiceRequest`` in the protobuf JSON mapping, as the OpenTelemetry Collector's Kafka
exporter writes it with ``encoding = "otlp_json"`` (and its file exporter, one message per line)::

    {"resourceMetrics": [{
       "resource": {"attributes": [{"key": "host.name", "value": {"stringValue": "web-1"}}]},
       "scopeMetrics": [{"scope": {"name": "hostmetricsreceiver"}, "metrics": [
         {"name": "system.cpu.utilization", "unit": "1", "gauge": {"dataPoints": [
            {"attributes": [{"key": "state", "value": {"stringValue": "user"}}],
             "timeUnixNano": "1764583200000000000", "asDouble": 0.42}]}},
         {"name": "system.processes.count", "sum": {"aggregationTemporality": 2, "dataPoints": [
            {"timeUnixNano": "1764583200000000000", "asInt": "311"}]}}]}]}]}

Each data point of a **gauge** or a **sum** becomes one event:

* field: the metric's name (``system.cpu.utilization``), value ``asDouble`` or ``asInt`` (a number, or a number as
  text, as proto3 JSON writes 64-bit integers; ``"NaN"`` / ``"Infinity"`` are non-finite). A sum's value is what was
  sent: a cumulative sum is its running total, no rate is derived;
* time: ``timeUnixNano`` (nanoseconds, as text or a number) in epoch milliseconds, halves rounded up;
* key: by default (``key = ["attributes.*"]``) every attribute of the resource and of the data point (the data
  point's wins when both have one), as sorted ``name=value`` pairs joined by ``,``: ``host.name=web-1,state=user``.
  ``key = ["host.name", "state"]`` names attributes instead, their values joined with ``key_separator``
  (``web-1/user``); an attribute name is literal here, dots included (``host.name`` is the attribute called
  ``host.name``, not a path), and is looked up in the data point's attributes, then the resource's.
  ``["kafka:key"]`` takes the Kafka record's key for every data point of the record;
* ``label`` / ``group`` / ``id``, when set, name attributes too (looked up the same way); otherwise None;
* time: ``time = "kafka:timestamp"`` takes the Kafka record's timestamp for every data point instead.

Attribute values become text: ``stringValue`` as is, ``intValue`` as a decimal integer, ``doubleValue`` as written
(``1.5``), ``boolValue`` as ``true`` / ``false``, ``bytesValue`` as its base64 text, arrays and key-value lists as
compact JSON (``["a","b"]``), an empty value as an empty string.

Not events, counted as ignored (``vigil_events_total{outcome="ignored"}``, :attr:`Decoded.ignored`): data points of
histograms, exponential histograms and summaries, of metrics that no operator reads, and those flagged
``FLAG_NO_RECORDED_VALUE`` (a staleness marker, whatever value it holds). Only what becomes an event is checked
beyond its JSON types.

A message that cannot be read whole is dead-lettered whole, with a reason of
:data:`~pipeline.engine.decode.REASONS`: not JSON (``bad_json``), not an object (``not_an_object``), over
``max_event_bytes`` (``oversized``), a value of the wrong type somewhere (``bad_schema``; ``bad_timestamp``,
``bad_fields`` or ``bad_key`` where it is a time, a value or an attribute), a data point without a time or with one
outside 1970..9999 (``bad_timestamp``), without a value, with both values or one that is not a number
(``bad_fields``), a non-finite value (``non_finite``), a named key attribute missing (``missing_key``) or empty, or a
key that is empty or longer than 1024 characters (``bad_key``). So nothing of a message is lost: it is all events
(and ignored points), or all in the dead-letter sink.

The events of one message share its source position, so each carries ``item``, its data point's index within the
message (counting every data point in document order, ignored ones included: adding an operator that reads another
metric does not renumber them); alert ids and the sinks' source order use it (``t/0@7#3``).

>>> from pipeline.config import SchemaConfig
>>> from pipeline.engine.schema import compile_schema
>>> decoder = compile_schema(SchemaConfig(preset="otlp"), numeric=["system.cpu.utilization"], text=[])
>>> message = (b'{"resourceMetrics":[{"resource":{"attributes":[{"key":"host.name","value":{"stringValue":"web-1"}}]},'
...            b'"scopeMetrics":[{"metrics":[{"name":"system.cpu.utilization","gauge":{"dataPoints":['
...            b'{"attributes":[{"key":"state","value":{"stringValue":"user"}}],'
...            b'"timeUnixNano":"1764583200000000000","asDouble":0.42}]}}]}]}]}')
>>> batch, dead, ignored = decoder.decode_batch(RecordBatch("metrics", 0, np.array([7]), [message]), 65536)
>>> batch.keys.tolist(), batch.ts_ms.tolist(), batch.column("system.cpu.utilization").tolist(), str(batch.source(0))
(['host.name=web-1,state=user'], [1764583200000], [0.42], 'metrics/0@7#0')
>>> decoder.decode_events(b'{"resourceMetrics":[1]}', SourcePosition(topic="metrics", partition=0, offset=8), 65536).reason
'bad_schema'
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, NamedTuple

import msgspec
import numpy as np

from operators.batch import Batch, _objects
from operators.event import Event, SourcePosition
from pipeline.config import KAFKA_KEY, KAFKA_TIMESTAMP
from pipeline.engine.decode import _MAX_TS_MS, DeadLetter, RecordBatch, _reason_for

if TYPE_CHECKING:
    from pipeline.engine.schema import Decoded, SchemaDecoder

ALL_ATTRIBUTES = "attributes.*"  # the key part that stands for every attribute of the resource and the data point
TIME_FIELD = "timeUnixNano"
FLAG_NO_RECORDED_VALUE = 1  # DataPointFlags: the point is a staleness marker and carries no value
_MAX_KEY = 1024
_KEY_CACHE = 100_000
_NS_PER_MS, _HALF_MS = 1_000_000, 500_000
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_NON_FINITE = frozenset(("NaN", "Infinity", "-Infinity"))  # proto3 JSON writes these doubles as text


# ---- the parts of an ExportMetricsServiceRequest that are read; msgspec skips every other member ----

class _ArrayValue(msgspec.Struct):
    values: list[_AnyValue] = []


class _KeyValueList(msgspec.Struct):
    values: list[_KeyValue] = []


class _AnyValue(msgspec.Struct, rename="camel"):
    string_value: str | None = None
    bool_value: bool | None = None
    int_value: int | str | None = None
    double_value: float | str | None = None
    bytes_value: str | None = None
    array_value: _ArrayValue | None = None
    kvlist_value: _KeyValueList | None = None


class _KeyValue(msgspec.Struct):
    key: str
    value: _AnyValue = msgspec.field(default_factory=_AnyValue)


class _NumberPoint(msgspec.Struct, rename="camel"):
    attributes: list[_KeyValue] = []
    time_unix_nano: int | str | None = None
    as_double: float | str | None = None
    as_int: int | str | None = None
    flags: int = 0


class _Numbers(msgspec.Struct, rename="camel"):
    data_points: list[_NumberPoint] = []


class _Skipped(msgspec.Struct, rename="camel"):
    data_points: list[msgspec.Raw] = []  # counted, never decoded into objects


class _Metric(msgspec.Struct, rename="camel"):
    name: str = ""
    gauge: _Numbers | None = None
    sum: _Numbers | None = None
    histogram: _Skipped | None = None
    exponential_histogram: _Skipped | None = None
    summary: _Skipped | None = None


class _ScopeMetrics(msgspec.Struct):
    metrics: list[_Metric] = []


class _Resource(msgspec.Struct):
    attributes: list[_KeyValue] = []


class _ResourceMetrics(msgspec.Struct, rename="camel"):
    resource: _Resource = msgspec.field(default_factory=_Resource)
    scope_metrics: list[_ScopeMetrics] = []


class _Request(msgspec.Struct, rename="camel"):
    resource_metrics: list[_ResourceMetrics] = []


_decoder = msgspec.json.Decoder(_Request)
_plain_encoder = msgspec.json.Encoder()


class _Point(NamedTuple):
    """One data point read as an event: ``code`` is its metric's index in the decoder's numeric fields."""

    key: str
    ts_ms: int
    code: int
    value: float
    item: int
    label: str | None
    group: str | None
    id: str | None


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class OtlpLayout:
    """The ``otlp`` layout of one :class:`~pipeline.engine.schema.SchemaDecoder`: its key parts, time and optional
    attributes, checked once (ValueError for what the preset cannot read)."""

    def __init__(self, decoder: SchemaDecoder) -> None:
        schema = decoder.schema
        self.numeric = {name: code for code, name in enumerate(decoder.numeric)}
        self.separator = schema.key_separator
        self.kafka_key, self.kafka_time = decoder.kafka_key, decoder.kafka_time
        for part in schema.key:
            if not part or ("*" in part and part != ALL_ATTRIBUTES) or (part == KAFKA_KEY and len(schema.key) > 1):
                raise ValueError(f"source.schema.key: {part!r} is not a key part of preset 'otlp' (an attribute name "
                                 f"such as 'host.name', {ALL_ATTRIBUTES!r} for every attribute, or {KAFKA_KEY!r} alone)")
        if not schema.key:
            raise ValueError("source.schema.key: preset 'otlp' needs at least one key part")
        self.key_parts = list(schema.key)
        if not self.kafka_time:
            if schema.time != TIME_FIELD:
                raise ValueError(f"source.schema.time: preset 'otlp' reads the data point's {TIME_FIELD!r} (or "
                                 f"{KAFKA_TIMESTAMP!r}), not {schema.time!r}")
            if schema.time_unit != "ns":
                raise ValueError(f"source.schema.time_unit: {TIME_FIELD} is in nanoseconds, not {schema.time_unit!r}")
        self.optional = {name: getattr(schema, name) or None for name in ("label", "group", "id")}
        self.any_optional = any(self.optional.values())
        # The key of each (resource attributes, data point attributes) seen: a host's points repeat them message
        # after message. Bounded: cleared when it holds _KEY_CACHE keys.
        self._keys: dict[tuple, str] = {}

    # ---- one message ----

    def points(self, raw: bytes, kafka_key: bytes | None, kafka_ts: int | None) -> tuple[list[_Point], int]:
        """The events of one message and the count of data points ignored; raises :class:`_Bad` for a message that
        is not read whole."""
        try:
            request = _decoder.decode(raw)
        except msgspec.ValidationError as error:
            raise _Bad(_reason(str(error)), str(error)) from None
        except msgspec.DecodeError as error:
            raise _Bad("bad_json", str(error)) from None
        except RecursionError:
            raise _Bad("bad_json", "JSON is nested too deeply") from None
        record_key = self._kafka_key(kafka_key) if self.kafka_key else None
        points: list[_Point] = []
        ignored = item = 0
        for resource_metrics in request.resource_metrics:
            resource: dict[str, str] | None = None  # rendered when a data point of it is read
            resource_items: tuple = ()
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    kinds = [kind for kind in (metric.gauge, metric.sum, metric.histogram, metric.exponential_histogram,
                                               metric.summary) if kind is not None]
                    if len(kinds) > 1:
                        raise _Bad("bad_schema", f"metric {metric.name!r} has {len(kinds)} kinds of data (one of gauge, "
                                   "sum, histogram, exponentialHistogram, summary)")
                    if not kinds:
                        continue
                    data = kinds[0].data_points
                    code = self.numeric.get(metric.name)
                    if code is None or isinstance(kinds[0], _Skipped):
                        ignored += len(data)
                        item += len(data)
                        continue
                    if resource is None:
                        resource = _texts(resource_metrics.resource.attributes)
                        resource_items = tuple(resource.items())
                    for point in data:
                        value = _value(metric.name, point)
                        if value is None:
                            ignored += 1
                            item += 1
                            continue
                        texts = _texts(point.attributes)
                        key = record_key or self._cached_key(metric.name, resource, resource_items, texts)
                        ts_ms = kafka_ts if self.kafka_time else _ts_ms(metric.name, point.time_unix_nano)
                        label = group = event_id = None
                        if self.any_optional:
                            attributes = {**resource, **texts}
                            label, group, event_id = (None if attribute is None else attributes.get(attribute)
                                                      for attribute in self.optional.values())
                        points.append(_Point(key, ts_ms, code, value, item, label, group, event_id))
                        item += 1
        return points, ignored

    def _kafka_key(self, kafka_key: bytes | None) -> str:
        if kafka_key is None:
            raise _Bad("missing_key", "the Kafka record has no key")
        try:
            key = kafka_key.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad("bad_key", "the Kafka record's key is not UTF-8") from None
        if not key or len(key) > _MAX_KEY:
            raise _Bad("bad_key", f"the key is {'empty' if not key else f'longer than {_MAX_KEY} characters'}")
        return key

    def _cached_key(self, metric: str, resource: dict[str, str], resource_items: tuple, texts: dict[str, str]) -> str:
        known = (resource_items, tuple(texts.items()))
        key = self._keys.get(known)
        if key is None:
            key = self._key(metric, {**resource, **texts})
            if len(self._keys) >= _KEY_CACHE:
                self._keys.clear()
            self._keys[known] = key
        return key

    def _key(self, metric: str, attributes: dict[str, str]) -> str:
        parts = []
        for part in self.key_parts:
            if part == ALL_ATTRIBUTES:
                parts.append(",".join(f"{name}={value}" for name, value in sorted(attributes.items())))
                continue
            value = attributes.get(part)
            if value is None:
                raise _Bad("missing_key", f"a data point of {metric!r} has no attribute {part!r}, nor has its resource")
            if not value:
                raise _Bad("bad_key", f"attribute {part!r} of a data point of {metric!r} is empty")
            parts.append(value)
        key = self.separator.join(parts)
        if not key or len(key) > _MAX_KEY:
            raise _Bad("bad_key", f"the key of a data point of {metric!r} is "
                       f"{'empty (no attributes)' if not key else f'longer than {_MAX_KEY} characters'}")
        return key


def _reason(message: str) -> str:
    """The dead-letter reason of a msgspec validation error, from the member it is about."""
    if "at `$" not in message or "Number out of range" in message:
        return _reason_for(message)  # not an object, numbers out of range (1e999)
    path = message[message.index("at `$") :]
    if ".timeUnixNano" in path:
        return "bad_timestamp"
    if ".asDouble" in path or ".asInt" in path:
        return "bad_fields"
    if ".attributes" in path:
        return "bad_key"
    return "bad_schema"


def _ts_ms(metric: str, value: int | str | None) -> int:
    if value is None:
        raise _Bad("bad_timestamp", f"a data point of {metric!r} has no {TIME_FIELD}")
    if value.__class__ is str:
        if not _INTEGER.fullmatch(value):
            raise _Bad("bad_timestamp", f"{TIME_FIELD} {value!r} of a data point of {metric!r} is not an integer")
        value = int(value)
    if value == 0:  # proto3 leaves a zero out: the same as no time
        raise _Bad("bad_timestamp", f"a data point of {metric!r} has {TIME_FIELD} 0 (no time)")
    ts_ms = (value + _HALF_MS) // _NS_PER_MS
    if not 0 <= ts_ms <= _MAX_TS_MS:
        raise _Bad("bad_timestamp", f"{TIME_FIELD} {value} of a data point of {metric!r} is outside 1970..9999")
    return ts_ms


def _value(metric: str, point: _NumberPoint) -> float | None:
    """The data point's value; None for a point flagged as having none (whatever it holds: the Collector's Prometheus
    receiver writes its staleness markers as NaN with the flag)."""
    if point.flags & FLAG_NO_RECORDED_VALUE:
        return None
    double, integer = point.as_double, point.as_int
    if double is not None and integer is not None:
        raise _Bad("bad_fields", f"a data point of {metric!r} has both asDouble and asInt")
    if double is None and integer is None:
        raise _Bad("bad_fields", f"a data point of {metric!r} has no value (asDouble or asInt)")
    if integer is not None:
        if integer.__class__ is str:
            if not _INTEGER.fullmatch(integer):
                raise _Bad("bad_fields", f"asInt {integer!r} of a data point of {metric!r} is not an integer")
            integer = int(integer)
        try:
            return float(integer)
        except OverflowError:  # beyond a double's range, as 1e999 is
            raise _Bad("non_finite", f"field {metric!r} is {integer}, beyond a double's range") from None
    if double.__class__ is str:
        if double in _NON_FINITE:
            raise _Bad("non_finite", f"field {metric!r} is {double}")
        if not _NUMBER.fullmatch(double):
            raise _Bad("bad_fields", f"asDouble {double!r} of a data point of {metric!r} is not a number")
        double = float(double)
    if not math.isfinite(double):
        raise _Bad("non_finite", f"field {metric!r} is {double}")
    return double


def _texts(attributes: list[_KeyValue]) -> dict[str, str]:
    """Attributes as text, by name (the last of a repeated name wins)."""
    return {pair.key: _text(pair.key, pair.value) for pair in attributes}


def _text(name: str, value: _AnyValue) -> str:
    if value.string_value is not None:
        return value.string_value
    plain = _plain(name, value)
    if plain is None:
        return ""
    if plain.__class__ is bool:
        return "true" if plain else "false"
    if isinstance(plain, list | dict):
        return _plain_encoder.encode(plain).decode("utf-8")
    return plain if plain.__class__ is str else str(plain)


def _plain(name: str, value: _AnyValue):
    """An attribute value as a plain JSON value (for arrays and lists of key-values as text)."""
    if value.string_value is not None:
        return value.string_value
    if value.bool_value is not None:
        return value.bool_value
    if value.int_value is not None:
        if value.int_value.__class__ is str:
            if not _INTEGER.fullmatch(value.int_value):
                raise _Bad("bad_key", f"attribute {name!r} has intValue {value.int_value!r}, not an integer")
            return int(value.int_value)
        return value.int_value
    if value.double_value is not None:
        return value.double_value  # a float, or proto3 JSON's text ("NaN", "1.5") as written
    if value.bytes_value is not None:
        return value.bytes_value
    if value.array_value is not None:
        return [_plain(name, item) for item in value.array_value.values]
    if value.kvlist_value is not None:
        return {pair.key: _plain(name, pair.value) for pair in value.kvlist_value.values}
    return None


def _oversized(raw: bytes, max_bytes: int) -> str | None:
    return f"{len(raw)} bytes exceeds the {max_bytes}-byte limit" if len(raw) > max_bytes else None


# ---- the decoder's entry points ----

def decode_otlp_events(decoder: SchemaDecoder, raw: bytes, source: SourcePosition, max_bytes: int,
                       kafka_key: bytes | None = None, kafka_ts: int | None = None) -> list[Event] | DeadLetter:
    """The events of one message, in data point order (none when every point is ignored), or its dead letter;
    never raises for bad input. Each event's source is ``source`` with its data point's ``item``."""
    too_big = _oversized(raw, max_bytes)
    if too_big:
        return DeadLetter.of(raw, "oversized", too_big, source)
    try:
        points, _ = decoder.otlp.points(raw, kafka_key, kafka_ts)
    except _Bad as bad:
        return DeadLetter.of(raw, bad.reason, bad.detail, source)
    names = decoder.numeric
    return [Event(p.key, p.ts_ms, {names[p.code]: p.value}, msgspec.structs.replace(source, item=p.item), p.label,
                  p.group, p.id) for p in points]


def decode_otlp_batch(decoder: SchemaDecoder, records: RecordBatch, max_bytes: int) -> Decoded:
    """The events of ``records`` as one batch (every row with its ``item``), the dead letters in record order and
    the count of ignored data points: what :func:`decode_otlp_events` gives record by record."""
    from pipeline.engine.schema import Decoded

    layout = decoder.otlp
    points: list[_Point] = []
    rows: list[int] = []  # each point's record
    dead: list[DeadLetter] = []
    ignored = 0
    keys = records.keys if layout.kafka_key else None
    times = records.timestamps if layout.kafka_time else None
    for index, raw in enumerate(records.payloads):
        too_big = _oversized(raw, max_bytes)
        if too_big:
            dead.append(DeadLetter.of(raw, "oversized", too_big, records.position(index)))
            continue
        try:
            found, skipped = layout.points(raw, None if keys is None else keys[index],
                                           None if times is None else int(times[index]))
        except _Bad as bad:
            dead.append(DeadLetter.of(raw, bad.reason, bad.detail, records.position(index)))
            continue
        points.extend(found)
        rows.extend([index] * len(found))
        ignored += skipped
    n = len(points)
    codes = np.fromiter((p.code for p in points), dtype=np.int64, count=n)
    values = np.fromiter((p.value for p in points), dtype=np.float64, count=n)
    optional = {name: None if attribute is None else _objects(getattr(p, name) for p in points)
                for name, attribute in layout.optional.items()}
    batch = Batch(_objects(p.key for p in points), np.zeros(n, dtype=np.int64),
                  np.fromiter((p.ts_ms for p in points), dtype=np.int64, count=n),
                  np.full(n, records.origin, dtype=object), np.full(n, records.partition, dtype=np.int64),
                  np.asarray(records.offsets, dtype=np.int64)[np.array(rows, dtype=np.int64)],
                  numeric={name: np.where(codes == code, values, np.nan) for code, name in enumerate(decoder.numeric)},
                  text={name: np.full(n, None, dtype=object) for name in decoder.text},
                  label=optional["label"], group=optional["group"], ids=optional["id"],
                  item=np.fromiter((p.item for p in points), dtype=np.int64, count=n))
    decoder._check_unit(batch)
    return Decoded(batch, dead, ignored)
