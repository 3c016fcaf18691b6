"""The Kafka path over TLS, against the embedded broker behind a self-signed certificate made here (openssl CLI).

Tansu 0.6 serves no TLS itself, so :class:`~pipeline.demo.broker.EmbeddedBroker` terminates TLS in front of it
(``cert``/``key``); the clients see an ordinary TLS listener.
"""
from __future__ import annotations

import collections
import logging
import re
import shutil
import subprocess
import time

import msgspec
import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from conftest import vigil
from kafka_helpers import decoded, self_signed_certificate, stream, tls_settings, write_config

from operators.registry import OperatorChain
from pipeline.config import load_config
from pipeline.demo.broker import EmbeddedBroker
from pipeline.engine.kafka import LibrdkafkaLog, create_topics, read_topic

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI for certificates")]


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, str]:
    """The broker's certificate and key, and an unrelated self-signed certificate (a wrong CA)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = self_signed_certificate(directory, "broker")
    other, _ = self_signed_certificate(directory, "other")
    return {"cert": str(cert), "key": str(key), "wrong_ca": str(other)}


@pytest.fixture(scope="module")
def tls_broker(certificates, tmp_path_factory) -> str:
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("tls-broker") / "tansu.log",
                        cert=certificates["cert"], key=certificates["key"]) as running:
        yield running.bootstrap


def tls_config(path, bootstrap: str, topics: dict[str, str], ca: str, **kwargs):
    config = write_config(path, bootstrap, topics, **kwargs)
    ca_line = f'ssl_ca_location = "{ca}"\n' if ca else ""
    config.write_text(config.read_text().replace("[kafka]\n", f'[kafka]\nsecurity_protocol = "SSL"\n{ca_line}'))
    return config


def test_a_run_over_tls_reads_every_event_and_writes_the_alerts(tls_broker, certificates, tmp_path):
    settings = tls_settings(tls_broker, certificates["cert"])
    topics = {"events": "tls-events", "alerts": "tls-alerts"}
    create_topics(settings, {"tls-events": 2, "tls-alerts": 1})
    producer = Producer(settings.librdkafka("producer"))
    for record in stream(6_000, bad_rate=0.01).payloads():
        producer.produce(topics["events"], record.payload, record.key.encode(), timestamp=record.ts_ms)
    assert producer.flush(30) == 0

    config = tls_config(tmp_path / "vigil.toml", tls_broker, topics, certificates["cert"], sinks={"alerts": "kafka"})
    vigil("run", "--config", str(config), timeout=150)

    records = read_topic(settings, topics["events"])
    assert len(records) == 6_000
    events, dead = decoded(records)
    exposition = (tmp_path / "run" / "metrics.prom").read_text()
    assert f'vigil_events_total{{outcome="valid"}} {float(len(events))}' in exposition
    assert f'vigil_events_total{{outcome="invalid"}} {float(len(dead))}' in exposition
    loaded = load_config(config)
    chain = OperatorChain.build(loaded.operator_specs(), max_entities=loaded.entities.max_per_shard)
    expected = collections.Counter(msgspec.json.encode(a) for a in chain.process(events))
    alerts = read_topic(settings, topics["alerts"])
    assert collections.Counter(r.value for r in alerts) == expected and len(expected) > 0


def test_certificate_verification_is_on_by_default(tls_broker, certificates, tmp_path):
    # librdkafka: without a CA (system store only) the self-signed broker is refused; with it, it answers.
    trusted = Consumer({**tls_settings(tls_broker, certificates["cert"]).librdkafka("consumer"), "group.id": "tls"})
    try:
        assert trusted.list_topics(timeout=10).brokers
    finally:
        trusted.close()
    untrusted = Consumer({**tls_settings(tls_broker).librdkafka("consumer"), "group.id": "tls"})
    try:
        with pytest.raises(KafkaException):
            untrusted.list_topics(timeout=3)
    finally:
        untrusted.close()

    # The run (kafka-python plans it) refuses too, with one line instead of connecting or retrying forever.
    config = tls_config(tmp_path / "vigil.toml", tls_broker, {"events": "tls-none"}, "")
    started = time.monotonic()
    result = vigil("run", "--config", str(config), check=False, timeout=60)
    assert result.returncode == 2 and time.monotonic() - started < 30
    assert result.stderr.strip() == (f"error: TLS handshake with {tls_broker} failed: certificate verify failed: "
                                     "self-signed certificate (ssl_ca_location unset: the system CA store)")


def test_a_wrong_ca_fails_with_one_clear_line(tls_broker, certificates, tmp_path):
    wrong = certificates["wrong_ca"]
    config = tls_config(tmp_path / "vigil.toml", tls_broker, {"events": "tls-wrong"}, wrong)
    started = time.monotonic()
    try:
        result = vigil("run", "--config", str(config), check=False, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("a wrong CA made the run hang instead of failing")
    assert result.returncode == 2 and time.monotonic() - started < 30
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: TLS handshake with {tls_broker} failed: certificate verify failed: self-signed certificate "
                     f"(ssl_ca_location={wrong})"], result.stderr


def test_librdkafka_reports_a_refused_handshake_once_in_vigils_log(tls_broker, certificates, caplog):
    wrong = certificates["wrong_ca"]
    LibrdkafkaLog._seen.clear()  # a line logged by an earlier test of this process would count as a repeat
    caplog.set_level(logging.INFO, logger="vigil.kafka.client")
    consumer = Consumer({**tls_settings(tls_broker, wrong).librdkafka("consumer"), "group.id": "tls"})
    try:
        for _ in range(3):  # librdkafka retries the handshake several times meanwhile
            with pytest.raises(KafkaException):
                consumer.list_topics(timeout=1.5)
    finally:
        consumer.close()
    tls_lines = [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert tls_lines == [f"TLS handshake with {tls_broker} failed: certificate verify failed (ssl_ca_location={wrong})"]
    assert all(r.levelno == logging.ERROR for r in caplog.records if "TLS handshake" in r.getMessage())
    assert not any(re.search(r"SSL handshake failed", r.getMessage()) for r in caplog.records)
