"""Every kind of malformed payload becomes a dead letter with its reason; valid ones decode exactly."""
import numpy as np
import pytest

from operators.event import SourcePosition
from pipeline.engine.decode import REASONS, DeadLetter, RecordBatch, decode_batch, decode_event

POS = SourcePosition(topic="events", partition=3, offset=42)


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b'{"key":"a","ts":1,"fields":{"x":1', "bad_json"),
        (b"\xff\xfe{}", "bad_json"),
        (b"[1, 2]", "not_an_object"),
        (b'{"ts":1,"fields":{}}', "missing_key"),
        (b'{"key":"","ts":1,"fields":{}}', "bad_key"),
        (b'{"key":7,"ts":1,"fields":{}}', "bad_key"),
        (b'{"key":"a","ts":"tomorrow","fields":{}}', "bad_timestamp"),
        (b'{"key":"a","ts":"2026-01-01T00:00:00","fields":{}}', "bad_timestamp"),
        (b'{"key":"a","ts":-1,"fields":{}}', "bad_timestamp"),
        (b'{"key":"a","fields":{}}', "bad_timestamp"),
        (b'{"key":"a","ts":1,"fields":{"ok":true}}', "bad_fields"),
        (b'{"key":"a","ts":1,"fields":[1]}', "bad_fields"),
        (b'{"key":"a","ts":1,"fields":{"x":1e999}}', "non_finite"),
        (b'{"key":"a","ts":1,"fields":{"x":-1e999}}', "non_finite"),
        (b'{"key":"a","ts":1,"fields":{},"group":5}', "bad_schema"),
    ],
)
def test_malformed_payloads_are_dead_lettered_with_reason(payload, reason):
    result = decode_event(payload, POS, 1024)
    assert isinstance(result, DeadLetter)
    assert result.reason == reason and result.reason in REASONS
    assert result.source == POS
    assert result.original_bytes() == payload
    assert result.detail


def test_oversized_payload_is_rejected_before_parsing():
    payload = b'{"key":"a","ts":1,"fields":{"s":"' + b"x" * 2000 + b'"}}'
    result = decode_event(payload, POS, 1024)
    assert result.reason == "oversized" and "1024" in result.detail
    assert result.original_bytes() == payload


def test_non_utf8_payload_is_kept_as_base64():
    result = decode_event(b"\xff\x00garbage", POS, 1024)
    assert result.payload_encoding == "base64" and result.original_bytes() == b"\xff\x00garbage"


def test_valid_event_both_time_formats():
    a = decode_event(b'{"key":"h1","ts":"2026-01-01T01:00:00.250+01:00","fields":{"x":3,"zone":"eu"},'
                     b'"label":"spike","group":"g","id":"e1"}', POS, 1024)
    b = decode_event(b'{"key":"h1","ts":1767225600250,"fields":{"x":3.0,"zone":"eu"}}', POS, 1024)
    assert a.ts_ms == b.ts_ms == 1767225600250
    assert a.fields == b.fields == {"x": 3.0, "zone": "eu"}
    assert (a.label, a.group, a.id, a.source) == ("spike", "g", "e1", POS)


def test_a_batch_decodes_exactly_as_its_records_one_by_one():
    """The batch fast path, and its record-by-record fallback on any irregular payload, give decode_event's outcome:
    the same valid events as columns, the same dead letters, in order. Includes payloads that are bad alone but
    would form valid JSON together, which a joined-array decoder would wrongly accept."""
    good = [b'{"key":"k%d","ts":%d,"fields":{"x":%d,"s":"v%d"},"group":"g","label":1}' % (i, 1000 + i, i, i)
            for i in range(6)]
    bad = [b'not json', b'{"key":"a","ts":1,"fields":{"s":"', b'"}},{"key":"b","ts":1,"fields":{}}',
           b'{"key":"a","ts":-5,"fields":{}}', b'{"key":"a","ts":99999999999999999999,"fields":{}}', b"x" * 300,
           b'{"key":"a","ts":"2026-01-01T00:00:00+01:00","fields":{"x":1e999}}', b'[1]', b'{"key":"","ts":1,"fields":{}}']
    for payloads in (good, good[:3] + bad + good[3:]):
        records = RecordBatch("t", 3, np.arange(100, 100 + len(payloads)), payloads)
        batch, dead = decode_batch(records, ["x"], ["s"], max_bytes=256)
        one_by_one = [decode_event(p, records.position(i), 256) for i, p in enumerate(payloads)]
        events = [e for e in one_by_one if not isinstance(e, DeadLetter)]
        assert dead == [d for d in one_by_one if isinstance(d, DeadLetter)]
        assert batch.keys.tolist() == [e.key for e in events] and batch.ts_ms.tolist() == [e.ts_ms for e in events]
        assert [str(batch.source(row)) for row in range(len(batch))] == [str(e.source) for e in events]
        assert batch.column("x").tolist() == [e.fields["x"] for e in events]
        assert batch.text("s").tolist() == [e.fields["s"] for e in events]
        assert batch.label.tolist() == [e.label for e in events] and batch.group.tolist() == ["g"] * len(events)
    assert len(dead) == len(bad) and {d.reason for d in dead} >= {"bad_json", "oversized", "bad_timestamp", "non_finite"}
