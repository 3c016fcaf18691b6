"""Kafka connection settings and planning with kafka-python.

The hot path (consuming and producing) runs on librdkafka through bytewax's connector; this module
turns ``[kafka]`` into client settings for both libraries, waits for the brokers with back-off, and
plans which offsets each partition covers (start, end, time window) before a run starts.

Secrets (SASL and key passwords) are resolved through :mod:`pipeline.secrets` when the client settings
are built, as :class:`~pipeline.secrets.Secret` values whose ``repr`` is masked.
"""
from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.engine.shutdown import STOP
from pipeline.secrets import Secret, resolve_secret

if TYPE_CHECKING:
    from kafka import KafkaConsumer

    from pipeline.config import KafkaConfig

log = logging.getLogger("vigil.kafka")

T = TypeVar("T")


class BrokerWaitStopped(RuntimeError):
    """Raised when a stop was requested while waiting for the brokers."""


@dataclass(frozen=True)
class KafkaSettings:
    """Client settings for librdkafka (hot path) and kafka-python (admin and planning)."""

    config: KafkaConfig

    @property
    def servers(self) -> str:
        return ",".join(self.config.bootstrap_servers)

    def _secrets(self) -> tuple[Secret | None, Secret | None]:
        c = self.config
        return (resolve_secret(c.sasl_password_env, c.sasl_password_file),
                resolve_secret(c.ssl_key_password_env, c.ssl_key_password_file))

    def librdkafka(self, role: str) -> dict[str, Any]:
        """Properties for a confluent-kafka client; ``role`` is "consumer" or "producer"."""
        c = self.config
        sasl_password, key_password = self._secrets()
        properties: dict[str, Any] = {
            "bootstrap.servers": self.servers,
            "client.id": c.client_id,
            "security.protocol": c.security_protocol.lower(),
        }
        optional = {
            "sasl.mechanism": c.sasl_mechanism,
            "sasl.username": c.sasl_username,
            "sasl.password": sasl_password,
            "ssl.ca.location": c.ssl_ca_location,
            "ssl.certificate.location": c.ssl_certificate_location,
            "ssl.key.location": c.ssl_key_location,
            "ssl.key.password": key_password,
        }
        properties.update({key: value for key, value in optional.items() if value})
        properties.update(getattr(c, role))
        return properties

    def kafka_python(self) -> dict[str, Any]:
        """Keyword arguments for a kafka-python client."""
        c = self.config
        sasl_password, key_password = self._secrets()
        optional = {
            "sasl_mechanism": c.sasl_mechanism,
            "sasl_plain_username": c.sasl_username,
            "sasl_plain_password": sasl_password,
            "ssl_cafile": c.ssl_ca_location,
            "ssl_certfile": c.ssl_certificate_location,
            "ssl_keyfile": c.ssl_key_location,
            "ssl_password": key_password,
        }
        return {
            "bootstrap_servers": list(c.bootstrap_servers),
            "client_id": c.client_id,
            # Give up on an unreachable bootstrap soon; :meth:`retry` owns the waiting and its log line.
            "bootstrap_timeout_ms": 2000,
            "security_protocol": c.security_protocol,
            **{key: value for key, value in optional.items() if value},
        }

    def describe(self) -> str:
        """For logs: where and how we connect, never with what secret."""
        c = self.config
        auth = f", SASL {c.sasl_mechanism} as {c.sasl_username!r}" if c.sasl_mechanism else ""
        return f"{self.servers} ({c.security_protocol}{auth})"

    def consumer(self, **extra: Any) -> KafkaConsumer:
        """A kafka-python consumer for planning and reading small topics, created once the brokers answer."""
        from kafka import KafkaConsumer

        return self.retry("connect to Kafka", lambda: KafkaConsumer(**self.kafka_python(), enable_auto_commit=False, **extra))

    def planning_consumer(self, **extra: Any) -> KafkaConsumer:
        """A consumer that reads records only to find where partitions end (:func:`end_offsets`), so it skips
        kafka-python's CRC check (pure Python, slow on a large last batch); librdkafka checks what the run reads."""
        return self.consumer(check_crcs=False, **extra)

    def admin(self):
        from kafka.admin import KafkaAdminClient

        return self.retry("connect to Kafka", lambda: KafkaAdminClient(**self.kafka_python()))

    def retry(self, what: str, attempt: Callable[[], T]) -> T:
        """Call ``attempt`` until it succeeds, backing off exponentially on connection errors.

        Each failure is one log line (no traceback): what failed, why, and when the next try is.
        A stop request (:data:`pipeline.engine.shutdown.STOP`) ends the wait.
        """
        from kafka.errors import KafkaError

        delay = self.config.retry_initial_seconds
        for number in itertools.count(1):
            try:
                return attempt()
            except (KafkaError, OSError, NotReady) as error:
                log.warning("could not %s at %s (attempt %d: %s); retrying in %.1f s",
                            what, self.describe(), number, _reason(error), delay)
            if STOP.wait(delay):
                raise BrokerWaitStopped(f"stopped while trying to {what}")
            delay = min(delay * 2, self.config.retry_max_seconds)
        raise AssertionError("unreachable")  # itertools.count never ends


class NotReady(Exception):
    """A retryable condition that is not a client error, e.g. a topic that does not exist yet."""


def _reason(error: Exception) -> str:
    name, text = type(error).__name__, str(error)
    return text if text.startswith(name) else f"{name}: {text}" if text else name


def quiet_client_logs(level: int) -> None:
    """kafka-python logs each failed connection attempt, some with a traceback; the retry line in
    :meth:`KafkaSettings.retry` says it once, so its logs show only when Vigil logs at DEBUG, and
    even then not its own DEBUG level, whose protocol traces hold raw request bytes (a SASL PLAIN
    request carries the password)."""
    logging.getLogger("kafka").setLevel(logging.INFO if level <= logging.DEBUG else logging.CRITICAL)


# ---- planning ----


@dataclass(frozen=True)
class PartitionPlan:
    """The slice of one partition a run covers: offsets [start, end) and record times [min_ts, max_ts)."""

    topic: str
    partition: int
    start: int
    end: int | None = None  # None: tail forever
    min_ts: int | None = None
    max_ts: int | None = None

    @property
    def name(self) -> str:
        return f"{self.partition}-{self.topic}"

    @property
    def size(self) -> int:
        return max(0, self.end - self.start) if self.end is not None else 0

    def keeps(self, ts_ms: int) -> bool:
        """Whether a record with this timestamp is inside the time window (-1: no timestamp, kept)."""
        if ts_ms < 0:
            return True
        return (self.min_ts is None or ts_ms >= self.min_ts) and (self.max_ts is None or ts_ms < self.max_ts)


def topic_partitions(consumer: KafkaConsumer, settings: KafkaSettings, topics: Iterable[str]) -> list:
    """Every partition of ``topics``, waiting (with back-off) for topics that do not exist yet."""
    from kafka import TopicPartition

    def lookup() -> list:
        found = []
        consumer.topics()  # refreshes metadata
        for topic in topics:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                raise NotReady(f"topic {topic!r} does not exist")
            found.extend(TopicPartition(topic, p) for p in sorted(partitions))
        return found

    return settings.retry("find the topics", lookup)


def end_offsets(consumer: KafkaConsumer, partitions: list) -> dict:
    """The offset after the last record of each partition, now.

    Brokers answer ListOffsets with the high watermark, but some (Tansu 0.6, used in tests) report
    the base offset of the last record batch plus one. Reading from ``watermark - 1`` returns that
    whole batch (a fetch never stops inside a batch, and never goes past the true end on Apache
    Kafka), so the last offset read gives the true end on both.
    """
    ends = dict(consumer.end_offsets(partitions))
    readable = [tp for tp, end in ends.items() if end > 0]
    if not readable:
        return ends
    consumer.assign(readable)
    for tp in readable:
        consumer.seek(tp, ends[tp] - 1)
    waiting = set(readable)  # one fetch per partition is enough: it returns that last batch whole
    for _ in range(10):
        fetched = consumer.poll(timeout_ms=500, max_records=1_000_000)
        if not fetched:
            break
        for tp, records in fetched.items():
            ends[tp] = max(ends[tp], records[-1].offset + 1)
            waiting.discard(tp)
        if not waiting:
            break
    consumer.assign([])
    return ends


def committed_offsets(consumer: KafkaConsumer, partitions: list) -> dict:
    """The group's committed offsets (None where nothing is committed); needs ``group_id`` set."""
    return {tp: consumer.committed(tp) for tp in partitions}


def plan_live(settings: KafkaSettings, topics: list[str], *, mode: str, start: str, group_id: str) -> list[PartitionPlan]:
    """Partitions of a live run: where each starts when the recovery store has no position for it,
    and, in bounded mode, the end offsets captured now."""
    consumer = settings.planning_consumer(group_id=group_id or None)
    try:
        partitions = topic_partitions(consumer, settings, topics)
        ends = end_offsets(consumer, partitions)
        beginnings = consumer.beginning_offsets(partitions)
        if start == "end":
            starts = ends
        elif start == "committed" and group_id:
            committed = committed_offsets(consumer, partitions)
            starts = {tp: beginnings[tp] if committed[tp] is None else committed[tp] for tp in partitions}
        else:
            starts = beginnings
        return [PartitionPlan(tp.topic, tp.partition, starts[tp], ends[tp] if mode == "bounded" else None)
                for tp in partitions]
    finally:
        consumer.close()


def plan_slice(settings: KafkaSettings, topics: list[str], *, from_ts: int | None = None,
               from_offsets: Mapping[int, int] | None = None, to_ts: int | None = None) -> list[PartitionPlan]:
    """A bounded slice for a replay: from the beginning, a time or given offsets, to a time or the end.

    Starting from a time seeks with offsets-for-times and then also drops records older than the time,
    because some brokers' time index is coarse (Tansu answers with the earliest offset).
    """
    consumer = settings.planning_consumer()
    try:
        partitions = topic_partitions(consumer, settings, topics)
        ends = end_offsets(consumer, partitions)
        starts = dict(consumer.beginning_offsets(partitions))
        if from_ts is not None:
            found = consumer.offsets_for_times({tp: from_ts for tp in partitions})
            starts = {tp: ends[tp] if found[tp] is None else found[tp].offset for tp in partitions}
        for tp in partitions:
            if from_offsets and tp.partition in from_offsets:
                starts[tp] = max(starts[tp], from_offsets[tp.partition])
        return [PartitionPlan(tp.topic, tp.partition, min(starts[tp], ends[tp]), ends[tp], from_ts, to_ts)
                for tp in partitions]
    finally:
        consumer.close()


def create_topics(settings: KafkaSettings, partitions: Mapping[str, int]) -> None:
    """Create topics that do not exist yet (demo and tests; production topics belong to their owners)."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = settings.admin()
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, count, 1) for name, count in partitions.items() if name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # created concurrently: fine
    finally:
        admin.close()


def read_topic(settings: KafkaSettings, topic: str) -> list:
    """Every record now in ``topic`` (kafka-python ``ConsumerRecord``s), in partition and offset order."""
    consumer = settings.consumer()
    try:
        partitions = topic_partitions(consumer, settings, [topic])
        ends = end_offsets(consumer, partitions)
        starts = consumer.beginning_offsets(partitions)
        records: dict[Any, list] = {tp: [] for tp in partitions}
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            fetched = consumer.poll(timeout_ms=1000)
            if not fetched:
                break  # the rest are transaction markers or were deleted meanwhile
            for tp, batch in fetched.items():
                records[tp].extend(r for r in batch if r.offset < ends[tp])
        return [record for tp in partitions for record in records[tp]]
    finally:
        consumer.close()
