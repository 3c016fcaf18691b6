"""Per-series export: each entity's input values, outlier scores and expected bands, remote-written to Prometheus.

Vigil's own metrics never carry an entity key (their labels are bounded). What an SRE wants next to a host's latency is
that host's anomaly score and the band Vigil expected it in, so with ``[remote_write] url`` set each process writes, per
entity, the series of :data:`SERIES_METRICS` to a Prometheus remote-write endpoint (Prometheus started with
``--web.enable-remote-write-receiver``, VictoriaMetrics, Mimir), labelled by the parts of the entity key
(:mod:`pipeline.engine.entity_labels`), ``field`` and ``operator``.

How it stays off the hot path and bounded:

* each shard hands :meth:`SeriesExporter.observe` its batch after the operators ran: the exporter keeps the last row of
  each entity of the batch, as arrays (a few vectorised copies, under a lock held for nothing else);
* a thread of its own wakes every ``interval_seconds``, keeps each entity's latest row of the interval (like a scrape,
  one sample per series per interval, not one per event), and sends them in one request, protobuf and snappy
  (the remote-write 1.0 protocol), retried with back-off for ``retry_seconds``;
* at most ``max_series`` series are exported. An entity's series are admitted or dropped together. When a new entity
  does not fit, it replaces the exported entity that was least recently anomalous (an alert of an exported operator
  makes an entity anomalous), if that one's last anomaly is older than the newcomer's; otherwise the newcomer's samples
  are dropped and counted (``vigil_export_dropped_total{reason="cap"}``). A replaced entity's series get a staleness
  marker, so they end at once in Prometheus rather than after its 5-minute lookback. An entity silent for
  :data:`IDLE_INTERVALS` intervals leaves the export, as its series have left Prometheus's queries by then.

Samples carry the event time of their row: a replay of old data is written with its own timestamps, which Prometheus
accepts only within its head block (about the last hour or two) and VictoriaMetrics at any age. A refused request
(HTTP 4xx, e.g. samples too old) is not retried: its samples are counted as ``rejected``.

Cost: per exported series about 100 bytes of memory here and one sample per interval on the wire; on the shards, a
``np.unique`` over the batch's slots and a copy of its last rows per entity.

References: Prometheus remote-write specification 1.0, https://prometheus.io/docs/specs/remote_write_spec/ ; the
staleness marker, https://prometheus.io/docs/prometheus/latest/querying/basics/#staleness
"""
from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cramjam
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from operators.base import Operator, ScoringOperator
from operators.batch import Batch
from operators.event import Alert, parse_ts_ms
from operators.incidents import Incident
from pipeline.config import RemoteWriteConfig
from pipeline.engine.entity_labels import EntityLabels
from pipeline.engine.http_push import PushFailed, PushRefused, backoff, bearer_headers, post
from pipeline.engine.metrics import Metrics

log = logging.getLogger("vigil")

# The series written per entity, with their help text; every series also carries the entity's labels
# (pipeline.engine.entity_labels) and remote_write.labels.
SERIES_METRICS: dict[str, str] = {
    "vigil_series_value": "The latest value of an input field (label field).",
    "vigil_series_score": "An outlier operator's latest score of the entity, on the operator's own scale (label operator).",
    "vigil_series_expected": "The value an outlier operator expected the field to take (labels operator, field).",
    "vigil_series_lower": "The lower end of the operator's expected band for the field (labels operator, field).",
    "vigil_series_upper": "The upper end of the operator's expected band for the field (labels operator, field).",
    "vigil_series_incident_open": "1 while the entity has an open incident of the operator, else 0 (label operator).",
}
BAND_PARTS = ("expected", "lower", "upper")
IDLE_INTERVALS = 20  # an entity without a sample for this many intervals leaves the export
COMPACT_ROWS = 100_000  # pending rows past which the shards' rows are reduced to the latest per entity at once
# Prometheus's staleness marker: a NaN with this bit pattern ends a series (a plain NaN is a value).
STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
NEVER = -(2 ** 62)


def _write_request_class():
    """prometheus.WriteRequest of remote-write 1.0 (prompb/remote.proto, types.proto: the fields Vigil writes), built
    from its descriptor by protobuf's message factory, so no generated code has to be vendored."""
    file = descriptor_pb2.FileDescriptorProto(name="vigil/prompb.proto", package="prometheus", syntax="proto3")
    scalar, repeated = descriptor_pb2.FieldDescriptorProto, descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED

    def message(name: str, *fields: tuple[str, int, int, str]) -> None:
        proto = file.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            field = proto.field.add(name=field_name, number=number, type=kind,
                                    label=repeated if type_name else scalar.LABEL_OPTIONAL)
            if type_name:
                field.type_name = type_name

    message("Label", ("name", 1, scalar.TYPE_STRING, ""), ("value", 2, scalar.TYPE_STRING, ""))
    message("Sample", ("value", 1, scalar.TYPE_DOUBLE, ""), ("timestamp", 2, scalar.TYPE_INT64, ""))
    message("TimeSeries", ("labels", 1, scalar.TYPE_MESSAGE, ".prometheus.Label"),
            ("samples", 2, scalar.TYPE_MESSAGE, ".prometheus.Sample"))
    message("WriteRequest", ("timeseries", 1, scalar.TYPE_MESSAGE, ".prometheus.TimeSeries"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _write_request_class()
HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
           "X-Prometheus-Remote-Write-Version": "0.1.0", "User-Agent": "vigil"}


@dataclass(frozen=True)
class SeriesPlan:
    """What one entity exports: the input fields, and per exported operator the fields it has a band for."""

    fields: tuple[str, ...]
    operators: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def of(cls, operators: Sequence[Operator]) -> SeriesPlan:
        """The scoring operators that raise findings, with the fields their band covers (those with a level model)."""
        exported = [op for op in operators if isinstance(op, ScoringOperator) and op.findings]
        fields = tuple(dict.fromkeys(name for op in exported for name in op.numeric_inputs))
        banded = tuple((op.name, op.numeric_inputs if type(op).level is not ScoringOperator.level else ())
                       for op in exported)
        return cls(fields, banded)

    def columns(self) -> list[tuple[str, str, tuple[tuple[str, str], ...]]]:
        """Per series of an entity: the row column it reads, its metric name and its own labels."""
        series = [(f"value:{name}", "vigil_series_value", (("field", name),)) for name in self.fields]
        for operator, banded in self.operators:
            series.append((f"score:{operator}", "vigil_series_score", (("operator", operator),)))
            series.append((f"incident:{operator}", "vigil_series_incident_open", (("operator", operator),)))
            series += [(f"{part}:{operator}:{name}", f"vigil_series_{part}", (("field", name), ("operator", operator)))
                       for part in BAND_PARTS for name in banded]
        return series


@dataclass
class _Member:
    """An exported entity: its series (column, sorted label pairs), when it was last anomalous, its last sample's time,
    and the intervals since its last row."""

    series: list[tuple[str, list[tuple[str, str]]]]
    anomalous_ms: int
    last_ms: int = NEVER
    idle: int = 0


class _Rows:
    """Rows of some batches as columns (entity keys, event times, and the columns of :meth:`SeriesPlan.columns`)."""

    def __init__(self, keys: np.ndarray, ts_ms: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        self.keys, self.ts_ms, self.columns = keys, ts_ms, columns

    @classmethod
    def concat(cls, parts: list[_Rows]) -> _Rows:
        return cls(np.concatenate([p.keys for p in parts]), np.concatenate([p.ts_ms for p in parts]),
                   {name: np.concatenate([p.columns[name] for p in parts]) for name in parts[0].columns})

    def latest(self) -> _Rows:
        """One row per key: its last (parts are in arrival order, and a shard's rows in stream order)."""
        _, first = np.unique(self.keys[::-1].astype(str), return_index=True)
        return self.take(np.sort(len(self.keys) - 1 - first))

    def take(self, rows: np.ndarray) -> _Rows:
        return _Rows(self.keys[rows], self.ts_ms[rows], {name: column[rows] for name, column in self.columns.items()})


class SeriesExporter:
    """Remote-writes per-entity series for one process (module docstring). Shards call :meth:`observe`; :meth:`start`
    and :meth:`close` run the sending thread."""

    def __init__(self, config: RemoteWriteConfig, entity_labels: EntityLabels, plan: SeriesPlan, metrics: Metrics) -> None:
        self.config = config
        self.entity_labels = entity_labels
        self.plan = plan
        self.metrics = metrics
        self.headers = {**HEADERS, **bearer_headers(config.bearer_token_env, config.bearer_token_file)}
        self.series = plan.columns()
        self.operators = {name for name, _ in plan.operators}
        self.capacity = config.max_series // len(self.series) if self.series else 0  # entities
        self.lock = threading.Lock()
        # Handed over by the shards, under the lock: their rows, the entities' latest alerts, incident changes.
        self.pending: list[_Rows] = []
        self.pending_rows = 0
        self.alerted: dict[str, int] = {}
        self.changed: dict[tuple[str, str], bool] = {}
        # The thread's own: rows of the interval (latest per entity), exported entities, open incidents.
        self.interval: _Rows | None = None
        self.anomalous: dict[str, int] = {}
        self.members: dict[str, _Member] = {}
        self.open: set[tuple[str, str]] = set()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="vigil-remote-write", daemon=True)
        self.unreachable_since: float | None = None

    # ---- the shards' side: a few array copies, and the lock only to append them ----

    def observe(self, batch: Batch, alerts: Sequence[Alert], incidents: Sequence[Incident]) -> None:
        """One shard's batch after its operators ran, with their alerts and incident records."""
        if not len(batch) or not self.series:
            return
        _, first = np.unique(batch.slots[::-1], return_index=True)
        rows = np.sort(len(batch) - 1 - first)
        columns = {f"value:{name}": batch.numeric[name][rows] for name in self.plan.fields}
        for operator, banded in self.plan.operators:
            columns[f"score:{operator}"] = batch.scores[operator][rows]
            band = batch.bands.get(operator)
            for part in BAND_PARTS:
                for j, name in enumerate(banded):
                    columns[f"{part}:{operator}:{name}"] = (getattr(band, part)[rows, j] if band is not None
                                                            else np.full(len(rows), np.nan))
        alerted = [(alert.key, parse_ts_ms(alert.ts)) for alert in alerts if alert.operator in self.operators]
        changed = [((incident.key, incident.operator), incident.state != "resolved") for incident in incidents
                   if incident.operator in self.operators]
        with self.lock:
            self.pending.append(_Rows(batch.keys[rows], batch.ts_ms[rows], columns))
            self.pending_rows += len(rows)
            for key, ts_ms in alerted:
                self.alerted[key] = max(self.alerted.get(key, NEVER), ts_ms)
            self.changed.update(changed)
            compact = self.pending_rows > COMPACT_ROWS
        if compact:
            self.wake.set()

    # ---- the thread ----

    def start(self) -> None:
        self.thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Send what the shards handed over (one last request, bounded by ``timeout``), then stop the thread."""
        if self.thread.is_alive():
            self.stopping.set()
            self.wake.set()
            self.thread.join(timeout)

    def _loop(self) -> None:
        due = time.monotonic() + self.config.interval_seconds
        while True:
            self.wake.wait(max(0.0, due - time.monotonic()))
            self.wake.clear()
            stopping = self.stopping.is_set()
            self._take_pending()
            if stopping or time.monotonic() >= due:
                try:
                    self._send_interval(final=stopping)
                except Exception:  # the export must never stop the run; say what broke, once per interval
                    log.exception("remote-write: building or sending an interval's samples failed")
                due = time.monotonic() + self.config.interval_seconds
            if stopping:
                return

    def _take_pending(self) -> None:
        with self.lock:
            parts, self.pending, self.pending_rows = self.pending, [], 0
            alerted, self.alerted = self.alerted, {}
            changed, self.changed = self.changed, {}
        for key, ts_ms in alerted.items():
            self.anomalous[key] = max(self.anomalous.get(key, NEVER), ts_ms)
        for incident, is_open in changed.items():
            (self.open.add if is_open else self.open.discard)(incident)
        if parts:
            self.interval = _Rows.concat([self.interval, *parts] if self.interval is not None else parts).latest()

    def _send_interval(self, final: bool) -> None:
        started = time.monotonic()
        rows, self.interval = self.interval, None
        request, samples, seen, evicted = WriteRequest(), 0, set(), []
        if rows is not None:
            admitted, evicted = self._admit(rows)
            for i, key in enumerate(rows.keys.tolist()):
                member = self.members.get(key) if admitted[i] else None
                ts_ms = int(rows.ts_ms[i])
                if member is None or ts_ms <= member.last_ms:  # over the cap, or late: a series' samples must advance
                    continue
                seen.add(key)
                for column, labels in member.series:
                    if column.startswith("incident:"):
                        value = float((key, column.split(":", 1)[1]) in self.open)
                    else:
                        value = float(rows.columns[column][i])
                        if value != value:  # NaN: the field was missing or the operator did not know yet
                            continue
                    _add(request, labels, value, ts_ms)
                    samples += 1
                member.last_ms, member.idle = ts_ms, 0
        for key, member in list(self.members.items()):
            if key not in seen:
                member.idle += 1
                if member.idle >= IDLE_INTERVALS:
                    del self.members[key]
        for member in evicted:  # their series end now rather than after Prometheus's lookback
            for _, labels in member.series:
                _add(request, labels, STALE_NAN, member.last_ms + 1)
        self.metrics.exported_series.set(len(self.members) * len(self.series))
        if request.timeseries:
            self._post(request, samples, final)
        self.metrics.export_seconds.observe(time.monotonic() - started)

    def _admit(self, rows: _Rows) -> tuple[np.ndarray, list[_Member]]:
        """Which rows' entities are exported after this interval, and the members that made room: members stay; a
        newcomer takes a free place, or the place of the least recently anomalous member if it was anomalous more
        recently; the others are dropped."""
        keys = rows.keys.tolist()
        admitted = np.array([key in self.members for key in keys], dtype=bool)
        for key in keys:
            if key in self.members and key in self.anomalous:
                self.members[key].anomalous_ms = max(self.members[key].anomalous_ms, self.anomalous[key])
        newcomers = sorted((i for i, key in enumerate(keys) if not admitted[i]),
                           key=lambda i: -self.anomalous.get(keys[i], NEVER))
        by_anomaly = sorted(self.members.items(), key=lambda item: item[1].anomalous_ms)
        evicted, dropped = [], 0
        for i in newcomers:
            key, anomalous = keys[i], self.anomalous.get(keys[i], NEVER)
            if len(self.members) >= self.capacity:
                while by_anomaly and by_anomaly[0][0] not in self.members:
                    by_anomaly.pop(0)
                if not by_anomaly or by_anomaly[0][1].anomalous_ms >= anomalous:
                    dropped += 1
                    continue
                victim, member = by_anomaly.pop(0)
                del self.members[victim]
                evicted.append(member)
            self.members[key] = _Member(self._series_of(key), anomalous)
            admitted[i] = True
        if dropped:
            self.metrics.export_dropped.labels("cap").inc(dropped * len(self.series))
        return admitted, evicted

    def _series_of(self, key: str) -> list[tuple[str, list[tuple[str, str]]]]:
        entity = [*self.entity_labels.labels(key).items(), *self.config.labels.items()]
        return [(column, sorted([("__name__", metric), *entity, *own])) for column, metric, own in self.series]

    def _post(self, request, samples: int, final: bool) -> None:
        body = bytes(cramjam.snappy.compress_raw(request.SerializeToString()))
        deadline = time.monotonic() + (0.0 if final else self.config.retry_seconds)
        delays = backoff(0.5, 30.0)
        while True:
            try:
                post(self.config.url, body, self.headers, self.config.timeout_seconds)
            except PushRefused as error:
                self.metrics.export_requests.labels("rejected").inc()
                self.metrics.export_dropped.labels("rejected").inc(samples)
                log.warning("remote-write: %s refused %d samples (%s); they are dropped", self.config.url, samples,
                            error)
                return
            except PushFailed as error:
                self.metrics.export_requests.labels("error").inc()
                if self.unreachable_since is None:
                    self.unreachable_since = time.monotonic()
                    log.warning("remote-write: %s cannot be reached (%s); retrying for up to %g s", self.config.url,
                                error, self.config.retry_seconds)
                delay = next(delays)
                if time.monotonic() + delay > deadline or self.stopping.is_set() and not final:
                    self.metrics.export_dropped.labels("unreachable").inc(samples)
                    return
                time.sleep(delay)
                continue
            self.metrics.export_requests.labels("ok").inc()
            self.metrics.export_samples.inc(samples)
            if self.unreachable_since is not None:
                log.info("remote-write: %s is reachable again after %.0f s", self.config.url,
                         time.monotonic() - self.unreachable_since)
                self.unreachable_since = None
            return


def _add(request, labels: list[tuple[str, str]], value: float, ts_ms: int) -> None:
    series = request.timeseries.add()
    for name, label_value in labels:
        series.labels.add(name=name, value=label_value)
    series.samples.add(value=value, timestamp=ts_ms)
