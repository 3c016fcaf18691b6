"""``vigil score``: a CSV time series through a detector, one ``anomaly_score`` in [0, 1] per row, causally.

The rows become events of one entity (or one per ``--key`` value) and go, in file order and in batches, through the
same operator chain a live run uses (:class:`operators.registry.OperatorChain`). The default, ``metric_stream``
(:mod:`operators.metric_stream`), scores in [0, 1] itself; another scoring operator's score becomes ``1 − p``, its
calibrated p-value (:mod:`operators.alerting`); both are 0 while the detector warms up. ``windowed_gaussian`` is NAB's
baseline (:mod:`pipeline.evaluation.nab`), kept to check the NAB harness end to end. A row's score depends on the rows
before it only. Irregular spacing and gaps are fine (the detectors are event-driven); duplicate timestamps and rows out
of time order are scored in file order and reported; a value that is not a number is reported with its line and
scored 0 (the detector does not see it).

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from operators.alerting import AlertingParams
from operators.batch import P_VALUE_SUFFIX, Batch
from operators.registry import OperatorChain, OperatorSpec

BATCH = 4096
DETECTORS = ("metric_stream", "zscore", "hst", "windowed_gaussian")
OWN_SCORE = ("metric_stream",)  # detectors whose score is already in [0, 1] and comparable across series


@dataclass
class SeriesTable:
    timestamps: list[str]
    ts_ms: np.ndarray
    values: np.ndarray  # NaN where the value is not a number
    keys: np.ndarray
    problems: list[str] = field(default_factory=list)


def read_series(path: str | Path, timestamp_column: str, value_column: str, key_column: str | None = None) -> SeriesTable:
    """The rows of a CSV with a header; every problem is described with its line."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (timestamp_column, value_column, key_column) if c and c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(reader.fieldnames or [])})")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no rows")
    stamps = [row[timestamp_column].strip() for row in rows]
    try:
        times = np.array([np.datetime64(stamp.replace("Z", ""), "ms") for stamp in stamps])
    except ValueError:
        bad = next(i for i, s in enumerate(stamps) if not _is_time(s))
        raise ValueError(f"{path}: line {bad + 2}: timestamp {stamps[bad]!r} is not a date and time "
                         "(ISO 8601, e.g. 2014-04-10 07:15:00)") from None
    values = np.array([_number(row[value_column]) for row in rows])
    problems = [f"line {i + 2}: value {rows[i][value_column]!r} is not a number; scored 0"
                for i in np.flatnonzero(np.isnan(values)).tolist()]
    ts_ms = times.astype("datetime64[ms]").astype(np.int64)
    steps = np.diff(ts_ms)
    if (steps == 0).any():
        problems.append(f"{int((steps == 0).sum())} rows repeat the timestamp of the row before (scored in file order)")
    if (steps < 0).any():
        first = int(np.flatnonzero(steps < 0)[0])
        problems.append(f"{int((steps < 0).sum())} rows go back in time, first at line {first + 3} (scored in file order)")
    keys = np.array([row[key_column] for row in rows] if key_column else ["series"] * len(rows), dtype=object)
    return SeriesTable(stamps, ts_ms, values, keys, problems)


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
    if detector == "metric_stream":
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


def score_series(table: SeriesTable, detector: str = "metric_stream") -> np.ndarray:
    """One anomaly score in [0, 1] per row (module docstring)."""
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
        if detector in OWN_SCORE:
            out[part] = np.nan_to_num(batch.scores["detector"], nan=0.0)
        else:
            p_values = batch.scores["detector" + P_VALUE_SUFFIX]
            out[part] = np.where(np.isnan(p_values), 0.0, 1.0 - p_values)
    return np.clip(out, 0.0, 1.0)


def write_scores(path: str | Path, table: SeriesTable, scores: np.ndarray) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "value", "anomaly_score"])
        for stamp, value, score in zip(table.timestamps, table.values.tolist(), scores.tolist()):
            writer.writerow([stamp, "" if math.isnan(value) else repr(value), repr(score)])
