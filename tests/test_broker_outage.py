"""The broker stops in the middle of a tailing run with Kafka sinks, then starts again with its topics (Tansu storing
them in S3 on a local ``moto_server``).

An outage shorter than librdkafka's delivery timeout: Vigil logs it as state changes in its own format (no
traceback, none of librdkafka's raw ``%3|...|FAIL|...`` lines), reports ``vigil_broker_up``, resumes by itself, and
every input record reaches the outputs. An output the broker does not take within the delivery timeout: the run
stops with one clear line and a non-zero exit, and a restart loses nothing.
"""
from __future__ import annotations

import logging
import re
import signal
import socket
import threading
import time
import urllib.request

import pytest
from conftest import free_port, vigil_process
from kafka_helpers import (
    assert_duplicates_keep_their_ids, assert_every_input_record_reached_the_outputs, committed, durable_broker, ends,
    new_topics, produce, stream, wait_for, write_config,
)

from pipeline.engine.kafka import BrokerHealth

pytestmark = pytest.mark.timeout(180)

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
OUTPUTS = {"alerts": "kafka", "dead_letters": "kafka", "scores": "kafka"}


def metric(port: int, name: str) -> float:
    """The sum of a metric's samples on Vigil's endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if re.match(rf"{name}(\{{| )", line))


def tail_config(tmp_path, address: str, topics: dict[str, str], metrics_port: int, extra: str = ""):
    config = write_config(tmp_path / "vigil.toml", address, topics, mode="tail", recovery=tmp_path / "state",
                          sinks=OUTPUTS)
    config.write_text(config.read_text().replace("retry_max_seconds = 1.0", "retry_max_seconds = 2.0" + extra)
                      .replace("[metrics]\nenabled = false", f"[metrics]\nenabled = true\nport = {metrics_port}"))
    return config


def test_an_outage_mid_run_is_logged_as_state_changes_and_loses_nothing(tmp_path):
    metrics_port, log = free_port(), tmp_path / "vigil.log"
    with durable_broker(tmp_path) as broker:
        address = broker.bootstrap
        topics = new_topics(address, 2, "events", "alerts", "dead_letters", "scores")
        group = f"vigil-{topics['events']}"
        config = tail_config(tmp_path, address, topics, metrics_port)
        # The producer writes through the outage too (librdkafka holds its records until the broker is back).
        producer = threading.Thread(target=produce, args=(address, topics["events"], stream(12_000).payloads(), 600))
        producer.start()
        process = vigil_process("run", "--config", str(config), log_path=log)
        try:
            wait_for(lambda: any(committed(address, group, topics["events"]).values()), 60, "a first snapshot commit")
            assert metric(metrics_port, "vigil_broker_up") == 1

            broker.stop()  # for 12 s: longer than librdkafka's longest reconnect back-off (10 s)
            stopped = time.monotonic()
            wait_for(lambda: f"broker {address} unreachable" in log.read_text(), 10, "the outage to be logged")
            assert metric(metrics_port, "vigil_broker_up") == 0
            time.sleep(max(0.0, stopped + 12 - time.monotonic()))
            broker.start()
            wait_for(lambda: f"broker {address} is back after" in log.read_text(), 20, "the broker to be back")
            assert metric(metrics_port, "vigil_broker_up") == 1

            producer.join()
            end = ends(address, topics["events"])
            wait_for(lambda: committed(address, group, topics["events"]) == end, 90, "offsets committed up to the end")
            assert process.poll() is None, log.read_text()
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert_every_input_record_reached_the_outputs(address, topics, 12_000)
        assert_duplicates_keep_their_ids(address, topics["alerts"])

    lines = log.read_text().splitlines()
    assert not [line for line in lines if re.match(r"^%\d\|", line)], lines  # no raw librdkafka lines
    # Every line is in Vigil's format, but for the end summary on stdout: no traceback, no stray output.
    stray = [line for line in lines if not LOG_LINE.match(line)]
    assert "Traceback" not in log.read_text() and stray[0].startswith("Vigil run summary"), stray
    assert all(line == "" or line.startswith("  ") for line in stray[1:]), stray
    down = [line for line in lines if f"broker {address} unreachable" in line]
    still = [line for line in lines if f"broker {address} still unreachable for" in line]
    back = [line for line in lines if f"broker {address} is back after" in line]
    assert len(down) == 1 and " WARNING vigil.kafka: " in down[0], down
    # Reported every 2 s (retry_max_seconds) during an outage of about 12 s (+ up to 1 s to see the broker back).
    assert 4 <= len(still) <= 7 and all(" WARNING " in line for line in still), still
    assert len(back) == 1 and " INFO vigil.kafka: " in back[0], back
    assert 11 <= int(re.search(r"back after (\d+) s", back[0])[1]) <= 18, back
    assert lines.index(down[0]) < lines.index(still[0]) < lines.index(back[0])
    # librdkafka's own lines that are left (not connection churn) are deduplicated: a handful, not hundreds.
    client = [line for line in lines if " vigil.kafka.client: " in line]
    assert len(client) <= 10, client


def test_a_failed_connect_is_an_outage_only_once_the_watcher_confirms_it(caplog):
    """A client's line about a failed connect to a broker that accepts connections now (stale, or one failure on a
    loaded host) logs nothing; a broker that keeps refusing is logged unreachable once, then back once."""
    health = BrokerHealth(first=5.0, most=5.0, probe_every=0.1)
    listening = socket.create_server(("127.0.0.1", 0))
    refusing = socket.create_server(("127.0.0.1", 0))
    alive, dead = (f"127.0.0.1:{s.getsockname()[1]}" for s in (listening, refusing))
    refusing.close()
    caplog.set_level(logging.INFO, logger="vigil.kafka")
    try:
        health.unreachable(alive, "Connection refused")
        health.unreachable(dead, "Connection refused")
        health.unreachable(dead, "Connection refused")  # a second client's line about the same broker
        assert health.up() == 1  # nothing is confirmed yet, and the clients' thread did not wait on a probe
        wait_for(lambda: health.up() == 0, 5, "the outage to be confirmed", interval=0.02)
        restarted = socket.create_server(("127.0.0.1", int(dead.rsplit(":", 1)[1])))
        wait_for(lambda: health.up() == 1, 5, "the broker to be back", interval=0.02)
        restarted.close()
    finally:
        listening.close()
    lines = [record.getMessage() for record in caplog.records]
    assert [line for line in lines if alive in line] == []
    assert [line.split(" (")[0].split(" after")[0] for line in lines] == [f"broker {dead} unreachable",
                                                                          f"broker {dead} is back"], lines


def test_an_output_the_broker_never_takes_stops_the_run_and_a_restart_loses_nothing(tmp_path):
    metrics_port = free_port()
    with durable_broker(tmp_path) as broker:
        address = broker.bootstrap
        topics = new_topics(address, 2, "events", "alerts", "dead_letters", "scores")
        group = f"vigil-{topics['events']}"
        # Vigil's producers hold records for 3 s before sending and give up on one after 4 s; the first snapshot
        # (which flushes them) comes after 10 s. So the run's first outputs are still unsent when the broker stops.
        config = tail_config(tmp_path, address, topics, metrics_port,
                             '\n[kafka.producer]\n"linger.ms" = 3000\n"message.timeout.ms" = 4000')
        config.write_text(config.read_text().replace("snapshot_interval_seconds = 0.5", "snapshot_interval_seconds = 10"))
        produce(address, topics["events"], stream(2_000).payloads())

        first = vigil_process("run", "--config", str(config), log_path=tmp_path / "first.log")
        try:
            wait_for(lambda: "metrics on http" in (tmp_path / "first.log").read_text(), 60, "the metrics server")
            wait_for(lambda: metric(metrics_port, "vigil_events_total") + metric(metrics_port, "vigil_events_invalid_total")
                     >= 2_000, 60, "the run to read every event", interval=0.05)
            broker.stop()
            assert first.wait(60) == 1
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        lines = (tmp_path / "first.log").read_text().splitlines()
        stopping = [line for line in lines if " ERROR vigil: stopping: could not deliver a record to topic " in line]
        # The reason is the last line, once; before it Bytewax's worker reports its panic (Rust's lines), but there is
        # no Python traceback.
        assert stopping == [lines[-1]] and "Message timed out" in stopping[0], lines
        assert not [line for line in lines if "Traceback" in line], lines

        broker.start()
        assert not any(committed(address, group, topics["events"]).values())  # it stopped before its first snapshot
        second = vigil_process("run", "--config", str(config), log_path=tmp_path / "second.log")
        end = ends(address, topics["events"])
        try:
            wait_for(lambda: committed(address, group, topics["events"]) == end, 90, "offsets committed up to the end")
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0, (tmp_path / "second.log").read_text()
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
        assert_every_input_record_reached_the_outputs(address, topics, 2_000)
        assert_duplicates_keep_their_ids(address, topics["alerts"])
