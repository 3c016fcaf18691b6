"""The Bytewax dataflow: source -> decode and route -> micro-batch -> operators -> sinks.

::

    record batches ──decode──┬── (shard, columnar batch) ──> stateful_batch("operators") ──┬── alerts ──> alert sink
                             │                                                             ├── incidents ──> incident sink
                             │                                                             └── scored events ──> scores sink
                             └── dead letters ────────────────────────────────────────────────────────> dead-letter sink

Items are whole batches: a source yields one :class:`~pipeline.engine.decode.RecordBatch` per read, the
``decode`` step turns it into one columnar :class:`~operators.batch.Batch` of valid events per shard it
touches (plus the dead letters), so Bytewax moves a handful of items per read instead of one per event.
``shard_of`` routes each entity to ``crc32(key) % shards``; Bytewax spreads shards over workers. The
``operators`` step buffers a shard's rows into adaptive micro-batches (:class:`Batching`: larger under load, up
to ``batch_max_size``; at the latest ``batch_max_wait_ms`` after the oldest buffered row) and hands each to the shard's
:class:`~operators.registry.OperatorChain`, which gives the rows their entity slots (evicting idle and
excess entities, see :mod:`operators.entities`) and runs the operators on the columnar batch; the shard's
:class:`~operators.incidents.IncidentTracker` groups the alerts into incidents. Its recovery snapshot is plain data:
the chain's snapshot (entity index and operators), the open incidents and the buffered rows as columns. Besides the
dataflow's sinks, a shard hands its results to :class:`SideOutputs` (remote-write, Alertmanager), which send them from
threads of their own, off the dataflow.
"""
from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import bytewax.operators as op
import msgspec
import numpy as np
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from operators.batch import Batch
from operators.event import Alert, SourcePosition, format_ts
from operators.incidents import Incident, IncidentTracker
from operators.registry import OperatorChain, OperatorFailure, OperatorFailuresExceeded, OperatorSpec
from pipeline.config import SchemaConfig
from pipeline.engine.decode import DeadLetter, RecordBatch
from pipeline.engine.metrics import Metrics, observe_many
from pipeline.engine.placement import PartitionShards
from pipeline.engine.schema import compile_schema
from pipeline.engine.shutdown import FAILED
from pipeline.engine.sinks import SINK_PARTITION, KafkaTopicSink
from pipeline.engine.watch import DecodeWatch

if TYPE_CHECKING:
    from pipeline.engine.alertmanager import AlertmanagerPublisher
    from pipeline.engine.series_export import SeriesExporter

log = logging.getLogger("vigil")

STATE_REPORT_SECONDS = 1.0  # how often a shard refreshes vigil_operator_state_bytes


def shard_of(key: str, shards: int) -> int:
    """Stable across processes and versions (unlike ``hash``).

    >>> shard_of("node-001", 16)
    7
    """
    return zlib.crc32(key.encode("utf-8")) % shards


class Router:
    """Splits a columnar batch into one sub-batch per shard, rows in order; the shard of a key is computed once
    and remembered (the cache is bounded: it is cleared when it reaches ``max_keys``)."""

    def __init__(self, shards: int, max_keys: int = 1_000_000) -> None:
        self.shards = shards
        self.max_keys = max_keys
        self.cache: dict[str, int] = {}

    def split(self, batch: Batch) -> list[tuple[str, Batch]]:
        cache = self.cache
        if len(cache) >= self.max_keys:
            cache.clear()
        keys = batch.keys.tolist()
        for key in set(keys).difference(cache):
            cache[key] = shard_of(key, self.shards)
        shard = np.fromiter((cache[key] for key in keys), dtype=np.int64, count=len(keys))
        order = np.argsort(shard, kind="stable")
        bounds = np.flatnonzero(np.diff(shard[order])) + 1
        return [(str(int(shard[rows[0]])), batch.take(rows)) for rows in np.split(order, bounds) if len(rows)]


class ScoredEvent(msgspec.Struct, omit_defaults=True):
    """One valid event with the value each operator published for it (null where none: a score, a p-value, a decision),
    the numeric fields the operators read (null where missing or not a number; ``vigil report`` plots them), the
    event's id when it has one (a decision's consumer finds its application by it), and per operator with a level model
    and field its expected value and band, ``[expected, lower, upper]`` (null where it did not know yet)."""

    key: str
    ts: str
    source: SourcePosition
    scores: dict[str, float | None]
    id: str | None = None
    values: dict[str, float | None] = {}
    bands: dict[str, dict[str, list[float | None]]] = {}


def scored_events(batch: Batch) -> list[ScoredEvent]:
    def nullable(arrays: dict[str, np.ndarray]) -> dict[str, list]:
        return {name: [None if math.isnan(v) else v for v in values.tolist()] for name, values in arrays.items()}

    scores, values = nullable(batch.scores), nullable(batch.numeric)
    bands = {(operator, name): list(zip(*nullable({part: getattr(band, part)[:, j] for part in ("expected", "lower",
                                                                                                  "upper")}).values()))
             for operator, band in batch.bands.items() for j, name in enumerate(band.fields)}

    def bands_of(row: int) -> dict[str, dict[str, list[float | None]]]:
        found: dict[str, dict[str, list[float | None]]] = {}
        for (operator, name), rows in bands.items():
            found.setdefault(operator, {})[name] = list(rows[row])
        return found

    return [
        ScoredEvent(key, format_ts(ts), batch.source(row), {name: column[row] for name, column in scores.items()}, event_id,
                    {name: column[row] for name, column in values.items()}, bands_of(row))
        for row, (key, ts, event_id) in enumerate(zip(batch.keys.tolist(), batch.ts_ms.tolist(), batch.ids.tolist()))
    ]


@dataclass(frozen=True)
class Batching:
    """Adaptive micro-batching of a shard. A batch is handed to the operators when ``target`` rows are pending, or
    when its oldest row has waited ``max_wait`` (the latency bound), or at the end of input. The target starts at
    ``min(START_TARGET, max_size)``, doubles (up to ``max_size``) each time it fills before the wait is over (load:
    larger batches amortise the per-batch cost) and halves (down to ``MIN_TARGET``) each time the wait ends with less
    than half of it (idle: small batches leave at once)."""

    max_size: int
    max_wait: timedelta


START_TARGET, MIN_TARGET = 512, 16


@dataclass(frozen=True)
class SideOutputs:
    """What a shard hands its results to besides the dataflow's sinks, each running its own thread: the per-series
    remote-write export (scores, bands, alerts and incidents of every batch) and the Alertmanager sink (incidents)."""

    exporter: SeriesExporter | None = None
    alertmanager: AlertmanagerPublisher | None = None

    @property
    def wants_incidents(self) -> bool:
        return self.exporter is not None or self.alertmanager is not None


@dataclass(frozen=True)
class EntityLimits:
    """Per shard: at most ``max_entities`` entities with state, each forgotten after ``ttl_ms`` of event time
    without an event (0: never)."""

    max_entities: int
    ttl_ms: int = 0


def failed_rows(batch: Batch, failure: OperatorFailure) -> list[DeadLetter]:
    """The rows no operator finished, as dead letters (reason ``operator_error``). The payload is the event as the
    operators saw it (key, event time, the fields they read); the original bytes stay at the source position."""
    columns = {**batch.numeric, **batch.text_columns}
    detail = f"{failure.operator}: {type(failure.error).__name__}: {failure.error}"[:1000]
    letters = []
    for row in range(failure.first_row, len(batch)):
        fields = {name: _plain(values[row]) for name, values in columns.items()}
        event = {"key": batch.keys[row], "ts": format_ts(int(batch.ts_ms[row])), "fields": fields}
        letters.append(DeadLetter.of(_JSON.encode(event), "operator_error", detail, batch.source(row)))
    return letters


def _plain(value: Any) -> Any:
    """A column value as JSON: None for a missing number (NaN) or string."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


_JSON = msgspec.json.Encoder()


class ShardLogic(StatefulBatchLogic[Batch, "Alert | Incident | ScoredEvent | DeadLetter", dict]):
    """One shard: a buffer of pending rows (columnar batches) and the operator chain that owns the shard's entities.

    Emits alerts, and also every event's scores when ``emit_scores`` is set. When an operator raises on a batch
    (:class:`~operators.registry.OperatorFailure`), the rows it did not finish become dead letters and the shard goes
    on; ``max_operator_failures`` consecutive failed batches stop the run (:class:`OperatorFailuresExceeded`).
    """

    def __init__(self, chain: OperatorChain, batching: Batching, metrics: Metrics, resume: dict | None,
                 emit_scores: bool = False, max_operator_failures: int = 10, incident_quiet_ms: int | None = None,
                 emit_incidents: bool = True, side_outputs: SideOutputs = SideOutputs()) -> None:
        self.chain = chain
        # Alerts grouped into incidents per entity and operator, when something reads them (``incident_quiet_ms`` set):
        # the incident sink (``emit_incidents``), or a side output.
        self.incidents = None if incident_quiet_ms is None else IncidentTracker(
            incident_quiet_ms, {op.name: op.severity_ranks() for op in chain.operators if op.findings})
        self.emit_incidents = emit_incidents
        self.side = side_outputs
        self.batching = batching
        self.metrics = metrics
        self.emit_scores = emit_scores
        self.max_operator_failures = max_operator_failures
        self.consecutive_failures = 0
        self.pending: list[Batch] = []
        self.arrived: list[float] = []  # when each pending part reached the shard (monotonic seconds)
        self.pending_rows = 0
        self.target = min(START_TARGET, batching.max_size)
        self.deadline: datetime | None = None
        self.state_reported_at = -math.inf
        if resume is not None:
            chain.restore(resume["chain"])
            if self.incidents is not None and "incidents" in resume:  # a store from before incidents has none open
                self.incidents.restore(resume["incidents"])
            self._add([Batch.from_plain(part) for part in resume["pending"]])
            if self.incidents is not None and self.side.alertmanager is not None:  # they stay firing after a restart
                self.side.alertmanager.publish(self.incidents.open_records())
        self.evictions_reported = dict(chain.entities.evicted)  # this process counts its own evictions only
        for operator in chain.operators:  # and its own operator counts
            metrics.report_readings(operator, id(self), baseline=True)

    def _add(self, parts: list[Batch]) -> None:
        now = time.monotonic()
        self.pending.extend(parts)
        self.arrived.extend(now for _ in parts)
        self.pending_rows += sum(len(part) for part in parts)

    def _take(self, rows: int) -> Batch:
        """The first ``rows`` pending rows (or all of them) as one batch; how long its oldest row waited goes to
        ``vigil_batch_wait_seconds``."""
        self.metrics.batch_wait.observe(time.monotonic() - self.arrived[0])
        taken, count = [], 0
        while self.pending and count + len(self.pending[0]) <= rows:
            taken.append(self.pending.pop(0))
            self.arrived.pop(0)
            count += len(taken[-1])
        if count < rows and self.pending:  # the batch ends inside the next part, whose rest stays pending
            part, cut = self.pending[0], rows - count
            taken.append(part.rows(0, cut))
            self.pending[0] = part.rows(cut, len(part))
            count = rows
        self.pending_rows -= count
        return Batch.concat(taken)

    def _process(self, batch: Batch) -> list[Alert | Incident | ScoredEvent | DeadLetter]:
        self.metrics.batch_size.observe(len(batch))
        observe_many(self.metrics.lag, np.maximum(0.0, (time.time() * 1000 - batch.ts_ms) / 1000))
        try:
            alerts = self.chain.run(batch)
        except OperatorFailure as failure:
            return self._failed(batch, failure)
        self.consecutive_failures = 0
        self._count(alerts)
        self.metrics.report_scores(batch.scores)
        incidents = self._incidents(batch, alerts)
        if self.side.exporter is not None:
            self.side.exporter.observe(batch, alerts, incidents)
        outputs = [*alerts, *incidents] if self.emit_incidents else alerts
        return [*outputs, *scored_events(batch)] if self.emit_scores else outputs

    def _incidents(self, batch: Batch, alerts: list[Alert]) -> list[Incident]:
        if self.incidents is None:
            return []
        records = self.incidents.observe(batch.ts_ms, alerts, batch.row_of)
        for record in records:
            self.metrics.incidents.labels(record.operator, record.state).inc()
        if records and self.side.alertmanager is not None:
            self.side.alertmanager.publish(records)
        return records

    def _failed(self, batch: Batch, failure: OperatorFailure) -> list[Alert | Incident | DeadLetter]:
        self.consecutive_failures += 1
        letters = failed_rows(batch, failure)
        self.metrics.operator_failures.labels(failure.operator).inc()
        self.metrics.invalid.labels("operator_error").inc(len(letters))
        log.error("operator %r failed on a batch of %d events (%s: %s); %d events went to the dead-letter sink "
                  "(%d consecutive failed batches in this shard, the run stops at %d)", failure.operator, len(batch),
                  type(failure.error).__name__, failure.error, len(letters), self.consecutive_failures,
                  self.max_operator_failures)
        if self.consecutive_failures >= self.max_operator_failures:
            FAILED.set()
            raise OperatorFailuresExceeded(
                f"operator {failure.operator!r} failed on {self.consecutive_failures} consecutive batches "
                f"(pipeline.max_operator_failures); last error: {type(failure.error).__name__}: {failure.error}"
            ) from failure.error
        self._count(failure.alerts)
        incidents = self._incidents(batch, failure.alerts)
        return [*failure.alerts, *(incidents if self.emit_incidents else []), *letters]

    def _count(self, alerts: list[Alert]) -> None:
        for reason, total in self.chain.entities.evicted.items():
            if total != self.evictions_reported[reason]:
                self.metrics.entities_evicted.labels(reason).inc(total - self.evictions_reported[reason])
                self.evictions_reported[reason] = total
        for alert in alerts:
            self.metrics.alerts.labels(alert.operator, alert.severity).inc()
            if alert.kind == "drift":
                for field in alert.fields:
                    self.metrics.drift.labels(alert.operator, field).inc()

    def _report_state(self, now: float) -> None:
        # Walking an operator's state is not free (HST counts Python objects): at most once a second.
        self.state_reported_at = now
        for operator in self.chain.operators:
            self.metrics.report_state_bytes(operator.name, id(self), operator.state_bytes())
            self.metrics.report_readings(operator, id(self))
        self.metrics.report_entities(id(self), len(self.chain.entities))

    def _drain(self, everything: bool) -> list[Alert | Incident | ScoredEvent]:
        alerts: list[Alert | Incident | ScoredEvent] = []
        while self.pending_rows >= self.target or (everything and self.pending_rows):
            filled = self.pending_rows >= self.target
            batch = self._take(self.target)
            if filled:
                self.target = min(2 * self.target, self.batching.max_size)
            elif len(batch) < self.target // 2:
                self.target = max(self.target // 2, min(MIN_TARGET, self.batching.max_size))
            alerts.extend(self._process(batch))
        now = time.monotonic()
        if now - self.state_reported_at >= STATE_REPORT_SECONDS:
            self._report_state(now)
        if not self.pending_rows:
            self.deadline = None
        elif self.deadline is None:
            self.deadline = datetime.now(timezone.utc) + self.batching.max_wait
        return alerts

    def on_batch(self, values: list[Batch]) -> tuple[Iterable[Alert | Incident | ScoredEvent], bool]:
        self._add(values)
        return self._drain(everything=not self.batching.max_wait), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[Iterable[Alert | Incident | ScoredEvent], bool]:
        return self._drain(everything=True), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[Alert | Incident | ScoredEvent], bool]:
        outputs = self._drain(everything=True)
        self._report_state(time.monotonic())  # the final metrics show the final state
        return outputs, StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.deadline

    def snapshot(self) -> dict[str, Any]:
        started = time.monotonic()
        state = {"chain": self.chain.snapshot(), "pending": [part.to_plain() for part in self.pending]}
        if self.incidents is not None:
            state["incidents"] = self.incidents.snapshot()
        self.metrics.snapshot_seconds.observe(time.monotonic() - started)
        self.metrics.last_snapshot.set(time.time())
        return state


def build_flow(
    *,
    source: Source[RecordBatch],
    operator_specs: Sequence[OperatorSpec],
    alert_sink: Sink[Alert] | None,
    dead_letter_sink: Sink[DeadLetter] | None,
    metrics: Metrics,
    scores_sink: Sink[ScoredEvent] | None = None,
    incident_sink: Sink[Incident] | None = None,
    incident_quiet_ms: int = 900_000,
    side_outputs: SideOutputs = SideOutputs(),
    shards: int,
    shard_by: str = "key",
    batching: Batching,
    entities: EntityLimits,
    max_event_bytes: int,
    name: str = "vigil",
    max_operator_failures: int = 10,
    schema: SchemaConfig | None = None,
    watch: DecodeWatch | None = None,
) -> Dataflow:
    """The dataflow; ``schema`` is the declared event schema (default: Vigil's own format), ``watch`` checks what it
    decodes (the caller that keeps it can have it check a short input at the end, :meth:`DecodeWatch.finish`);
    ``side_outputs`` are started and closed by the caller."""
    valid = metrics.events.labels("valid")
    invalid = metrics.events.labels("invalid")
    ignored = metrics.events.labels("ignored")
    inputs = OperatorChain.build(operator_specs, max_entities=1)  # the columns the operators read
    decoder = compile_schema(schema or SchemaConfig(), inputs.numeric_inputs, inputs.text_inputs)
    watch = watch or DecodeWatch()
    if shard_by == "partition":
        partition_shard = PartitionShards(source.list_parts())

        def route(records: RecordBatch, batch: Batch) -> list[tuple[str, Batch]]:
            return [(partition_shard(records.part), batch)] if len(batch) else []
    else:
        router = Router(shards)

        def route(records: RecordBatch, batch: Batch) -> list[tuple[str, Batch]]:
            return router.split(batch)

    def decode(records: RecordBatch) -> list[tuple[str, Batch] | DeadLetter]:
        batch, dead, unread = decoder.decode_batch(records, max_event_bytes)
        watch.observe(records, batch, dead)
        valid.inc(len(batch))
        if unread:
            ignored.inc(unread)
        if dead:
            invalid.inc(len(dead))
            for letter in dead:
                metrics.invalid.labels(letter.reason).inc()
        return [*dead, *route(records, batch)]

    def build_shard(resume: dict | None) -> ShardLogic:
        chain = OperatorChain.build(operator_specs, max_entities=entities.max_entities, ttl_ms=entities.ttl_ms)
        tracked = incident_sink is not None or side_outputs.wants_incidents
        return ShardLogic(chain, batching, metrics, resume, emit_scores=scores_sink is not None,
                          max_operator_failures=max_operator_failures,
                          incident_quiet_ms=incident_quiet_ms if tracked else None,
                          emit_incidents=incident_sink is not None, side_outputs=side_outputs)

    flow = Dataflow(name)
    raw = op.input("source", flow, source)
    decoded = op.flat_map("decode", raw, decode)
    split = op.branch("split_valid", decoded, lambda item: not isinstance(item, DeadLetter))
    results = op.key_rm("drop_shard_key", op.stateful_batch("operators", split.trues, build_shard))
    failed = op.branch("split_operator_errors", results, lambda item: isinstance(item, DeadLetter))
    results = failed.falses
    if scores_sink is not None:
        outputs = op.branch("split_scores", results, lambda item: not isinstance(item, ScoredEvent))
        _output("scores_out", outputs.falses, scores_sink)
        results = outputs.trues
    if incident_sink is not None:
        outputs = op.branch("split_incidents", results, lambda item: isinstance(item, Incident))
        _output("incidents_out", outputs.trues, incident_sink)
        results = outputs.falses
    if alert_sink is not None:
        _output("alerts_out", results, alert_sink)
    if dead_letter_sink is not None:
        _output("dead_letters_out", op.merge("dead_letters", split.falses, failed.trues), dead_letter_sink)
    return flow


def _output(step_id: str, stream: op.Stream, sink: Sink) -> None:
    """A Kafka sink is partitioned (its one partition owns the producer): its items are keyed to that partition."""
    if isinstance(sink, KafkaTopicSink):
        stream = op.key_on(f"{step_id}_partition", stream, lambda item: SINK_PARTITION)
    op.output(step_id, stream, sink)
