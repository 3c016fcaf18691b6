"""Kafka connection settings and planning with kafka-python.

The hot path (consuming and producing) runs on librdkafka through bytewax's connector; this module
turns ``[kafka]`` into client settings for both libraries, waits for the brokers with back-off, and
plans which offsets each partition covers (start, end, time window) before a run starts.

Secrets (SASL and key passwords) are resolved through :mod:`pipeline.secrets` when the client settings
are built, as :class:`~pipeline.secrets.Secret` values whose ``repr`` is masked.

librdkafka's own log lines go through Python logging (``vigil.kafka.client``), deduplicated; broker outages
are logged as state changes by :data:`BROKERS` (unreachable, still unreachable at growing intervals, back).
"""
from __future__ import annotations

import itertools
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
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


class BrokerUnreachable(RuntimeError):
    """A bounded run or replay could not reach the brokers (or find its topics) in :data:`BOUNDED_ATTEMPTS` tries: it
    ends with one line rather than wait, as a tailing run does, for as long as they take to come."""


# About 30 s with the default back-off (0.5 s doubling) and kafka-python's 2 s per failed bootstrap.
BOUNDED_ATTEMPTS = 6


class DeliveryError(RuntimeError):
    """The broker did not take a record within librdkafka's ``message.timeout.ms`` (retries included; 5 minutes unless
    ``[kafka.producer]`` says otherwise): the run stops rather than drop it. Nothing written after the last snapshot
    counts as done, so a restart with the same recovery directory writes it again."""


class BrokerTLSError(ValueError):
    """A TLS handshake the client refused (e.g. certificate verify failed): retrying cannot fix it, so it ends the
    run as a configuration error (the CLI prints it as one line and exits 2)."""


@dataclass(frozen=True)
class KafkaSettings:
    """Client settings for librdkafka (hot path) and kafka-python (admin and planning)."""

    config: KafkaConfig
    attempts: int | None = None  # tries before :meth:`retry` gives up (BrokerUnreachable); None: until stopped

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
        BROKERS.configure(min(10.0, c.retry_max_seconds), c.retry_max_seconds)
        client_log = LibrdkafkaLog(c.ssl_ca_location)
        properties.update({"logger": client_log, "error_cb": client_log.error})
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
        A stop request (:data:`pipeline.engine.shutdown.STOP`) ends the wait, and so does the last of
        :attr:`attempts`, with :class:`BrokerUnreachable`.
        """
        from kafka.errors import KafkaError

        delay = self.config.retry_initial_seconds
        for number in itertools.count(1):
            try:
                return attempt()
            except (KafkaError, OSError, NotReady) as error:
                self.check_tls()
                if number == self.attempts:
                    raise BrokerUnreachable(
                        f"could not {what} at {self.describe()} in {number} attempts (last: {_reason(error)}); a bounded "
                        "run or replay gives up (check kafka.bootstrap_servers or --bootstrap-servers, and the topics)") from None
                log.warning("could not %s at %s (attempt %d: %s); retrying in %.1f s",
                            what, self.describe(), number, _reason(error), delay)
            if STOP.wait(delay):
                raise BrokerWaitStopped(f"stopped while trying to {what}")
            delay = min(delay * 2, self.config.retry_max_seconds)
        raise AssertionError("unreachable")  # itertools.count never ends

    def check_tls(self, timeout: float = 3.0) -> None:
        """With TLS on, try a handshake with each bootstrap server as the clients make it (same CA, client
        certificate and hostname check); raise :class:`BrokerTLSError` if one is refused. Unreachable servers pass."""
        c = self.config
        if not c.security_protocol.endswith("SSL"):
            return
        try:
            context = ssl.create_default_context(cafile=c.ssl_ca_location or None)
            if c.ssl_certificate_location:
                context.load_cert_chain(c.ssl_certificate_location, c.ssl_key_location or None, self._secrets()[1])
        except (OSError, ValueError):
            return  # unreadable files: the clients' own errors (and the config check) say so
        for server in c.bootstrap_servers:
            host, _, port = server.rpartition(":")
            host = host.strip("[]")
            try:
                with socket.create_connection((host, int(port)), timeout=timeout) as sock:
                    context.wrap_socket(sock, server_hostname=host).close()
            except ssl.SSLError as error:
                reason = (f"certificate verify failed: {error.verify_message}"
                          if isinstance(error, ssl.SSLCertVerificationError) else error.reason or str(error))
                raise BrokerTLSError(f"TLS handshake with {server} failed: {reason} ({_ca_note(c.ssl_ca_location)})") from None
            except (OSError, ValueError):
                continue  # not reachable (or not a host:port): the retry loop reports it


def _ca_note(ca_location: str) -> str:
    return f"ssl_ca_location={ca_location}" if ca_location else "ssl_ca_location unset: the system CA store"


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


# ---- librdkafka logs and broker outages ----


class BrokerHealth:
    """Broker outages seen by this process's librdkafka clients, logged as state changes.

    A failed connect reported by any client makes its broker (host:port) a suspect; a watcher thread then tries
    its own TCP connect every ``probe_every`` seconds. ``confirmations`` failed connects in a row mark the broker
    unreachable (one WARNING), while one that succeeds clears the suspect silently: a client's log reaches Python
    only when the client is next polled, so a failure from just before the broker came back can arrive after it
    is back, and one connect can fail on a loaded host. While the outage lasts the watcher logs "still
    unreachable" at growing intervals (``first``, doubling up to ``most`` seconds); the first connect that
    succeeds logs one INFO with the outage's length. :meth:`up` feeds the ``vigil_broker_up`` gauge. The clients'
    threads never wait on a probe.
    """

    def __init__(self, first: float = 10.0, most: float = 30.0, probe_every: float = 1.0, confirmations: int = 2) -> None:
        self.first, self.most, self.probe_every, self.confirmations = first, most, probe_every, confirmations
        self._suspects: dict[str, dict[str, Any]] = {}
        self._down: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def configure(self, first: float, most: float) -> None:
        self.first, self.most = first, max(first, most)

    def up(self) -> int:
        """1 unless a broker is unreachable now."""
        return 0 if self._down else 1

    def unreachable(self, broker: str, reason: str) -> None:
        """A client failed to connect to ``broker``: the watcher confirms it before an outage is logged."""
        with self._lock:
            if broker in self._down or broker in self._suspects:
                return
            self._suspects[broker] = {"since": time.monotonic(), "failures": 0, "reason": reason}
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._watch, name="vigil-broker-watch", daemon=True)
                self._watcher.start()

    def _watch(self) -> None:
        while True:
            with self._lock:
                if not self._suspects and not self._down:
                    self._watcher = None
                    return
                suspects, outages = dict(self._suspects), dict(self._down)
            for broker, suspect in suspects.items():
                self._confirm(broker, suspect)
            for broker, outage in outages.items():
                self._follow(broker, outage)
            time.sleep(self.probe_every)

    def _confirm(self, broker: str, suspect: dict[str, Any]) -> None:
        reachable = _reachable(broker)
        with self._lock:
            if reachable:
                del self._suspects[broker]
                return
            suspect["failures"] += 1
            if suspect["failures"] < self.confirmations:
                return
            del self._suspects[broker]
            since = suspect["since"]
            self._down[broker] = {"since": since, "next": since + self.first, "interval": self.first,
                                  "reason": suspect["reason"]}
        log.warning("broker %s unreachable (%s); the clients keep retrying", broker, suspect["reason"])

    def _follow(self, broker: str, outage: dict[str, Any]) -> None:
        now = time.monotonic()
        if _reachable(broker):
            with self._lock:
                del self._down[broker]
            log.info("broker %s is back after %.0f s", broker, now - outage["since"])
        elif now >= outage["next"]:
            outage["interval"] = min(outage["interval"] * 2, self.most)
            outage["next"] = now + outage["interval"]
            log.warning("broker %s still unreachable for %.0f s (%s)", broker, now - outage["since"], outage["reason"])


def _reachable(broker: str) -> bool:
    host, _, port = broker.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
        return True
    except (OSError, ValueError):
        return False


BROKERS = BrokerHealth()

# "[thrd:...]: ssl://127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)"
_LINE = re.compile(r"^(?:\[thrd:.*?\]: )?(?:(?:\w+://)?(?P<broker>\[[^\]]+\]:\d+|[^\s/:]+:\d+)/\S+: )?(?P<text>.*)$", re.S)
_AFTER = re.compile(r" \(after \d+ms[^)]*\)")
_CONNECT_FAILED = re.compile(r"(?:Connect to \S+ failed|Failed to resolve '[^']*'): (?P<why>[^(]*?)\s*(?:\(|$)"
                             r"|(?P<timeout>Connection setup timed out)")
# Connection churn that BrokerHealth reports as state changes; librdkafka's own lines about it go to DEBUG.
_CONNECTIVITY = re.compile(r"Connect to \S+ failed|Disconnected|brokers are down|Connection refused|Receive failed"
                           r"|Send failed|Failed to resolve|Broker transport failure|Connection setup timed out")


class LibrdkafkaLog(logging.Logger):
    """The ``logger`` (and, with :meth:`error`, the ``error_cb``) of Vigil's librdkafka clients.

    Lines come to Python logging as ``vigil.kafka.client``, a repeat of a line (any client, any broker thread)
    at most once a minute with its count; connection failures feed :data:`BROKERS` instead; a refused TLS
    handshake becomes one clear line.
    """

    REPEAT_SECONDS = 60.0
    _seen: dict[tuple, list] = {}
    _seen_lock = threading.Lock()

    def __init__(self, ca_location: str = "") -> None:
        super().__init__("vigil.kafka.client")
        self.ca_location = ca_location
        self.out = logging.getLogger("vigil.kafka.client")

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        """librdkafka calls ``log(level, "%s [%s] %s", facility, client name, text)``."""
        facility, text = (args[0], args[2]) if len(args) == 3 else ("", msg % args if args else str(msg))
        self.librdkafka(level, str(facility), str(text))

    def librdkafka(self, level: int, facility: str, text: str) -> None:
        match = _LINE.match(text)
        broker, text = match["broker"], _AFTER.sub("", match["text"]).strip()
        if "SSL handshake failed" in text or "certificate verify failed" in text:
            reason = "certificate verify failed" if "certificate verify failed" in text else text
            self._once(logging.ERROR, ("tls", broker, self.ca_location),
                       f"TLS handshake with {broker or 'a broker'} failed: {reason} ({_ca_note(self.ca_location)})")
            return
        failed = _CONNECT_FAILED.search(text)
        if broker and failed:
            BROKERS.unreachable(broker, failed["why"] or (failed["timeout"] or "connect failed").lower())
        if _CONNECTIVITY.search(text) and "SASL" not in text and "uthenticat" not in text:
            level = logging.DEBUG  # BROKERS reports it; authentication failures keep their level
        self._once(level, (facility, broker, text), f"librdkafka {facility}: {broker + ': ' if broker else ''}{text}")

    def error(self, error: Any, *args: Any, **kwargs: Any) -> None:
        """``error_cb``: client-wide errors (all brokers down, transport, authentication...)."""
        if not hasattr(error, "str"):  # called as Logger.error
            return super().error(error, *args, **kwargs)
        self.librdkafka(logging.ERROR if error.fatal() else logging.WARNING, error.name(), error.str())

    def _once(self, level: int, key: tuple, line: str) -> None:
        if not self.out.isEnabledFor(level):
            return
        now = time.monotonic()
        with self._seen_lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.REPEAT_SECONDS:
                seen[1] += 1
                return
            repeats = f" (repeated {seen[1]} times in the last {now - seen[0]:.0f} s)" if seen and seen[1] else ""
            self._seen[key] = [now, 0]
            if len(self._seen) > 1000:
                self._seen.clear()
        self.out.log(level, "%s%s", line, repeats)

    def __reduce__(self):
        return LibrdkafkaLog, (self.ca_location,)

    def __repr__(self) -> str:
        return "<LibrdkafkaLog vigil.kafka.client>"


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
    and, in bounded mode, the end offsets captured now. A bounded run waits :data:`BOUNDED_ATTEMPTS` tries for
    the brokers, a tailing one until they come."""
    if mode == "bounded":
        settings = replace(settings, attempts=BOUNDED_ATTEMPTS)
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
    because some brokers' time index is coarse (Tansu answers with the earliest offset). The brokers get
    :data:`BOUNDED_ATTEMPTS` tries, as a bounded run's.
    """
    settings = replace(settings, attempts=BOUNDED_ATTEMPTS)
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
