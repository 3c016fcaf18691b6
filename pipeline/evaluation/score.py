"""``vigil score``: a CSV time series through a detector, one ``anomaly_score`` in [0, 1] per row, causally.

The rows become events of one entity (or one per ``--key`` value) and go, in file order and in batches, through the
same operator chain a live run uses (:class:`operators.registry.OperatorChain`). The default, ``baseline``
(:mod:`operators.baseline`), gives min(1, score / 10), its surprise −log₁₀ p scaled so that 1 is p = 10⁻¹⁰: it stays
high while an incident lasts, for ranking and plotting; as a *detection* score (``detection=True``, what ``vigil
evaluate nab`` thresholds) it gives its first-crossing ``.alert`` column instead. ``metric_stream``
(:mod:`operators.metric_stream`) scores in [0, 1] itself (a first-crossing score both ways); another scoring
operator's score becomes ``1 − p``, its calibrated p-value (:mod:`operators.alerting`); all are 0 while the detector
warms up. ``windowed_gaussian`` is NAB's
baseline (:mod:`pipeline.evaluation.nab`), kept to check the NAB harness end to end. A row's score depends on the rows
before it only. Irregular spacing and gaps are fine (the detectors are event-driven); duplicate timestamps and rows out
of time order (within a key: two keys may share a time) are scored in file order and reported; a value that is not a
number is reported with its line and scored 0 (the detector does not see it). Timestamps are ISO 8601 dates and times,
or epoch numbers in a unit the caller names: a number is never guessed to be seconds or milliseconds.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "s.csv"
>>> lines = (f"2024-01-01 00:{i // 60:02d}:{i % 60:02d},{i % 7}\\n" for i in range(900))
>>> _ = path.write_text("timestamp,value\\n" + "".join(lines))
>>> table = read_series(path, "timestamp", "value")
>>> scores = score_series(table, "zscore")
>>> len(scores), float(scores.min()) >= 0.0, float(scores.max()) <= 1.0, table.problems
(900, True, True, [])
"""
from __future__ import annotations

import csv
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from operators.alerting import AlertingParams
from operators.batch import ALERT_SUFFIX, P_VALUE_SUFFIX, Batch
from operators.event import YEAR_2000_MS, YEAR_2100_MS, epoch_number_ms, plausible_unit
from operators.registry import OperatorChain, OperatorSpec

BATCH = 4096
DETECTORS = ("baseline", "metric_stream", "zscore", "hst", "windowed_gaussian")
OWN_SCORE = ("metric_stream",)  # detectors whose score is already in [0, 1] and comparable across series
SURPRISE_SCALE = 10.0  # baseline's score is −log₁₀ p: 1 at p = 1e-10, as its .alert column saturates
TIMESTAMP_UNITS = ("rfc3339", "s", "ms", "us", "ns")
_FIRST_MS, _PAST_LAST_MS = -62_135_596_800_000, 253_402_300_800_000  # 0001-01-01 and 10000-01-01
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_YEAR = re.compile(r"\d{4}")  # a number, but also an ISO 8601 date


@dataclass
class SeriesTable:
    timestamps: list[str]
    ts_ms: np.ndarray
    values: np.ndarray  # NaN where the value is not a number
    keys: np.ndarray
    problems: list[str] = field(default_factory=list)
    keyed: bool = False  # the rows name their series (--key): the output says which


def read_series(path: str | Path, timestamp_column: str, value_column: str, key_column: str | None = None,
                timestamp_unit: str = "rfc3339") -> SeriesTable:
    """The rows of a CSV with a header; every problem is described with its line. ``timestamp_unit`` is rfc3339 (ISO
    8601 dates and times) or the unit of epoch numbers (s, ms, us, ns)."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None:
                raise ValueError(f"{path}: empty file (no header row)")
            missing = [c for c in (timestamp_column, value_column, key_column) if c and c not in reader.fieldnames]
            if missing:
                raise ValueError(f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(reader.fieldnames)})")
            rows = list(reader)
    except OSError as error:
        raise ValueError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason})") from None
    except csv.Error as error:
        raise ValueError(f"{path}: line {reader.line_num}: {error}") from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    stamps = [(row[timestamp_column] or "").strip() for row in rows]  # a short row has None for what it lacks
    if timestamp_unit == "rfc3339":
        ts_ms = _date_times(path, timestamp_column, stamps)
    else:
        ts_ms = _epoch_times(path, stamps, timestamp_unit)
    values = np.array([_number(row[value_column]) for row in rows])
    if np.isnan(values).all():
        raise ValueError(f"{path}: column {value_column!r} holds no numbers (line 2: {rows[0][value_column]!r})")
    problems = [f"line {i + 2}: value {rows[i][value_column]!r} is not a number; scored 0"
                for i in np.flatnonzero(np.isnan(values)).tolist()]
    keys = np.array([row[key_column] or "" for row in rows] if key_column else ["series"] * len(rows), dtype=object)
    problems += _order_problems(ts_ms, keys, keyed=key_column is not None)
    if timestamp_unit != "rfc3339" and not YEAR_2000_MS <= ts_ms[0] <= YEAR_2100_MS:
        fits = plausible_unit(_number(stamps[0]))
        problems.append(f"line 2: timestamp {stamps[0]} in {timestamp_unit} is {_utc(int(ts_ms[0]))}, outside 2000..2100"
                        + (f"; --timestamp-unit {fits} would put it there" if fits else ""))
    return SeriesTable(stamps, ts_ms, values, keys, problems, keyed=key_column is not None)


def _date_times(path: str | Path, column: str, stamps: list[str]) -> np.ndarray:
    """Epoch milliseconds of ISO 8601 dates and times; numbers get a hint at --timestamp-unit (numpy would read
    1700000000 as a year)."""
    if _NUMBER.fullmatch(stamps[0]) and not _YEAR.fullmatch(stamps[0]):
        fits = plausible_unit(_number(stamps[0]))
        hint = (f"pass --timestamp-unit {fits} (it reads {stamps[0]} as {_utc(_epoch_ms(stamps[0], fits))})" if fits
                else "pass --timestamp-unit with their unit: s, ms, us or ns")
        raise ValueError(f"{path}: column {column!r} holds numbers, not dates and times (line 2: {stamps[0]!r}); {hint}")
    with warnings.catch_warnings():  # numpy applies an offset (+01:00) but warns that it keeps none
        warnings.simplefilter("ignore", UserWarning)
        try:
            ts_ms = np.array([np.datetime64(stamp.replace("Z", ""), "ms") for stamp in stamps]).astype(np.int64)
            bad = np.flatnonzero((ts_ms < _FIRST_MS) | (ts_ms >= _PAST_LAST_MS))  # NaT (an empty cell), years past 9999
        except ValueError:
            bad = [next(i for i, s in enumerate(stamps) if not _is_time(s))]
    if len(bad):
        raise ValueError(f"{path}: line {bad[0] + 2}: timestamp {stamps[bad[0]]!r} is not a date and time "
                         "(ISO 8601, e.g. 2014-04-10 07:15:00)")
    return ts_ms


def _epoch_times(path: str | Path, stamps: list[str], unit: str) -> np.ndarray:
    ts_ms = [_epoch_ms(stamp, unit) for stamp in stamps]
    bad = next((i for i, ms in enumerate(ts_ms) if ms is None or not _FIRST_MS <= ms < _PAST_LAST_MS), None)
    if bad is not None:
        raise ValueError(f"{path}: line {bad + 2}: timestamp {stamps[bad]!r} is not an epoch time in {unit} "
                         "(years 1 to 9999)")
    return np.array(ts_ms, dtype=np.int64)


def _epoch_ms(text: str, unit: str) -> int | None:
    """Epoch milliseconds of a number of ``unit``, to the nearest (halves up); integers exactly (an epoch in ns has
    more digits than a float holds). None if ``text`` is not a finite number."""
    try:
        whole = int(text)
    except ValueError:
        number = _number(text)
        return None if math.isnan(number) else epoch_number_ms(number, unit)
    return epoch_number_ms(whole, unit)


def _utc(ts_ms: int) -> str:
    return f"{np.datetime64(ts_ms, 'ms')}Z"


def _order_problems(ts_ms: np.ndarray, keys: np.ndarray, keyed: bool) -> list[str]:
    """Repeated timestamps and steps back in time, within each key: two keys may share a time."""
    _, codes = np.unique(keys.astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")  # each key's rows together, in file order
    same_key = codes[order][1:] == codes[order][:-1]
    steps = np.diff(ts_ms[order])
    before = "the previous row of the same key" if keyed else "the row before"
    problems = []
    for mask, what in ((same_key & (steps == 0), f"repeat the timestamp of {before}"),
                       (same_key & (steps < 0), f"go back in time from {before}")):
        if mask.any():
            problems.append(f"{int(mask.sum())} rows {what}, first at line {int(order[1:][mask].min()) + 2} "
                            "(scored in file order)")
    return problems


def _is_time(text: str) -> bool:
    try:
        np.datetime64(text.replace("Z", ""), "ms")
    except ValueError:
        return False
    return True


def _number(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def _chain(detector: str) -> OperatorChain:
    if detector == "baseline":
        from operators.baseline import BaselineParams

        spec = OperatorSpec("baseline", "detector", ("value",), BaselineParams())
    elif detector == "metric_stream":
        from operators.metric_stream import MetricStreamParams

        spec = OperatorSpec("metric_stream", "detector", ("value",), MetricStreamParams())
    elif detector == "zscore":
        from operators.zscore import ZScoreParams

        spec = OperatorSpec("zscore", "detector", ("value",), ZScoreParams(alerting=AlertingParams()))
    elif detector == "hst":
        from operators.hst import HalfSpaceTreesParams

        spec = OperatorSpec("hst", "detector", ("value",), HalfSpaceTreesParams(alerting=AlertingParams()))
    else:
        raise ValueError(f"unknown detector {detector!r} (one of {', '.join(DETECTORS)})")
    return OperatorChain.build([spec], max_entities=1_000_000)


def score_series(table: SeriesTable, detector: str = "baseline", detection: bool = False) -> np.ndarray:
    """One anomaly score in [0, 1] per row (module docstring); ``detection``: the score a threshold is put on."""
    if detector == "windowed_gaussian":
        from pipeline.evaluation.nab import windowed_gaussian

        out = np.zeros(len(table.values))
        for key in dict.fromkeys(table.keys.tolist()):
            rows = np.flatnonzero((table.keys == key) & ~np.isnan(table.values))
            out[rows] = windowed_gaussian(table.values[rows])
        return out
    chain = _chain(detector)
    out = np.zeros(len(table.values))
    n = len(table.values)
    for start in range(0, n, BATCH):
        part = slice(start, min(start + BATCH, n))
        count = part.stop - part.start
        batch = Batch(table.keys[part], np.zeros(count, dtype=np.int64), table.ts_ms[part],
                      np.full(count, "file", dtype=object), np.full(count, -1, dtype=np.int64),
                      np.arange(part.start, part.stop, dtype=np.int64), numeric={"value": table.values[part]})
        chain.run(batch)
        if detector == "baseline":
            column = batch.scores["detector" + ALERT_SUFFIX] if detection else batch.scores["detector"] / SURPRISE_SCALE
            out[part] = np.nan_to_num(column, nan=0.0)
        elif detector in OWN_SCORE:
            out[part] = np.nan_to_num(batch.scores["detector"], nan=0.0)
        else:
            p_values = batch.scores["detector" + P_VALUE_SUFFIX]
            out[part] = np.where(np.isnan(p_values), 0.0, 1.0 - p_values)
    return np.clip(out, 0.0, 1.0)


def write_scores(path: str | Path, table: SeriesTable, scores: np.ndarray) -> None:
    """``timestamp,value,anomaly_score``, with ``key`` after the timestamp when the rows name their series."""
    keys = [[key] for key in table.keys.tolist()] if table.keyed else [[]] * len(scores)
    try:
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["timestamp", *(["key"] if table.keyed else []), "value", "anomaly_score"])
            for stamp, key, value, score in zip(table.timestamps, keys, table.values.tolist(), scores.tolist()):
                writer.writerow([stamp, *key, "" if math.isnan(value) else repr(value), repr(score)])
    except OSError as error:
        raise ValueError(f"{path}: cannot write: {error.strerror or error}") from None
