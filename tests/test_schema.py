"""Declared event schemas: each preset and flat JSON decode to the events Vigil's own format gives, through the
decoder and through ``vigil run``; malformed variants of each shape are dead-lettered with a reason."""
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators.event import SourcePosition
from pipeline.config import ConfigError, SchemaConfig, load_config
from pipeline.engine.decode import REASONS, DeadLetter, RecordBatch
from pipeline.engine.schema import compile_schema
from tests.conftest import vigil
from tests.kafka_helpers import new_topics, produce_records
from tests.test_fuzz_decode import finite, json_values, mostly

START_S = 1764583200  # 2026-12-01T10:00:00Z
HOSTS = ("web-1", "web-2", "db-1")
FLAT = SchemaConfig(preset="flat", key=["host"], time="ts", time_unit="rfc3339")


def rfc3339(ts_s: int) -> str:
    return datetime.fromtimestamp(ts_s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def metrics_stream(points: int = 400, seed: int = 3) -> list[dict]:
    """Per host, a minute apart: cpu and p99_ms with noise, spikes on cpu and a level shift of p99_ms on web-2."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(points):
        for h, host in enumerate(HOSTS):
            cpu = 0.4 + 0.02 * rng.standard_normal() + (0.5 if i in (150 + h, 300) else 0.0)
            p99 = 180 + 5 * rng.standard_normal() + (120 if host == "web-2" and i >= 250 else 0)
            rows.append({"host": host, "ts": START_S + 60 * i, "cpu": round(cpu, 4), "p99_ms": round(p99, 2)})
    return rows


def as_vigil(row: dict, key: str | None = None, fields: tuple[str, ...] = ("cpu", "p99_ms")) -> dict:
    return {"key": key or row["host"], "ts": row["ts"] * 1000, "fields": {name: row[name] for name in fields}}


SHAPES = {
    "flat": lambda row: [{"host": row["host"], "ts": rfc3339(row["ts"]), "metrics": {"cpu": row["cpu"]},
                          "p99_ms": row["p99_ms"], "region": "eu"}],
    # prometheus-kafka-adapter's JSON: the value as text, the time as RFC 3339, one sample per message
    "prometheus": lambda row: [{"timestamp": rfc3339(row["ts"]), "value": str(row[name]), "name": name,
                                "labels": {"__name__": name, "instance": row["host"], "job": "node"}}
                               for name in ("cpu", "p99_ms")],
    # Telegraf's JSON serializer (json_timestamp_units = 1s, its default)
    "telegraf": lambda row: [{"fields": {"cpu": row["cpu"], "p99_ms": row["p99_ms"]}, "name": "system",
                              "tags": {"host": row["host"]}, "timestamp": row["ts"]}],
}
# The same data in Vigil's own format: keys as each shape names its entities, fields as it carries them.
EQUIVALENT = {
    "flat": lambda row: [as_vigil(row)],
    "prometheus": lambda row: [as_vigil(row, f"__name__={name},instance={row['host']},job=node", (name,))
                               for name in ("cpu", "p99_ms")],
    "telegraf": lambda row: [as_vigil(row, f"system/host={row['host']}")],
}
SCHEMA_TOML = {
    "flat": '[source.schema]\npreset = "flat"\nkey = ["host"]\ntime = "ts"\ntime_unit = "rfc3339"\n'
            'fields = ["metrics.cpu", "p99_ms"]\n',
    "prometheus": '[source.schema]\npreset = "prometheus"\n',
    "telegraf": '[source.schema]\npreset = "telegraf"\n',
}
FIELDS = {"flat": ["metrics.cpu", "p99_ms"], "prometheus": ["cpu", "p99_ms"], "telegraf": ["cpu", "p99_ms"]}


def write_lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def run_config(path: Path, events: Path, fields: list[str], schema: str = "") -> Path:
    path.write_text(f"""[run]
run_dir = "{path.parent / path.stem}"
[source]
type = "file"
path = "{events}"
{schema}
[[operators]]
name = "outlier"
type = "zscore"
fields = {json.dumps(fields)}
[operators.params]
warmup = 20
[operators.params.alerting]
warmup = 20
[sinks.scores]
type = "file"
path = "scores.jsonl"
[metrics]
enabled = false
""")
    return path


def outputs(config: Path, rename: dict[str, str] | None = None) -> tuple[list, list]:
    """(scores by key and time, alerts without their ids and source positions) of a finished run."""
    run_dir = config.parent / config.stem
    rename = rename or {}
    scores = sorted((r["key"], r["ts"], r["scores"], {rename.get(k, k): v for k, v in r["values"].items()})
                    for r in map(json.loads, (run_dir / "scores.jsonl").read_text().splitlines()))
    alerts = []
    for alert in map(json.loads, (run_dir / "alerts.jsonl").read_text().splitlines()):
        alert.pop("id"), alert.pop("source")
        alert["fields"] = [rename.get(name, name) for name in alert["fields"]]
        if alert.get("expected"):
            alert["expected"] = {rename.get(name, name): band for name, band in alert["expected"].items()}
        alert["reason"] = alert["reason"].replace("metrics.cpu", "cpu")
        alerts.append(alert)
    return scores, sorted(alerts, key=lambda a: (a["key"], a["ts"], a["operator"]))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_shape_through_vigil_run_scores_and_alerts_as_the_same_data_in_vigils_format(shape, tmp_path):
    rows = metrics_stream()
    theirs = write_lines(tmp_path / f"{shape}.jsonl", [record for row in rows for record in SHAPES[shape](row)])
    ours = write_lines(tmp_path / "vigil.jsonl", [record for row in rows for record in EQUIVALENT[shape](row)])
    vigil("run", "--config", str(run_config(tmp_path / "theirs.toml", theirs, FIELDS[shape], SCHEMA_TOML[shape])))
    vigil("run", "--config", str(run_config(tmp_path / "ours.toml", ours, ["cpu", "p99_ms"])))
    rename = {"metrics.cpu": "cpu"} if shape == "flat" else None
    their_scores, their_alerts = outputs(tmp_path / "theirs.toml", rename)
    our_scores, our_alerts = outputs(tmp_path / "ours.toml")
    assert len(their_scores) == len(rows) * (2 if shape == "prometheus" else 1)
    assert their_scores == our_scores
    assert their_alerts == our_alerts
    spiked = {(a["key"], a["ts"]) for a in their_alerts if "cpu" in a["fields"]}
    assert any("web-1" in key and ts.startswith(rfc3339(START_S + 60 * 150)[:16]) for key, ts in spiked)


MALFORMED = {
    "flat": [
        (b'{"ts":"2026-12-01T10:00:00Z","metrics":{"cpu":1}}', "missing_key"),
        (b'{"host":["a"],"ts":"2026-12-01T10:00:00Z"}', "bad_key"),
        (b'{"host":"","ts":"2026-12-01T10:00:00Z"}', "bad_key"),
        (b'{"host":"a","ts":1764583200}', "bad_timestamp"),  # a number under time_unit = rfc3339
        (b'{"host":"a","ts":"2026-12-01T10:00:00"}', "bad_timestamp"),  # no offset
        (b'{"host":"a"}', "bad_timestamp"),
        (b'{"host":"a","ts":"2026-12-01T10:00:00Z","metrics":{"cpu":[1]}}', "bad_fields"),
        (b'{"host":"a","ts":"2026-12-01T10:00:00Z","metrics":7}', "bad_fields"),
        (b'{"host":"a","ts":"2026-12-01T10:00:00Z","p99_ms":1e999}', "non_finite"),
        (b'{"host":"a","ts":"2026-12-01T10:00:00Z","p99_ms":{"v":1}}', "bad_fields"),
        (b'{"host":"a",', "bad_json"),
        (b'[1]', "not_an_object"),
    ],
    "prometheus": [
        (b'{"timestamp":"2026-12-01T10:00:00Z","value":"1","name":"cpu"}', "missing_key"),  # no labels: no series
        (b'{"timestamp":"2026-12-01T10:00:00Z","value":"1","name":"cpu","labels":{"a":[1]}}', "bad_key"),
        (b'{"timestamp":"2026-12-01T10:00:00Z","value":"high","name":"cpu","labels":{"a":"b"}}', "bad_fields"),
        (b'{"timestamp":"2026-12-01T10:00:00Z","value":"NaN","name":"cpu","labels":{"a":"b"}}', "non_finite"),
        (b'{"timestamp":"2026-12-01T10:00:00Z","name":"cpu","labels":{"a":"b"}}', "bad_fields"),
        (b'{"value":"1","name":"cpu","labels":{"a":"b"}}', "bad_timestamp"),
    ],
    "telegraf": [
        (b'{"fields":{"cpu":1},"tags":{"host":"a"},"timestamp":1764583200}', "missing_key"),
        (b'{"fields":{"cpu":true},"name":"s","tags":{"host":"a"},"timestamp":1764583200}', "bad_fields"),
        (b'{"name":"s","tags":{"host":"a"},"timestamp":1764583200}', "bad_fields"),
        (b'{"fields":{"cpu":1},"name":"s","tags":{"host":"a"},"timestamp":"yesterday"}', "bad_timestamp"),
        (b'{"fields":{"cpu":1},"name":"s","tags":{"host":"a"},"timestamp":-5}', "bad_timestamp"),
    ],
}
PRESETS = {"flat": FLAT, "prometheus": SchemaConfig(preset="prometheus"), "telegraf": SchemaConfig(preset="telegraf")}


@pytest.mark.parametrize("shape,payload,reason", [(s, p, r) for s, cases in MALFORMED.items() for p, r in cases])
def test_malformed_variants_of_each_shape_are_dead_lettered_with_their_reason(shape, payload, reason):
    decoder = compile_schema(PRESETS[shape], FIELDS[shape], [])
    letter = decoder.decode_event(payload, SourcePosition(topic="t", partition=0, offset=1), 4096)
    assert isinstance(letter, DeadLetter), letter
    assert (letter.reason, letter.original_bytes()) == (reason, payload) and reason in REASONS and letter.detail


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_batch_decodes_as_its_records_one_by_one_and_loses_nothing(shape):
    good = [json.dumps(record).encode() for row in metrics_stream(4) for record in SHAPES[shape](row)]
    bad = [payload for payload, _ in MALFORMED[shape]] + [b"x" * 5000]
    payloads = good[:3] + bad + good[3:]
    decoder = compile_schema(PRESETS[shape], FIELDS[shape], [])
    for chosen in (good, payloads):
        records = RecordBatch("t", 0, np.arange(len(chosen)), chosen)
        batch, dead, ignored = decoder.decode_batch(records, 4096)
        alone = [decoder.decode_event(p, records.position(i), 4096) for i, p in enumerate(chosen)]
        events = [e for e in alone if e is not None and not isinstance(e, DeadLetter)]
        assert dead == [e for e in alone if isinstance(e, DeadLetter)]
        assert len(batch) + len(dead) + ignored == len(chosen) and ignored == 0
        assert batch.keys.tolist() == [e.key for e in events] and batch.ts_ms.tolist() == [e.ts_ms for e in events]
        for name in FIELDS[shape]:
            assert batch.column(name).tolist() == pytest.approx([e.fields.get(name, np.nan) for e in events],
                                                                nan_ok=True)


def test_samples_of_metrics_no_operator_reads_are_counted_as_ignored():
    decoder = compile_schema(SchemaConfig(preset="prometheus"), ["cpu"], [])
    payloads = [json.dumps(record).encode() for row in metrics_stream(2) for record in SHAPES["prometheus"](row)]
    batch, dead, ignored = decoder.decode_batch(RecordBatch("t", 0, np.arange(len(payloads)), payloads), 4096)
    assert (len(batch), dead, ignored) == (6, [], 6) and set(batch.keys.tolist()) == {
        f"__name__=cpu,instance={host},job=node" for host in HOSTS}


@pytest.mark.parametrize("unit,value,expected", [("s", 1764583200, 1764583200000), ("s", 1764583200.1234, 1764583200123),
                                                 ("ms", 1764583200123, 1764583200123), ("us", 1764583200123500, 1764583200124),
                                                 ("ns", 1764583200123456789, 1764583200123)])
def test_epoch_units_convert_exactly_in_batches_and_alone(unit, value, expected):
    decoder = compile_schema(SchemaConfig(preset="flat", key=["h"], time="t", time_unit=unit), ["x"], [])
    payload = json.dumps({"h": "a", "t": value, "x": 1}).encode()
    batch, _, _ = decoder.decode_batch(RecordBatch("t", 0, np.arange(2), [payload, payload]), 4096)
    alone = decoder.decode_event(payload, SourcePosition(topic="t", partition=0, offset=0), 4096)
    assert batch.ts_ms.tolist() == [expected, expected] and alone.ts_ms == expected


def test_epoch_seconds_declared_as_milliseconds_warn_once_naming_the_unit_that_fits(caplog):
    decoder = compile_schema(SchemaConfig(preset="flat", key=["h"], time="t", time_unit="ms"), ["x"], [])
    payload = json.dumps({"h": "a", "t": START_S, "x": 1}).encode()
    with caplog.at_level(logging.WARNING, logger="vigil"):
        for _ in range(3):
            decoder.decode_batch(RecordBatch("t", 0, np.arange(1), [payload]), 4096)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "1970-01-21" in warnings[0] and "time_unit = 's' would fit" in warnings[0]


def test_the_record_key_and_timestamp_of_kafka_stand_for_payload_paths():
    decoder = compile_schema(SchemaConfig(preset="flat", key=["kafka:key"], time="kafka:timestamp"), ["x"], [])
    payloads = [b'{"x":1}', b'{"x":2}', b'{"x":3}']
    records = RecordBatch("t", 0, np.arange(3), payloads, [b"a", None, b"c"], np.array([5, 6, 7]))
    batch, dead, _ = decoder.decode_batch(records, 4096)
    assert batch.keys.tolist() == ["a", "c"] and batch.ts_ms.tolist() == [5, 7] and batch.column("x").tolist() == [1, 3]
    assert [(d.reason, d.source.offset) for d in dead] == [("missing_key", 1)]


@pytest.mark.parametrize("table,key,message", [
    ('preset = "flat"\ntime = "ts"\ntime_unit = "s"', "source.schema.key", "required with preset 'flat'"),
    ('preset = "flat"\nkey = ["host"]\ntime = "ts"', "source.schema.time_unit", "required: the unit of 'ts'"),
    ('preset = "flat"\nkey = ["kafka:key"]\ntime = "ts"\ntime_unit = "s"', "source.schema.key", "only with source.type"),
    ('preset = "flat"\nkey = ["host"]\ntime = "ts"\ntime_unit = "s"\nfields = ["cpu_user"]', "operators[0].fields[0]",
     "did you mean 'cpu_user'?"),
    ('preset = "flat"\nkey = ["host"]\ntime = "ts"\ntime_unit = "s"\nexclude = ["cpu*"]', "operators[0].fields[0]",
     "is not a field of [source.schema]"),
    ('preset = "flatt"', "source.schema.preset", "did you mean 'flat'?"),
    ('preset = "flat"\nkey = ["host"]\ntime = "ts"\ntime_unit = "seconds"', "source.schema.time_unit", "not allowed"),
])
def test_a_schema_that_cannot_read_events_is_refused_naming_the_key(table, key, message, tmp_path):
    path = tmp_path / "vigil.toml"
    path.write_text(f'[source]\ntype = "file"\npath = "e.jsonl"\n[source.schema]\n{table}\n'
                    '[[operators]]\nname = "o"\ntype = "zscore"\nfields = ["cpu_usr"]\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert any(issue.key == key and message in str(issue) for issue in raised.value.issues), raised.value
    result = vigil("config", "check", str(path), check=False)
    assert result.returncode == 2 and key in result.stderr and "Traceback" not in result.stderr


def test_flat_json_on_a_kafka_topic_reads_the_records_keys_and_times(broker, tmp_path):
    """The audit's topic, through the embedded broker: keyed by host, stamped with event time, payloads without
    either; the run scores it as the same data in Vigil's own format."""
    rows = metrics_stream(200)
    topics = new_topics(broker, 2, "events")
    produce_records(broker, topics["events"], ((row["host"].encode(), json.dumps(
        {"cpu": row["cpu"], "p99_ms": row["p99_ms"]}).encode(), row["ts"] * 1000) for row in rows))
    config = run_config(tmp_path / "theirs.toml", tmp_path / "unused", ["cpu", "p99_ms"],
                        '[source.schema]\npreset = "flat"\nkey = ["kafka:key"]\ntime = "kafka:timestamp"\n')
    text = config.read_text().replace('type = "file"\npath = "' + str(tmp_path / "unused") + '"',
                                      f'type = "kafka"\ntopics = ["{topics["events"]}"]\nmode = "bounded"\n'
                                      f'start = "beginning"')
    config.write_text(text + f'[kafka]\nbootstrap_servers = ["{broker}"]\nretry_initial_seconds = 0.2\n')
    vigil("run", "--config", str(config))
    ours = write_lines(tmp_path / "vigil.jsonl", [as_vigil(row) for row in rows])
    vigil("run", "--config", str(run_config(tmp_path / "ours.toml", ours, ["cpu", "p99_ms"])))
    their_scores, their_alerts = outputs(config)
    our_scores, our_alerts = outputs(tmp_path / "ours.toml")
    assert len(their_scores) == len(rows)
    # per entity the topic keeps order, so each entity's scores are those of the file run
    assert their_scores == our_scores and their_alerts == our_alerts


flat_objects = st.fixed_dictionaries({}, optional={
    "host": mostly(st.text(min_size=1, max_size=8) | st.integers(), json_values | st.just("")),
    "ts": mostly(st.integers(0, 2**45) | st.floats(0, 2**40), json_values | st.integers() | st.floats()),
    "metrics": mostly(st.fixed_dictionaries({}, optional={"cpu": mostly(finite | st.text(max_size=4), json_values)}),
                      json_values),
    "p99_ms": mostly(finite, json_values), "extra": json_values})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(flat_objects.map(lambda obj: json.dumps(obj).encode()) | st.binary(max_size=30), max_size=12),
       st.sampled_from(["s", "ms", "us", "ns"]))
def test_any_payloads_decode_in_a_batch_as_one_by_one_and_nothing_raises(payloads, unit):
    decoder = compile_schema(SchemaConfig(preset="flat", key=["host"], time="ts", time_unit=unit), FIELDS["flat"],
                             ["metrics.cpu"])
    records = RecordBatch("t", 0, np.arange(len(payloads)), payloads)
    batch, dead, _ = decoder.decode_batch(records, 4096)
    alone = [decoder.decode_event(p, records.position(i), 4096) for i, p in enumerate(payloads)]
    events = [e for e in alone if not isinstance(e, DeadLetter)]
    assert dead == [e for e in alone if isinstance(e, DeadLetter)] and all(d.reason in REASONS for d in dead)
    assert batch.keys.tolist() == [e.key for e in events] and batch.ts_ms.tolist() == [e.ts_ms for e in events]
    assert batch.text("metrics.cpu").tolist() == [v if isinstance(v := e.fields.get("metrics.cpu"), str) else None
                                                  for e in events]


def test_config_check_compiles_the_schema_as_a_run_would(tmp_path):
    path = tmp_path / "vigil.toml"
    path.write_text('[source]\ntype = "file"\npath = "e.jsonl"\n[source.schema]\npreset = "otlp"\nkey = ["labels.*"]\n'
                    '[[operators]]\nname = "o"\ntype = "zscore"\nfields = ["cpu"]\n')
    result = vigil("config", "check", str(path), check=False)
    assert result.returncode == 2 and "source.schema.key: 'labels.*' is not a key part" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_misspelt_nested_field_is_named_with_the_paths_the_events_have(tmp_path):
    rows = metrics_stream(50)
    events = write_lines(tmp_path / "flat.jsonl", [record for row in rows for record in SHAPES["flat"](row)])
    schema = '[source.schema]\npreset = "flat"\nkey = ["host"]\ntime = "ts"\ntime_unit = "rfc3339"\n'
    result = vigil("run", "--config", str(run_config(tmp_path / "run.toml", events, ["metrics.cpuu"], schema)),
                   "--no-progress")
    assert "field 'metrics.cpuu', which the operators read, is in none of the first 150 valid events" in result.stderr
    assert "did you mean 'metrics.cpu'?" in result.stderr and "p99_ms" in result.stderr


def test_a_run_of_epoch_seconds_declared_as_milliseconds_warns_once_with_the_unit_that_fits(tmp_path):
    rows = metrics_stream(50)
    events = write_lines(tmp_path / "flat.jsonl", [{"host": r["host"], "ts": r["ts"], "cpu": r["cpu"]} for r in rows])
    schema = '[source.schema]\npreset = "flat"\nkey = ["host"]\ntime = "ts"\ntime_unit = "ms"\n'
    result = vigil("run", "--config", str(run_config(tmp_path / "run.toml", events, ["cpu"], schema)), "--no-progress")
    warnings = [line for line in result.stderr.splitlines() if "outside 2000..2100" in line]
    assert len(warnings) == 1 and "read as time_unit = 'ms'" in warnings[0] and "time_unit = 's' would fit" in warnings[0]
