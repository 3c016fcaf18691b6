"""Sinks for alerts, dead letters and scored events: JSON-lines files, stdout, or Kafka topics.

Items are msgspec structs (:class:`~operators.event.Alert`, :class:`~pipeline.engine.decode.DeadLetter`,
:class:`~pipeline.engine.dataflow.ScoredEvent`). File and stdout sinks write one JSON object per line.
Kafka sinks produce through librdkafka without waiting for each batch's acknowledgements; they wait for all of
them (``flush``) when Bytewax snapshots the sink, before the epoch's snapshot is committed, and at the end. A
record the broker did not acknowledge fails the run (see :class:`DeliveryError`), so with recovery the output
is at-least-once:

* alerts: key = entity key, value = the alert as JSON, timestamp = event time, header
  ``vigil-alert-id``. Ids depend only on source position and operator, so consumers deduplicate.
* dead letters: value = the original bytes, unchanged; key = ``topic/partition`` of the source;
  headers ``vigil-reason``, ``vigil-detail``, ``vigil-source`` (``topic/partition@offset``) and
  ``vigil-source-topic`` / ``-partition`` / ``-offset`` (or ``vigil-source-file`` / ``-line``), and
  ``vigil-source-item`` (``...@offset#item``) for an event of a record that holds several (an operator's failed row
  of an OTLP message).
* scores: key = entity key, value = the scored event as JSON, timestamp = event time.
"""
from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition
from confluent_kafka import Producer

from operators.event import Alert, SourcePosition, parse_ts_ms
from operators.incidents import Incident
from pipeline.engine.decode import DeadLetter
from pipeline.engine.kafka import DeliveryError
from pipeline.engine.shutdown import FAILED

_encoder = msgspec.json.Encoder()


class _LinesPartition(StatelessSinkPartition[Any]):
    def __init__(self, handle: BinaryIO, owns_handle: bool) -> None:
        self.handle = handle
        self.owns_handle = owns_handle

    def write_batch(self, items: list[Any]) -> None:
        if items:
            # One write per batch: appends of whole lines stay intact with several workers.
            try:
                self.handle.write(b"".join(_encoder.encode(item) + b"\n" for item in items))
                self.handle.flush()
            except OSError as error:  # a buffered write's error does not say which file: name it
                FAILED.set()
                raise OSError(error.errno, error.strerror, getattr(self.handle, "name", None)) from error

    def close(self) -> None:
        if self.owns_handle:
            try:
                self.handle.close()
            except OSError:  # the same failed write, already raised by write_batch: raising again would abort Bytewax
                pass


class JsonLinesFileSink(DynamicSink[Any]):
    """Appends JSON lines to a file (created with its directory)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LinesPartition:
        return _LinesPartition(open(self.path, "ab", buffering=1 << 16), owns_handle=True)


class JsonLinesStdoutSink(DynamicSink[Any]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LinesPartition:
        return _LinesPartition(sys.stdout.buffer, owns_handle=False)


def alert_message(alert: Alert) -> KafkaSinkMessage:
    return KafkaSinkMessage(alert.key.encode("utf-8"), _encoder.encode(alert), timestamp=parse_ts_ms(alert.ts),
                            headers=[("vigil-alert-id", alert.id.encode("ascii"))])


def incident_message(incident: Incident) -> KafkaSinkMessage:
    """Keyed by entity, so one entity's incident records stay in order on one partition."""
    return KafkaSinkMessage(incident.key.encode("utf-8"), _encoder.encode(incident),
                            timestamp=parse_ts_ms(incident.last_alert),
                            headers=[("vigil-incident-id", incident.id.encode("ascii"))])


def dead_letter_message(letter: DeadLetter) -> KafkaSinkMessage:
    source = letter.source
    origin = [(f"vigil-source-{name}", str(value).encode("utf-8"))
              for name, value in msgspec.structs.asdict(source).items() if value is not None]
    headers = [("vigil-reason", letter.reason.encode("utf-8")), ("vigil-detail", letter.detail.encode("utf-8")),
               ("vigil-source", str(source).encode("utf-8")), *origin]
    key = f"{source.topic}/{source.partition}" if source.file is None else source.file
    return KafkaSinkMessage(key.encode("utf-8"), letter.original_bytes(), headers=headers)


def keyed_message(item: Any) -> KafkaSinkMessage:
    """A record about one event (a scored event), keyed by entity and stamped with event time."""
    return KafkaSinkMessage(item.key.encode("utf-8"), _encoder.encode(item), timestamp=parse_ts_ms(item.ts))


SINK_PARTITION = "0"  # the one partition of a Kafka sink


class _ProducerPartition(StatefulSinkPartition[Any, None]):
    """Produces records asynchronously; ``snapshot`` waits until the broker acknowledged every one of them."""

    def __init__(self, topic: str, config: dict[str, Any], encode: Callable[[Any], KafkaSinkMessage]) -> None:
        self.producer = Producer({**config, "on_delivery": self._raise_on_failed_delivery})
        self.topic = topic
        self.encode = encode

    @staticmethod
    def _raise_on_failed_delivery(error: Any, message: Any) -> None:
        if error is not None and not FAILED.is_set():  # the first failure stops the run; the rest are the same stop
            FAILED.set()
            raise DeliveryError(
                f"could not deliver a record to topic {message.topic()} ({error.str()}); the run stops rather than drop "
                "it. Start it again once the broker takes writes: with a recovery directory it resumes from the last "
                "snapshot and writes the undelivered records again")

    def write_batch(self, items: list[Any]) -> None:
        produce = self.producer.produce
        for item in items:
            message = self.encode(item)
            while True:
                try:
                    produce(self.topic, message.value, message.key, headers=message.headers,
                            timestamp=message.timestamp or 0)
                    break
                except BufferError:  # librdkafka's queue is full: let deliveries drain
                    self.producer.poll(0.05)
        self.producer.poll(0)  # serves delivery reports: a failed one raises DeliveryError here

    def snapshot(self) -> None:
        self.producer.flush()  # nothing written before this epoch's snapshot may still be in flight

    def close(self) -> None:
        if FAILED.is_set():  # the run is stopping on an error: waiting out the records' timeouts would only delay it
            self.producer.purge()
        else:
            self.producer.flush()


class KafkaTopicSink(FixedPartitionedSink[Any, None]):
    """Encodes items as Kafka records for one topic. One sink partition (``"0"``) holds the producer, so the
    flow keys the items it writes with :data:`SINK_PARTITION`."""

    def __init__(self, topic: str, producer_config: dict[str, Any], encode: Callable[[Any], KafkaSinkMessage]) -> None:
        self.topic = topic
        self.config = producer_config
        self.encode = encode

    def list_parts(self) -> list[str]:
        return [SINK_PARTITION]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ProducerPartition:
        return _ProducerPartition(self.topic, self.config, self.encode)


def build_sink(sink_type: str, *, path: Path | None = None, topic: str = "",
               producer_config: dict[str, Any] | None = None,
               encode: Callable[[Any], KafkaSinkMessage] = keyed_message) -> DynamicSink[Any] | KafkaTopicSink | None:
    """The sink a ``[sinks.*]`` table describes; None for ``type = "none"``."""
    if sink_type == "none":
        return None
    if sink_type == "stdout":
        return JsonLinesStdoutSink()
    if sink_type == "kafka":
        return KafkaTopicSink(topic, producer_config or {}, encode)
    return JsonLinesFileSink(path)


class _Positioned(msgspec.Struct):
    source: SourcePosition
    operator: str = ""


def sort_by_source(path: str | Path) -> int:
    """Rewrite a JSON-lines output in source order (then item within a record, then operator), dropping
    repeated lines; returns the line count.

    A bounded run calls this when it ends, so that its output file does not depend on how the
    engine interleaved shards and timers: the same input gives byte-identical files.
    """
    decoder = msgspec.json.Decoder(_Positioned)

    def order(line: bytes) -> tuple:
        item = decoder.decode(line)
        return (*item.source.sort_key(), item.operator, line)

    return _sort_lines(Path(path), order)


_INCIDENT_CHANGES = {"opened": 0, "updated": 1, "resolved": 2}


def sort_incidents(path: str | Path) -> int:
    """Rewrite an incidents output by incident (in the order they opened) and each incident's records in order,
    dropping repeated lines (as :func:`sort_by_source` does for per-event outputs); returns the line count."""
    decoder = msgspec.json.Decoder(Incident)

    def order(line: bytes) -> tuple:
        incident = decoder.decode(line)
        return (incident.opened, incident.key, incident.operator, incident.id, _INCIDENT_CHANGES[incident.state],
                incident.alerts, line)

    return _sort_lines(Path(path), order)


def _sort_lines(path: Path, order) -> int:
    if not path.exists():
        return 0
    lines = path.read_bytes().splitlines()
    # Sorted, then without repeats: records re-delivered after a resume are identical to the first copy.
    lines = [line for line, _ in itertools.groupby(sorted(lines, key=order))]
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_bytes(b"".join(line + b"\n" for line in lines))
    os.replace(temporary, path)
    return len(lines)
