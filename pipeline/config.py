"""Configuration: one TOML file, overridden by ``VIGIL_...`` environment variables and CLI ``--set``.

Precedence is file < environment < command line. An environment variable names its key with double
underscores: ``VIGIL_METRICS__PORT=9200`` sets ``metrics.port``; ``--set metrics.port=9200`` does the
same from the command line. Values are read as TOML values (``9200``, ``true``, ``"text"``) and fall
back to plain strings.

Validation collects *every* error, each naming the offending key and, where it can, a hint: unknown
keys are errors (with the closest known key suggested), as are wrong types, out-of-range numbers,
references to operators that do not exist and unknown river detector parameters.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import json
import os
import re
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from operators.batch import SCORE_PREFIX
from operators.event import parse_ts_ms
from operators.params import ParamError, check_value, scalar_type_ok
from operators.registry import OPERATOR_TYPES, OperatorSpec, build_operator
from pipeline.secrets import SECRET_WORDS, SecretError, resolve_secret

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "VIGIL_"
PACKAGE_SCHEME = "vigil:"  # a path inside the installed pipeline package
DEFAULT_CONFIG = "default.toml"


def _range(low: float | None = None, high: float | None = None) -> dict[str, Any]:
    return {"min": low, "max": high}


@dataclass
class RunConfig:
    run_dir: str = "runs/latest"


KAFKA_KEY, KAFKA_TIMESTAMP = "kafka:key", "kafka:timestamp"  # the record's own key and time instead of paths
SCHEMA_PRESETS = ("vigil", "flat", "prometheus", "telegraf", "otlp")
TIME_UNITS = ("rfc3339", "s", "ms", "us", "ns")


@dataclass
class SchemaConfig:
    """How an event is read from a JSON payload (``[source.schema]``; README "Your own events").

    ``preset`` names the envelope: ``vigil`` (Vigil's own format, the default), ``flat`` (one JSON object per
    event, fields anywhere in it), ``prometheus`` (one sample per message, as Prometheus remote-write adapters
    write it), ``telegraf`` (Telegraf's JSON serializer) or ``otlp`` (OTLP/JSON metrics). Keys left empty take the
    preset's value (:meth:`resolved`). A path is dotted (``metrics.cpu.user``); ``labels.*`` as a key part stands
    for every entry of that object, sorted, as ``name=value`` pairs.
    """

    preset: Literal[SCHEMA_PRESETS] = "vigil"  # type: ignore[valid-type]
    key: list[str] = field(default_factory=list)  # paths whose values, joined, name the entity; or ["kafka:key"]
    key_separator: str = "/"
    time: str = ""  # path of the event time, or "kafka:timestamp"
    # rfc3339: strings such as 2026-12-01T10:00:00Z; s | ms | us | ns: epoch numbers in that unit. Strings are always
    # read as RFC 3339; a number under rfc3339 is dead-lettered (no guessing).
    time_unit: Literal[("",) + TIME_UNITS] = ""  # type: ignore[valid-type]
    # The event's fields (paths); empty: any field the operators name that matches include and not exclude.
    fields: list[str] = field(default_factory=list)
    include: list[str] = field(default_factory=lambda: ["*"])  # shell-style patterns (fnmatch)
    exclude: list[str] = field(default_factory=list)
    label: str = ""
    group: str = ""
    id: str = ""

    def resolved(self) -> SchemaConfig:
        """This schema with the preset's value for every key left empty."""
        preset = PRESET_DEFAULTS[self.preset]
        values = {name: getattr(self, name) or preset.get(name, getattr(self, name)) for name in PRESET_KEYS}
        if values["time"] == KAFKA_TIMESTAMP and not self.time_unit:
            values["time_unit"] = "ms"
        return dataclasses.replace(self, **values)

    def accepts(self, name: str) -> bool:
        """Whether ``name`` is one of the event's fields under ``fields`` / ``include`` / ``exclude``."""
        if self.fields:
            return name in self.fields
        return (any(fnmatch.fnmatchcase(name, p) for p in self.include)
                and not any(fnmatch.fnmatchcase(name, p) for p in self.exclude))


PRESET_KEYS = ("key", "time", "time_unit", "label", "group", "id")
# Where each preset finds the entity, the time and the optional attributes; a user's keys override them.
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "vigil": {"key": ["key"], "time": "ts", "time_unit": "ms", "label": "label", "group": "group", "id": "id"},
    "flat": {},
    "prometheus": {"key": ["labels.*"], "time": "timestamp", "time_unit": "rfc3339"},
    "telegraf": {"key": ["name", "tags.*"], "time": "timestamp", "time_unit": "s"},
    "otlp": {"key": ["attributes.*"], "time": "timeUnixNano", "time_unit": "ns"},
}


@dataclass
class SourceConfig:
    type: Literal["demo", "file", "kafka"] = "demo"
    path: str = ""
    topics: list[str] = field(default_factory=list)
    # tail: run until stopped; bounded: stop at the end offsets captured when the run starts.
    mode: Literal["tail", "bounded"] = "tail"
    # Where a partition starts when the recovery store has no position for it.
    start: Literal["committed", "beginning", "end"] = "committed"
    fetch_batch_size: int = field(default=1000, metadata=_range(1))
    schema: SchemaConfig = field(default_factory=SchemaConfig)


@dataclass
class DemoConfig:
    events: int = field(default=200_000, metadata=_range(1))
    entities: int = field(default=50, metadata=_range(1))
    bad_rate: float = field(default=0.002, metadata=_range(0.0, 1.0))
    incident_rate: float = field(default=1.0, metadata=_range(0.0))
    seed: int = 7
    rate: float = field(default=0.0, metadata=_range(0.0))
    start: str = "2026-01-01T00:00:00Z"
    interval_seconds: float = field(default=60.0, metadata=_range(0.001))
    applications_per_tick: float = field(default=2.0, metadata=_range(0.0))


@dataclass
class PipelineConfig:
    # key: shard = crc32(key) % shards, an entity's state is wherever its shard is. partition: one shard per source
    # partition, run by the worker that reads it (no exchange between workers; needs a topic keyed by entity).
    shard_by: Literal["key", "partition"] = "key"
    shards: int = field(default=16, metadata=_range(1, 65536))
    batch_max_size: int = field(default=4096, metadata=_range(1))
    batch_max_wait_ms: int = field(default=50, metadata=_range(0))
    max_event_bytes: int = field(default=65536, metadata=_range(64))
    torch_threads: int = field(default=1, metadata=_range(1, 1024))
    # An operator that raises dead-letters the batch's events and the shard goes on; this many failed batches in a
    # row in one shard stop the run instead.
    max_operator_failures: int = field(default=10, metadata=_range(1))


@dataclass
class EntitiesConfig:
    """Bounds on per-entity state, per shard (see operators/entities.py): the least recently seen entity is
    evicted when a new one arrives at a full shard, and an entity is forgotten after ``ttl_seconds`` of event
    time without an event of it (0: never)."""

    max_per_shard: int = field(default=10_000, metadata=_range(1, 100_000_000))
    ttl_seconds: float = field(default=604_800.0, metadata=_range(0.0))


@dataclass
class OperatorConfig:
    name: str
    type: Literal[tuple(OPERATOR_TYPES)]  # type: ignore[valid-type]  # the registry's names
    fields: list[str]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SinkConfig:
    type: Literal["file", "stdout", "kafka", "none"] = "file"
    path: str = ""
    topic: str = ""


@dataclass
class AlertmanagerConfig:
    """Incidents posted to Alertmanager's v2 API (README "Operations"); an empty ``url`` leaves it off. Secrets are
    never config values: a bearer token comes from ``bearer_token_env`` or ``bearer_token_file``."""

    url: str = ""  # e.g. http://alertmanager:9093 (the API path /api/v2/alerts is added)
    # A link in each alert (annotation dashboard, and generatorURL): {entity}, {operator}, {fields} and {incident}
    # are replaced, URL-encoded; e.g. http://grafana:3000/d/vigil-series/vigil-series?var-entity={entity}
    dashboard_url: str = ""
    labels: dict[str, str] = field(default_factory=dict)  # added to every alert's labels (e.g. team = "sre")
    # A firing incident is posted again this often, so Alertmanager (whose resolve_timeout is 5 minutes by default)
    # keeps it firing while it is open.
    repost_seconds: float = field(default=60.0, metadata=_range(1.0))
    # A record Alertmanager did not take is retried with back-off for this long, then written to the dead-letter file.
    retry_seconds: float = field(default=300.0, metadata=_range(0.0))
    timeout_seconds: float = field(default=10.0, metadata=_range(0.1))
    dead_letter_path: str = "alertmanager_dead_letters.jsonl"  # in the run directory
    bearer_token_env: str = ""
    bearer_token_file: str = ""


@dataclass
class RemoteWriteConfig:
    """Per-series export to a Prometheus remote-write endpoint (Prometheus with --web.enable-remote-write-receiver,
    VictoriaMetrics, Mimir): per entity, each input value and each outlier operator's score and expected band, labelled
    by the parts of the entity key (README "Operations"). An empty ``url`` leaves it off."""

    url: str = ""  # e.g. http://prometheus:9090/api/v1/write
    # At most this many series are exported; over it, the entities least recently anomalous are dropped first.
    max_series: int = field(default=10_000, metadata=_range(1, 10_000_000))
    # How often the latest sample of each series is sent (like a scrape interval).
    interval_seconds: float = field(default=15.0, metadata=_range(0.05))
    labels: dict[str, str] = field(default_factory=dict)  # added to every series (e.g. job = "vigil")
    # A request the endpoint could not take is retried with back-off for this long, then its samples are dropped.
    retry_seconds: float = field(default=60.0, metadata=_range(0.0))
    timeout_seconds: float = field(default=10.0, metadata=_range(0.1))
    bearer_token_env: str = ""
    bearer_token_file: str = ""


@dataclass
class SinksConfig:
    alerts: SinkConfig = field(default_factory=lambda: SinkConfig(path="alerts.jsonl"))
    dead_letters: SinkConfig = field(default_factory=lambda: SinkConfig(path="dead_letters.jsonl"))
    # Every valid event with its operators' scores: for backtests and for auditing that nothing was lost.
    scores: SinkConfig = field(default_factory=lambda: SinkConfig(type="none", path="scores.jsonl"))
    # Alerts grouped per entity and operator into incidents that open, update and resolve ([incidents]). Off by
    # default: the two dataflow steps it adds cost about a fifth of the bench suite's Kafka throughput.
    incidents: SinkConfig = field(default_factory=lambda: SinkConfig(type="none", path="incidents.jsonl"))
    alertmanager: AlertmanagerConfig = field(default_factory=AlertmanagerConfig)


@dataclass
class IncidentsConfig:
    """An incident resolves once its shard's event time passes its last alert by ``quiet_seconds``."""

    quiet_seconds: float = field(default=900.0, metadata=_range(0.0))


@dataclass
class KafkaConfig:
    """Connection to the brokers. Secrets are never config values: name an env var or a file."""

    bootstrap_servers: list[str] = field(default_factory=lambda: ["127.0.0.1:9092"])
    client_id: str = "vigil"
    # Offsets are committed to this group after each snapshot, for lag tools; Vigil never joins it.
    group_id: str = "vigil"
    commit_offsets: bool = True
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = ""
    sasl_username: str = ""
    sasl_password_env: str = ""
    sasl_password_file: str = ""
    ssl_ca_location: str = ""
    ssl_certificate_location: str = ""
    ssl_key_location: str = ""
    ssl_key_password_env: str = ""
    ssl_key_password_file: str = ""
    retry_initial_seconds: float = field(default=0.5, metadata=_range(0.01))
    retry_max_seconds: float = field(default=30.0, metadata=_range(0.01))
    # Extra librdkafka properties (https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md).
    consumer: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecoveryConfig:
    """Bytewax recovery: state and source positions are snapshotted here; empty disables it."""

    directory: str = ""
    snapshot_interval_seconds: float = field(default=10.0, metadata=_range(0.01))
    backup_interval_seconds: float = field(default=0.0, metadata=_range(0.0))
    partitions: int = field(default=1, metadata=_range(1))


@dataclass
class MetricsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = field(default=9108, metadata=_range(0, 65535))


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    entities: EntitiesConfig = field(default_factory=EntitiesConfig)
    operators: list[OperatorConfig] = field(default_factory=list)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    incidents: IncidentsConfig = field(default_factory=IncidentsConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    remote_write: RemoteWriteConfig = field(default_factory=RemoteWriteConfig)

    def operator_specs(self) -> list[OperatorSpec]:
        issues: list[ConfigIssue] = []
        specs = [
            OperatorSpec(op.type, op.name, tuple(op.fields), _convert_params(op, f"operators[{i}].params", issues))
            for i, op in enumerate(self.operators)
        ]
        if issues:
            raise ConfigError(issues)
        return specs

    def sink_path(self, sink: SinkConfig) -> Path:
        """Relative sink paths live in the run directory."""
        return Path(self.run.run_dir) / sink.path


@dataclass(frozen=True)
class ConfigIssue:
    key: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        return f"{self.key}: {self.message}" + (f" ({self.hint})" if self.hint else "")


class ConfigError(ValueError):
    def __init__(self, issues: Sequence[ConfigIssue], origin: str = "config") -> None:
        self.issues = list(issues)
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"{origin}: {len(self.issues)} error(s)\n{lines}")


# ---- conversion of plain TOML data into the dataclasses above, collecting every issue ----

_MISSING = object()


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not _BARE_KEY.fullmatch(key):  # as TOML writes it: "" or "a.b" would not name the key
        key = json.dumps(key, ensure_ascii=False)
    return f"{path}.{key}" if path else key


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " | ".join(repr(choice) for choice in typing.get_args(hint))
    if origin in (list, dict):
        return f"{origin.__name__} of {_type_name(typing.get_args(hint)[-1])}"
    return getattr(hint, "__name__", str(hint))


def _convert(value: Any, hint: Any, path: str, issues: list[ConfigIssue], meta: Mapping[str, Any] = {}) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _convert_dataclass(value, hint, path, issues)
    if hint is Any:
        return value
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint_text = f"did you mean {close[0]!r}?" if close else f"one of {', '.join(map(repr, choices))}"
            issues.append(ConfigIssue(path, f"{value!r} is not allowed", hint_text))
            return _MISSING
        return value
    if origin is list:
        if not isinstance(value, list):
            issues.append(ConfigIssue(path, f"expected a list, got {type(value).__name__}", f"write {path} = [...]"))
            return _MISSING
        (item_hint,) = typing.get_args(hint)
        items = [_convert(item, item_hint, _join(path, i), issues) for i, item in enumerate(value)]
        return [item for item in items if item is not _MISSING]
    if origin is dict:
        if not isinstance(value, dict):
            issues.append(ConfigIssue(path, f"expected a table, got {type(value).__name__}"))
            return _MISSING
        _, item_hint = typing.get_args(hint)
        return {k: _convert(v, item_hint, _join(path, k), issues) for k, v in value.items()}
    ok = scalar_type_ok(value, hint)
    if ok is None:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported config type {hint!r} at {path}")
    if not ok:
        issues.append(ConfigIssue(path, f"expected {_type_name(hint)}, got {type(value).__name__} {value!r}"))
        return _MISSING
    problem = check_value(value, meta)
    if problem:
        issues.append(ConfigIssue(path, problem))
        return _MISSING
    return float(value) if hint is float else value


def _convert_dataclass(value: Any, cls: type, path: str, issues: list[ConfigIssue]) -> Any:
    if not isinstance(value, dict):
        issues.append(ConfigIssue(path or "(top level)", f"expected a table, got {type(value).__name__}"))
        return _MISSING
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
            issues.append(ConfigIssue(_join(path, key), "unknown key", hint))
    # A bad optional value is reported and replaced by its default, so that later checks still run
    # on the rest and the user sees every error at once; a bad required value drops the table.
    kwargs = {}
    for name, spec in known.items():
        required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        if name in value:
            converted = _convert(value[name], hints[name], _join(path, name), issues, spec.metadata)
            if converted is not _MISSING:
                kwargs[name] = converted
            elif required:
                return _MISSING
        elif required:
            issues.append(ConfigIssue(_join(path, name), "missing required key"))
            return _MISSING
    return cls(**kwargs)


def _convert_params(op: OperatorConfig, path: str, issues: list[ConfigIssue]) -> Any:
    """The operator's own ``Params`` dataclass, checked against its declared types and bounds."""
    return _convert_dataclass(op.params, OPERATOR_TYPES[op.type].Params, path, issues)


def _check_build(spec: OperatorSpec, path: str, issues: list[ConfigIssue]) -> None:
    """Build the operator as a run would, so errors that only its constructor can see (parameters that
    depend on each other or on the fields, an unavailable device) are found before the run."""
    try:
        build_operator(spec)
    except ParamError as error:
        issues.append(ConfigIssue(f"{path}.params.{error.key}", error.message))
    except ValueError as error:
        issues.append(ConfigIssue(path, str(error)))
    except MemoryError as error:  # sizes within each parameter's bounds can still multiply past memory
        issues.append(ConfigIssue(f"{path}.params", f"the operator needs more memory than there is: {error}"))
    except OSError as error:  # a file or folder it opens: dp_count's ledger where a file is
        issues.append(ConfigIssue(f"{path}.params", f"the operator cannot be built: {error}"))


def _check_semantics(config: Config, issues: list[ConfigIssue], paths: Sequence[str]) -> None:
    """Checks across keys; ``paths`` are where ``config.operators`` are in the file (see :func:`_operator_paths`)."""
    try:
        parse_ts_ms(config.demo.start)
    except ValueError as error:
        issues.append(ConfigIssue("demo.start", str(error), "e.g. 2026-01-01T00:00:00Z"))
    if config.source.type == "file" and not config.source.path:
        issues.append(ConfigIssue("source.path", "required when source.type = 'file'", "path of a JSON-lines file"))
    if config.source.type == "kafka" and not config.source.topics:
        issues.append(ConfigIssue("source.topics", "required when source.type = 'kafka'", 'e.g. topics = ["events"]'))
    for sink_name in ("alerts", "dead_letters", "scores"):
        sink = getattr(config.sinks, sink_name)
        if sink.type == "file" and not sink.path:
            issues.append(ConfigIssue(f"sinks.{sink_name}.path", "required when type = 'file'"))
        if sink.type == "kafka" and not sink.topic:
            issues.append(ConfigIssue(f"sinks.{sink_name}.topic", "required when type = 'kafka'"))
        if sink.type == "kafka" and sink.topic in config.source.topics:
            issues.append(ConfigIssue(f"sinks.{sink_name}.topic", f"{sink.topic!r} is also a source topic"))
    _check_kafka(config.kafka, issues)
    _check_schema(config, issues, paths)
    if not config.operators:
        issues.append(ConfigIssue("operators", "no operators configured", "add at least one [[operators]] table"))
    seen: dict[str, OperatorConfig] = {}
    for index, op in enumerate(config.operators):
        path = paths[index]
        if op.name in seen:
            issues.append(ConfigIssue(f"{path}.name", f"duplicate operator name {op.name!r}"))
        if not op.fields:
            issues.append(ConfigIssue(f"{path}.fields", "must name at least one field"))
        for position, name in enumerate(op.fields):
            if name.startswith(SCORE_PREFIX):
                published = [f"{SCORE_PREFIX}{o.name}{suffix}" for o in seen.values()
                             for suffix in OPERATOR_TYPES[o.type].publishes]
                if name not in published:
                    issues.append(
                        ConfigIssue(
                            f"{path}.fields[{position}]",
                            f"{name!r} is not a column an earlier operator publishes",
                            f"earlier columns: {', '.join(published) or 'none'}",
                        )
                    )
        found = len(issues)
        params = _convert_params(op, f"{path}.params", issues)
        if len(issues) == found and params is not _MISSING:
            _check_build(OperatorSpec(op.type, op.name, tuple(op.fields), params), path, issues)
        seen[op.name] = op


def _operator_paths(data: dict[str, Any]) -> list[str]:
    """Where each converted operator is in the file: an ``[[operators]]`` table that fails conversion is left out of
    ``config.operators``, so the index of a later one there is not its index in the file."""
    tables = data.get("operators")
    return [_join("operators", index) for index, table in enumerate(tables if isinstance(tables, list) else [])
            if _convert(table, OperatorConfig, "", []) is not _MISSING]


def _check_schema(config: Config, issues: list[ConfigIssue], paths: Sequence[str]) -> None:
    """The declared schema is complete for its preset, names record parts only a Kafka source has only with one,
    and holds every field an operator reads (with the closest declared field suggested)."""
    declared = config.source.schema
    schema = declared.resolved()
    where = "source.schema"
    if declared.preset == "flat":
        for name, example in (("key", 'key = ["host"]'), ("time", 'time = "ts"')):
            if not getattr(schema, name):
                issues.append(ConfigIssue(f"{where}.{name}", "required with preset 'flat'", f"e.g. {example}"))
        if schema.time and not schema.time_unit:
            issues.append(ConfigIssue(f"{where}.time_unit", f"required: the unit of {schema.time!r}",
                                      "rfc3339 for text such as 2026-12-01T10:00:00Z, else s, ms, us or ns"))
    uses_kafka = [name for name, value in (("key", schema.key), ("time", [schema.time]))
                  if KAFKA_KEY in value or KAFKA_TIMESTAMP in value]
    for name in uses_kafka:
        if config.source.type != "kafka":
            issues.append(ConfigIssue(f"{where}.{name}", "the Kafka record's key and timestamp exist only with "
                                      "source.type = 'kafka'", "name a path in the payload"))
    if KAFKA_KEY in schema.key and len(schema.key) > 1:
        issues.append(ConfigIssue(f"{where}.key", f"{KAFKA_KEY!r} cannot be joined with payload paths"))
    for index, part in enumerate(schema.key):
        if "*" in part and not (part == "*" or part.endswith(".*")) or part.count("*") > 1:
            issues.append(ConfigIssue(f"{where}.key[{index}]", f"{part!r}: '*' stands only for a whole object's "
                                      "entries, as the last part", "e.g. labels.*"))
    if not declared.key_separator:
        issues.append(ConfigIssue(f"{where}.key_separator", "must not be empty"))
    for index, op in enumerate(config.operators):
        for position, name in enumerate(op.fields):
            if name.startswith(SCORE_PREFIX) or schema.accepts(name):
                continue
            close = difflib.get_close_matches(name, schema.fields, n=1)
            hint = (f"did you mean {close[0]!r}?" if close else f"declared fields: {', '.join(schema.fields)}") \
                if schema.fields else f"include {schema.include}, exclude {schema.exclude}"
            issues.append(ConfigIssue(f"{paths[index]}.fields[{position}]",
                                      f"{name!r} is not a field of [{where}]", hint))


def _check_kafka(kafka: KafkaConfig, issues: list[ConfigIssue]) -> None:
    if kafka.sasl_mechanism and not kafka.security_protocol.startswith("SASL"):
        issues.append(ConfigIssue("kafka.security_protocol", f"is {kafka.security_protocol} but sasl_mechanism is set",
                                  "use SASL_SSL or SASL_PLAINTEXT"))
    if kafka.security_protocol.startswith("SASL") and not kafka.sasl_mechanism:
        issues.append(ConfigIssue("kafka.sasl_mechanism", f"required with security_protocol {kafka.security_protocol}",
                                  "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"))
    for secret in ("sasl_password", "ssl_key_password"):
        try:
            resolve_secret(getattr(kafka, f"{secret}_env"), getattr(kafka, f"{secret}_file"))
        except SecretError as error:
            issues.append(ConfigIssue(f"kafka.{secret}_{error.via}", str(error)))
        except ValueError as error:  # a file that is not UTF-8 text, a path with a NUL byte (not OSErrors)
            issues.append(ConfigIssue(f"kafka.{secret}_file", f"cannot read {getattr(kafka, f'{secret}_file')!r}: {error}"))
    if kafka.sasl_mechanism and not (kafka.sasl_password_env or kafka.sasl_password_file):
        issues.append(ConfigIssue("kafka.sasl_password_env", f"SASL {kafka.sasl_mechanism} needs a password",
                                  "name an env var (sasl_password_env) or a file (sasl_password_file)"))
    for role in ("consumer", "producer"):
        for key in getattr(kafka, role):
            if any(word in key.lower() for word in SECRET_WORDS):
                issues.append(ConfigIssue(f"kafka.{role}.{key}", "secrets may not be written in the config",
                                          "use sasl_password_env / sasl_password_file or the ssl_key_password_* keys"))


# ---- loading ----


def parse_value(text: str) -> Any:
    """A TOML value, or the text itself.

    >>> parse_value("9200"), parse_value("true"), parse_value("0.0.0.0"), parse_value('["a", "b"]')
    (9200, True, '0.0.0.0', ['a', 'b'])
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(data: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``a.b.c`` (or ``operators.0.params.alpha``) in nested data, creating tables as needed."""
    parts = dotted_key.split(".")
    node: Any = data
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def env_overrides(environ: Mapping[str, str]) -> list[tuple[str, Any]]:
    """``VIGIL_A__B=v`` becomes ``("a.b", v)``; variables without ``__`` are not config keys."""
    found = []
    for name, text in sorted(environ.items()):
        if name.startswith(ENV_PREFIX) and "__" in name:
            key = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            found.append((key, parse_value(text)))
    return found


# Keys naming a file or a folder: relative to the config file that names them (sink paths are relative to run_dir).
FILE_KEYS = ("run.run_dir", "source.path", "recovery.directory", "kafka.ssl_ca_location", "kafka.ssl_certificate_location",
             "kafka.ssl_key_location", "kafka.sasl_password_file", "kafka.ssl_key_password_file")


def _resolve_file_keys(data: dict[str, Any], base: Path) -> None:
    """Every path a config file names is relative to that file, so a config and what it names move together and a run
    reads the same files from any working directory; overrides from the environment or ``--set`` stay relative to
    the working directory, where they were typed."""
    for dotted in FILE_KEYS:
        table, name = dotted.split(".")
        section = data.get(table)
        value = section.get(name) if isinstance(section, dict) else None
        if isinstance(value, str) and value and not Path(value).is_absolute():
            section[name] = str(base / value)


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Operator parameters declared with ``unit="path"`` (model files) are relative to the config file that names
    them, as every path in it is (:func:`_resolve_file_keys`), and ``vigil:<path>`` names a file shipped inside the
    ``pipeline`` package (the demo's model); overrides from the environment or ``--set`` stay as given."""
    for table in data.get("operators", []) if isinstance(data.get("operators"), list) else []:
        params, kind = (table.get("params"), table.get("type")) if isinstance(table, dict) else (None, None)
        if not isinstance(params, dict) or not isinstance(kind, str) or kind not in OPERATOR_TYPES:  # a list: unhashable
            continue
        for spec in dataclasses.fields(OPERATOR_TYPES[kind].Params):
            value = params.get(spec.name)
            if spec.metadata.get("unit") != "path" or not isinstance(value, str) or not value:
                continue
            if value.startswith(PACKAGE_SCHEME):
                params[spec.name] = str(Path(str(resources.files("pipeline"))) / value[len(PACKAGE_SCHEME):])
            elif not Path(value).is_absolute():
                params[spec.name] = str(base / value)


def read_toml(path: str | Path | None) -> tuple[dict[str, Any], str]:
    if path is None:
        text = resources.files("pipeline").joinpath(DEFAULT_CONFIG).read_text()
        return tomllib.loads(text), "built-in default config"
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle), str(path)
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(str(path), "file not found")], str(path)) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([ConfigIssue(str(path), f"not valid TOML: {error}")], str(path)) from None


def _override(data: dict[str, Any], dotted_key: str, value: Any, origin: str, issues: list[ConfigIssue]) -> None:
    """Apply one override, or report that it addresses no key: a list index that is not one, or a key under a value
    that is not a table (``source.path.x`` where ``source.path`` is a string)."""
    try:
        apply_override(data, dotted_key, value)
    except (ValueError, IndexError, TypeError, AttributeError):
        issues.append(ConfigIssue(origin, "does not address a key in the config"))


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, override and validate; raises :class:`ConfigError` listing every problem."""
    data, origin = read_toml(path)
    _resolve_paths(data, Path(path).parent if path is not None else Path(str(resources.files("pipeline"))))
    if path is not None:  # the built-in config's run_dir stays in the working directory, not inside the package
        _resolve_file_keys(data, Path(path).absolute().parent)
    issues: list[ConfigIssue] = []
    for key, value in env_overrides(os.environ if environ is None else environ):
        _override(data, key, value, ENV_PREFIX + key.upper().replace(".", "__"), issues)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            issues.append(ConfigIssue(f"--set {item}", "expected KEY=VALUE", "for example --set metrics.port=9200"))
            continue
        _override(data, key.strip(), parse_value(text.strip()), f"--set {key}", issues)
    config = _convert_dataclass(data, Config, "", issues)
    if config is not _MISSING:
        _check_semantics(config, issues, _operator_paths(data))
    if issues:
        raise ConfigError(issues, origin)
    return config
