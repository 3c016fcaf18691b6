"""Prometheus metrics of a run, in their own registry, served over HTTP.

Labels carry only bounded values (outcomes, reasons, operator and field names from the config,
kernel names, devices); entity keys never become label values.
"""
from __future__ import annotations

import errno

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest, start_http_server

from kernels import profiling
from operators.base import Operator
from operators.batch import P_VALUE_SUFFIX
from pipeline.engine.decode import REASONS
from pipeline.engine.kafka import BROKERS
from pipeline.engine.resources import ResourceError

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
# Event lag spans live consumption (milliseconds) to replays of history (days to a year).
LAG_BUCKETS = (0.01, 0.05, 0.25, 1, 5, 30, 120, 600, 3600, 21600, 86400, 604800, 2592000, 31536000)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
KERNEL_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
SNAPSHOT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Scores are on each operator's own scale (z-scores, surprises in nats, a CNN's output): wide, mostly positive.
SCORE_BUCKETS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0)
P_VALUE_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)

# Families operators report through ``Operator.readings`` / ``combine``: type, help, label names after "operator".
OPERATOR_FAMILIES: dict[str, tuple[type, str, tuple[str, ...]]] = {
    "vigil_fairness_labels_total": (
        Counter, "Labels of decisions by outcome (joined: matched its waiting decision; late: no decision was waiting "
                 "for it; never: a decision stopped waiting unlabelled).", ("outcome",)),
    "vigil_fairness_pending_decisions": (Gauge, "Decisions waiting for their labels.", ()),
    "vigil_fairness_decisions_total": (Counter, "Decisions seen by a fairness monitor, per group.", ("group", "decision")),
    "vigil_fairness_labelled_decisions_total": (
        Counter, "Decisions whose label arrived, per group, by whether the decision matched it.", ("group", "outcome")),
    "vigil_fairness_window_decisions": (
        Gauge, "Decisions in a fairness monitor's sliding windows (window=parity: all decisions; opportunity: decisions "
               "on truly positive instances), per group, summed over entities and shards.", ("group", "window")),
    "vigil_fairness_window_positive_decisions": (
        Gauge, "Positive decisions in a fairness monitor's sliding windows, per group (as vigil_fairness_window_decisions).",
        ("group", "window")),
    "vigil_fairness_positive_ratio": (
        Gauge, "Positive rate (window=parity) or true-positive rate (opportunity) per group over this process's windows, "
               "with its Wilson interval (bound=estimate, lower, upper).", ("group", "window", "bound")),
    "vigil_dp_budget_spent": (
        Gauge, "Privacy (zCDP rho) spent by a dp_count operator's streams, summed over them, as its ledger records.", ()),
    "vigil_dp_budget_total": (Gauge, "Privacy budget (zCDP rho) of a dp_count operator's streams, summed over them.", ()),
    "vigil_dp_streams_exhausted": (Gauge, "Streams of a dp_count operator whose budget cannot pay another epoch.", ()),
    "vigil_dp_released_count": (
        Gauge, "A dp_count operator's latest private running count per category, summed over its streams.", ("category",)),
    "vigil_dp_releases_total": (
        Counter, "Windows of a dp_count operator by outcome (released; refused: no budget, last release repeated; late: "
                 "events of a window already released, dropped).", ("outcome",)),
    "vigil_fairness_gap_ratio": (
        Gauge, "Highest minus lowest group rate (gap=parity: demographic parity; opportunity: equal opportunity) over this "
               "process's windows, with its Newcombe interval (bound=estimate, lower, upper).", ("gap", "bound")),
}


class MetricsPortError(ResourceError):
    """The metrics endpoint cannot listen where the config says (a port in use, an address not of this host)."""


class Metrics:
    """The run's metrics. Those that would describe nothing are not exported: ``vigil_broker_up`` without ``kafka``
    (a constant 1 would claim brokers that are not there), the snapshot metrics without a ``recovery`` store (Bytewax
    still snapshots every epoch, but keeps nothing); their objects still take observations."""

    def __init__(self, registry: CollectorRegistry | None = None, *, replay: bool = False, kafka: bool = True,
                 recovery: bool = True, remote_write: bool = False, alertmanager: bool = False) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("vigil_events_total", "Records read, by decode outcome (ignored: samples of metrics that "
                              "no operator reads, in one-sample-per-message envelopes).", ["outcome"], registry=r)
        self.invalid = Counter(
            "vigil_events_invalid_total", "Records sent to the dead-letter sink, by reason.", ["reason"], registry=r
        )
        self.alerts = Counter("vigil_alerts_total", "Alerts emitted.", ["operator", "severity"], registry=r)
        self.incidents = Counter("vigil_incidents_total", "Incident records emitted, by change (opened, updated, "
                                 "resolved); open incidents = opened - resolved.", ["operator", "state"], registry=r)
        self.drift = Counter("vigil_drift_total", "Drift alarms, per watched field.", ["operator", "field"], registry=r)
        self.scores = Histogram("vigil_score", "Scores an operator published (score:<operator>), on its own scale.",
                                ["operator"], buckets=SCORE_BUCKETS, registry=r)
        self.p_values = Histogram(
            "vigil_score_p_value", "Calibrated p-values of an operator's scores (score:<operator>.p), for the scores in "
            "its calibration tail (the others are not rare enough to get one).", ["operator"], buckets=P_VALUE_BUCKETS,
            registry=r)
        self.operator_failures = Counter(
            "vigil_operator_failures_total", "Batches on which an operator raised (their unfinished events were "
            "dead-lettered with reason operator_error).", ["operator"], registry=r)
        self.lag = Histogram(
            "vigil_event_lag_seconds", "Processing time minus event time.", buckets=LAG_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "vigil_batch_size", "Events per micro-batch handed to a shard's operators.", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_wait = Histogram(
            "vigil_batch_wait_seconds", "How long the oldest event of a micro-batch waited in its shard's buffer.",
            buckets=WAIT_BUCKETS, registry=r,
        )
        self.kernel_seconds = Histogram(
            "vigil_kernel_seconds", "Time per batched kernel call.", ["kernel", "device"], buckets=KERNEL_BUCKETS, registry=r
        )
        # Partition numbers are bounded by the topics' partition counts, so they may be label values.
        self.consumer_lag_messages = Gauge(
            "vigil_consumer_lag_messages", "Records in the partition not yet read.", ["topic", "partition"], registry=r
        )
        self.consumer_lag_seconds = Gauge(
            "vigil_consumer_lag_seconds", "Age of the last record read while the partition is behind; 0 when caught up.",
            ["topic", "partition"], registry=r,
        )
        self.replay_progress = (
            Gauge("vigil_replay_progress_ratio", "Share of the replayed slice's offsets read so far.", registry=r)
            if replay else None
        )
        self.operator_state = Gauge(
            "vigil_operator_state_bytes",
            "Memory held by an operator's state (models, buffers, per-entity state, calibration windows), "
            "over this process's shards.",
            ["operator"], registry=r,
        )
        self.snapshot_seconds = Histogram(
            "vigil_snapshot_seconds", "Time to snapshot one shard's state for recovery.", buckets=SNAPSHOT_BUCKETS,
            registry=r if recovery else None)
        self.last_snapshot = Gauge(
            "vigil_last_snapshot_timestamp_seconds", "Unix time of this process's latest state snapshot (one per epoch, "
            "kept in the recovery store); 0 before the first.", registry=r if recovery else None)
        self.entities = Gauge("vigil_entities", "Entities with live state, over this process's shards.", registry=r)
        self.entities_evicted = Counter(
            "vigil_entities_evicted_total", "Entities whose state was freed, by rule (ttl: idle too long in event time; "
            "capacity: least recently seen when a shard was full).", ["reason"], registry=r)
        # Per-series export (pipeline.engine.series_export) and the Alertmanager sink (pipeline.engine.alertmanager):
        # exported only when they are configured.
        exporting = r if remote_write else None
        self.exported_series = Gauge(
            "vigil_exported_series", "Series this process remote-writes (remote_write.max_series caps them).",
            registry=exporting)
        self.export_samples = Counter("vigil_export_samples_total", "Samples remote-written and accepted.",
                                      registry=exporting)
        self.export_dropped = Counter(
            "vigil_export_dropped_total", "Samples not remote-written, by reason (cap: their series were over "
            "remote_write.max_series; rejected: the endpoint refused the request; unreachable: it could not be reached "
            "within remote_write.retry_seconds).", ["reason"], registry=exporting)
        self.export_requests = Counter("vigil_export_requests_total", "Remote-write requests, by outcome (ok, rejected, "
                                       "error: retried).", ["outcome"], registry=exporting)
        self.export_seconds = Histogram("vigil_export_seconds", "Time to build and send one remote-write request.",
                                        buckets=SNAPSHOT_BUCKETS, registry=exporting)
        posting = r if alertmanager else None
        self.alertmanager_posts = Counter(
            "vigil_alertmanager_posts_total", "Posts of incidents to Alertmanager, by outcome (ok, rejected, error: "
            "retried).", ["outcome"], registry=posting)
        self.alertmanager_dead_letters = Counter(
            "vigil_alertmanager_dead_letters_total", "Incident records Alertmanager never took, written to the "
            "Alertmanager dead-letter file, by reason (rejected, unreachable).", ["reason"], registry=posting)
        for reason in ("cap", "rejected", "unreachable"):
            self.export_dropped.labels(reason)
        for outcome in ("ok", "rejected", "error"):
            self.export_requests.labels(outcome)
            self.alertmanager_posts.labels(outcome)
        for reason in ("rejected", "unreachable"):
            self.alertmanager_dead_letters.labels(reason)
        self.operator_families = {name: kind(name, doc, ["operator", *labels], registry=r)
                                  for name, (kind, doc, labels) in OPERATOR_FAMILIES.items()}
        self._readings: dict[tuple[str, int], dict[tuple[str, tuple[str, ...]], float]] = {}
        self._state_bytes: dict[tuple[str, int], int] = {}
        self._live_entities: dict[int, int] = {}
        self.build = Info("vigil_build", "Vigil build information.", registry=r)
        self.build.info({"version": _version()})
        # Broker reachability as librdkafka's clients see it (pipeline.engine.kafka.BROKERS).
        self.broker_up = Gauge("vigil_broker_up", "1 while every Kafka broker this process uses is reachable, 0 during "
                               "an outage.", registry=r if kafka else None)
        self.broker_up.set_function(BROKERS.up)
        for outcome in ("valid", "invalid"):
            self.events.labels(outcome)
        for reason in REASONS:
            self.invalid.labels(reason)
        for reason in ("ttl", "capacity"):
            self.entities_evicted.labels(reason)

    def report_scores(self, scores: dict[str, np.ndarray]) -> None:
        """One batch's published score columns: ``<operator>`` to ``vigil_score``, ``<operator>.p`` to
        ``vigil_score_p_value``; missing scores (NaN) are left out."""
        for name, column in scores.items():
            histogram = self.p_values if name.endswith(P_VALUE_SUFFIX) else self.scores
            observe_many(histogram.labels(name.removesuffix(P_VALUE_SUFFIX)), column[np.isfinite(column)])

    def report_state_bytes(self, operator: str, shard: int, size: int) -> None:
        """One shard's state size for ``operator``; the gauge shows the sum over shards."""
        self._state_bytes[(operator, shard)] = size
        self.operator_state.labels(operator).set(sum(v for (name, _), v in self._state_bytes.items() if name == operator))

    def report_entities(self, shard: int, live: int) -> None:
        """One shard's live entities; the gauge shows the sum over shards."""
        self._live_entities[shard] = live
        self.entities.set(sum(self._live_entities.values()))

    def report_readings(self, operator: Operator, shard: int, *, baseline: bool = False) -> None:
        """One shard's readings of ``operator``: counters grow by the shard's increase since its last report (its first
        report, ``baseline``, only records the totals it restored), gauges show the sum over shards, then the operator's
        gauges derived from those sums."""
        current = {(r.metric, r.labels): r.value for r in operator.readings()}
        previous = self._readings.get((operator.name, shard), current if baseline else {})
        self._readings[(operator.name, shard)] = current
        sums: dict[tuple[str, tuple[str, ...]], float] = {}
        for (name, _), values in self._readings.items():
            if name == operator.name:
                for key, value in values.items():
                    sums[key] = sums.get(key, 0) + value
        for (metric, labels), value in sums.items():
            family = self.operator_families[metric].labels(operator.name, *labels)
            if isinstance(family, Counter):
                increase = current.get((metric, labels), 0) - previous.get((metric, labels), 0)
                if increase > 0:
                    family.inc(increase)
            else:
                family.set(value)
        for metric, labels, value in operator.combine(sums):
            self.operator_families[metric].labels(operator.name, *labels).set(value)

    def observe_kernel(self, kernel: str, device: str, seconds: float) -> None:
        self.kernel_seconds.labels(kernel, device).observe(seconds)

    def attach_kernels(self) -> None:
        profiling.add_observer(self.observe_kernel)

    def detach_kernels(self) -> None:
        profiling.remove_observer(self.observe_kernel)

    def serve(self, host: str, port: int):
        """Start the HTTP endpoint; returns the server so the caller can shut it down."""
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as error:
            what = (f"metrics port {host}:{port} is in use" if error.errno == errno.EADDRINUSE
                    else f"cannot serve metrics on {host}:{port} ({error.strerror or error})")
            raise MetricsPortError(f"{what}: choose another port with --metrics-port (metrics.port) or address with "
                                   "--metrics-host (metrics.host), or run without the endpoint with --no-metrics") from None
        return server

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """Observe a batch of values at once: the same bucket counts and count as calling ``observe`` per value (the
    sum may differ in its last bits: it is added once). prometheus-client has no batch API, so this feeds the
    histogram's own bucket counters (``_upper_bounds``, ``_buckets``, ``_sum``), checked against ``observe`` in
    tests/test_metrics.py."""
    if not len(values):
        return
    bucket = np.searchsorted(np.asarray(histogram._upper_bounds), values, side="left")  # the first bound >= value
    for index, count in enumerate(np.bincount(bucket, minlength=len(histogram._upper_bounds)).tolist()):
        if count:
            histogram._buckets[index].inc(count)
    histogram._sum.inc(float(np.sum(values)))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vigil")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"
