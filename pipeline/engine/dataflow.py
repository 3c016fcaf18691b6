"""The Bytewax dataflow: source -> decode -> route to shards -> micro-batch -> operators -> sinks.

::

    raw records ──decode──┬── events ──shard──> stateful_batch("operators") ──┬── alerts ──> alert sink
                          │                                                   └── scored events ──> scores sink
                          └── dead letters ─────────────────────────────────────────────────> dead-letter sink

``shard_of`` routes each entity to ``crc32(key) % shards``; Bytewax spreads shards over workers. The
``operators`` step buffers a shard's events into micro-batches (``batch_max_size`` events or
``batch_max_wait_ms`` after the first buffered event) and hands each batch to the shard's
:class:`~operators.registry.OperatorChain`, which gives the rows their entity slots (evicting idle and
excess entities, see :mod:`operators.entities`) and runs the operators on the columnar batch. Its recovery
snapshot is plain data: the chain's snapshot (entity index and operators) and the buffered events as dicts.
"""
from __future__ import annotations

import math
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from operators.batch import Batch
from operators.event import Alert, Event, SourcePosition, format_ts
from operators.registry import OperatorChain, OperatorSpec
from pipeline.engine.decode import DeadLetter, decode_event
from pipeline.engine.metrics import Metrics
from pipeline.engine.sources import RawRecord

STATE_REPORT_SECONDS = 1.0  # how often a shard refreshes vigil_operator_state_bytes


def shard_of(key: str, shards: int) -> int:
    """Stable across processes and versions (unlike ``hash``).

    >>> shard_of("node-001", 16)
    7
    """
    return zlib.crc32(key.encode("utf-8")) % shards


class ScoredEvent(msgspec.Struct):
    """One valid event with the score each scoring operator gave it (null where it was not scored)."""

    key: str
    ts: str
    source: SourcePosition
    scores: dict[str, float | None]


def scored_events(batch: Batch) -> list[ScoredEvent]:
    columns = {name: [None if math.isnan(v) else v for v in values.tolist()] for name, values in batch.scores.items()}
    return [
        ScoredEvent(key, format_ts(ts), batch.source(row), {name: column[row] for name, column in columns.items()})
        for row, (key, ts) in enumerate(zip(batch.keys.tolist(), batch.ts_ms.tolist()))
    ]


@dataclass(frozen=True)
class Batching:
    max_size: int
    max_wait: timedelta


@dataclass(frozen=True)
class EntityLimits:
    """Per shard: at most ``max_entities`` entities with state, each forgotten after ``ttl_ms`` of event time
    without an event (0: never)."""

    max_entities: int
    ttl_ms: int = 0


class ShardLogic(StatefulBatchLogic[Event, "Alert | ScoredEvent", dict]):
    """One shard: a buffer of pending events and the operator chain that owns the shard's entities.

    Emits alerts, and also every event's scores when ``emit_scores`` is set.
    """

    def __init__(self, chain: OperatorChain, batching: Batching, metrics: Metrics, resume: dict | None,
                 emit_scores: bool = False) -> None:
        self.chain = chain
        self.batching = batching
        self.metrics = metrics
        self.emit_scores = emit_scores
        self.pending: list[Event] = []
        self.deadline: datetime | None = None
        self.state_reported_at = -math.inf
        if resume is not None:
            chain.restore(resume["chain"])
            self.pending = [msgspec.convert(item, Event) for item in resume["pending"]]
        self.evictions_reported = dict(chain.entities.evicted)  # this process counts its own evictions only

    def _process(self, events: list[Event]) -> list[Alert | ScoredEvent]:
        self.metrics.batch_size.observe(len(events))
        now_ms = time.time() * 1000
        for event in events:
            self.metrics.lag.observe(max(0.0, (now_ms - event.ts_ms) / 1000))
        alerts, batch = self.chain.process_batch(events)
        for reason, total in self.chain.entities.evicted.items():
            if total != self.evictions_reported[reason]:
                self.metrics.entities_evicted.labels(reason).inc(total - self.evictions_reported[reason])
                self.evictions_reported[reason] = total
        for alert in alerts:
            self.metrics.alerts.labels(alert.operator, alert.severity).inc()
            if alert.kind == "drift":
                for field in alert.fields:
                    self.metrics.drift.labels(alert.operator, field).inc()
        return [*alerts, *scored_events(batch)] if self.emit_scores else alerts

    def _report_state_bytes(self, now: float) -> None:
        # Walking an operator's state is not free (HST counts Python objects): at most once a second.
        self.state_reported_at = now
        for operator in self.chain.operators:
            self.metrics.report_state_bytes(operator.name, id(self), operator.state_bytes())
        self.metrics.report_entities(id(self), len(self.chain.entities))

    def _drain(self, everything: bool) -> list[Alert | ScoredEvent]:
        alerts: list[Alert | ScoredEvent] = []
        size = self.batching.max_size
        while len(self.pending) >= size or (everything and self.pending):
            chunk, self.pending = self.pending[:size], self.pending[size:]
            alerts.extend(self._process(chunk))
        now = time.monotonic()
        if now - self.state_reported_at >= STATE_REPORT_SECONDS:
            self._report_state_bytes(now)
        if not self.pending:
            self.deadline = None
        elif self.deadline is None:
            self.deadline = datetime.now(timezone.utc) + self.batching.max_wait
        return alerts

    def on_batch(self, values: list[Event]) -> tuple[Iterable[Alert | ScoredEvent], bool]:
        self.pending.extend(values)
        return self._drain(everything=not self.batching.max_wait), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Alert | ScoredEvent], bool]:
        return self._drain(everything=True), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Alert | ScoredEvent], bool]:
        outputs = self._drain(everything=True)
        self._report_state_bytes(time.monotonic())  # the final metrics show the final state
        return outputs, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.deadline

    def snapshot(self) -> dict[str, Any]:
        return {"chain": self.chain.snapshot(), "pending": msgspec.to_builtins(self.pending)}


def build_flow(
    *,
    source: Source[RawRecord],
    operator_specs: Sequence[OperatorSpec],
    alert_sink: Sink[Alert] | None,
    dead_letter_sink: Sink[DeadLetter] | None,
    metrics: Metrics,
    scores_sink: Sink[ScoredEvent] | None = None,
    shards: int,
    batching: Batching,
    entities: EntityLimits,
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
        chain = OperatorChain.build(operator_specs, max_entities=entities.max_entities, ttl_ms=entities.ttl_ms)
        return ShardLogic(chain, batching, metrics, resume, emit_scores=scores_sink is not None)

    flow = Dataflow(name)
    raw = op.input("source", flow, source)
    decoded = op.map("decode", raw, decode)
    split = op.branch("split_valid", decoded, lambda item: isinstance(item, Event))
    keyed = op.key_on("route_to_shard", split.trues, lambda event: str(shard_of(event.key, shards)))
    results = op.key_rm("drop_shard_key", op.stateful_batch("operators", keyed, build_shard))
    if scores_sink is not None:
        outputs = op.branch("split_scores", results, lambda item: isinstance(item, Alert))
        op.output("scores_out", outputs.falses, scores_sink)
        results = outputs.trues
    if alert_sink is not None:
        op.output("alerts_out", results, alert_sink)
    if dead_letter_sink is not None:
        op.output("dead_letters_out", split.falses, dead_letter_sink)
    return flow
