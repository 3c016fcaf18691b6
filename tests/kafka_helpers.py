"""Shared pieces of the Kafka tests: topics, a producer, configs and waiting on offsets."""
from __future__ import annotations

import collections
import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import msgspec
from kafka import TopicPartition

from operators.event import SourcePosition
from bench.monitoring import produce as produce_records
from pipeline.config import KafkaConfig
from pipeline.demo.broker import EmbeddedBroker, free_port
from pipeline.demo.synthetic import SyntheticRecord, SyntheticStream
from pipeline.engine.decode import DeadLetter, decode_event
from pipeline.engine.kafka import KafkaSettings, create_topics, end_offsets, read_topic

START = "2026-03-01T00:00:00Z"

OPERATORS = """
[[operators]]
name = "outlier"
type = "zscore"
fields = ["cpu", "latency_ms", "requests", "error_rate"]
[operators.params]
warmup = 30
# Short test streams: alerts may start once an entity has 50 calibrating scores.
alerting = { warmup = 50 }

[[operators]]
name = "drift"
type = "drift"
fields = ["score:outlier"]
[operators.params]
detector = "adwin"
"""


def settings(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(KafkaConfig(bootstrap_servers=[bootstrap], retry_initial_seconds=0.2))


def new_topics(bootstrap: str, partitions: int, *roles: str) -> dict[str, str]:
    """Fresh topics named after their roles, e.g. ``{"events": "events-1a2b", ...}``."""
    suffix = uuid.uuid4().hex[:8]
    names = {role: f"{role}-{suffix}" for role in roles}
    create_topics(settings(bootstrap), {name: partitions if role == "events" else 1 for role, name in names.items()})
    return names


def stream(events: int, bad_rate: float = 0.01, seed: int = 11, entities: int = 20) -> SyntheticStream:
    return SyntheticStream(events=events, entities=entities, seed=seed, bad_rate=bad_rate, start=START,
                           interval_seconds=60.0, max_event_bytes=65536)


def produce(bootstrap: str, topic: str, records: Iterable[SyntheticRecord], per_second: float = 0.0) -> int:
    """Keyed by entity and stamped with event time, as a service would; paced when ``per_second`` > 0."""
    return produce_records(bootstrap, topic, ((r.key.encode(), r.payload, r.ts_ms) for r in records), per_second)


def write_config(path: Path, bootstrap: str, topics: dict[str, str], *, mode: str = "bounded", group: str = "",
                 recovery: Path | None = None, sinks: dict[str, str] | None = None, run_dir: Path | None = None) -> Path:
    """A config reading ``topics["events"]``; each sink in ``sinks`` is "kafka" (to the topic of that role) or "file"."""
    lines = [
        f'[run]\nrun_dir = "{run_dir or path.parent / "run"}"',
        f'[source]\ntype = "kafka"\ntopics = ["{topics["events"]}"]\nmode = "{mode}"\nstart = "beginning"',
        f'[kafka]\nbootstrap_servers = ["{bootstrap}"]\ngroup_id = "{group or "vigil-" + topics["events"]}"\n'
        "retry_initial_seconds = 0.2\nretry_max_seconds = 1.0",
        "[pipeline]\nbatch_max_wait_ms = 20",
        "[metrics]\nenabled = false",
    ]
    if recovery is not None:
        lines.append(f'[recovery]\ndirectory = "{recovery}"\nsnapshot_interval_seconds = 0.5')
    for role, kind in (sinks or {}).items():
        target = f'topic = "{topics[role]}"' if kind == "kafka" else f'path = "{role}.jsonl"'
        lines.append(f'[sinks.{role}]\ntype = "{kind}"\n{target}')
    path.write_text("\n\n".join(lines) + "\n" + OPERATORS)
    return path


def input_records(bootstrap: str, topic: str) -> list:
    return read_topic(settings(bootstrap), topic)


def decoded(records: list) -> tuple[list, list[DeadLetter]]:
    """The input topic's records decoded as the pipeline does: (events, dead letters)."""
    events, dead = [], []
    for record in records:
        position = SourcePosition(topic=record.topic, partition=record.partition, offset=record.offset)
        item = decode_event(record.value, position, 65536)
        (dead if isinstance(item, DeadLetter) else events).append(item)
    return events, dead


def position_of(value: bytes) -> tuple[str, int, int]:
    source = msgspec.json.decode(value)["source"]
    return source["topic"], source["partition"], source["offset"]


def assert_every_input_record_reached_the_outputs(bootstrap: str, topics: dict[str, str], written: int) -> None:
    """Every record in the input topic (at least the ``written`` ones) is in the scores (valid events) or the dead
    letters.

    The offsets expected are those the topic holds, not ``range(end)``: across a broker restart a producer's retried
    batch can be in the topic twice, and Tansu's S3 engine can leave offsets that hold no record.
    """
    present = {(topics["events"], r.partition, r.offset) for r in read_topic(settings(bootstrap), topics["events"])}
    assert len(present) >= written, f"the input topic holds {len(present)} records, fewer than the {written} written"
    seen = [position_of(r.value) for r in read_topic(settings(bootstrap), topics["scores"])]
    seen += [(h["vigil-source-topic"], int(h["vigil-source-partition"]), int(h["vigil-source-offset"]))
             for h in ({n: v.decode() for n, v in r.headers} for r in read_topic(settings(bootstrap), topics["dead_letters"]))]
    missing = present - set(seen)
    assert not missing and set(seen) <= present, f"{len(missing)} input records missing, e.g. {sorted(missing)[:5]}"


def assert_duplicates_keep_their_ids(bootstrap: str, topic: str) -> None:
    """Alerts written twice (re-emitted after a resume) are byte-identical to their first copy, id included."""
    copies = collections.defaultdict(set)
    for record in read_topic(settings(bootstrap), topic):
        alert = msgspec.json.decode(record.value)
        copies[(position_of(record.value), alert["operator"])].add(record.value)
    assert copies and all(len(variants) == 1 for variants in copies.values())


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        return {p: consumer.committed(TopicPartition(topic, p)) for p in sorted(partitions)}
    finally:
        consumer.close()


def ends(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        return {tp.partition: end for tp, end in end_offsets(consumer, partitions).items()}
    finally:
        consumer.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def durable_broker(directory: Path) -> Iterator[EmbeddedBroker]:
    """A started Tansu that keeps topics and offsets in S3 (``moto_server`` on a loopback port), so it can be stopped
    and started again, on the same port, without losing them."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {"AWS_ACCESS_KEY_ID": "vigil-test", "AWS_SECRET_ACCESS_KEY": "vigil-test",
                   "AWS_DEFAULT_REGION": "us-east-1"}
    s3 = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                          stdout=open(directory / "moto.log", "wb"), stderr=subprocess.STDOUT)
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name=credentials["AWS_DEFAULT_REGION"],
                              aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"])

        def bucket_made() -> bool:
            try:
                client.create_bucket(Bucket="tansu")
                return True
            except Exception:  # noqa: BLE001 - the server is still starting (connection refused)
                return False

        wait_for(bucket_made, 30, f"moto_server on {endpoint}")
        broker = EmbeddedBroker(log_path=directory / "tansu.log", storage_engine="s3://tansu/",
                                environment={**credentials, "AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true"})
        with broker:
            yield broker
    finally:
        s3.terminate()
        s3.wait(10)


def tls_settings(bootstrap: str, ca_location: str = "") -> KafkaSettings:
    """Settings for a TLS listener (``security_protocol = "SSL"``), trusting ``ca_location`` (else the system store)."""
    return KafkaSettings(KafkaConfig(bootstrap_servers=[bootstrap], retry_initial_seconds=0.2, security_protocol="SSL",
                                     ssl_ca_location=ca_location))


def self_signed_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made with the openssl CLI: (cert, key) PEM paths."""
    import subprocess

    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key
