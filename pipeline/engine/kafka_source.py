"""Kafka input through bytewax's connector (librdkafka), following a per-partition plan.

Each Kafka partition is one Bytewax source partition, built on bytewax's partition reader (its consumer,
``assign()``, no group membership), whose every poll becomes one :class:`~pipeline.engine.decode.RecordBatch`
read straight from ``consume`` (no Python object per record). On top of it this source adds what Vigil needs:

* a start and optional end offset per partition (bounded runs stop at the end offsets captured when
  they started) and an optional record-time window (exact time-based replay);
* a commit of the snapshotted position to a named consumer group at every snapshot, so Burrow or
  kafka_exporter see Vigil's lag (the group is never used for assignment: positions come from the
  recovery store);
* ``vigil_consumer_lag_messages`` and ``vigil_consumer_lag_seconds`` per partition;
* a clean stop when :data:`pipeline.engine.shutdown.STOP` is set: every partition ends, the dataflow
  drains, sinks flush and a final snapshot is taken.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from bytewax.connectors.kafka import _KafkaSourcePartition
from bytewax.inputs import FixedPartitionedSource
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline.engine.decode import RecordBatch
from pipeline.engine.kafka import BROKERS, PartitionPlan
from pipeline.engine.metrics import Metrics
from pipeline.engine.shutdown import FAILED

log = logging.getLogger("vigil.kafka")

# Poll again this soon when a partition had nothing new (bytewax would otherwise spin on it).
IDLE_WAIT = timedelta(milliseconds=20)


class _PlannedPartition(_KafkaSourcePartition):
    def __init__(self, source: KafkaRecordSource, step_id: str, plan: PartitionPlan, resume: int | None) -> None:
        self.plan = plan
        self.source = source
        self.committed: int | None = None
        self.idle = False
        self.high_watermark = plan.end  # refreshed from librdkafka's statistics every second
        self.lag_messages = source.metrics.consumer_lag_messages.labels(plan.topic, str(plan.partition))
        self.lag_seconds = source.metrics.consumer_lag_seconds.labels(plan.topic, str(plan.partition))
        config = {
            **source.config,
            "group.id": source.group_id or "vigil-positions-in-recovery-store",
            "enable.auto.commit": False,
            # Bounded: also end where the partition ends, in case the last offsets are transaction markers.
            "enable.partition.eof": plan.end is not None,
            "statistics.interval.ms": 1000,
            "on_commit": _log_commit_failure,
        }
        super().__init__(step_id, config, plan.topic, plan.partition, plan.start, resume,
                         source.batch_size, raise_on_errors=True)

    def _finished(self) -> bool:
        return self.source.stop.is_set() or (self.plan.end is not None and self._offset >= self.plan.end)

    def next_batch(self) -> list[RecordBatch]:
        """One record batch per poll, read straight from librdkafka's ``consume`` (no object per record)."""
        if self._finished() or self._eof:
            raise StopIteration()
        before = self._offset
        messages = self._consumer.consume(self._batch_size, 0.001)
        errors = [message.error() for message in messages]
        if any(error is not None for error in errors):
            messages = self._until_eof(messages, errors)
        plan = self.plan
        records = []
        if messages:
            offsets = np.fromiter((message.offset() for message in messages), dtype=np.int64, count=len(messages))
            self._offset = int(offsets[-1]) + 1
            keep = np.ones(len(messages), dtype=bool)
            if plan.end is not None:
                keep &= offsets < plan.end
                self._offset = min(self._offset, plan.end)
            if plan.min_ts is not None or plan.max_ts is not None:
                times = np.fromiter((message.timestamp()[1] for message in messages), dtype=np.int64, count=len(messages))
                keep &= np.fromiter((plan.keeps(ts) for ts in times.tolist()), dtype=bool, count=len(messages))
            rows = np.flatnonzero(keep)
            if len(rows):
                kept = [messages[row] for row in rows.tolist()] if len(rows) < len(messages) else messages
                keys = [message.key() for message in kept] if self.source.record_keys else None
                stamps = np.fromiter((message.timestamp()[1] for message in kept), dtype=np.int64, count=len(kept)) \
                    if self.source.record_timestamps else None
                records.append(RecordBatch(plan.topic, plan.partition, offsets[rows],
                                           [message.value() or b"" for message in kept], keys, stamps))
            self.lag_seconds.set(max(0.0, time.time() - messages[-1].timestamp()[1] / 1000))
        self.idle = not messages
        self._update_lag()
        self.source.on_advance(self._offset - before)
        return records

    def _until_eof(self, messages: list, errors: list) -> list:
        """The messages before the partition's end-of-file marker (after which the partition ends); any other
        error stops the run, as bytewax's reader does with ``raise_on_errors``."""
        for index, error in enumerate(errors):
            if error is None:
                continue
            if error.code() == KafkaError._PARTITION_EOF:
                self._eof = True
                return messages[:index]
            raise RuntimeError(f"error consuming from Kafka topic {self.plan.topic!r}: {error}")
        return messages

    def _update_lag(self) -> None:
        if self.high_watermark is not None:
            lag = max(0, self.high_watermark - self._offset)
            self.lag_messages.set(lag)
            if lag == 0:
                self.lag_seconds.set(0.0)

    def next_awake(self) -> datetime | None:
        return datetime.now(timezone.utc) + IDLE_WAIT if self.idle else None

    def _process_stats(self, json_stats: str) -> None:
        stats = json.loads(json_stats)["topics"][self.plan.topic]["partitions"][str(self.plan.partition)]
        if stats["hi_offset"] >= 0:
            self.high_watermark = max(stats["hi_offset"], self.plan.end or 0)
            self._update_lag()

    def snapshot(self) -> int:
        """The resume position; it is also committed to the group, for lag tools (while a broker is unreachable, at
        the first snapshot after it is back: a commit sent meanwhile would only wait out its timeout)."""
        if BROKERS.up():
            self._commit(asynchronous=True)
        return self._offset

    def close(self) -> None:
        if not FAILED.is_set():  # after a failure the read position is ahead of what was written: keep the last commit
            try:
                self._commit(asynchronous=False)
            except KafkaException as error:
                _log_commit_failure(error, [])
        super().close()

    def _commit(self, asynchronous: bool) -> None:
        if self.source.group_id and self._offset != self.committed:
            position = TopicPartition(self.plan.topic, self.plan.partition, self._offset)
            self._consumer.commit(offsets=[position], asynchronous=asynchronous)
            self.committed = self._offset


def _log_commit_failure(error: Any, partitions: list[TopicPartition]) -> None:
    if error is not None:
        log.warning("offset commit failed (%s); lag tools show the previous position until the next snapshot", error)


class KafkaRecordSource(FixedPartitionedSource[RecordBatch, int]):
    """Kafka partitions as Bytewax partitions, each following its :class:`PartitionPlan`.

    ``on_advance(n)`` is told how many offsets each read moved past (records outside the time window
    included), which drives replay progress.
    """

    def __init__(self, plans: list[PartitionPlan], config: dict[str, Any], *, metrics: Metrics,
                 group_id: str = "", batch_size: int = 1000, stop: threading.Event,
                 on_advance: Callable[[int], None] = lambda n: None, record_keys: bool = False,
                 record_timestamps: bool = False) -> None:
        self.plans = {plan.name: plan for plan in plans}
        self.record_keys = record_keys  # the schema reads the records' keys (kafka:key)...
        self.record_timestamps = record_timestamps  # ...or their timestamps (kafka:timestamp)
        self.config = config
        self.metrics = metrics
        self.group_id = group_id
        self.batch_size = batch_size
        self.stop = stop
        self.on_advance = on_advance

    def list_parts(self) -> list[str]:
        return list(self.plans)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _PlannedPartition:
        return _PlannedPartition(self, step_id, self.plans[for_part], resume_state)
