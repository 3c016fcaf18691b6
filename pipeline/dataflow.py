"""The Bytewax dataflow: source -> decode -> route to shards -> micro-batch -> operators -> sinks.

::

    raw records ──decode──┬── events ──shard──> stateful_batch("operators") ──alerts──> alert sink
                          └── dead letters ─────────────────────────────────────────> dead-letter sink

``shard_of`` routes each entity to ``crc32(key) % shards``; Bytewax spreads shards over workers. The
``operators`` step buffers a shard's events into micro-batches (``batch_max_size`` events or
``batch_max_wait_ms`` after the first buffered event) and hands each batch to the shard's
:class:`~operators.registry.OperatorChain`. Its recovery snapshot is plain data: the operators'
snapshots and the buffered events as dicts.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Sequence

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from operators.event import Alert, Event
from operators.registry import OperatorChain, OperatorSpec
from pipeline.decode import DeadLetter, decode_event
from pipeline.metrics import Metrics
from pipeline.sources import RawRecord


def shard_of(key: str, shards: int) -> int:
    """Stable across processes and versions (unlike ``hash``).

    >>> shard_of("node-001", 16)
    7
    """
    return zlib.crc32(key.encode("utf-8")) % shards


@dataclass(frozen=True)
class Batching:
    max_size: int
    max_wait: timedelta


class ShardLogic(StatefulBatchLogic[Event, Alert, dict]):
    """One shard: a buffer of pending events and the operator chain that owns the shard's entities."""

    def __init__(self, chain: OperatorChain, batching: Batching, metrics: Metrics, resume: dict | None) -> None:
        self.chain = chain
        self.batching = batching
        self.metrics = metrics
        self.pending: list[Event] = []
        self.deadline: datetime | None = None
        if resume is not None:
            chain.restore(resume["operators"])
            self.pending = [msgspec.convert(item, Event) for item in resume["pending"]]

    def _process(self, events: list[Event]) -> list[Alert]:
        self.metrics.batch_size.observe(len(events))
        now_ms = time.time() * 1000
        for event in events:
            self.metrics.lag.observe(max(0.0, (now_ms - event.ts_ms) / 1000))
        alerts = self.chain.process(events)
        for alert in alerts:
            self.metrics.alerts.labels(alert.operator, alert.severity).inc()
            if alert.kind == "drift":
                for field in alert.fields:
                    self.metrics.drift.labels(alert.operator, field).inc()
        return alerts

    def _drain(self, everything: bool) -> list[Alert]:
        alerts: list[Alert] = []
        size = self.batching.max_size
        while len(self.pending) >= size or (everything and self.pending):
            chunk, self.pending = self.pending[:size], self.pending[size:]
            alerts.extend(self._process(chunk))
        if not self.pending:
            self.deadline = None
        elif self.deadline is None:
            self.deadline = datetime.now(timezone.utc) + self.batching.max_wait
        return alerts

    def on_batch(self, values: list[Event]) -> tuple[Iterable[Alert], bool]:
        self.pending.extend(values)
        return self._drain(everything=not self.batching.max_wait), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Alert], bool]:
        return self._drain(everything=True), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Alert], bool]:
        return self._drain(everything=True), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.deadline

    def snapshot(self) -> dict[str, Any]:
        return {"operators": self.chain.snapshot(), "pending": msgspec.to_builtins(self.pending)}


def build_flow(
    *,
    source: Source[RawRecord],
    operator_specs: Sequence[OperatorSpec],
    alert_sink: Sink[Alert],
    dead_letter_sink: Sink[DeadLetter],
    metrics: Metrics,
    shards: int,
    batching: Batching,
    max_event_bytes: int,
    name: str = "vigil",
) -> Dataflow:
    valid = metrics.events.labels("valid")
    invalid = metrics.events.labels("invalid")

    def decode(record: RawRecord) -> Event | DeadLetter:
        result = decode_event(record.payload, record.source, max_event_bytes)
        if isinstance(result, DeadLetter):
            invalid.inc()
            metrics.invalid.labels(result.reason).inc()
        else:
            valid.inc()
        return result

    def build_shard(resume: dict | None) -> ShardLogic:
        return ShardLogic(OperatorChain.build(operator_specs), batching, metrics, resume)

    flow = Dataflow(name)
    raw = op.input("source", flow, source)
    decoded = op.map("decode", raw, decode)
    split = op.branch("split_valid", decoded, lambda item: isinstance(item, Event))
    keyed = op.key_on("route_to_shard", split.trues, lambda event: str(shard_of(event.key, shards)))
    alerts = op.key_rm("drop_shard_key", op.stateful_batch("operators", keyed, build_shard))
    op.output("alerts_out", alerts, alert_sink)
    op.output("dead_letters_out", split.falses, dead_letter_sink)
    return flow
