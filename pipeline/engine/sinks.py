"""Sinks for alerts, dead letters and scored events: JSON-lines files, stdout, or Kafka topics.

Items are msgspec structs (:class:`~operators.event.Alert`, :class:`~pipeline.engine.decode.DeadLetter`,
:class:`~pipeline.engine.dataflow.ScoredEvent`). File and stdout sinks write one JSON object per line.
Kafka sinks go through bytewax's ``KafkaSink`` (librdkafka), which flushes after every batch;
a record the broker did not acknowledge fails the run (see :class:`DeliveryError`), so with
recovery the output is at-least-once:

* alerts: key = entity key, value = the alert as JSON, timestamp = event time, header
  ``vigil-alert-id``. Ids depend only on source position and operator, so consumers deduplicate.
* dead letters: value = the original bytes, unchanged; key = ``topic/partition`` of the source;
  headers ``vigil-reason``, ``vigil-detail``, ``vigil-source`` (``topic/partition@offset``) and
  ``vigil-source-topic`` / ``-partition`` / ``-offset`` (or ``vigil-source-file`` / ``-line``).
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
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from operators.event import Alert, SourcePosition, parse_ts_ms
from pipeline.engine.decode import DeadLetter

_encoder = msgspec.json.Encoder()


class _LinesPartition(StatelessSinkPartition[Any]):
    def __init__(self, handle: BinaryIO, owns_handle: bool) -> None:
        self.handle = handle
        self.owns_handle = owns_handle

    def write_batch(self, items: list[Any]) -> None:
        if items:
            # One write per batch: appends of whole lines stay intact with several workers.
            self.handle.write(b"".join(_encoder.encode(item) + b"\n" for item in items))
            self.handle.flush()

    def close(self) -> None:
        if self.owns_handle:
            self.handle.close()


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


class DeliveryError(RuntimeError):
    """The broker did not take a record after librdkafka's retries; the run stops rather than lose it."""


def _raise_on_failed_delivery(error: Any, message: Any) -> None:
    if error is not None:
        raise DeliveryError(f"could not deliver a record to {message.topic()}: {error}")


def alert_message(alert: Alert) -> KafkaSinkMessage:
    return KafkaSinkMessage(alert.key.encode("utf-8"), _encoder.encode(alert), timestamp=parse_ts_ms(alert.ts),
                            headers=[("vigil-alert-id", alert.id.encode("ascii"))])


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


class _EncodingPartition(StatelessSinkPartition[Any]):
    def __init__(self, inner: StatelessSinkPartition[KafkaSinkMessage], encode: Callable[[Any], KafkaSinkMessage]) -> None:
        self.inner = inner
        self.encode = encode

    def write_batch(self, items: list[Any]) -> None:
        self.inner.write_batch([self.encode(item) for item in items])

    def close(self) -> None:
        self.inner.close()


class KafkaTopicSink(DynamicSink[Any]):
    """Encodes items as Kafka records and writes them with bytewax's ``KafkaSink``."""

    def __init__(self, topic: str, producer_config: dict[str, Any], encode: Callable[[Any], KafkaSinkMessage]) -> None:
        config = {**producer_config, "on_delivery": _raise_on_failed_delivery}
        servers = config.pop("bootstrap.servers")
        self.inner = KafkaSink(servers.split(","), topic, add_config=config)
        self.encode = encode

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _EncodingPartition:
        return _EncodingPartition(self.inner.build(step_id, worker_index, worker_count), self.encode)


def build_sink(sink_type: str, *, path: Path | None = None, topic: str = "",
               producer_config: dict[str, Any] | None = None,
               encode: Callable[[Any], KafkaSinkMessage] = keyed_message) -> DynamicSink[Any] | None:
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
    """Rewrite a JSON-lines output in source order (then operator), dropping repeated lines;
    returns the line count.

    A bounded run calls this when it ends, so that its output file does not depend on how the
    engine interleaved shards and timers: the same input gives byte-identical files.
    """
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_bytes().splitlines()
    decoder = msgspec.json.Decoder(_Positioned)

    def order(line: bytes) -> tuple:
        item = decoder.decode(line)
        return (*item.source.sort_key(), item.operator, line)

    # Sorted, then without repeats: records re-delivered after a resume are identical to the first copy.
    lines = [line for line, _ in itertools.groupby(sorted(lines, key=order))]
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_bytes(b"".join(line + b"\n" for line in lines))
    os.replace(temporary, path)
    return len(lines)
