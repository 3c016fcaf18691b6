"""``vigil init`` and ``vigil config check --sample`` through the real CLI: a stream with planted spikes and a level
shift, in each preset's shape, is sampled, configured, checked and run, and the alerts land on what was planted."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from operators.event import format_ts, parse_ts_ms
from tests.conftest import vigil

START_MS = parse_ts_ms("2026-12-01T10:00:00Z")
STEP_MS = 60_000
HOSTS = ["web-1", "web-2", "web-3", "web-4"]
EVENTS = 1500  # per host
CPU, CPU_SD, P99, P99_SD = 0.4, 0.05, 180.0, 10.0
# Three spikes per host, well after the operators' warm-up (30 values, then 200 calibrating scores), staggered.
SPIKES = {host: [400 + 7 * h, 800 + 7 * h, 1200 + 7 * h] for h, host in enumerate(HOSTS)}
# After the spikes: an entity's alert calibration holds its last 1000 scores, and those of a level shift would make
# a later spike of the same entity look less rare.
SHIFT_HOST, SHIFT_AT = "web-2", 1300


def stream() -> list[tuple[str, int, int, float, float]]:
    """(host, index, epoch ms, cpu, p99_ms) in time order: noise, +12 sigma cpu spikes, a +10 sigma p99_ms shift."""
    rng = np.random.default_rng(7)
    rows = []
    for index in range(EVENTS):
        for host in HOSTS:
            cpu = CPU + CPU_SD * rng.normal() + (12 * CPU_SD if index in SPIKES[host] else 0.0)
            p99 = P99 + P99_SD * rng.normal() + (10 * P99_SD if host == SHIFT_HOST and index >= SHIFT_AT else 0.0)
            rows.append((host, index, START_MS + index * STEP_MS, round(cpu, 4), round(p99, 1)))
    return rows


def rfc3339(ts_ms: int) -> str:
    return format_ts(ts_ms).replace(".000Z", "Z")


def flat(host, index, ts_ms, cpu, p99):
    return [{"host": host, "region": "eu" if host in HOSTS[:2] else "us", "ts": rfc3339(ts_ms), "cpu": cpu, "p99_ms": p99}]


def flat_ms(host, index, ts_ms, cpu, p99):
    return [{"host": host, "ts": ts_ms, "cpu": cpu, "p99_ms": p99}]


def prometheus(host, index, ts_ms, cpu, p99):
    return [{"name": name, "labels": {"__name__": name, "instance": host, "job": "node"}, "value": str(value),
             "timestamp": rfc3339(ts_ms)} for name, value in (("cpu", cpu), ("p99_ms", p99))]


def telegraf(host, index, ts_ms, cpu, p99):
    return [{"name": "system", "tags": {"host": host}, "fields": {"cpu": cpu, "p99_ms": p99}, "timestamp": ts_ms // 1000}]


def vigil_format(host, index, ts_ms, cpu, p99):
    return [{"key": host, "ts": rfc3339(ts_ms), "fields": {"cpu": cpu, "p99_ms": p99}}]


# shape: (records of one event, the alert key of a host's field, what init must print)
SHAPES: dict[str, tuple[Callable, Callable[[str, str], str], list[str]]] = {
    "flat": (flat, lambda host, name: host, [
        "preset: flat (", "key: host (4 distinct values in 6000 records; also possible: region)",
        "time: ts, rfc3339 (named like a time; every value is an RFC 3339 time)", "fields: cpu, p99_ms (",
        "text fields: region ("]),
    "flat-ms": (flat_ms, lambda host, name: host, [
        "preset: flat (", "key: host (4 distinct values in 6000 records)",
        "time: ts, ms (named like a time; epoch numbers that fall in 2026-12-01..2026-12-02 read as ms)",
        "fields: cpu, p99_ms ("]),
    "prometheus": (prometheus, lambda host, name: f"__name__={name},instance={host},job=node", [
        "preset: prometheus (10000 of 10000 records have labels, name, timestamp, value)",
        "key: labels.* (the prometheus preset's; 8 distinct in 10000 records)", "time: timestamp, rfc3339 (",
        "fields: cpu, p99_ms ("]),
    "telegraf": (telegraf, lambda host, name: f"system/host={host}", [
        "preset: telegraf (6000 of 6000 records have fields, name, tags, timestamp)",
        "key: name + tags.* (the telegraf preset's; 4 distinct in 6000 records)", "time: timestamp, s (",
        "fields: cpu, p99_ms ("]),
    "vigil": (vigil_format, lambda host, name: host, [
        "preset: vigil (6000 of 6000 records have fields, key, ts)", "fields: cpu, p99_ms ("]),
}


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def alerts_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "alerts.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_init_configures_a_run_that_finds_the_planted_anomalies(tmp_path, shape):
    to_records, key_of, expected = SHAPES[shape]
    sample = write_jsonl(tmp_path / "events.jsonl", (record for row in stream() for record in to_records(*row)))
    config = tmp_path / "vigil.toml"
    printed = vigil("init", "--sample", str(sample), "--output", str(config)).stderr.splitlines()
    for start in expected:
        assert any(line.startswith(start) for line in printed), (start, printed)
    text = config.read_text()
    assert len(text.splitlines()) < 45 and f'path = "{sample.resolve()}"' in text and 'type = "baseline"' in text

    checked = vigil("config", "check", str(config), "--sample", str(sample))
    assert f"{config}: OK" in checked.stdout and " 0 dead-lettered, 0 ignored" in checked.stdout, checked.stdout

    vigil("run", "--config", str(config), "--run-dir", str(tmp_path / "out"), "--no-metrics")
    alerts = alerts_of(tmp_path / "out")
    times = {(alert["key"], parse_ts_ms(alert["ts"])) for alert in alerts}
    for host, spikes in SPIKES.items():
        for index in spikes:
            near = {(key_of(host, "cpu"), START_MS + (index + late) * STEP_MS) for late in range(3)}
            assert times & near, f"no alert at the cpu spike of {host} at event {index}"
    shift = [ts for key, ts in times if key == key_of(SHIFT_HOST, "p99_ms")
             and START_MS + SHIFT_AT * STEP_MS <= ts <= START_MS + (SHIFT_AT + 30) * STEP_MS]
    assert shift, "no alert within 30 events of the level shift"
    assert len(alerts) < 3 * (len(HOSTS) * 3 + 1), "the planted anomalies should be most of the alerts"


def test_init_refuses_to_overwrite_and_prints_to_stdout(tmp_path):
    sample = write_jsonl(tmp_path / "events.jsonl", (record for row in stream()[:400] for record in flat_ms(*row)))
    config = tmp_path / "vigil.toml"
    config.write_text("# mine\n")
    refused = vigil("init", "--sample", str(sample), "--output", str(config), check=False)
    assert refused.returncode == 2 and "pass --force" in refused.stderr and config.read_text() == "# mine\n"
    vigil("init", "--sample", str(sample), "--output", str(config), "--force")
    assert 'key = ["host"]' in config.read_text()
    printed = vigil("init", "--sample", str(sample), "--output", "-")
    assert printed.stdout == config.read_text() and "key: host (" in printed.stderr


def test_init_explains_what_it_cannot_infer(tmp_path):
    unkeyed = write_jsonl(tmp_path / "unkeyed.jsonl", ({"ts": 1796119200 + i, "cpu": 0.5} for i in range(50)))
    failed = vigil("init", "--sample", str(unkeyed), "--output", "-", check=False)
    assert failed.returncode == 2 and "no entity key" in failed.stderr
    untimed = write_jsonl(tmp_path / "untimed.jsonl", ({"host": f"h{i % 5}", "cpu": 0.5} for i in range(50)))
    failed = vigil("init", "--sample", str(untimed), "--output", "-", check=False)
    assert failed.returncode == 2 and "no event time" in failed.stderr


def test_init_detects_an_otlp_sample(tmp_path):
    def export(name: str, value: float) -> dict:
        point = {"attributes": [], "timeUnixNano": "1796119200000000000", "asDouble": value}
        return {"resourceMetrics": [{"resource": {"attributes": [{"key": "host.name", "value": {"stringValue": "web-1"}}]},
                                     "scopeMetrics": [{"metrics": [{"name": name, "gauge": {"dataPoints": [point]}}]}]}]}

    sample = write_jsonl(tmp_path / "otlp.jsonl", [export("system.cpu.utilization", 0.4), export("http.server.duration", 0.2)])
    printed = vigil("init", "--sample", str(sample), "--output", str(tmp_path / "vigil.toml")).stderr
    assert "preset: otlp (2 of 2 records have resourceMetrics)" in printed
    text = (tmp_path / "vigil.toml").read_text()
    assert 'preset = "otlp"' in text and 'fields = ["system.cpu.utilization", "http.server.duration"]' in text
    vigil("config", "check", str(tmp_path / "vigil.toml"))


def test_config_check_reports_a_misspelt_field_and_dead_letters(tmp_path):
    rows = [record for row in stream()[:2000] for record in flat(*row)]
    sample = write_jsonl(tmp_path / "events.jsonl", rows)
    config = tmp_path / "vigil.toml"
    vigil("init", "--sample", str(sample), "--output", str(config))

    misspelt = vigil("config", "check", str(config), "--sample", str(sample), "--set", 'operators.0.fields=["cpu", "p99ms"]',
                     check=False)
    assert misspelt.returncode == 1, misspelt.stdout + misspelt.stderr
    assert "field 'p99ms' (read by outlier) never occurs in the decoded events; did you mean 'p99_ms'?" in misspelt.stdout

    bad = [*rows[:10], {**rows[10], "ts": "yesterday"}, {k: v for k, v in rows[11].items() if k != "host"}, *rows[12:]]
    broken = tmp_path / "broken.jsonl"
    broken.write_text("".join(json.dumps(record) + "\n" for record in bad) + "{not json\n")
    report = vigil("config", "check", str(config), "--sample", str(broken), check=False)
    assert report.returncode == 1
    lines = report.stdout.splitlines()
    assert "sample: 2001 records: 1998 events decoded, 3 dead-lettered, 0 ignored" in lines[1], lines
    for reason, line in (("bad_timestamp", 11), ("missing_key", 12), ("bad_json", 2001)):
        assert any(text.startswith(f"dead-lettered {reason}: 1, e.g. line {line}: ") for text in lines), (reason, lines)
    assert any(text.startswith('    payload: {"host": "web-3", "region": "us", "ts": "yesterday"') for text in lines)

    invalid = vigil("config", "check", str(config), "--sample", str(sample), "--set", "source.schema.time_unit='days'",
                    check=False)
    assert invalid.returncode == 2


def test_init_samples_a_kafka_topic(tmp_path, broker):
    from bench.monitoring import produce
    from tests.kafka_helpers import new_topics

    topic = new_topics(broker, 2, "events")["events"]
    rows = stream()[:800]
    produce(broker, topic, ((host.encode(), json.dumps(flat_ms(host, i, ts, cpu, p99)[0]).encode(), ts)
                            for host, i, ts, cpu, p99 in rows))
    config = tmp_path / "vigil.toml"
    printed = vigil("init", "--topic", topic, "--bootstrap-servers", broker, "--records", "600", "--output", str(config))
    assert "key: host (" in printed.stderr and " distinct values in 600 records" in printed.stderr, printed.stderr
    text = config.read_text()
    assert f'topics = ["{topic}"]' in text and f'bootstrap_servers = ["{broker}"]' in text and 'time_unit = "ms"' in text
    vigil("config", "check", str(config))
    missing = vigil("init", "--topic", f"{topic}-missing", "--bootstrap-servers", broker, "--output", "-", check=False)
    assert missing.returncode == 2 and "not found" in missing.stderr, missing.stderr
