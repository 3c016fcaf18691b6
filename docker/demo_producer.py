"""The compose stack's event source: Vigil's synthetic service metrics, produced to Kafka in real time.

Runs in the Vigil image (docker/compose.yaml mounts it). Every entity (node-000, ...) reports cpu, latency_ms,
requests and error_rate once per DEMO_INTERVAL_SECONDS as a JSON event keyed by entity, with injected spikes and
level shifts and a share DEMO_BAD_RATE of malformed payloads (pipeline/demo/synthetic.py). Event times are
wall-clock times and records go out when their time comes, so Vigil's lag metrics mean what they would in
production. The stream is generated in rounds of DEMO_ROUND_TICKS ticks with one seed (the entities keep their
baselines across rounds), each round starting where the last ended, until SIGTERM.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

from confluent_kafka import KafkaError, Producer

from operators.event import format_ts
from pipeline.demo.synthetic import SyntheticStream

BOOTSTRAP = os.environ.get("DEMO_BOOTSTRAP_SERVERS", "kafka:9092")
TOPIC = os.environ.get("DEMO_TOPIC", "events")
ENTITIES = int(os.environ.get("DEMO_ENTITIES", "50"))
INTERVAL_SECONDS = float(os.environ.get("DEMO_INTERVAL_SECONDS", "1"))
BAD_RATE = float(os.environ.get("DEMO_BAD_RATE", "0.002"))
ROUND_TICKS = int(os.environ.get("DEMO_ROUND_TICKS", "3600"))
SEED = int(os.environ.get("DEMO_SEED", "7"))

stop = threading.Event()
failed = 0


def on_delivery(error: KafkaError | None, _message) -> None:
    global failed
    if error is not None:
        failed += 1
        if failed == 1 or failed % 1000 == 0:
            print(f"demo-producer: {failed} records not delivered, last: {error}", file=sys.stderr, flush=True)


def main() -> int:
    # PID 1 in a container ignores SIGTERM unless it handles it: stop, flush, exit 0.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "client.id": "vigil-demo-producer", "linger.ms": 20})
    start_ms = int(time.time() * 1000)
    sent = 0
    print(f"demo-producer: {ENTITIES} entities every {INTERVAL_SECONDS:g} s to {TOPIC} on {BOOTSTRAP}", flush=True)
    while not stop.is_set():
        stream = SyntheticStream(events=ENTITIES * ROUND_TICKS, entities=ENTITIES, seed=SEED, bad_rate=BAD_RATE,
                                 start=format_ts(start_ms), interval_seconds=INTERVAL_SECONDS)
        for record in stream.payloads():
            producer.poll(0)  # delivery reports
            if stop.wait(max(0.0, record.ts_ms / 1000 - time.time())):  # a record goes out when its time comes
                break
            producer.produce(TOPIC, record.payload, record.key.encode(), timestamp=record.ts_ms, on_delivery=on_delivery)
            sent += 1
            if sent % (ENTITIES * 60) == 0:
                print(f"demo-producer: {sent} records sent", flush=True)
        start_ms += ROUND_TICKS * stream.interval_ms
    producer.flush(10)
    print(f"demo-producer: stopped after {sent} records ({failed} not delivered)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
