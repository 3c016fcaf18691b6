"""The embedded demo stream: realistic synthetic service metrics with injected, labelled anomalies.

Every entity (``node-000`` ...) reports four fields once per tick: ``cpu``, ``latency_ms``,
``requests`` and ``error_rate``, each a baseline with a daily sine and Gaussian noise, with entity-
specific levels, amplitudes, phases and noise; and ``ecg``, one sample of a heartbeat-like waveform with
abnormal beats (:mod:`pipeline.demo.heartbeat`, drawn from its own random stream; its ground truth is
:attr:`SyntheticStream.heartbeat`). Injected anomalies (magnitudes graded in units of the field's noise):

* ``spike``: one event of one field jumps by 6 to 14 standard deviations;
* ``level_shift``: from its onset one field stays 5 to 10 standard deviations higher;
* ``drift``: one field ramps up by 8 to 12 standard deviations over four hours, then stays.

Each incident also has a ``grade`` of 1, 2 or 3: the third of its kind's magnitude range it falls in, the
ordinal severity that severity alignment (Kendall tau-b, C-index) is measured against.
``incident_rate`` scales how often incidents happen (0 gives a stream with no anomalies at all).
Events inside an incident carry ``label`` (the incident kind), and :attr:`SyntheticStream.incidents`
is the ground truth. A share ``bad_rate`` of non-anomalous events is replaced by malformed payloads
of several kinds. Everything derives from ``seed``: the same arguments give the same bytes.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import msgspec
import numpy as np

from operators.event import format_ts, parse_ts_ms
from pipeline.demo.applicants import DESK, ApplicantStream
from pipeline.demo.heartbeat import HeartbeatSignal

FIELDS = ("cpu", "latency_ms", "requests", "error_rate")
KINDS = ("spike", "level_shift", "drift")
DAY_SECONDS = 86_400.0
WARMUP_TICKS = 200          # no anomaly before every detector is warm
RAMP_SECONDS = 4 * 3600.0   # duration of a gradual drift
# How long after an onset an alert still counts as detecting the incident.
GRACE_TICKS = {"spike": 3, "level_shift": 120, "drift": 120}
# Expected incidents per entity per tick.
RATES = {"spike": 1 / 700, "level_shift": 1 / 2500, "drift": 1 / 3000}
MAGNITUDES = {"spike": (6.0, 14.0), "level_shift": (5.0, 10.0), "drift": (8.0, 12.0)}
CORRUPTIONS = ("truncated", "missing_key", "bad_ts", "non_finite", "bool_field", "not_object", "bad_utf8", "oversized")


class SyntheticRecord(NamedTuple):
    offset: int
    key: str
    ts_ms: int
    payload: bytes  # possibly corrupted on purpose


@dataclass(frozen=True)
class Incident:
    key: str
    kind: str
    field: str
    magnitude: float   # in standard deviations of the field's noise
    grade: int         # 1 (mildest third of the kind's magnitude range) to 3 (strongest third)
    start_ms: int      # event time of the onset
    end_ms: int        # last event time at which an alert still counts as a detection


def grade(kind: str, magnitude: float) -> int:
    """Which third of the kind's magnitude range ``magnitude`` lies in: 1, 2 or 3.

    >>> [grade("spike", m) for m in (6.0, 9.0, 13.9)]
    [1, 2, 3]
    """
    low, high = MAGNITUDES[kind]
    return min(3, 1 + int(3 * (magnitude - low) / (high - low)))


class _Entities:
    """Per-entity baselines, amplitudes, phases and noise levels, one row per entity."""

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self.base = np.column_stack(
            [rng.uniform(20, 60, n), rng.uniform(50, 200, n), rng.uniform(200, 1000, n), rng.uniform(1, 3, n)]
        )
        self.amplitude = self.base * rng.uniform(0.1, 0.3, (n, len(FIELDS)))
        self.noise = self.base * rng.uniform(0.02, 0.05, (n, len(FIELDS)))
        self.phase = rng.uniform(0, 1, (n, 1))


class SyntheticStream:
    def __init__(
        self,
        *,
        events: int,
        entities: int = 50,
        seed: int = 7,
        bad_rate: float = 0.0,
        incident_rate: float = 1.0,
        start: str = "2026-01-01T00:00:00Z",
        interval_seconds: float = 60.0,
        max_event_bytes: int = 65536,
        applications_per_tick: float = 0.0,
    ) -> None:
        self.events = events
        self.n_entities = entities
        self.seed = seed
        self.bad_rate = bad_rate
        self.incident_rate = incident_rate
        self.interval_ms = int(round(interval_seconds * 1000))
        self.start_ms = parse_ts_ms(start)
        self.max_event_bytes = max_event_bytes
        self.keys = [f"node-{i:03d}" for i in range(entities)]
        self.ticks = -(-events // entities)
        rng = np.random.default_rng(seed)
        self.profile = _Entities(rng, entities)
        self.incidents, self._effects = self._schedule(rng)
        self._noise_seed = int(rng.integers(2**63))
        self.corrupt_at = self._corruptions(rng)
        self.heartbeat = HeartbeatSignal(entities=entities, samples=self.ticks, seed=seed)
        self.applicants = ApplicantStream(applications=int(round(applications_per_tick * self.ticks)),
                                          start_ms=self.start_ms, span_ms=self.ticks * self.interval_ms, seed=seed)
        # Decision-stream events go out after the service metrics of the tick they fall in.
        encoder = msgspec.json.Encoder()
        self._decisions: dict[int, list[tuple[int, bytes]]] = {}
        for ts, event in self.applicants.events():
            tick = (ts - self.start_ms) // self.interval_ms
            if tick < self.ticks:
                self._decisions.setdefault(tick, []).append((ts, encoder.encode(event)))
        per_tick = np.bincount(list(self._decisions), weights=[len(v) for v in self._decisions.values()],
                               minlength=self.ticks + 1) if self._decisions else np.zeros(self.ticks + 1)
        self._decisions_before = np.r_[0, np.cumsum(per_tick)].astype(np.int64)  # decision events before each tick
        self.records = events + int(self._decisions_before[self.ticks])  # everything on the wire

    # ---- schedule ----

    def _schedule(self, rng: np.random.Generator) -> tuple[list[Incident], list[tuple]]:
        incidents, effects = [], []
        ramp_ticks = max(1, int(RAMP_SECONDS * 1000 / self.interval_ms))
        for entity, key in enumerate(self.keys):
            for kind in KINDS:
                length = ramp_ticks if kind == "drift" else 0
                # Onsets leave room for the whole incident window before the stream ends.
                usable = self.ticks - WARMUP_TICKS - length - GRACE_TICKS[kind]
                count = rng.poisson(RATES[kind] * self.incident_rate * usable) if usable > 0 else 0
                for _ in range(count):
                    onset = int(rng.integers(WARMUP_TICKS, WARMUP_TICKS + usable))
                    field = int(rng.integers(len(FIELDS)))
                    magnitude = float(rng.uniform(*MAGNITUDES[kind]))
                    end_tick = onset + length + GRACE_TICKS[kind]
                    incidents.append(
                        Incident(key, kind, FIELDS[field], round(magnitude, 3), grade(kind, magnitude),
                                 self._ts(onset, entity), self._ts(end_tick, entity))
                    )
                    effects.append((entity, field, kind, onset, length, magnitude, end_tick))
        incidents.sort(key=lambda i: (i.start_ms, i.key))
        return incidents, effects

    def _corruptions(self, rng: np.random.Generator) -> dict[int, str]:
        n_bad = int(round(self.bad_rate * self.events))
        if n_bad == 0:
            return {}
        labelled = np.zeros(self.events, dtype=bool)
        for entity, _field, _kind, onset, _length, _mag, end_tick in self._effects:
            ticks = np.arange(onset, min(end_tick, self.ticks - 1) + 1)
            positions = ticks * self.n_entities + entity
            labelled[positions[positions < self.events]] = True
        candidates = np.flatnonzero(~labelled)
        chosen = np.sort(rng.choice(candidates, size=min(n_bad, len(candidates)), replace=False))
        # Oversized payloads are rare: each costs max_event_bytes in the dead-letter file.
        weights = np.array([1.0] * (len(CORRUPTIONS) - 1) + [0.1])
        kinds = rng.choice(len(CORRUPTIONS), size=len(chosen), p=weights / weights.sum())
        return {int(pos): CORRUPTIONS[k] for pos, k in zip(chosen, kinds)}

    def _ts(self, tick: int, entity: int) -> int:
        # Entities report at staggered seconds within a tick, like real agents.
        return self.start_ms + tick * self.interval_ms + (entity * 997) % self.interval_ms

    # ---- values ----

    def _values(self, first_tick: int, last_tick: int, noise_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Values (ticks, entities, fields) and labels (ticks, entities; index into KINDS + 1, 0 = normal)."""
        ticks = np.arange(first_tick, last_tick)
        p = self.profile
        seconds = (ticks[:, None] * self.interval_ms) / 1000.0
        season = np.sin(2 * np.pi * (seconds / DAY_SECONDS + p.phase.T))          # (ticks, entities)
        values = p.base[None] + p.amplitude[None] * season[:, :, None]
        values = values + p.noise[None] * noise_rng.standard_normal(values.shape)
        labels = np.zeros(values.shape[:2], dtype=np.int8)
        for entity, field, kind, onset, length, magnitude, end_tick in self._effects:
            size = magnitude * p.noise[entity, field]
            if kind == "spike":
                mask = ticks == onset
                values[mask, entity, field] += size
            elif kind == "level_shift":
                values[ticks >= onset, entity, field] += size
            else:
                progress = np.clip((ticks - onset) / length, 0.0, 1.0)
                values[:, entity, field] += size * progress * (ticks >= onset)
            labels[(ticks >= onset) & (ticks <= end_tick), entity] = KINDS.index(kind) + 1
        return values, labels

    def payloads(self, start: int = 0, chunk_ticks: int = 512) -> Iterator[SyntheticRecord]:
        """Every record from offset ``start`` on, as it goes on the wire: each tick's service metrics, then the decision
        stream's events of that tick."""
        noise_rng = np.random.default_rng(self._noise_seed)
        encoder = msgspec.json.Encoder()
        for first in range(0, self.ticks, chunk_ticks):
            last = min(first + chunk_ticks, self.ticks)
            values, labels = self._values(first, last, noise_rng)   # always drawn: keeps the noise sequence fixed
            if min(last * self.n_entities, self.events) + self._decisions_before[last] <= start:
                continue
            rounded = np.round(values, 4)
            ecg = np.round(self.heartbeat.values[first:last], 4)
            for tick in range(first, last):
                offset = min(tick * self.n_entities, self.events) + int(self._decisions_before[tick])
                for entity in range(min(self.n_entities, self.events - tick * self.n_entities)):
                    if offset >= start:
                        yield self._metric_record(offset, tick, entity, rounded[tick - first, entity],
                                                  float(ecg[tick - first, entity]), labels[tick - first, entity], encoder)
                    offset += 1
                for ts, payload in self._decisions.get(tick, ()):
                    if offset >= start:
                        yield SyntheticRecord(offset, DESK, ts, payload)
                    offset += 1

    def _metric_record(self, offset: int, tick: int, entity: int, values: np.ndarray, ecg: float, label: int,
                       encoder: msgspec.json.Encoder) -> SyntheticRecord:
        event = {
            "key": self.keys[entity],
            # Half of the entities send RFC 3339 strings, half epoch milliseconds.
            "ts": format_ts(self._ts(tick, entity)) if entity % 2 else self._ts(tick, entity),
            "fields": {**dict(zip(FIELDS, values.tolist())), "ecg": ecg},
        }
        if label:
            event["label"] = KINDS[label - 1]
        payload = encoder.encode(event)
        corruption = self.corrupt_at.get(tick * self.n_entities + entity)
        if corruption is not None:
            payload = self._corrupt(payload, corruption, event)
        return SyntheticRecord(offset, self.keys[entity], self._ts(tick, entity), payload)

    def _corrupt(self, payload: bytes, kind: str, event: dict) -> bytes:
        if kind == "truncated":
            return payload[: len(payload) // 2]
        if kind == "missing_key":
            return msgspec.json.encode({k: v for k, v in event.items() if k != "key"})
        if kind == "bad_ts":
            return msgspec.json.encode({**event, "ts": "yesterday at noon"})
        if kind == "non_finite":
            return payload.replace(b'"cpu":', b'"cpu":1e999,"cpu_raw":', 1)
        if kind == "bool_field":
            return msgspec.json.encode({**event, "fields": {**event["fields"], "healthy": True}})
        if kind == "not_object":
            return msgspec.json.encode([event["key"], event["ts"]])
        if kind == "bad_utf8":
            return b"\xff\xfe" + payload
        return msgspec.json.encode({**event, "padding": "x" * self.max_event_bytes})


# ---- evaluation against the ground truth ----


@dataclass
class Evaluation:
    incidents: dict[str, int]
    detected: dict[str, int]
    alerts: dict[str, int]           # per operator
    true_alerts: dict[str, int]      # per operator, inside some incident window of the same entity

    def recall(self, kinds: tuple[str, ...] = KINDS) -> float:
        total = sum(self.incidents.get(k, 0) for k in kinds)
        return sum(self.detected.get(k, 0) for k in kinds) / total if total else float("nan")

    def precision(self, operator: str | None = None) -> float:
        names = [operator] if operator else list(self.alerts)
        total = sum(self.alerts.get(n, 0) for n in names)
        return sum(self.true_alerts.get(n, 0) for n in names) / total if total else float("nan")


def evaluate(incidents: list[Incident], alerts: list[tuple[str, int, str]]) -> Evaluation:
    """Alerts are (key, event-time ms, operator). An incident is detected when any alert of its
    entity falls inside [onset, end]; an alert is true when it falls inside any incident of its entity."""
    windows: dict[str, list[Incident]] = {}
    for incident in incidents:
        windows.setdefault(incident.key, []).append(incident)
    found: set[int] = set()
    per_op: dict[str, int] = {}
    true_per_op: dict[str, int] = {}
    index = {id(incident): n for n, incident in enumerate(incidents)}
    for key, ts_ms, operator in alerts:
        per_op[operator] = per_op.get(operator, 0) + 1
        hits = [i for i in windows.get(key, ()) if i.start_ms <= ts_ms <= i.end_ms]
        if hits:
            true_per_op[operator] = true_per_op.get(operator, 0) + 1
            found.update(index[id(i)] for i in hits)
    counts = {kind: sum(1 for i in incidents if i.kind == kind) for kind in KINDS}
    detected = {kind: sum(1 for n in found if incidents[n].kind == kind) for kind in KINDS}
    return Evaluation(counts, detected, per_op, true_per_op)


@dataclass
class BeatEvaluation:
    """A waveform operator's alerts against the abnormal beats: a beat is detected when an alert of its entity comes
    within ``2 * step`` samples after its peak (the step that holds it, or the next); an alert is true when such a
    beat precedes it."""

    abnormal_beats: int
    detected: int
    alerts: int
    true_alerts: int

    @property
    def recall(self) -> float:
        return self.detected / self.abnormal_beats if self.abnormal_beats else float("nan")

    @property
    def precision(self) -> float:
        return self.true_alerts / self.alerts if self.alerts else float("nan")


def evaluate_beats(stream: SyntheticStream, alerts: list[tuple[str, int]], step: int) -> BeatEvaluation:
    """Alerts are (key, event-time ms); only beats whose event was sent count."""
    entity_of = {key: i for i, key in enumerate(stream.keys)}
    sent_ticks = -(-stream.events // stream.n_entities)
    beats = {key: np.array([p for p in stream.heartbeat.abnormal[i] if p < sent_ticks
                            and p * stream.n_entities + i < stream.events], dtype=np.int64)
             for key, i in entity_of.items()}
    found: set[tuple[str, int]] = set()
    true_alerts = 0
    for key, ts_ms in alerts:
        entity = entity_of[key]
        tick = round((ts_ms - stream._ts(0, entity)) / stream.interval_ms)
        peaks = beats[key][(beats[key] <= tick) & (beats[key] > tick - 2 * step)]
        true_alerts += bool(len(peaks))
        found.update((key, int(p)) for p in peaks)
    return BeatEvaluation(sum(len(b) for b in beats.values()), len(found), len(alerts), true_alerts)
