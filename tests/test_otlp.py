"""OTLP/JSON metrics (preset "otlp", pipeline/engine/otlp.py): messages built with the OpenTelemetry protobuf classes
and written by protobuf's own JSON printer, decoded to one event per gauge / sum data point; malformed messages
dead-lettered whole; the data point's item in source positions, batches, snapshots, alert ids and sink order; and a
real `vigil run` on OTLP lines scoring exactly as the same data in Vigil's own format."""
from __future__ import annotations

import base64
import json
import math

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import vigil
from operators.alerting import AlertingParams
from operators.batch import NO_ITEM, Batch
from operators.entities import EntityIndex
from operators.event import Event, SourcePosition, alert_id
from operators.registry import OperatorChain
from operators.zscore import ZScoreOperator, ZScoreParams
from pipeline.config import SchemaConfig
from pipeline.engine.decode import REASONS, DeadLetter, RecordBatch
from pipeline.engine.schema import compile_schema
from pipeline.engine.sinks import sort_by_source

json_format = pytest.importorskip("google.protobuf.json_format")
metrics_pb2 = pytest.importorskip("opentelemetry.proto.metrics.v1.metrics_pb2")
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList  # noqa: E402

T0_MS = 1_764_583_200_000
NS = 1_000_000
CPU, PACKETS, LATENCY, DISK = "system.cpu.utilization", "system.network.packets", "http.server.duration", "disk.io"
POS = SourcePosition(topic="metrics", partition=0, offset=7)


# ---- messages, built with the OTLP protobuf classes ----

def any_value(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=attributes(value)))
    return AnyValue(string_value=value)


def attributes(values: dict) -> list[KeyValue]:
    return [KeyValue(key=key, value=any_value(value)) for key, value in values.items()]


def point(ts_ms: int, value: float | int | None, ns: int = 0, flags: int = 0, **attrs) -> metrics_pb2.NumberDataPoint:
    number = {} if value is None else {"as_int": value} if isinstance(value, int) else {"as_double": value}
    return metrics_pb2.NumberDataPoint(attributes=attributes(attrs), time_unix_nano=ts_ms * NS + ns, flags=flags,
                                       start_time_unix_nano=T0_MS * NS, **number)


def gauge(name: str, *points) -> metrics_pb2.Metric:
    return metrics_pb2.Metric(name=name, unit="1", gauge=metrics_pb2.Gauge(data_points=points))


def counter(name: str, *points) -> metrics_pb2.Metric:
    return metrics_pb2.Metric(name=name, sum=metrics_pb2.Sum(data_points=points, is_monotonic=True,
                                                              aggregation_temporality=2))


def histogram(name: str, ts_ms: int, count: int) -> metrics_pb2.Metric:
    points = [metrics_pb2.HistogramDataPoint(time_unix_nano=ts_ms * NS, count=3, sum=1.5, bucket_counts=[1, 2],
                                             explicit_bounds=[0.5]) for _ in range(count)]
    return metrics_pb2.Metric(name=name, histogram=metrics_pb2.Histogram(data_points=points, aggregation_temporality=2))


def request(*resources: tuple[dict, list[metrics_pb2.Metric]]) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(resource_metrics=[
        metrics_pb2.ResourceMetrics(resource={"attributes": attributes(attrs)}, scope_metrics=[
            metrics_pb2.ScopeMetrics(scope={"name": "hostmetricsreceiver", "version": "0.1"}, metrics=metrics)])
        for attrs, metrics in resources])


def otlp_json(message: ExportMetricsServiceRequest) -> bytes:
    return json_format.MessageToJson(message, indent=None).encode()


def as_dict(message: ExportMetricsServiceRequest) -> dict:
    return json_format.MessageToDict(message)


def decoder_for(numeric=(CPU, PACKETS), text=(), **schema):
    return compile_schema(SchemaConfig(preset="otlp", **schema), numeric=list(numeric), text=list(text))


def two_resources() -> ExportMetricsServiceRequest:
    """Two hosts: gauges (two states, and a data-point attribute that clashes with the resource's), a sum of
    integers, a histogram and a metric no operator reads."""
    return request(
        ({"host.name": "h1", "service.name": "api"}, [
            gauge(CPU, point(T0_MS, 0.42, state="user"), point(T0_MS + 60_000, 0.5, ns=499_999, state="system")),
            histogram(LATENCY, T0_MS, 2),
            counter(PACKETS, point(T0_MS, 311, ns=500_000)),
        ]),
        ({"host.name": "h2", "cores": 8, "virtual": True, "load": 1.5}, [
            gauge(DISK, point(T0_MS, 1.0)),
            gauge(CPU, point(T0_MS, 0.0, **{"host.name": "h2-container"})),
        ]),
    )


# ---- decoding ----

def test_gauges_and_sums_become_one_event_per_data_point():
    raw = otlp_json(two_resources())
    assert b'"asInt": "311"' in raw and b'"timeUnixNano": "1764583200000000000"' in raw  # proto3 JSON: int64 as text
    events = decoder_for().decode_events(raw, POS, 65536)
    assert [(e.key, e.ts_ms, e.fields, e.source.item) for e in events] == [
        ("host.name=h1,service.name=api,state=user", T0_MS, {CPU: 0.42}, 0),
        ("host.name=h1,service.name=api,state=system", T0_MS + 60_000, {CPU: 0.5}, 1),  # 499,999 ns: rounded down
        # items 2 and 3: the histogram's points, ignored
        ("host.name=h1,service.name=api", T0_MS + 1, {PACKETS: 311.0}, 4),  # 500,000 ns: half a millisecond, up
        # item 5: disk.io, which no operator reads
        ("cores=8,host.name=h2-container,load=1.5,virtual=true", T0_MS, {CPU: 0.0}, 6),  # the data point's host wins
    ]
    assert all(e.source == msgspec.structs.replace(POS, item=e.source.item) for e in events)
    assert all(e.label is None and e.group is None and e.id is None for e in events)

    records = RecordBatch("metrics", 0, np.array([7]), [raw])
    batch, dead, ignored = decoder_for().decode_batch(records, 65536)
    assert (dead, ignored) == ([], 3)
    assert batch.keys.tolist() == [e.key for e in events] and batch.ts_ms.tolist() == [e.ts_ms for e in events]
    assert batch.item.tolist() == [0, 1, 4, 6] and batch.offset.tolist() == [7] * 4
    np.testing.assert_array_equal(batch.column(CPU), [0.42, 0.5, np.nan, 0.0])
    np.testing.assert_array_equal(batch.column(PACKETS), [np.nan, np.nan, 311.0, np.nan])
    assert [str(batch.source(row)) for row in range(len(batch))] == ["metrics/0@7#0", "metrics/0@7#1", "metrics/0@7#4",
                                                                      "metrics/0@7#6"]


def test_named_key_attributes_are_literal_names_joined_by_the_separator():
    raw = otlp_json(two_resources())
    one = otlp_json(request(({"service.name": "api", "host.name": "h1"}, [gauge(CPU, point(T0_MS, 1.0, state="idle"))])))
    events = decoder_for(key=["service.name", "host.name", "state"], key_separator="|").decode_events(one, POS, 65536)
    assert [e.key for e in events] == ["api|h1|idle"]
    missing = decoder_for(key=["service.name"]).decode_events(raw, POS, 65536)  # h2 has no service.name
    assert isinstance(missing, DeadLetter) and missing.reason == "missing_key" and "'service.name'" in missing.detail
    # A dotted name is one attribute, not a path: {"host": {"name": ...}} is not "host.name".
    nested = otlp_json(request(({"host": {"name": "h1"}}, [gauge(CPU, point(T0_MS, 1.0))])))
    assert decoder_for(key=["host.name"]).decode_events(nested, POS, 65536).reason == "missing_key"
    assert decoder_for().decode_events(nested, POS, 65536)[0].key == 'host={"name":"h1"}'


def test_attribute_values_as_text():
    raw = otlp_json(request(({"s": "x", "i": -42, "big": 2**62, "d": 2.0, "b": False, "bytes": b"\x00\xff",
                              "args": ["-c", 3, True], "kv": {"a": 1}, "empty": ""}, [gauge(CPU, point(T0_MS, 1.0))])))
    event, = decoder_for().decode_events(raw, POS, 65536)
    expected = {"s": "x", "i": "-42", "big": str(2**62), "d": "2.0", "b": "false",
                "bytes": base64.b64encode(b"\x00\xff").decode(), "args": '["-c",3,true]', "kv": '{"a":1}', "empty": ""}
    assert event.key == ",".join(f"{k}={v}" for k, v in sorted(expected.items()))
    # intValue as a JSON number (accepted too) and as text give the same key
    message = as_dict(request(({"i": 5}, [gauge(CPU, point(T0_MS, 1.0))])))
    assert message["resourceMetrics"][0]["resource"]["attributes"][0]["value"] == {"intValue": "5"}
    message["resourceMetrics"][0]["resource"]["attributes"][0]["value"] = {"intValue": 5}
    assert decoder_for().decode_events(json.dumps(message).encode(), POS, 65536)[0].key == "i=5"


def test_numbers_in_proto3_json_text_or_numbers():
    message = as_dict(request(({"h": "1"}, [gauge(CPU, point(T0_MS, 1.25)), counter(PACKETS, point(T0_MS, 2**53 + 1))])))
    cpu, packets = (m["gauge" if "gauge" in m else "sum"]["dataPoints"][0]
                    for m in message["resourceMetrics"][0]["scopeMetrics"][0]["metrics"])
    assert packets["asInt"] == str(2**53 + 1)
    cpu["timeUnixNano"] = int(cpu["timeUnixNano"])  # int64 as a JSON number
    cpu["asDouble"] = "1.25"  # a double as text (proto3 JSON parsers accept it)
    packets["asInt"] = 7
    events = decoder_for().decode_events(json.dumps(message).encode(), POS, 65536)
    assert [(e.ts_ms, e.fields) for e in events] == [(T0_MS, {CPU: 1.25}), (T0_MS, {PACKETS: 7.0})]


def test_points_without_a_recorded_value_and_unread_kinds_are_ignored():
    message = request(({"h": "1"}, [
        # staleness markers (without a value, and as the Prometheus receiver writes them: NaN), then a value
        gauge(CPU, point(T0_MS, None, flags=1), point(T0_MS, math.nan, flags=1), point(T0_MS + 1, 0.3)),
        metrics_pb2.Metric(name=CPU, summary=metrics_pb2.Summary(data_points=[
            metrics_pb2.SummaryDataPoint(time_unix_nano=T0_MS * NS, count=1, sum=2.0)])),
        metrics_pb2.Metric(name="e", exponential_histogram=metrics_pb2.ExponentialHistogram(data_points=[
            metrics_pb2.ExponentialHistogramDataPoint(time_unix_nano=T0_MS * NS, count=1, scale=2)])),
        metrics_pb2.Metric(name="empty"),
    ]))
    records = RecordBatch("metrics", 0, np.array([3]), [otlp_json(message)])
    batch, dead, ignored = decoder_for().decode_batch(records, 65536)
    assert (batch.column(CPU).tolist(), batch.item.tolist(), dead, ignored) == ([0.3], [2], [], 4)
    empty = decoder_for().decode_batch(RecordBatch("metrics", 0, np.array([4]), [b"{}"]), 65536)
    assert (len(empty.batch), empty.batch.item.tolist(), empty.dead, empty.ignored) == (0, [], [], 0)


def test_label_group_and_id_name_attributes():
    raw = otlp_json(request(({"host.name": "h1", "team": "web"}, [
        gauge(CPU, point(T0_MS, 1.0, label="spike", request="r-1"), point(T0_MS + 1, 2.0))])))
    decoder = decoder_for(key=["host.name"], label="label", group="team", id="request")
    events = decoder.decode_events(raw, POS, 65536)
    assert [(e.key, e.label, e.group, e.id) for e in events] == [("h1", "spike", "web", "r-1"), ("h1", None, "web", None)]
    batch = decoder.decode_batch(RecordBatch("metrics", 0, np.array([7]), [raw]), 65536).batch
    assert (batch.label.tolist(), batch.group.tolist(), batch.ids.tolist()) == (["spike", None], ["web", "web"],
                                                                                ["r-1", None])


def test_kafka_key_and_timestamp():
    raw = otlp_json(request(({"h": "1"}, [gauge(CPU, point(T0_MS, 1.0), point(T0_MS + 5, 2.0))])))
    decoder = decoder_for(key=["kafka:key"], time="kafka:timestamp")
    events = decoder.decode_events(raw, POS, 65536, kafka_key=b"node-1", kafka_ts=T0_MS + 99)
    assert [(e.key, e.ts_ms, e.source.item) for e in events] == [("node-1", T0_MS + 99, 0), ("node-1", T0_MS + 99, 1)]
    assert decoder.decode_events(raw, POS, 65536, kafka_key=None, kafka_ts=1).reason == "missing_key"
    records = RecordBatch("metrics", 0, np.array([7, 8]), [raw, raw], [b"node-1", None], np.array([T0_MS, T0_MS]))
    batch, dead, _ = decoder.decode_batch(records, 65536)
    assert batch.keys.tolist() == ["node-1"] * 2 and [(d.reason, str(d.source)) for d in dead] == [("missing_key",
                                                                                                    "metrics/0@8")]


@pytest.mark.parametrize("schema, message", [
    ({"key": ["labels.*"]}, "not a key part"),
    ({"key": ["*"]}, "not a key part"),
    ({"key": ["kafka:key", "host.name"]}, "alone"),
    ({"time": "startTimeUnixNano"}, "timeUnixNano"),
    ({"time_unit": "s"}, "nanoseconds"),
])
def test_schemas_the_preset_cannot_read_are_refused(schema, message):
    with pytest.raises(ValueError, match=message):
        decoder_for(**schema)


def test_decode_event_is_for_one_event_layouts_and_decode_events_serves_every_layout():
    with pytest.raises(TypeError, match="decode_events"):
        decoder_for().decode_event(b"{}", POS, 1024)
    flat = compile_schema(SchemaConfig(preset="flat", key=["host"], time="ts", time_unit="ms"), numeric=["cpu"], text=[])
    assert [e.fields for e in flat.decode_events(b'{"host":"a","ts":5,"cpu":1}', POS, 1024)] == [{"cpu": 1.0}]
    assert flat.decode_events(b'{"host":"a"}', POS, 1024).reason == "bad_timestamp"
    prometheus = compile_schema(SchemaConfig(preset="prometheus"), numeric=["up"], text=[])
    sample = b'{"name":"other","value":"1","timestamp":"2026-01-01T00:00:00Z","labels":{"job":"a"}}'
    assert prometheus.decode_events(sample, POS, 1024) == []  # an ignored sample
    vigil_format = compile_schema(SchemaConfig(), numeric=["x"], text=[])
    assert vigil_format.decode_events(b'{"key":"a","ts":1,"fields":{"x":2}}', POS, 1024)[0].source == POS


# ---- malformed messages: dead-lettered whole ----

def mutated(change) -> bytes:
    message = as_dict(two_resources())
    change(message)
    return json.dumps(message).encode()


def first_point(message: dict) -> dict:
    return message["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["gauge"]["dataPoints"][0]


def sum_point(message: dict) -> dict:
    return message["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][2]["sum"]["dataPoints"][0]


def set_in(getter, name, value):
    return lambda message: getter(message).__setitem__(name, value)


def without(getter, name):
    return lambda message: getter(message).pop(name)


def both_kinds(message):
    message["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"] = {"dataPoints": []}


def long_attribute(message):
    message["resourceMetrics"][0]["resource"]["attributes"][0]["value"] = {"stringValue": "x" * 1100}


MALFORMED = [
    ("bad_json", b'{"resourceMetrics": [{"resource": '),
    ("bad_json", b"\xff\xfe not utf-8"),
    ("bad_json", b'{"resourceMetrics":[{"resource":{"attributes":[{"key":"a","value":{"arrayValue":{"values":['
     + b'{"arrayValue":{"values":[' * 2000 + b"]}}" * 2000 + b"]}}}]}}]}"),
    ("not_an_object", b'[{"resourceMetrics": []}]'),
    ("not_an_object", b'"text"'),
    ("bad_schema", b'{"resourceMetrics": {"resource": {}}}'),
    ("bad_schema", mutated(lambda m: m["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0].__setitem__("name", 5))),
    ("bad_schema", mutated(both_kinds)),
    ("bad_timestamp", mutated(without(first_point, "timeUnixNano"))),
    ("bad_timestamp", mutated(set_in(first_point, "timeUnixNano", "soon"))),
    ("bad_timestamp", mutated(set_in(first_point, "timeUnixNano", 1.5e18))),
    ("bad_timestamp", mutated(set_in(first_point, "timeUnixNano", "0"))),
    ("bad_timestamp", mutated(set_in(first_point, "timeUnixNano", "-1000000"))),
    ("bad_timestamp", mutated(set_in(first_point, "timeUnixNano", "9" * 24))),
    ("bad_fields", mutated(without(first_point, "asDouble"))),
    ("bad_fields", mutated(set_in(first_point, "asDouble", "forty"))),
    ("bad_fields", mutated(set_in(first_point, "asDouble", True))),
    ("bad_fields", mutated(set_in(first_point, "asInt", "1"))),  # both asDouble and asInt
    ("bad_fields", mutated(set_in(sum_point, "asInt", "1.5"))),
    ("bad_fields", mutated(set_in(sum_point, "asInt", [1]))),
    ("non_finite", otlp_json(request(({"h": "1"}, [gauge(CPU, point(T0_MS, math.nan))])))),
    ("non_finite", otlp_json(request(({"h": "1"}, [gauge(CPU, point(T0_MS, -math.inf))])))),
    ("non_finite", mutated(set_in(first_point, "asDouble", "Infinity")).replace(b'"Infinity"', b"1e999")),
    ("bad_key", mutated(set_in(first_point, "attributes", {"state": "user"}))),
    ("bad_key", mutated(set_in(first_point, "attributes", [{"key": "n", "value": {"intValue": "many"}}]))),
    ("bad_key", mutated(long_attribute)),
    ("bad_key", otlp_json(request(({}, [gauge(CPU, point(T0_MS, 1.0))])))),  # no attributes at all: an empty key
]


@pytest.mark.parametrize("reason, raw", MALFORMED, ids=[f"{i}-{r}" for i, (r, _) in enumerate(MALFORMED)])
def test_malformed_messages_are_dead_lettered_whole(reason, raw):
    assert reason in REASONS
    letter = decoder_for().decode_events(raw, POS, 1 << 20)
    assert isinstance(letter, DeadLetter), letter
    assert (letter.reason, letter.source, letter.original_bytes()) == (reason, POS, raw), letter.detail
    assert letter.detail


def test_oversized_and_ignored_malformations():
    raw = otlp_json(two_resources())
    assert decoder_for().decode_events(raw, POS, len(raw) - 1).reason == "oversized"
    assert decoder_for().decode_events(raw, POS, len(raw)) != []
    # Only what becomes an event is checked beyond its JSON types: a point of a metric no operator reads may lack a time.
    unread = mutated(without(first_point, "timeUnixNano"))
    assert [e.fields for e in decoder_for(numeric=[PACKETS]).decode_events(unread, POS, 65536)] == [{PACKETS: 311.0}]


def test_the_batch_is_the_messages_decoded_one_by_one():
    good = [otlp_json(two_resources()),
            otlp_json(request(({"host.name": "h3"}, [gauge(CPU, *(point(T0_MS + i, float(i)) for i in range(5)))]))),
            b"{}"]
    payloads = [good[0], MALFORMED[0][1], good[1], MALFORMED[9][1], good[2], b"x" * 5000, good[0]]
    records = RecordBatch("events.jsonl", -1, np.array([1, 2, 3, 5, 8, 9, 10]), payloads)
    decoder = decoder_for()
    batch, dead, ignored = decoder.decode_batch(records, 4096)
    alone = [decoder.decode_events(raw, records.position(row), 4096) for row, raw in enumerate(payloads)]
    events = [e for result in alone if not isinstance(result, DeadLetter) for e in result]
    assert dead == [result for result in alone if isinstance(result, DeadLetter)]
    assert [d.reason for d in dead] == ["bad_json", "bad_timestamp", "oversized"]
    assert ignored == 3 + 3
    assert len(batch) == len(events) == 4 + 5 + 4
    assert [batch.source(row) for row in range(len(batch))] == [e.source for e in events]
    assert [str(batch.source(12))] == ["events.jsonl:10#6"]
    assert batch.keys.tolist() == [e.key for e in events] and batch.ts_ms.tolist() == [e.ts_ms for e in events]
    expected = Batch.from_events(events, numeric=[CPU, PACKETS], text=[])
    for name in (CPU, PACKETS):
        np.testing.assert_array_equal(batch.column(name), expected.column(name))
    np.testing.assert_array_equal(batch.item, expected.item)


# ---- the item in source positions, batches, snapshots and alert ids ----

def test_source_positions_without_an_item_are_unchanged():
    plain = SourcePosition(topic="t", partition=0, offset=7)
    assert msgspec.json.encode(plain) == b'{"topic":"t","partition":0,"offset":7}'
    assert alert_id(plain, "outlier") == "23b6b20e95433a20"  # the id every earlier release gave
    itemised = msgspec.structs.replace(plain, item=3)
    assert msgspec.json.encode(itemised) == b'{"topic":"t","partition":0,"offset":7,"item":3}'
    assert msgspec.json.decode(msgspec.json.encode(itemised), type=SourcePosition) == itemised
    assert alert_id(itemised, "outlier") != alert_id(plain, "outlier")
    positions = [SourcePosition(file="f", line=2, item=1), SourcePosition(file="f", line=2, item=0),
                 SourcePosition(file="f", line=1), SourcePosition(file="f", line=2, item=10)]
    assert [str(p) for p in sorted(positions, key=SourcePosition.sort_key)] == ["f:1", "f:2#0", "f:2#1", "f:2#10"]


def test_batches_carry_the_item_through_take_concat_and_snapshots():
    events = [Event("a", i, {"x": float(i)}, SourcePosition(topic="t", partition=0, offset=i // 2, item=i % 2))
              for i in range(6)]
    with_items = Batch.from_events(events)
    without_items = Batch.from_events([Event("b", 9, {"x": 1.0}, SourcePosition(topic="t", partition=1, offset=4))])
    assert without_items.item.tolist() == [NO_ITEM] and without_items.source(0).item is None
    earlier = {name: value for name, value in without_items.to_plain().items() if name != "item"}
    assert Batch.from_plain(earlier).item.tolist() == [NO_ITEM]  # a snapshot of an earlier release: no item column
    for batch in (with_items.take(np.array([5, 0])), with_items.rows(2, 4), Batch.from_plain(with_items.to_plain())):
        assert [batch.source(row) for row in range(len(batch))] == [
            e.source for e in np.array(events, dtype=object)[batch.ts_ms]]
    joined = Batch.concat([without_items, with_items.rows(0, 2), without_items])
    assert joined.item.tolist() == [-1, 0, 1, -1]
    assert [str(joined.source(row)) for row in range(4)] == ["t/1@4", "t/0@0#0", "t/0@0#1", "t/1@4"]
    assert Batch.concat([without_items, without_items]).item.tolist() == [NO_ITEM] * 2


def test_two_alerts_of_one_message_have_distinct_ids(tmp_path):
    """Two hosts in every message, both spiking in the same one: two alerts at one record position."""
    rng = np.random.default_rng(3)
    payloads = []
    for tick in range(300):
        values = 10 + rng.normal(size=2) if tick != 250 else [60.0, 70.0]
        payloads.append(otlp_json(request(*(({"host.name": f"h{h}"}, [gauge(CPU, point(T0_MS + tick * 60_000, float(v)))])
                                            for h, v in enumerate(values)))))
    batch, dead, _ = decoder_for(numeric=[CPU]).decode_batch(RecordBatch("m", 0, np.arange(300), payloads), 65536)
    operator = ZScoreOperator.from_config("z", [CPU], ZScoreParams(warmup=5, alerting=AlertingParams(warmup=50)))
    alerts = OperatorChain([operator], EntityIndex(10)).run(batch)
    spike = [a for a in alerts if a.source.offset == 250]
    assert sorted((a.key, str(a.source)) for a in spike) == [("host.name=h0", "m/0@250#0"), ("host.name=h1", "m/0@250#1")]
    assert len({a.id for a in alerts}) == len(alerts) and spike[0].id != spike[1].id
    assert spike[0].id == alert_id(spike[0].source, "z")

    out = tmp_path / "alerts.jsonl"  # a bounded run's sink order: source, then item
    out.write_bytes(b"".join(msgspec.json.encode(a) + b"\n" for a in reversed(spike)))
    sort_by_source(out)
    assert [json.loads(line)["source"]["item"] for line in out.read_text().splitlines()] == [0, 1]


# ---- a real run: OTLP lines score as the same data in Vigil's format ----

HOSTS, TICKS, SPIKE_TICK = 3, 600, 450
RUN_CONFIG = """
[source]
type = "file"
path = "{events}"
{schema}
[sinks.scores]
type = "file"
path = "scores.jsonl"

[[operators]]
name = "z"
type = "zscore"
fields = ["{cpu}", "{packets}"]
[operators.params]
warmup = 20
alerting = {{ warmup = 100 }}
"""


def write_streams(tmp_path):
    """The same stream as OTLP messages (one per tick: a resource per host, a gauge of two CPU states, a sum and a
    histogram) and as Vigil events, one per data point in the same order. Hosts 0 and 2 spike at one tick."""
    rng = np.random.default_rng(11)
    otlp, own = [], []
    for tick in range(TICKS):
        ts_ms = T0_MS + tick * 60_000
        resources = []
        for host in range(HOSTS):
            user, system = 0.3 + 0.02 * rng.normal(), 0.1 + 0.01 * rng.normal()
            if tick == SPIKE_TICK and host != 1:
                user = 0.95
            packets = int(1000 + 40 * rng.normal())
            resources.append(({"host.name": f"h{host}", "os.type": "linux"}, [
                gauge(CPU, point(ts_ms, user, state="user"), point(ts_ms, system, state="system")),
                histogram(LATENCY, ts_ms, 1),
                counter(PACKETS, point(ts_ms, packets))]))
            base = f"host.name=h{host},os.type=linux"
            own += [{"key": f"{base},state=user", "ts": ts_ms, "fields": {CPU: user}},
                    {"key": f"{base},state=system", "ts": ts_ms, "fields": {CPU: system}},
                    {"key": base, "ts": ts_ms, "fields": {PACKETS: packets}}]
        otlp.append(json_format.MessageToJson(request(*resources), indent=None))
    (tmp_path / "otlp.jsonl").write_text("\n".join(otlp) + "\n")
    (tmp_path / "vigil.jsonl").write_text("\n".join(json.dumps(event) for event in own) + "\n")


def run_on(tmp_path, name: str, schema: str) -> tuple[list[dict], list[dict]]:
    config = tmp_path / f"{name}.toml"
    config.write_text(RUN_CONFIG.format(events=tmp_path / f"{name}.jsonl", schema=schema, cpu=CPU, packets=PACKETS))
    vigil("run", "--config", str(config), "--run-dir", str(tmp_path / name), "--no-metrics")
    read = lambda file: [json.loads(line) for line in (tmp_path / name / file).read_text().splitlines()]  # noqa: E731
    assert (tmp_path / name / "dead_letters.jsonl").read_text() == ""
    return read("scores.jsonl"), read("alerts.jsonl")


def test_a_run_on_otlp_lines_scores_as_the_same_events_in_vigils_format(tmp_path):
    write_streams(tmp_path)
    scores, alerts = run_on(tmp_path, "otlp", '[source.schema]\npreset = "otlp"\n')
    own_scores, own_alerts = run_on(tmp_path, "vigil", "")
    assert len(scores) == HOSTS * TICKS * 3
    # Both files are in source order: OTLP (line, item) and Vigil (line) enumerate the data points alike.
    assert [s["source"]["item"] for s in scores[:9]] == [0, 1, 3, 4, 5, 7, 8, 9, 11]  # items 2, 6, 10: histograms
    drop = lambda records, *names: [{k: v for k, v in r.items() if k not in names} for r in records]  # noqa: E731
    assert drop(scores, "source") == drop(own_scores, "source")
    assert drop(alerts, "id", "source") == drop(own_alerts, "id", "source")
    spike = [a for a in alerts if a["source"]["line"] == SPIKE_TICK + 1]
    assert sorted(a["key"] for a in spike) == ["host.name=h0,os.type=linux,state=user",
                                               "host.name=h2,os.type=linux,state=user"]
    assert len({a["id"] for a in alerts}) == len(alerts) and len({str(a["source"]) for a in alerts}) == len(alerts)


# ---- any message: events or one dead letter, never an exception; the batch as the messages one by one ----

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8)


def mostly(valid, invalid):
    """Draws from ``valid`` 29 times in 30, so that whole valid messages are common, else from ``invalid``."""
    return st.integers(0, 29).flatmap(lambda n: invalid if n == 17 else valid)  # not 0: hypothesis favours the bounds


any_values = mostly(st.one_of(*(st.builds(lambda v, k=kind: {k: v}, values) for kind, values in (
    ("stringValue", st.text(max_size=6)), ("intValue", st.integers(-5, 5).map(str) | st.integers()),
    ("doubleValue", st.floats(allow_nan=False, allow_infinity=False)), ("boolValue", st.booleans()),
    ("bytesValue", st.text(max_size=4)), ("arrayValue", st.just({"values": [{"stringValue": "a"}, {"intValue": "1"}]})),
    ("unset", st.none())))), json_values)
attribute_lists = mostly(st.lists(st.fixed_dictionaries({"key": st.sampled_from(["host.name", "state", "a.b", ""]),
                                                         "value": any_values}), min_size=1, max_size=3),
                         json_values)
times = mostly(st.integers(1, 2**64).map(str) | st.integers(1, 2**64),
               st.sampled_from(["0", "-1", "soon", "1e18", "9" * 25]) | json_values)
values = st.one_of(
    st.builds(lambda v: {"asDouble": v}, mostly(st.floats(allow_nan=False, allow_infinity=False),
                                                st.sampled_from(["NaN", "Infinity", "-Infinity", "1.5", "x"]) | json_values)),
    st.builds(lambda v: {"asInt": v}, mostly(st.integers(-(2**64), 2**64).map(str),
                                             st.integers(-(10**400), 10**400) | json_values)),
    mostly(st.just({}), st.just({"asDouble": 1.0, "asInt": "1"})))
numbers = mostly(st.builds(lambda time, value, rest: {"timeUnixNano": time, **value, **rest}, times, values,
                           st.fixed_dictionaries({}, optional={"flags": mostly(st.sampled_from([0, 1]), json_values),
                                                               "attributes": attribute_lists})), json_values)
metric_objects = st.builds(
    lambda name, kind, points: {"name": name, kind: {"dataPoints": points}},
    mostly(st.sampled_from([CPU, PACKETS, DISK]), json_values),
    st.sampled_from(["gauge", "sum", "histogram", "exponentialHistogram", "summary"]),
    mostly(st.lists(numbers, min_size=1, max_size=3), json_values))
messages = st.builds(
    lambda resources: {"resourceMetrics": resources},
    mostly(st.lists(st.fixed_dictionaries({"resource": mostly(st.builds(lambda a: {"attributes": a}, attribute_lists),
                                                                      json_values),
                                           "scopeMetrics": st.lists(st.builds(lambda m: {"metrics": m},
                                                                              st.lists(metric_objects, min_size=1,
                                                                                       max_size=3)),
                                                                    min_size=1, max_size=2)}), max_size=2), json_values))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages.map(lambda m: json.dumps(m).encode()) | st.binary(max_size=20), min_size=1, max_size=4),
       st.sampled_from([["attributes.*"], ["host.name", "state"], ["a.b"]]))
def test_any_message_is_events_or_one_dead_letter_and_a_batch_is_its_messages(payloads, key):
    decoder = decoder_for(key=key)
    records = RecordBatch("metrics", 0, np.arange(len(payloads)), payloads)
    alone = [decoder.decode_events(raw, records.position(row), 1 << 16) for row, raw in enumerate(payloads)]
    for result, raw in zip(alone, payloads):
        if isinstance(result, DeadLetter):
            assert result.reason in REASONS and result.original_bytes() == raw
        else:
            assert all(e.key and len(e.key) <= 1024 and 0 <= e.ts_ms and len(e.fields) == 1 for e in result)
            assert all(math.isfinite(v) for e in result for v in e.fields.values())
            assert len({e.source.item for e in result}) == len(result)
    batch, dead, _ = decoder.decode_batch(records, 1 << 16)
    events = [e for result in alone if not isinstance(result, DeadLetter) for e in result]
    assert dead == [result for result in alone if isinstance(result, DeadLetter)]
    assert [batch.source(row) for row in range(len(batch))] == [e.source for e in events]
    assert batch.keys.tolist() == [e.key for e in events] and batch.ts_ms.tolist() == [e.ts_ms for e in events]


def test_the_key_cache_is_bounded_and_changes_nothing(monkeypatch):
    from pipeline.engine import otlp

    raw = otlp_json(two_resources())
    expected = decoder_for().decode_events(raw, POS, 65536)
    monkeypatch.setattr(otlp, "_KEY_CACHE", 2)
    decoder = decoder_for()
    assert [decoder.decode_events(raw, POS, 65536) for _ in range(3)] == [expected] * 3
    assert len(decoder.otlp._keys) <= 2
