"""``vigil init`` and ``vigil config check --sample``: a first config from a sample of the user's events, and what a
config makes of such a sample.

Both exist so that the first contact with one's own data is a working config and a plain report, not a run that
dead-letters everything or watches fields that are never there. :func:`infer` reads a sample's shape (the preset's
envelope; for flat JSON the entity key, the event time and its unit, the numeric fields) and says why it chose
each; :func:`render` writes the config; :func:`check_sample` decodes a sample with a config's schema exactly as a
run would (:func:`~pipeline.engine.schema.compile_schema` for the operators' inputs).
"""
from __future__ import annotations

import difflib
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from operators.batch import FILE_PARTITION
from operators.event import MS_PER_UNIT, format_ts, parse_ts_ms, plausible_unit
from operators.registry import OperatorChain
from pipeline.config import KAFKA_KEY, KAFKA_TIMESTAMP, PRESET_DEFAULTS, Config
from pipeline.engine.decode import DeadLetter, RecordBatch
from pipeline.engine.fields import Leaf, leaf_paths, sample_fields
from pipeline.engine.schema import MAP_PATH, SAMPLE_NAME, SAMPLE_VALUE, compile_schema

TIME_NAMES = ("ts", "time", "timestamp", "@timestamp", "date")
KEY_SHARE = 0.5  # an entity key has at most this share of the records as distinct values (more: ids, not entities)
# The top-level keys that make a record a preset's envelope (flat: none of them).
ENVELOPES = {
    "otlp": {"resourceMetrics"},
    "vigil": {"key", "ts", "fields"},
    "prometheus": {SAMPLE_NAME, "labels", SAMPLE_VALUE, "timestamp"},
    "telegraf": {"name", "tags", MAP_PATH, "timestamp"},
}
_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-|[0-9a-fA-F]{16,}$")  # UUIDs and long hex strings
PAYLOAD_CHARS = 200  # of a dead letter's payload in the check's report


@dataclass
class Sample:
    """Records read for inference: the JSON objects, how many payloads were not one, and, for a Kafka topic, its
    brokers and whether every record had a key (the entity key when no payload field names one)."""

    origin: str  # the file's absolute path, or the topic
    records: list[dict]
    skipped: int = 0
    servers: list[str] = field(default_factory=list)
    kafka_keys: bool = False


def _parse(payloads: Iterable[bytes]) -> tuple[list[dict], int]:
    records, skipped = [], 0
    for raw in payloads:
        try:
            value = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            value = None
        if isinstance(value, dict):
            records.append(value)
        else:
            skipped += 1
    return records, skipped


def _lines(path: Path, limit: int | None = None) -> tuple[list[int], list[bytes]]:
    """The non-blank lines of a JSON-lines file and their 1-based numbers, as the file source reads them."""
    if not path.is_file():
        raise FileNotFoundError(f"sample file not found: {path}")
    numbers, payloads = [], []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            payload = raw.rstrip(b"\r\n")
            if payload.strip():
                numbers.append(number)
                payloads.append(payload)
                if len(payloads) == limit:
                    break
    return numbers, payloads


def read_file_sample(path: str | Path, limit: int) -> Sample:
    """The first ``limit`` records of a JSON-lines file."""
    path = Path(path).resolve()
    return Sample(str(path), *_parse(_lines(path, limit)[1]))


def read_topic_sample(topic: str, servers: Sequence[str], limit: int, timeout: float) -> Sample:
    """The first ``limit`` records of every partition of ``topic`` together, from the beginning: fewer when every
    partition ends first, or when ``timeout`` seconds pass (a slow or empty topic does not hang the command)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    brokers = ",".join(servers)
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "vigil-init", "enable.auto.commit": False,
                         "enable.partition.eof": True, "log_level": 0})  # failures come back as errors, once
    payloads: list[bytes] = []
    keys: list[bytes | None] = []
    try:
        try:
            described = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        except KafkaException as error:
            raise ValueError(f"cannot read topic {topic!r} from {brokers}: {error.args[0].str()}") from None
        if described is None or described.error is not None or not described.partitions:
            raise ValueError(f"topic {topic!r} not found on {brokers}")
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in described.partitions])
        ended: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(payloads) < limit and len(ended) < len(described.partitions) and time.monotonic() < deadline:
            for message in consumer.consume(min(limit - len(payloads), 1000), timeout=0.2):
                if message.error() is None:
                    payloads.append(message.value() or b"")
                    keys.append(message.key())
                elif message.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(message.partition())
                else:
                    raise ValueError(f"reading topic {topic!r}: {message.error().str()}")
    finally:
        consumer.close()
    return Sample(topic, *_parse(payloads), servers=list(servers), kafka_keys=bool(keys) and None not in keys)


# ---- inference ----


def detect_preset(records: Sequence[dict]) -> tuple[str, str]:
    """The preset whose envelope most records have (more than half of them), else flat; and why."""
    counts = {preset: sum(keys <= record.keys() for record in records) for preset, keys in ENVELOPES.items()}
    preset, count = max(counts.items(), key=lambda item: item[1])
    if 2 * count > len(records):
        return preset, f"{count} of {len(records)} records have {', '.join(sorted(ENVELOPES[preset]))}"
    return "flat", "no vigil, prometheus, telegraf or otlp envelope: fields anywhere in a JSON object"


def _is_rfc3339(text: str) -> bool:
    try:
        parse_ts_ms(text)
    except ValueError:
        return False
    return True


def _time_unit(leaf: Leaf) -> str | None:
    """rfc3339 when every value is an RFC 3339 time, else the one epoch unit all values fall in, if any."""
    if leaf.strings and len(leaf.strings) == leaf.present:
        return "rfc3339" if all(map(_is_rfc3339, leaf.strings)) else None
    if leaf.numbers and len(leaf.numbers) == leaf.present:
        units = {plausible_unit(min(leaf.numbers)), plausible_unit(max(leaf.numbers))}
        return units.pop() if len(units) == 1 else None
    return None


def _span(leaf: Leaf, unit: str) -> str:
    """The dates the epoch numbers of ``leaf`` cover under ``unit``."""
    first, last = (format_ts(round(value * MS_PER_UNIT[unit]))[:10] for value in (min(leaf.numbers), max(leaf.numbers)))
    return first if first == last else f"{first}..{last}"


def _time(leaves: dict[str, Leaf], records: int) -> tuple[str, str, str]:
    """The event time's path and unit, and why: among the paths every record has with RFC 3339 times or epoch
    numbers, one named like a time first, then text (numbers in the epoch range can be a coincidence)."""
    found = []
    for order, (path, leaf) in enumerate(leaves.items()):
        unit = _time_unit(leaf) if leaf.present == records else None
        if unit:
            named = path.rsplit(".", 1)[-1].lower() in TIME_NAMES
            found.append((not named, unit != "rfc3339", order, path, unit))
    if not found:
        raise ValueError(f"no event time: no field that every record has holds RFC 3339 times or epoch numbers between "
                         f"2000 and 2100 (a time named {', '.join(TIME_NAMES)} is looked for first)")
    found.sort()
    unnamed, _, _, path, unit = found[0]
    why = [] if unnamed else ["named like a time"]
    why.append("every value is an RFC 3339 time" if unit == "rfc3339"
               else f"epoch numbers that fall in {_span(leaves[path], unit)} read as {unit}")
    if len(found) > 1:
        why.append(f"also possible: {', '.join(other[3] for other in found[1:])}")
    return path, unit, "; ".join(why)


def _key(leaves: dict[str, Leaf], records: int, time_path: str, kafka_keys: bool) -> tuple[list[str], str]:
    """The entity key and why: the text field, in every record, with the most distinct values that can still be
    entities (2 .. ``KEY_SHARE`` of the records; not times, ids or free text); one with a single value (one entity)
    when none has more; the Kafka records' keys when no payload field names an entity."""
    limit = max(1, int(records * KEY_SHARE))
    candidates, single, seen = [], [], []
    for path, leaf in leaves.items():
        if path == time_path or len(leaf.strings) < records:
            continue
        values = set(leaf.strings)
        seen.append(f"{path}: {len(values)}")
        if len(values) > limit or any(len(value.split()) > 1 for value in values) \
                or 2 * sum(bool(_ID.match(value)) for value in values) > len(values) or all(map(_is_rfc3339, values)):
            continue
        (candidates if len(values) > 1 else single).append((len(values), path))
    if candidates:
        distinct, path = max(candidates, key=lambda candidate: candidate[0])
        others = [other for _, other in sorted(candidates, key=lambda candidate: -candidate[0]) if other != path]
        return [path], f"{distinct} distinct values in {records} records" + (
            f"; also possible: {', '.join(others)}" if others else "")
    if single:
        return [single[0][1]], f"the same value in all {records} records: one entity"
    if kafka_keys:
        return [KAFKA_KEY], "the Kafka records' keys: no text field of the payload names an entity"
    raise ValueError(f"no entity key: no text field that every record has names entities (at most {limit} distinct "
                     f"values in {records} records; not times, ids or free text)"
                     + (f"; distinct values: {', '.join(seen)}" if seen else ""))


def _distinct(records: Sequence[dict], key: Sequence[str]) -> int:
    """How many entities ``key`` (paths, ``.*`` for a whole object) names in the records."""
    def part(record: dict, path: str) -> Any:
        value: Any = record
        for name in path.removesuffix(".*").split("."):
            value = value.get(name) if isinstance(value, dict) else None
        return json.dumps(value, sort_keys=True)

    return len({tuple(part(record, path) for path in key) for record in records})


@dataclass
class Inference:
    """What :func:`infer` found: the ``[source.schema]`` keys to write, the numeric fields the operators watch, the
    text fields left out, and one line per choice saying why."""

    schema: dict[str, Any]
    numeric: list[str]
    text: list[str]
    notes: list[str]


def infer(sample: Sample) -> Inference:
    """The schema and fields of the sample's records; ValueError when they name no entity, time or numeric field."""
    records = sample.records
    if not records:
        raise ValueError(f"{sample.origin}: no JSON objects to infer a schema from"
                         + (f" ({sample.skipped} records that are not JSON objects)" if sample.skipped else ""))
    preset, why = detect_preset(records)
    notes = [f"preset: {preset} ({why})"]
    if sample.skipped:
        notes.append(f"skipped: {sample.skipped} records that are not JSON objects")
    schema: dict[str, Any] = {"preset": preset}
    if preset == "flat":
        leaves = leaf_paths(records)
        time_path, unit, time_why = _time(leaves, len(records))
        key, key_why = _key(leaves, len(records), time_path, sample.kafka_keys)
        schema.update(key=key, time=time_path, time_unit=unit)
        notes += [f"key: {key[0]} ({key_why})", f"time: {time_path}, {unit} ({time_why})"]
        kinds = {path: leaf.kind for path, leaf in leaves.items() if leaf.kind and path != time_path and path not in key}
    else:
        kinds = sample_fields(preset, records)
        notes.append(_preset_key_note(preset, records))
        notes.append(_preset_time_note(preset, records, schema))
    numeric = [name for name, kind in kinds.items() if kind == "number"]
    text = [name for name, kind in kinds.items() if kind == "text"]
    if not numeric:
        raise ValueError(f"{sample.origin}: no numeric fields for the operators to watch"
                         + (f" (text fields: {', '.join(text)})" if text else ""))
    notes.append(f"fields: {', '.join(numeric)} (numbers: the outlier and drift operators watch them)")
    if text:
        notes.append(f"text fields: {', '.join(text)} (not configured; an ape operator reads text)")
    return Inference(schema, numeric, text, notes)


def _preset_key_note(preset: str, records: Sequence[dict]) -> str:
    key = PRESET_DEFAULTS[preset]["key"]
    if preset == "otlp":
        return f"key: {', '.join(key)} (the otlp preset's: each data point's attributes)"
    return f"key: {' + '.join(key)} (the {preset} preset's; {_distinct(records, key)} distinct in {len(records)} records)"


def _preset_time_note(preset: str, records: Sequence[dict], schema: dict[str, Any]) -> str:
    """The preset's time and unit; a unit the values show that differs from the preset's goes into ``schema``
    (Vigil's own format reads numbers as milliseconds whatever the unit, so it only gets a warning)."""
    path, unit = PRESET_DEFAULTS[preset]["time"], PRESET_DEFAULTS[preset]["time_unit"]
    if preset == "otlp":
        return f"time: each data point's {path}, {unit} (the otlp preset's)"
    leaf = Leaf()
    for record in records:
        leaf.add(record.get(path))
    found = _time_unit(leaf)
    if found in (None, "rfc3339", unit):  # RFC 3339 text is read as such under any unit
        return f"time: {path}, {found or unit} (the {preset} preset's)"
    if preset == "vigil":
        return (f"time: {path} (WARNING: the values look like epoch {found}, but Vigil's own format reads numbers as "
                "ms; write ms, or use preset flat with time_unit)")
    schema["time_unit"] = found
    return f"time: {path}, {found} (epoch numbers that fall in {_span(leaf, found)} read as {found}; the preset says {unit})"


# ---- the config ----


def _toml(value: Any) -> str:
    """A string or a list of strings as TOML (JSON's escapes are TOML's)."""
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return json.dumps(value, ensure_ascii=False)


def render(inference: Inference, sample: Sample) -> str:
    """A short commented config: the sample's source and schema, a z-score outlier and a trend-CUSUM drift operator
    on its numeric fields, and file sinks for alerts, dead letters and scores."""
    fields = _toml(inference.numeric)
    preset = inference.schema["preset"]
    defaults = PRESET_DEFAULTS[preset]
    if sample.servers:
        source = ['type = "kafka"', f"topics = {_toml([sample.origin])}"]
        stem = sample.origin
    else:
        source = ['type = "file"', f"path = {_toml(sample.origin)}"]
        stem = Path(sample.origin).stem
    lines = [
        f"# Written by `vigil init` from {sample.origin} ({len(sample.records)} records).",
        "# `vigil config example` documents every key, `vigil config params` the operators' parameters.",
        "",
        "[run]",
        f"run_dir = {_toml(f'runs/{stem}')}   # alerts, dead letters and scores go here",
        "",
        "[source]",
        *source,
        "",
        "[source.schema]",
        *(f"{name} = {_toml(value)}" for name, value in inference.schema.items()),
        *([] if preset == "flat" else [f"# the preset's key: {_toml(defaults['key'])}, time: {_toml(defaults['time'])} "
                                       f"({defaults['time_unit']}); set key, time or time_unit to change them"]),
        *([f"# text fields, for an ape operator: {', '.join(inference.text)}"] if inference.text else []),
        "",
        "[[operators]]",
        'name = "outlier"',
        'type = "baseline"   # long-memory reference per entity across fields, per-field patterns; calibrated alerts',
        f"fields = {fields}",
        "",
        "[[operators]]",
        'name = "drift"',
        "type = \"drift\"    # a lasting move of a field's level or trend, per entity and field",
        f"fields = {fields}",
        "[operators.params]",
        'detector = "trend_cusum"',
        "",
        "[sinks]   # file paths are relative to run_dir",
        'alerts = { type = "file", path = "alerts.jsonl" }',
        'dead_letters = { type = "file", path = "dead_letters.jsonl" }',
        'scores = { type = "file", path = "scores.jsonl" }   # every event with its scores, for vigil report',
    ]
    if sample.servers:
        lines += ["", "[kafka]", f"bootstrap_servers = {_toml(sample.servers)}"]
    return "\n".join(lines) + "\n"


# ---- checking a config against a sample ----


@dataclass
class SampleCheck:
    """What a config's schema makes of a sample: counts, the dead letters by reason (with the first of each), and
    a line for each field an operator reads that no decoded event holds."""

    records: int
    decoded: int
    ignored: int
    dead: dict[str, list[DeadLetter]]
    missing: list[str]

    @property
    def ok(self) -> bool:
        return not self.dead and not self.missing

    def lines(self) -> list[str]:
        dead = sum(map(len, self.dead.values()))
        out = [f"sample: {self.records} records: {self.decoded} events decoded, {dead} dead-lettered, {self.ignored} ignored "
               "(samples of metrics no operator reads)"]
        for reason, letters in self.dead.items():
            first = letters[0]
            payload = first.payload if len(first.payload) <= PAYLOAD_CHARS else first.payload[:PAYLOAD_CHARS] + "..."
            out += [f"dead-lettered {reason}: {len(letters)}, e.g. line {first.source.line}: {first.detail}",
                    f"    payload: {payload}"]
        return out + self.missing


def check_sample(config: Config, path: str | Path) -> SampleCheck:
    """Decode the JSON-lines file at ``path`` as a run of ``config`` would, and report what came out."""
    schema = config.source.schema.resolved()
    if KAFKA_KEY in schema.key or schema.time == KAFKA_TIMESTAMP:
        raise ValueError("the schema reads the Kafka records' keys or timestamps, which a JSON-lines sample does not have")
    path = Path(path)
    numbers, payloads = _lines(path)
    inputs = OperatorChain.build(config.operator_specs(), max_entities=1)
    decoder = compile_schema(config.source.schema, inputs.numeric_inputs, inputs.text_inputs)
    records = RecordBatch(str(path), FILE_PARTITION, np.array(numbers, dtype=np.int64), payloads)
    batch, dead, ignored = decoder.decode_batch(records, config.pipeline.max_event_bytes)
    by_reason: dict[str, list[DeadLetter]] = {}
    for letter in dead:
        by_reason.setdefault(letter.reason, []).append(letter)
    present = sample_fields(schema.preset, _parse(payloads)[0])
    missing = []
    wanted = [(name, "number") for name in inputs.numeric_inputs] + [(name, "text") for name in inputs.text_inputs]
    for name, kind in wanted:
        column = batch.numeric[name] if kind == "number" else batch.text_columns[name]
        if (np.isfinite(column).any() if kind == "number" else any(value is not None for value in column)):
            continue
        operators = ", ".join(op.name for op in config.operators if name in op.fields)
        if name in present:
            hint = f"the sample has it, but not as {'a number' if kind == 'number' else 'text'} in any decoded event"
        else:
            close = difflib.get_close_matches(name, list(present), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the sample's fields: {', '.join(list(present)[:20])}"
        missing.append(f"field {name!r} (read by {operators}) never occurs in the decoded events; {hint}")
    return SampleCheck(len(payloads), len(batch), ignored, by_reason, missing)
