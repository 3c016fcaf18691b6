"""A broker outage during a tailing run: Vigil logs it as state changes, in its own format, and reports
``vigil_broker_up``; librdkafka's raw stderr lines (``%3|...|FAIL|...``) no longer appear."""
from __future__ import annotations

import re
import signal
import time
import urllib.request

import pytest
from conftest import free_port, vigil_process
from kafka_helpers import new_topics, produce, stream, wait_for, write_config

from pipeline.demo.broker import EmbeddedBroker
from pipeline.engine.kafka import create_topics

pytestmark = pytest.mark.timeout(90)

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")


def broker_up(metrics_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        return next(line for line in response.read().decode().splitlines() if line.startswith("vigil_broker_up "))


def test_an_outage_is_logged_once_then_at_intervals_then_back_and_the_gauge_follows(tmp_path):
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    address = broker.bootstrap
    log = tmp_path / "vigil.log"
    process = None
    try:
        topics = new_topics(address, 1, "events", "alerts")
        produce(address, topics["events"], stream(300).payloads())
        metrics_port = free_port()
        config = write_config(tmp_path / "vigil.toml", address, topics, mode="tail", sinks={"alerts": "kafka"})
        config.write_text(config.read_text().replace("retry_max_seconds = 1.0", "retry_max_seconds = 2.0")
                          .replace("[metrics]\nenabled = false", f"[metrics]\nenabled = true\nport = {metrics_port}"))
        process = vigil_process("run", "--config", str(config), log_path=log)
        wait_for(lambda: "consuming 1 partition(s)" in log.read_text(), 60, "the run to start consuming")
        wait_for(lambda: "metrics on http" in log.read_text(), 30, "the metrics server")
        time.sleep(2)
        assert broker_up(metrics_port) == "vigil_broker_up 1.0"

        broker.stop()
        stopped = time.monotonic()
        wait_for(lambda: f"broker {address} unreachable" in log.read_text(), 10, "the outage to be logged")
        assert broker_up(metrics_port) == "vigil_broker_up 0.0"
        time.sleep(max(0.0, stopped + 8 - time.monotonic()))
        broker.start()  # same port, empty (in-memory storage): the run's topics are made again
        create_topics(__import__("kafka_helpers").settings(address), {topics["events"]: 1, topics["alerts"]: 1})
        wait_for(lambda: f"broker {address} is back after" in log.read_text(), 15, "the broker to be back")
        assert broker_up(metrics_port) == "vigil_broker_up 1.0"
        assert process.poll() is None, log.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        broker.stop()

    text = log.read_text()
    lines = text.splitlines()
    assert not [line for line in lines if re.match(r"^%\d\|", line)], text  # no raw librdkafka lines
    # Every line is Vigil's format (or a continuation of a multi-line message, of which there are none here).
    assert all(LOG_LINE.match(line) for line in lines), [line for line in lines if not LOG_LINE.match(line)]
    down = [line for line in lines if f"broker {address} unreachable" in line]
    still = [line for line in lines if f"broker {address} still unreachable for" in line]
    back = [line for line in lines if f"broker {address} is back after" in line]
    assert len(down) == 1 and " WARNING vigil.kafka: " in down[0], down
    # Reports every 2 s (retry_max_seconds) during an outage of about 8 s (+ up to 1 s for the watcher to see it back).
    assert 2 <= len(still) <= 5 and all(" WARNING " in line for line in still), still
    assert len(back) == 1 and " INFO vigil.kafka: " in back[0], back
    seconds = int(re.search(r"back after (\d+) s", back[0])[1])
    assert 7 <= seconds <= 14, back
    assert lines.index(down[0]) < lines.index(still[0]) < lines.index(back[0])
    # librdkafka's own lines that are left (not connection churn) are deduplicated: a handful, not hundreds.
    client = [line for line in lines if " vigil.kafka.client: " in line]
    assert len(client) <= 10, client
