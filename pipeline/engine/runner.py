"""Runs a configured dataflow: metrics endpoint up, sources and sinks built, Bytewax executed.

Bounded runs (a file, the demo, a bounded Kafka run, a replay) end by rewriting their file outputs
in source order without repeats, so equal inputs give byte-identical files; every run saves its final
metrics as ``metrics.prom`` in the run directory.

A run stops cleanly on SIGTERM or SIGINT (:mod:`pipeline.engine.shutdown`). With ``[recovery] directory``
set, Bytewax snapshots state and source positions there every ``snapshot_interval_seconds`` and a
restart resumes from the last snapshot.

Several processes form one cluster with ``process_id`` and ``addresses`` (Bytewax's ``-i``/``-a``).
Each process then writes its files into ``process-<id>/`` under the run directory, and where several
addresses name the same host, serves metrics on ``metrics.port + id`` so that they do not collide.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from bytewax.inputs import Source
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main

from operators.registry import OperatorChain, OperatorFailuresExceeded
from pipeline.config import KAFKA_KEY, KAFKA_TIMESTAMP, Config, SinkConfig
from pipeline.engine.dataflow import Batching, EntityLimits, SideOutputs, build_flow
from pipeline.engine.entity_labels import EntityLabels
from pipeline.engine.kafka import DeliveryError, KafkaSettings, PartitionPlan, plan_live
from pipeline.engine.metrics import Metrics
from pipeline.engine.resources import ResourceError, exception_chain, writable_directory
from pipeline.engine.shutdown import STOP, stop_on_signals
from pipeline.engine.sinks import (alert_message, build_sink, dead_letter_message, incident_message, keyed_message,
                                   sort_by_source, sort_incidents)
from pipeline.engine.decode import RecordBatch
from pipeline.engine.series_export import SeriesExporter, SeriesPlan
from pipeline.engine.sources import JsonLinesSource
from pipeline.engine.watch import DecodeWatch

log = logging.getLogger("vigil")

SINK_ENCODERS = {"alerts": alert_message, "incidents": incident_message, "dead_letters": dead_letter_message,
                 "scores": keyed_message}
# Errors that stop a run on purpose: the CLI says them in one line instead of Bytewax's traceback.
STOP_REASONS = (OperatorFailuresExceeded, DeliveryError)


@dataclass(frozen=True)
class Cluster:
    """Where this process sits in a Bytewax cluster (one process unless ``addresses`` is given)."""

    workers: int = 1
    process_id: int | None = None
    addresses: list[str] | None = None

    @property
    def processes(self) -> int:
        return len(self.addresses) if self.addresses else 1

    def local_dir(self, run_dir: Path) -> Path:
        return run_dir / f"process-{self.process_id}" if self.processes > 1 else run_dir

    def metrics_port(self, port: int) -> int:
        """``port``, plus the process id when this process shares its host with others (0 stays 0).

        >>> Cluster(process_id=1, addresses=["vigil-0.vigil:2101", "vigil-1.vigil:2101"]).metrics_port(9108)
        9108
        >>> Cluster(process_id=1, addresses=["127.0.0.1:2101", "127.0.0.1:2102"]).metrics_port(9108)
        9109
        """
        hosts = [address.rsplit(":", 1)[0] for address in self.addresses or []]
        shared = len(set(hosts)) < len(hosts)
        return port + self.process_id if port and shared and self.process_id else port


@dataclass
class RunReport:
    run_dir: Path
    outputs: dict[str, Path | None]
    elapsed_seconds: float
    metrics: Metrics
    stopped: bool = field(default=False)

    @property
    def alerts_path(self) -> Path | None:
        return self.outputs.get("alerts")

    @property
    def dead_letters_path(self) -> Path | None:
        return self.outputs.get("dead_letters")


def kafka_source(config: Config, plans: list[PartitionPlan], metrics: Metrics,
                 on_advance: Callable[[int], None] = lambda n: None) -> Source[RecordBatch]:
    """The Kafka source over ``plans``, committing to ``kafka.group_id`` unless ``commit_offsets`` is off."""
    from pipeline.engine.kafka_source import KafkaRecordSource

    group = config.kafka.group_id if config.kafka.commit_offsets else ""
    schema = config.source.schema.resolved()
    return KafkaRecordSource(plans, KafkaSettings(config.kafka).librdkafka("consumer"), metrics=metrics, group_id=group,
                             batch_size=config.source.fetch_batch_size, stop=STOP, on_advance=on_advance,
                             record_keys=schema.key == [KAFKA_KEY], record_timestamps=schema.time == KAFKA_TIMESTAMP)


def configured_source(config: Config, metrics: Metrics, on_advance: Callable[[int], None] = lambda n: None, *,
                      on_size: Callable[[int], None] | None = None) -> Source[RecordBatch]:
    """The source ``[source]`` describes (the demo source is built by ``vigil demo``). ``on_advance`` is told how many
    records it reads as it goes, ``on_size`` (when given, as counting a file's lines reads it) how many a bounded
    source will read in all."""
    if config.source.type == "file":
        source = JsonLinesSource([config.source.path], stop=STOP, on_read=on_advance)
        if on_size is not None:
            on_size(source.lines())
        return source
    if config.source.type == "kafka":
        settings = KafkaSettings(config.kafka)
        plans = plan_live(settings, config.source.topics, mode=config.source.mode, start=config.source.start,
                          group_id=config.kafka.group_id)
        log.info("consuming %d partition(s) of %s from %s (%s)", len(plans), ", ".join(config.source.topics),
                 settings.describe(), config.source.mode)
        if on_size is not None and config.source.mode == "bounded":
            on_size(sum(plan.size for plan in plans))
        return kafka_source(config, plans, metrics, on_advance)
    raise ValueError(f"source type {config.source.type!r} is run by its own command (vigil demo)")


def is_bounded(config: Config) -> bool:
    return config.source.type == "file" or (config.source.type == "kafka" and config.source.mode == "bounded")


def _recovery(config: Config) -> RecoveryConfig | None:
    directory = config.recovery.directory
    if not directory:
        return None
    path = writable_directory(Path(directory), "recovery directory (recovery.directory)")
    if not any(path.glob("part-*.sqlite3")):
        init_db_dir(path, config.recovery.partitions)
        log.info("created recovery store %s with %d partition(s)", path, config.recovery.partitions)
    backup = config.recovery.backup_interval_seconds
    return RecoveryConfig(path, timedelta(seconds=backup))


def set_torch_threads(threads: int) -> None:
    """torch's intra-op threads, whether torch is loaded already or only later, by an operator that uses it."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:  # torch reads it when it is imported
        os.environ["OMP_NUM_THREADS"] = str(threads)


def side_outputs(config: Config, metrics: Metrics, run_dir: Path) -> SideOutputs:
    """The remote-write export and the Alertmanager sink the config asks for, their threads started."""
    labels = EntityLabels(config.source.schema)
    exporter = alertmanager = None
    if config.remote_write.url:
        plan = SeriesPlan.of(OperatorChain.build(config.operator_specs(), max_entities=1).operators)
        exporter = SeriesExporter(config.remote_write, labels, plan, metrics)
        exporter.start()
        log.info("remote-writing up to %d series to %s every %g s", config.remote_write.max_series,
                 config.remote_write.url, config.remote_write.interval_seconds)
    if config.sinks.alertmanager.url:
        from pipeline.engine.alertmanager import AlertmanagerPublisher

        settings = config.sinks.alertmanager
        alertmanager = AlertmanagerPublisher(settings, labels, metrics, run_dir / settings.dead_letter_path)
        log.info("posting incidents to Alertmanager at %s", settings.url)
    return SideOutputs(exporter, alertmanager)


def run_pipeline(
    config: Config,
    make_source: Callable[[Metrics], Source[RecordBatch]] | None = None,
    *,
    bounded: bool,
    cluster: Cluster = Cluster(),
    metrics: Metrics | None = None,
) -> RunReport:
    run_dir = writable_directory(cluster.local_dir(Path(config.run.run_dir)), "run directory (run.run_dir)")
    set_torch_threads(config.pipeline.torch_threads)
    recovery = _recovery(config)
    kafka = config.source.type == "kafka" or any(getattr(config.sinks, name).type == "kafka" for name in SINK_ENCODERS)
    metrics = metrics or Metrics(kafka=kafka, recovery=recovery is not None, remote_write=bool(config.remote_write.url),
                                 alertmanager=bool(config.sinks.alertmanager.url))
    settings = KafkaSettings(config.kafka)
    sinks, paths = {}, {}
    for name in SINK_ENCODERS:
        sink: SinkConfig = getattr(config.sinks, name)
        path = run_dir / sink.path if sink.type == "file" else None
        if bounded and recovery is None and path is not None and path.exists():
            path.unlink()  # a bounded run's outputs describe that run only (unless it may resume)
        producer = settings.librdkafka("producer") if sink.type == "kafka" else None
        sinks[name] = build_sink(sink.type, path=path, topic=sink.topic, producer_config=producer,
                                 encode=SINK_ENCODERS[name])
        paths[name] = path

    metrics.attach_kernels()
    server = None
    if config.metrics.enabled:
        server = metrics.serve(config.metrics.host, cluster.metrics_port(config.metrics.port))
        log.info("metrics on http://%s:%d/metrics", config.metrics.host, server.server_port)
    side = side_outputs(config, metrics, run_dir)
    started = time.monotonic()
    try:
        with stop_on_signals() as stop:
            source = make_source(metrics) if make_source else configured_source(config, metrics)
            watch = DecodeWatch(config.source.schema.preset)
            flow = build_flow(
                source=source,
                operator_specs=config.operator_specs(),
                alert_sink=sinks["alerts"],
                dead_letter_sink=sinks["dead_letters"],
                scores_sink=sinks["scores"],
                incident_sink=sinks["incidents"],
                incident_quiet_ms=round(config.incidents.quiet_seconds * 1000),
                side_outputs=side,
                metrics=metrics,
                shards=config.pipeline.shards,
                shard_by=config.pipeline.shard_by,
                batching=Batching(config.pipeline.batch_max_size,
                                  timedelta(milliseconds=config.pipeline.batch_max_wait_ms)),
                entities=EntityLimits(config.entities.max_per_shard, round(config.entities.ttl_seconds * 1000)),
                max_event_bytes=config.pipeline.max_event_bytes,
                max_operator_failures=config.pipeline.max_operator_failures,
                schema=config.source.schema,
                watch=watch,
            )
            try:
                cli_main(
                    flow,
                    workers_per_process=cluster.workers,
                    process_id=cluster.process_id,
                    addresses=cluster.addresses,
                    epoch_interval=timedelta(seconds=config.recovery.snapshot_interval_seconds),
                    recovery_config=recovery,
                )
            except Exception as error:  # Bytewax wraps a step's exception: say the reason, not its traceback
                stopping = (next((e for e in exception_chain(error) if isinstance(e, STOP_REASONS)), None)
                            or ResourceError.within(error))
                if stopping is None:
                    raise
                raise stopping from None
            watch.finish()
            stopped = stop.is_set()
    finally:
        for output in (side.exporter, side.alertmanager):
            if output is not None:
                output.close()
        metrics.detach_kernels()
        if server is not None:
            server.shutdown()
            server.server_close()
    elapsed = time.monotonic() - started
    if bounded:
        for name, path in paths.items():
            if path is not None:
                (sort_incidents if name == "incidents" else sort_by_source)(path)
    (run_dir / "metrics.prom").write_bytes(metrics.exposition())
    return RunReport(run_dir, paths, elapsed, metrics, stopped)
