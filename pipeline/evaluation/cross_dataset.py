"""Honest cross-dataset evaluation: every detector, fixed defaults, on several kinds of labelled metric data.

A detector tuned on the data it is scored on looks better than it will on data it has never seen, and Vigil is
judged on held-out data of the same kinds as its development sets. This module scores every detector, with its
default parameters and no label anywhere in its run, on each development dataset, and chooses the only thing NAB's
score needs tuned, the detection threshold, **leave one dataset out**: the threshold for dataset D is the one that
maximises the mean normalised NAB score over the *other* datasets, and D's score at it is what a user who tunes on
the data at hand and deploys on new data would see. D's own best threshold (in-sample) is reported beside it as the
optimistic figure, and so is the score of an operator's live alerts at its default budget (no threshold at all).

Datasets (:func:`load_asd`, :func:`asd_univariate`, :func:`load_nab`, :func:`load_demo`), each a list of
:class:`LabelledSeries`:

* ``asd``: the 12 ASD servers, 19 fields each, the train part before the test part, 5 minutes apart;
* ``asd_univariate``: each ASD metric as its own series, labelled only where its segment lists that metric; it
  shares servers with ``asd``, so neither chooses a threshold for the other (:data:`SHARES_SOURCE`);
* ``nab``: NAB's development files, labels the rows inside NAB's windows (the windows are kept for its scorer);
* ``demo``: one 4-field series per entity of the demo generator, labels the rows inside an incident of that entity.

Detectors score every test row causally after a warm-up on the train part, if any (:func:`operator_detector`,
:data:`BASELINES`); each gives a *ranking score* (VUS-PR, AUC-PR) and a *detection score* (NAB's scorer). NAB's scorer
(:mod:`pipeline.evaluation.nab`) applies to every dataset: windows are NAB's own on ``nab`` and the label runs
elsewhere (:func:`nab_series`). :func:`evaluate` runs it all and :func:`render` writes the results page.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.evaluation import nab
from pipeline.evaluation.timeseries import average_precision, runs

DATASETS = ("asd", "nab", "demo", "asd_univariate")
PROTOCOL = ("asd", "nab", "demo")  # the datasets that choose thresholds for one another
SHARES_SOURCE = {"asd": "asd_univariate", "asd_univariate": "asd"}  # same servers: never chosen on each other
OPERATORS = ("baseline", "metric_stream", "zscore", "knn_rshash", "hst")  # those registered run, in this order
ASD_ORIGIN_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z: ASD rows carry no time, only their 5-minute spacing
ASD_STEP_MS = 300_000
DAY_MS = 86_400_000
DEMO_REFERENCE_ROWS = 1440  # one day of the demo's one-minute ticks stands in for a train part
DEMO_EVENTS, DEMO_ENTITIES, DEMO_SEED = 50_000, 10, 7  # 5,000 rows (3.5 days) per entity
FALLBACK_WINDOW = 125  # TSB-AD's window when it finds no period
BATCH = 4096
QUANTILES = np.r_[np.linspace(0.0, 0.99, 100), 1.0 - np.geomspace(1e-2, 1e-6, 81)]
UNIT_GRID = np.linspace(0.0, 1.0, 401)  # thresholds 0.0025 apart for scores in [0, 1]
HIT_RATES = (1.0, 1.5)


@dataclass
class LabelledSeries:
    """One labelled series: a test part scored and judged, an optional train part for warm-up only."""

    name: str
    ts_ms: np.ndarray  # int64, per test row
    test: np.ndarray  # [n, d]
    labels: np.ndarray  # [n], 0/1
    fields: tuple[str, ...]
    train: np.ndarray | None = None  # [n_train, d]
    train_ts_ms: np.ndarray | None = None
    segments: list[tuple[int, int, frozenset[int]]] = field(default_factory=list)  # test rows, end included; fields
    windows: list[tuple[int, int]] | None = None  # NAB's own windows; None: the label runs
    reference_rows: int = 0  # without a train part: the first test rows that train-fitted baselines fit on

    @property
    def reference(self) -> np.ndarray:
        """What a train-fitted method fits on: the train part, else the first ``reference_rows`` test rows."""
        return self.train if self.train is not None else self.test[: self.reference_rows]

    def stream(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Train and test rows in time order, their times, and how many rows are train (warm-up) rows."""
        if self.train is None:
            return self.test, self.ts_ms, 0
        return np.vstack([self.train, self.test]), np.r_[self.train_ts_ms, self.ts_ms], len(self.train)


@dataclass
class Dataset:
    name: str
    series: list[LabelledSeries]
    notes: list[str] = field(default_factory=list)

    @property
    def univariate(self) -> bool:
        return all(s.test.shape[1] == 1 for s in self.series)


@dataclass
class Scores:
    """A detector's output on one series, per test row."""

    ranking: np.ndarray  # for VUS-PR and AUC-PR: the raw score, NaN made the lowest
    detection: np.ndarray  # for NAB's scorer
    alerts: np.ndarray | None = None  # test rows where the operator alerted live (operators only)
    contributions: np.ndarray | None = None  # [n, d] field contributions, where the operator exposes them


class Unavailable(Exception):
    """A detector that cannot run on a dataset (an optional, external dependency failed): :func:`evaluate` leaves it
    out there and says why in the results' notes."""


@dataclass
class Detector:
    name: str
    kind: str  # operator, baseline or anchor (anchors are optimistic: batch methods that see the whole test part)
    run: Callable[[Dataset], list[Scores]]
    description: str
    applies: Callable[[Dataset], bool] = lambda dataset: True


# ---- datasets ----

def load_asd(directory: str | Path) -> Dataset:
    """The ASD servers ``omi-N`` of ``directory``: train and test parts, test labels and interpretation segments."""
    directory = Path(directory)
    names = sorted((p.name.removesuffix("_test.csv") for p in directory.glob("omi-*_test.csv")),
                   key=lambda name: int(name.split("-")[1]))
    if not names:
        raise FileNotFoundError(f"{directory}: no ASD files (omi-N_train.csv, omi-N_test.csv, omi-N_interpretation.txt)")
    series = []
    for name in names:
        fields = tuple((directory / f"{name}_train.csv").open().readline().strip().split(","))
        train = np.loadtxt(directory / f"{name}_train.csv", delimiter=",", skiprows=1, ndmin=2)
        test = np.loadtxt(directory / f"{name}_test.csv", delimiter=",", skiprows=1, ndmin=2)
        n_train = len(train)
        stamps = ASD_ORIGIN_MS + ASD_STEP_MS * np.arange(n_train + len(test), dtype=np.int64)
        series.append(LabelledSeries(name, stamps[n_train:], test[:, :-1], test[:, -1].astype(np.int8), fields, train,
                                     stamps[:n_train], parse_segments((directory / f"{name}_interpretation.txt").read_text())))
    lengths = {s.name: len(s.train) for s in series}
    usual = max(set(lengths.values()), key=list(lengths.values()).count)
    other = ", ".join(f"{name}: {rows:,}" for name, rows in lengths.items() if rows != usual)
    return Dataset("asd", series, [f"{len(series)} servers, {len(fields)} fields, 5-minute rows, train parts of "
                                   f"{usual:,} rows{f' ({other})' if other else ''}; times start at 2020-01-01 (ASD "
                                   "has none), the test part right after the train part"])


def parse_segments(text: str) -> list[tuple[int, int, frozenset[int]]]:
    """``start-end:m,m,...`` lines (0-based rows, end included; 1-based metric numbers) as (start, end, field indices).

    >>> parse_segments("760-765:4,5\\n1064-1298:6\\n")
    [(760, 765, frozenset({3, 4})), (1064, 1298, frozenset({5}))]
    """
    segments = []
    for line in text.split():
        rows, _, metrics = line.partition(":")
        start, end = (int(part) for part in rows.split("-"))
        segments.append((start, end, frozenset(int(m) - 1 for m in metrics.split(",") if m)))
    return segments


def asd_univariate(asd: Dataset) -> Dataset:
    """Each ASD metric of each server as a series, labelled by the segments that list it; series with no label or
    constant test values are left out."""
    series, skipped = [], 0
    for server in asd.series:
        for j, name in enumerate(server.fields):
            segments = [(start, end, frozenset({0})) for start, end, metrics in server.segments if j in metrics]
            labels = np.zeros(len(server.test), dtype=np.int8)
            for start, end, _ in segments:
                labels[start:end + 1] = 1
            if not labels.any() or np.ptp(server.test[:, j]) == 0:
                skipped += 1
                continue
            series.append(LabelledSeries(f"{server.name}/{name}", server.ts_ms, server.test[:, j:j + 1], labels, (name,),
                                         server.train[:, j:j + 1], server.train_ts_ms, segments))
    return Dataset("asd_univariate", series, [f"{len(series)} metric series of the ASD servers ({skipped} left out: "
                                              "no segment lists them, or constant test values)"])


def load_nab(directory: str | Path, names: Sequence[str] | None = None) -> Dataset:
    """NAB's series under ``directory/data`` with the windows of ``directory/labels/combined_windows.json``; labels are
    the rows inside a window. With no train part, train-fitted baselines fit on NAB's probationary rows."""
    directory = Path(directory)
    windows_file = directory / "labels" / "combined_windows.json"
    if not windows_file.exists():
        raise FileNotFoundError(f"{windows_file}: NAB's windows file not found")
    corpus = [s for s in nab.load_corpus(directory / "data", windows_file) if names is None or s.name in names]
    if not corpus:
        raise FileNotFoundError(f"{directory / 'data'}: no NAB series of {windows_file}")
    series = []
    for s in corpus:
        labels = np.zeros(len(s.values), dtype=np.int8)
        for left, right in s.windows:
            labels[left:right + 1] = 1
        series.append(LabelledSeries(s.name, s.timestamps.astype("datetime64[ms]").astype(np.int64), s.values[:, None],
                                     labels, ("value",), windows=list(s.windows), reference_rows=nab.probation(len(s.values))))
    return Dataset("nab", series, [f"{len(series)} series, no train part: train-fitted baselines fit on NAB's "
                                   "probationary rows, min(floor(0.15 n), 750)"])


def load_demo(stream, fields: Sequence[str]) -> Dataset:
    """One series per entity of a demo stream (``pipeline.demo.synthetic.SyntheticStream``, passed in: the offline
    evaluation does not import the demo) over ``fields``; labels are the rows inside an incident of the entity.
    Payloads that do not decode to all of ``fields`` as numbers are skipped."""
    import msgspec

    rows: dict[str, list[list[float]]] = {key: [] for key in stream.keys}
    stamps: dict[str, list[int]] = {key: [] for key in stream.keys}
    skipped = 0
    for record in stream.payloads():
        try:
            values = msgspec.json.decode(record.payload)["fields"]
            row = [values[name] for name in fields]
        except (msgspec.DecodeError, KeyError, TypeError):
            skipped += 1
            continue
        if record.key not in rows or not all(type(v) in (int, float) and math.isfinite(v) for v in row):
            skipped += 1
            continue
        rows[record.key].append(row)
        stamps[record.key].append(record.ts_ms)
    series = []
    for key in stream.keys:
        ts = np.array(stamps[key], dtype=np.int64)
        labels = np.zeros(len(ts), dtype=np.int8)
        for incident in stream.incidents:
            if incident.key == key:
                labels[(ts >= incident.start_ms) & (ts <= incident.end_ms)] = 1
        series.append(LabelledSeries(key, ts, np.array(rows[key], dtype=np.float64).reshape(len(ts), len(fields)), labels,
                                     tuple(fields), reference_rows=DEMO_REFERENCE_ROWS))
    rows_each = len(series[0].ts_ms) if series else 0
    return Dataset("demo", series, [f"{len(series)} entities of the demo stream (seed {stream.seed}, {stream.events:,} "
                                    f"events, about {rows_each:,} one-minute rows each, {len(stream.incidents)} "
                                    f"incidents), {skipped} payloads skipped; no train part: detectors warm up on the "
                                    f"stream, train-fitted baselines fit on each entity's first {DEMO_REFERENCE_ROWS:,} "
                                    "rows (one day, which may hold incidents)"])


def load_datasets(data: str | Path, names: Sequence[str], demo_stream=None, demo_fields: Sequence[str] = ()) -> list[Dataset]:
    """The datasets ``names`` from the data directory (``asd/``, ``nab/``) and the demo stream; every missing path is
    reported before anything runs."""
    unknown = [name for name in names if name not in DATASETS]
    if unknown:
        raise ValueError(f"unknown dataset {', '.join(unknown)} (known: {', '.join(DATASETS)})")
    data = Path(data)
    needed = {"asd": data / "asd", "asd_univariate": data / "asd", "nab": data / "nab"}
    for name in names:
        if name in needed and not needed[name].is_dir():
            what = "data directory" if not data.is_dir() else f"{name} data"
            raise FileNotFoundError(f"{needed[name] if data.is_dir() else data}: {what} not found (pass --data DIR, "
                                    "the folder that holds asd/ and nab/)")
    loaded: dict[str, Dataset] = {}
    if "asd" in names or "asd_univariate" in names:
        loaded["asd"] = load_asd(data / "asd")
        loaded["asd_univariate"] = asd_univariate(loaded["asd"])
    if "nab" in names:
        loaded["nab"] = load_nab(data / "nab")
    if "demo" in names:
        loaded["demo"] = load_demo(demo_stream, demo_fields)
    return [loaded[name] for name in names]


# ---- detectors ----

def _lowest(scores: np.ndarray) -> np.ndarray:
    """NaN (not scored yet) becomes the lowest score of the series, so it ranks last."""
    scores = np.asarray(scores, dtype=np.float64)
    missing = np.isnan(scores)
    return np.where(missing, scores[~missing].min() if (~missing).any() else 0.0, scores)


def run_operator(series: LabelledSeries, type_name: str) -> Scores:
    """The operator with its default params over the series' rows (train part first) in batches of 4,096, one entity,
    as ``vigil score`` runs it; rows are numbered from 0 (the batch offsets), which is how alerts name their row."""
    from operators.batch import ALERT_SUFFIX, FILE_PARTITION, P_VALUE_SUFFIX, Batch
    from operators.registry import OPERATOR_TYPES, OperatorChain, OperatorSpec

    spec = OperatorSpec(type_name, type_name, series.fields, OPERATOR_TYPES[type_name].Params())
    chain = OperatorChain.build([spec], max_entities=1)
    operator = chain.operators[0]
    explains = hasattr(operator, "field_contributions")
    values, stamps, skip = series.stream()
    n = len(values)
    ranking, detection, alerted, contributions = np.empty(n), np.empty(n), [], []
    for start in range(0, n, BATCH):
        part = slice(start, min(start + BATCH, n))
        count = part.stop - part.start
        batch = Batch(np.full(count, series.name, dtype=object), np.zeros(count, dtype=np.int64), stamps[part],
                      np.full(count, series.name, dtype=object), np.full(count, FILE_PARTITION, dtype=np.int64),
                      np.arange(part.start, part.stop, dtype=np.int64),
                      numeric={name: values[part, j] for j, name in enumerate(series.fields)})
        alerted.extend(alert.source.line for alert in chain.run(batch))
        published = batch.scores
        ranking[part] = published[type_name]
        if type_name + ALERT_SUFFIX in published:
            detection[part] = published[type_name + ALERT_SUFFIX]
        elif type_name == "metric_stream":
            detection[part] = published[type_name]
        else:
            detection[part] = 1.0 - published[type_name + P_VALUE_SUFFIX]
        if explains:
            contributions.append(np.asarray(operator.field_contributions(batch), dtype=np.float64))
    rows = np.unique(np.array(alerted, dtype=np.int64))
    return Scores(_lowest(ranking[skip:]), np.nan_to_num(detection[skip:], nan=0.0), rows[rows >= skip] - skip,
                  np.vstack(contributions)[skip:] if explains else None)


def _std_floor(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """A constant reference would divide by 0: std is at least 0.1 % of the mean's size (and 1e-9)."""
    return np.maximum(std, 1e-3 * np.abs(mean) + 1e-9)


def train_z(series: LabelledSeries) -> np.ndarray:
    """|x − mean| / std per test row and field, against the reference part (the train part, or its stand-in)."""
    reference = series.reference
    mean = reference.mean(axis=0)
    return np.abs(series.test - mean) / _std_floor(reference.std(axis=0), mean)


def train_zscore(series: LabelledSeries) -> Scores:
    score = train_z(series).max(axis=1)
    return Scores(score, score)


def rolling_zscore(series: LabelledSeries) -> Scores:
    """The largest |x − mean| / std over fields against the rows of the previous day of event time (cumulative sums;
    the rows are shifted by the first row first, which keeps the sums of squares exact enough)."""
    values, stamps, skip = series.stream()
    shifted = values - values[0]
    sums = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(shifted, axis=0)])
    squares = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(shifted ** 2, axis=0)])
    rows = np.arange(len(values))
    first = np.searchsorted(stamps, stamps - DAY_MS, side="left")
    count = (rows - first)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (sums[rows] - sums[first]) / count
        variance = np.maximum((squares[rows] - squares[first]) / count - mean ** 2, 0.0)
        z = np.abs(shifted - mean) / _std_floor(np.sqrt(variance), mean + values[0])
    score = np.where(count[:, 0] >= 2, z.max(axis=1), np.nan)[skip:]
    return Scores(_lowest(score), np.nan_to_num(score, nan=0.0))


def river_hst(series: LabelledSeries) -> Scores:
    """river's HalfSpaceTrees (defaults, seed 42) behind its MinMaxScaler, score then learn per row."""
    from river import anomaly, preprocessing

    model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)
    values, _, skip = series.stream()
    scores = np.empty(len(values))
    for i, row in enumerate(values.tolist()):
        x = dict(zip(series.fields, row))
        scores[i] = model.score_one(x)
        model.learn_one(x)
    return Scores(scores[skip:], scores[skip:])


def _per_series(function: Callable[[LabelledSeries], Scores]) -> Callable[[Dataset], list[Scores]]:
    return lambda dataset: [function(series) for series in dataset.series]


OPERATOR_DESCRIPTIONS = {
    "baseline": "Vigil's per-entity baseline operator (default params)",
    "metric_stream": "Vigil's univariate metric-stream operator (predictions, anomaly likelihood, first crossing), "
                     "the largest score over fields",
    "zscore": "Vigil's robust EWMA z-score operator",
    "knn_rshash": "Vigil's default multivariate operator (kNN distance and RS-Hash rarity surprise)",
    "hst": "Vigil's Half-Space Trees operator (river's, per entity)",
}
BASELINES = {
    "train_zscore": Detector("train_zscore", "baseline", _per_series(train_zscore),
                             "largest |x − mean| / std over fields, mean and std of the train part (NAB: the "
                             "probationary rows; demo: each entity's first 1,440 rows)"),
    "rolling_zscore": Detector("rolling_zscore", "baseline", _per_series(rolling_zscore),
                               "largest |x − mean| / std over fields against the rows of the previous 86,400 s "
                               "of event time"),
    "river_hst": Detector("river_hst", "baseline", _per_series(river_hst),
                          "river's HalfSpaceTrees behind MinMaxScaler (river defaults, seed 42), score then learn "
                          "per row, on every series"),
}


def operator_detector(type_name: str) -> Detector:
    """A Vigil operator type as a detector: ranking score its raw score, detection score its ``.alert`` column when it
    publishes one, else (``metric_stream``) its raw score, else 1 − its calibrated p-value, as ``vigil score`` does."""
    description = OPERATOR_DESCRIPTIONS.get(type_name, f"Vigil's {type_name} operator (default params)")
    return Detector(type_name, "operator", _per_series(lambda series: run_operator(series, type_name)), description)


def default_detectors() -> list[Detector]:
    """The registered default operators, then the label-free baselines."""
    from operators.registry import OPERATOR_TYPES

    return [operator_detector(name) for name in OPERATORS if name in OPERATOR_TYPES] + list(BASELINES.values())


def named_detectors(names: Sequence[str]) -> list[Detector]:
    from operators.registry import OPERATOR_TYPES

    known = [name for name in OPERATORS if name in OPERATOR_TYPES] + list(BASELINES)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown detector {', '.join(unknown)} (known: {', '.join(known)})")
    return [BASELINES[name] if name in BASELINES else operator_detector(name) for name in names]


# ---- metrics ----

def nab_series(series: LabelledSeries) -> tuple[nab.Series, int]:
    """The series as NAB's scorer sees it, and how many rows precede its test part. Windows are NAB's own where the
    series has them, else the label runs. A series with a train part enters with up to 750 of its last train rows in
    front, which never detect (:func:`pad_detection`): NAB's probationary period, min(⌊0.15 n⌋, 750) rows, then falls
    on the warm-up (when the train part has 750 rows), and every test window is scored."""
    windows = series.windows if series.windows is not None else [tuple(r) for r in runs(series.labels).tolist()]
    pad = 0 if series.train is None else min(len(series.train), nab.PROBATION_CAP)
    stamps = np.r_[series.train_ts_ms[len(series.train_ts_ms) - pad:], series.ts_ms] if pad else series.ts_ms
    values = np.r_[series.train[len(series.train) - pad:, 0], series.test[:, 0]] if pad else series.test[:, 0]
    return nab.Series(series.name, stamps.astype("datetime64[ms]").astype("datetime64[us]"), values,
                      [(left + pad, right + pad) for left, right in windows]), pad


def pad_detection(detection: np.ndarray, pad: int) -> np.ndarray:
    """Detection scores with ``pad`` leading rows that no threshold on the scores detects."""
    return np.r_[np.full(pad, float(np.min(detection, initial=0.0)) - 1.0), detection]


def curve_at(curve: tuple[np.ndarray, np.ndarray], thresholds: np.ndarray | float) -> np.ndarray:
    """A sweep's normalised score at thresholds: at the lowest swept level still at or above each (as ``score_at``)."""
    levels, values = curve
    return values[np.searchsorted(-levels, -np.asarray(thresholds, dtype=np.float64), side="right") - 1]


def choose_threshold(curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> tuple[float, float]:
    """The grid threshold with the best mean normalised score over the curves (the middle of the best run of equal
    means, so that a plateau does not push it to an edge), and that mean."""
    grid = np.unique(grid)
    means = np.mean([curve_at(curve, grid) for curve in curves], axis=0)
    best = np.flatnonzero(np.isclose(means, means.max(), rtol=0.0, atol=1e-9))
    run = best[: int(np.argmax(np.r_[np.diff(best) != 1, True])) + 1]  # the first run of consecutive best points
    return float(grid[run[len(run) // 2]]), float(means.max())


def hit_rate(scores: np.ndarray, segments: Sequence[tuple[int, int, frozenset[int]]], share: float) -> tuple[float, int]:
    """HitRate@P (OmniAnomaly, InterFusion): per row of a segment, the share of its true fields among the
    ⌊P·|true|⌋ highest-ranked fields; averaged over the segment's rows, then over the segments. Also the segment count."""
    scores = np.where(np.isnan(scores), -np.inf, scores)
    per_segment = []
    for start, end, true in segments:
        if not true:
            continue
        top = min(math.floor(share * len(true)), scores.shape[1])
        ranked = np.argsort(-scores[start:end + 1], axis=1, kind="stable")[:, :top]
        per_segment.append(np.isin(ranked, sorted(true)).sum(axis=1).mean() / len(true))
    return (float(np.mean(per_segment)) if per_segment else math.nan), len(per_segment)


def _metric_functions() -> tuple[Callable, Callable, list[str]]:
    """VUS-PR and the window function: the TSB-AD ports where timeseries.py has them, else VUS's PR part and 125."""
    from pipeline.evaluation import timeseries

    notes = []
    vus_pr = getattr(timeseries, "vus_pr", None)
    if vus_pr is None:
        vus_pr = lambda y, s, window: timeseries.vus(y, s, window)[1]  # noqa: E731
        notes.append("VUS-PR is the PR part of timeseries.vus (no timeseries.vus_pr here)")
    sliding_window = getattr(timeseries, "sliding_window", None)
    if sliding_window is None:
        sliding_window = lambda values: FALLBACK_WINDOW  # noqa: E731
        notes.append(f"the VUS window is {FALLBACK_WINDOW} for every series (no timeseries.sliding_window here)")
    return vus_pr, sliding_window, notes


# ---- the evaluation ----

def evaluate(datasets: Sequence[Dataset], detectors: Sequence[Detector],
             progress: Callable[[str], None] = lambda line: None) -> dict:
    """Every detector on every dataset it applies to: per-series VUS-PR and AUC-PR, NAB scores (in-sample best,
    alerts, and the leave-one-dataset-out threshold), root cause on ``asd``, run times. Plain data (JSON-able)."""
    vus_pr, sliding_window, notes = _metric_functions()
    results: dict = {"datasets": {}, "detectors": {d.name: {"kind": d.kind, "description": d.description}
                                                   for d in detectors},
                     "metric_notes": notes, "series": {}, "vus_pr": {}, "auc_pr": {}, "nab": {}, "seconds": {},
                     "root_cause": {}, "notes": []}
    curves: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    spread: dict[tuple[str, str], tuple[np.ndarray, bool]] = {}  # detection-score quantiles, all in [0, 1]
    for dataset in datasets:
        corpus, pads = zip(*[nab_series(series) for series in dataset.series])
        windows = [int(sliding_window(series.test[:, 0])) for series in dataset.series]
        labelled = [bool(series.labels.any()) for series in dataset.series]
        results["datasets"][dataset.name] = {
            "series": len(dataset.series), "labelled_series": sum(labelled), "notes": dataset.notes,
            "rows": int(sum(len(s.test) for s in dataset.series)),
            "anomalous_rows": int(sum(int(s.labels.sum()) for s in dataset.series)),
            "train_rows": int(sum(0 if s.train is None else len(s.train) for s in dataset.series)),
            "windows": sum(len(s.windows) for s in corpus), "vus_window": _summary(windows)}
        explained = dataset.name == "asd" and any(t for s in dataset.series for _, _, t in s.segments)
        if explained:
            results["root_cause"]["per-field z-score against the train part"] = _root_cause(
                dataset, [train_z(series) for series in dataset.series])
            expected = [(min(math.floor(p * len(t)), s.test.shape[1]) / s.test.shape[1], p)
                        for s in dataset.series for _, _, t in s.segments if t for p in HIT_RATES]
            results["root_cause"]["random ranking (expected)"] = {
                **{f"{p:g}": float(np.mean([rate for rate, share in expected if share == p])) for p in HIT_RATES},
                "segments": len(expected) // len(HIT_RATES)}
        for detector in detectors:
            if not detector.applies(dataset):
                continue
            started = time.perf_counter()
            try:
                outputs = detector.run(dataset)
            except Unavailable as error:
                results["notes"].append(f"{detector.name} left out on {dataset.name}: {error}")
                progress(results["notes"][-1])
                continue
            seconds = time.perf_counter() - started
            results["seconds"].setdefault(detector.name, {})[dataset.name] = seconds
            per_series = {}
            for series, window, has_labels, out in zip(dataset.series, windows, labelled, outputs):
                if has_labels:
                    per_series[series.name] = {"vus_pr": float(vus_pr(series.labels, out.ranking, window)),
                                               "auc_pr": average_precision(series.labels, out.ranking)}
            results["series"].setdefault(detector.name, {})[dataset.name] = per_series
            for metric in ("vus_pr", "auc_pr"):
                results[metric].setdefault(detector.name, {})[dataset.name] = float(
                    np.mean([row[metric] for row in per_series.values()]))
            detection = [pad_detection(out.detection, pad) for out, pad in zip(outputs, pads)]
            levels, raw = nab.sweep(list(corpus), detection)
            curves[detector.name, dataset.name] = (levels, nab.normalised(raw, list(corpus)))
            pooled = np.concatenate([out.detection for out in outputs])
            spread[detector.name, dataset.name] = (np.quantile(pooled, QUANTILES), bool(pooled.min() >= 0 and pooled.max() <= 1))
            threshold, best = nab.best_score(list(corpus), detection)
            row = {"in_sample": best, "in_sample_threshold": threshold}
            if all(out.alerts is not None for out in outputs):
                indicators = []
                for out, pad, series in zip(outputs, pads, dataset.series):
                    live = np.zeros(len(series.test))
                    live[out.alerts] = 1.0
                    indicators.append(np.r_[np.zeros(pad), live])
                row["alerts"] = nab.score_at(list(corpus), indicators, 1.0)
                row["alert_count"] = int(sum(len(out.alerts) for out in outputs))
            results["nab"].setdefault(detector.name, {})[dataset.name] = row
            if explained and all(out.contributions is not None for out in outputs):
                results["root_cause"][f"{detector.name} field contributions"] = _root_cause(
                    dataset, [out.contributions for out in outputs])
            progress(f"{dataset.name}: {detector.name} on {len(dataset.series)} series in {seconds:.1f} s, VUS-PR "
                     f"{results['vus_pr'][detector.name][dataset.name]:.3f}, NAB in-sample {best:.1f}")
    _leave_one_out(results, curves, spread, [d.name for d in datasets])
    _ranks(results, detectors)
    return results


def _summary(values: Sequence[int]) -> dict:
    return {"min": int(min(values)), "median": float(np.median(values)), "max": int(max(values))}


def _root_cause(dataset: Dataset, scores: Sequence[np.ndarray]) -> dict:
    """HitRate@P pooled over the segments of every series (each series' mean weighted by its segment count)."""
    rates: dict = {}
    for share in HIT_RATES:
        per_series = [hit_rate(score, series.segments, share) for series, score in zip(dataset.series, scores)]
        rates["segments"] = sum(count for _, count in per_series)
        rates[f"{share:g}"] = sum(rate * count for rate, count in per_series if count) / rates["segments"]
    return rates


def plain(value):
    """Results as strict JSON data: NaN and infinity (the threshold that detects nothing) become None."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _leave_one_out(results: dict, curves: dict, spread: dict, names: Sequence[str]) -> None:
    """For each dataset and detector: the threshold that maximises the mean NAB score over the other protocol datasets
    (never a dataset of the same source), over a grid of their detection-score quantiles (and 0.0025 steps when every
    score is in [0, 1]); the held-out dataset's score there."""
    for detector, by_dataset in results["nab"].items():
        for held_out, row in by_dataset.items():
            chosen_on = [name for name in PROTOCOL if name in names and name != held_out
                         and name != SHARES_SOURCE.get(held_out) and (detector, name) in curves]
            row["chosen_on"] = chosen_on
            if not chosen_on:
                row["lodo"] = row["lodo_threshold"] = None
                continue
            quantiles = [spread[detector, name][0] for name in chosen_on]
            unit = all(spread[detector, name][1] for name in chosen_on)
            grid = np.concatenate(quantiles + ([UNIT_GRID] if unit else []))
            threshold, mean = choose_threshold([curves[detector, name] for name in chosen_on], grid)
            row.update(lodo=float(curve_at(curves[detector, held_out], threshold)), lodo_threshold=threshold,
                       lodo_mean_on_others=mean)


def _ranks(results: dict, detectors: Sequence[Detector]) -> None:
    """Each detector's rank (1 = best, ties shared) per dataset by mean VUS-PR and AUC-PR, among the operators and
    baselines (anchors are shown unranked: they run on some datasets only and see the whole series), and its mean."""
    from scipy.stats import rankdata

    ranked = [d.name for d in detectors if d.kind != "anchor"]
    for metric in ("vus_pr", "auc_pr"):
        ranks: dict[str, dict[str, float]] = {name: {} for name in ranked}
        for dataset in results["datasets"]:
            present = [name for name in ranked if dataset in results[metric].get(name, {})]
            for name, rank in zip(present, rankdata([-results[metric][name][dataset] for name in present])):
                ranks[name][dataset] = float(rank)
        for by_dataset in ranks.values():
            by_dataset["mean"] = float(np.mean(list(by_dataset.values()))) if by_dataset else math.nan
        results[f"rank_{metric}"] = ranks


# ---- the page ----

def render(results: dict, commands: Sequence[str] = (), full: bool = True) -> str:
    """The results as Markdown: the tables, and with ``full`` what each dataset, detector and metric is."""
    datasets = list(results["datasets"])
    detectors = list(results["detectors"])
    lines: list[str] = []
    if full:
        lines += ["# Cross-dataset evaluation: every detector with its defaults, thresholds chosen leave one dataset out",
                  "", "Generated by `bench/bench_cross_dataset.py` (no number on this page is written by hand).", ""]
        if commands:
            lines += ["## Reproduce", "", "```", *commands, "```", ""]
        lines += _explanations(results)
    lines += _metric_table(results, "vus_pr", "Table 1: mean VUS-PR per dataset (rank within the dataset)")
    lines += _metric_table(results, "auc_pr", "Table 2: mean AUC-PR (average precision) per dataset (rank)")
    lines += ["## Table 3: NAB score (standard profile, normalised)", "",
              "Per dataset: **LODO**, the threshold chosen on the other datasets (in brackets; chosen on: "
              + "; ".join(f"{d} on {', '.join(_chosen_on(results, d)) or 'none'}" for d in datasets)
              + "); **best**, the dataset's own best threshold (in-sample, optimistic); **alerts**, the operator's live "
              "alerts at its default budget (no threshold).", "",
              "| detector | " + " | ".join(f"{d} LODO | {d} best | {d} alerts" for d in datasets) + " |",
              "|---|" + "---|" * (3 * len(datasets))]
    for name in detectors:
        cells = []
        for dataset in datasets:
            row = results["nab"].get(name, {}).get(dataset)
            if row is None:
                cells += ["—"] * 3
                continue
            cells.append("—" if row.get("lodo") is None else f"{row['lodo']:.1f} ({row['lodo_threshold']:.4g})")
            cells.append(f"{row['in_sample']:.1f}")
            cells.append(f"{row['alerts']:.1f}" if "alerts" in row else "—")
        lines.append(f"| {_label(results, name)} | " + " | ".join(cells) + " |")
    lines += [] if not results["root_cause"] else ["", "## Table 4: root cause on asd (HitRate@100% and @150%)", "",
              "Per anomalous segment with a metric list and each of its rows: the share of the segment's metrics "
              "among the top ⌊P·|metrics|⌋ fields ranked by the method; averaged over the segment's rows, then over "
              "the segments of all servers.", "",
              "| ranking | HitRate@100% | HitRate@150% | segments |", "|---|---|---|---|"]
    for method, rates in results["root_cause"].items():
        lines.append(f"| {method} | {rates['1']:.3f} | {rates['1.5']:.3f} | {rates['segments']} |")
    lines += ["", "## Table 5: run time (seconds, scoring only)", "",
              "| detector | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for name in detectors:
        lines.append(f"| {_label(results, name)} | " + " | ".join(
            f"{results['seconds'][name][d]:.1f}" if d in results["seconds"].get(name, {}) else "—" for d in datasets) + " |")
    if results["notes"] or results["metric_notes"]:
        lines += ["", "## Notes", "", *[f"- {note}" for note in [*results["metric_notes"], *results["notes"]]]]
    return "\n".join(lines) + "\n"


def _label(results: dict, name: str) -> str:
    return f"{name} (anchor, optimistic)" if results["detectors"][name]["kind"] == "anchor" else name


def _chosen_on(results: dict, dataset: str) -> list[str]:
    rows = [by[dataset] for by in results["nab"].values() if dataset in by and by[dataset]["chosen_on"]]
    return max((row["chosen_on"] for row in rows), key=len, default=[])


def _metric_table(results: dict, metric: str, title: str) -> list[str]:
    datasets = list(results["datasets"])
    ranks = results[f"rank_{metric}"]
    lines = [f"## {title}", "", "| detector | " + " | ".join(datasets) + " | mean rank |",
             "|---|" + "---|" * (len(datasets) + 1)]
    for name in results["detectors"]:
        cells = []
        for dataset in datasets:
            value = results[metric].get(name, {}).get(dataset)
            rank = ranks.get(name, {}).get(dataset)
            cells.append("—" if value is None else f"{value:.3f}" + (f" ({rank:g})" if rank is not None else ""))
        mean = ranks.get(name, {}).get("mean")
        cells.append("—" if mean is None or math.isnan(mean) else f"{mean:.2f}")
        lines.append(f"| {_label(results, name)} | " + " | ".join(cells) + " |")
    return lines + [""]


def _explanations(results: dict) -> list[str]:
    windows = ", ".join(f"{name} {info['vus_window']['median']:g}" for name, info in results["datasets"].items())
    lines = ["## What is measured", "", "**Datasets** (the mean of a metric is over a dataset's series that have "
             "labelled rows; NAB's scorer takes all of them):", ""]
    for name, info in results["datasets"].items():
        lines.append(f"- `{name}`: {'; '.join(info['notes'])}. {info['rows']:,} test rows, {info['anomalous_rows']:,} "
                     f"labelled anomalous ({info['labelled_series']} of {info['series']} series have labels), "
                     f"{info['windows']} NAB windows, {info['train_rows']:,} train rows.")
    lines += ["", "`asd_univariate` shares its servers with `asd`: it never chooses a threshold for `asd` nor `asd` "
              "for it. The protocol datasets are " + ", ".join(f"`{d}`" for d in PROTOCOL) + "; `asd_univariate` is "
              "reported as a fourth column with thresholds chosen on `nab` and `demo`.", "",
              "**Detectors** (default parameters, no label seen; streaming ones are causal, each first sees the "
              "train part, if any, as warm-up):", ""]
    for name, info in results["detectors"].items():
        lines.append(f"- `{name}` ({info['kind']}): {info['description']}.")
    lines += ["", "For an operator the ranking score is its raw published score (NaN, while warming up, is the lowest); "
              "the detection score for NAB is its `.alert` column where it publishes one, else for `metric_stream` its "
              "raw score (a first-crossing score in [0, 1]), else 1 − its calibrated p-value, as `vigil score` does. "
              "Baselines use their score for both. Anchors are TSB-AD's batch methods with its per-family tuned "
              "settings, scoring subsequences that reach past the row (POLY and Sub-PCA are fitted on the very test "
              "series they score): optimistic references, not contenders, and unranked. Their LODO threshold is "
              "chosen on the other protocol datasets their family runs on (PCA: asd and demo; POLY and Sub-PCA: nab "
              "only, for asd_univariate), where raw scales need not agree.", "",
              "**Metrics.** VUS-PR (Paparrizos et al., 2022; TSB-AD's headline metric; window per series by TSB-AD's "
              f"period finder, median {windows}) "
              "and AUC-PR (point-wise average precision) on the ranking score, per series, then the mean per dataset. "
              "NAB's score (standard profile, normalised; `pipeline/evaluation/nab.py`, checked against NAB's own) on "
              "the detection score, on every dataset: NAB's windows on `nab`, the label runs elsewhere. A series with a "
              "train part enters NAB's scorer with its last 750 train rows in front, never detecting, so that NAB's "
              "probationary period falls on the warm-up and every test window is scored; without one, NAB's "
              "probation (min(⌊0.15 n⌋, 750) rows) applies to the test part.", "",
              "**Leave one dataset out.** For each held-out dataset and detector, the detection threshold is the one "
              "that maximises the mean normalised NAB score over the other datasets, on a grid shared by them (the "
              "union of their detection-score quantiles, and steps of 0.0025 when every score is in [0, 1]; the middle "
              "of the best plateau); the held-out dataset's score at it is the honest figure.", ""]
    return lines
