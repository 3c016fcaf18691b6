"""The Numenta Anomaly Benchmark's scorer, and its windowed Gaussian baseline.

NAB (Lavin and Ahmad, 2015) scores a detector's ``anomaly_score`` per row of each series against labelled windows:

* the first min(⌊0.15·n⌋, 750) rows of a series are probationary and not scored;
* a detection is a row whose score is at least the threshold θ, one θ for the whole corpus;
* in a window [l, r] (width w rows), a detection at row i earns σ(−(r − i + 1)/w)·A_TP/σ(−1), with the scaled sigmoid
  σ(y) = 2/(1 + e^(5y)) − 1 (−1 for y ≥ 3); only a window's best (earliest) detection counts, and a window with
  none costs A_FN;
* a detection outside every window costs σ(|r_prev − i|/(w_prev − 1))·A_FP after a window (its right edge r_prev,
  width w_prev), and A_FP before the first;
* the raw score is the sum over series; it is normalised as 100·(S − S_null)/(S_perfect − S_null), with the null
  detector (never fires: −A_FN per window) and the perfect one (fires at each window's first row: A_TP per window)
  over the windows that have scored rows;
* NAB's optimiser picks θ by sweeping every distinct score of the corpus, maximising the raw score;
* scores are compared as NAB's results files store them, with 12 significant digits (Python 2's ``str(float)``):
  a score within 5e-13 of 1 is 1, which decides which rows a threshold of 1.0 detects.

Profiles: ``standard`` (A_TP 1, A_FP 0.11, A_FN 1), ``reward_low_FP_rate`` (1, 0.22, 1), ``reward_low_FN_rate``
(1, 0.11, 2). This follows NAB's ``sweeper.py`` and ``runner.py`` row by row, as array operations.

The **windowed Gaussian** detector is NAB's baseline: each value's score is 1 − Q(|z|), Q(x) = erfc(x/√2)/2, with z its
distance to the mean in population deviations (floored at 1e-6) of a window of earlier values: every value up to
6,400, then the window slides by steps of 100 values.

References
----------
Lavin, A. and Ahmad, S. (2015). Evaluating real-time anomaly detection algorithms: the Numenta Anomaly Benchmark.
*IEEE ICMLA*.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROFILES = {
    "standard": {"tp": 1.0, "fp": 0.11, "fn": 1.0},
    "reward_low_FP_rate": {"tp": 1.0, "fp": 0.22, "fn": 1.0},
    "reward_low_FN_rate": {"tp": 1.0, "fp": 0.11, "fn": 2.0},
}
PROBATION_SHARE, PROBATION_CAP = 0.15, 750


def scaled_sigmoid(y: np.ndarray) -> np.ndarray:
    """2 / (1 + e^(5y)) − 1, and −1 from y = 3 on."""
    y = np.asarray(y, dtype=np.float64)
    return np.where(y >= 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * np.minimum(y, 3.0))) - 1.0)


@dataclass
class Series:
    name: str
    timestamps: np.ndarray  # datetime64[us]
    values: np.ndarray
    windows: list[tuple[int, int]]  # row ranges [left, right], inclusive


def load_corpus(data_dir: str | Path, windows_file: str | Path) -> list[Series]:
    """Every series of the windows file that is under ``data_dir``, with its windows as row ranges."""
    windows = json.loads(Path(windows_file).read_text())
    corpus = []
    for name in sorted(windows):
        path = Path(data_dir) / name
        if not path.exists():
            continue
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        stamps = np.array([row["timestamp"] for row in rows], dtype="datetime64[us]")
        index = {stamp: i for i, stamp in enumerate(stamps.tolist())}
        ranges = [(index[np.datetime64(left, "us").tolist()], index[np.datetime64(right, "us").tolist()])
                  for left, right in windows[name]]
        corpus.append(Series(name, stamps, np.array([float(row["value"]) for row in rows]), ranges))
    return corpus


def probation(rows: int) -> int:
    return int(min(math.floor(PROBATION_SHARE * rows), PROBATION_SHARE * 5000))


def _rows(series: Series, profile: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: its window (−1 outside), its sweep score if detected, and whether it is scored (not probationary)."""
    n = len(series.values)
    window = np.full(n, -1, dtype=np.int64)
    sweep = np.full(n, -profile["fp"])  # before the first window
    rows = np.arange(n)
    for k, (left, right) in enumerate(series.windows):
        width = right - left + 1
        inside = rows[left:right + 1]
        window[inside] = k
        sweep[inside] = scaled_sigmoid(-(right - inside + 1) / width) * profile["tp"] / scaled_sigmoid(-1.0)
        end = series.windows[k + 1][0] if k + 1 < len(series.windows) else n
        after = rows[right + 1:end]
        sweep[after] = scaled_sigmoid(np.abs(right - after) / (width - 1)) * profile["fp"]
    return window, sweep, rows >= probation(n)


def as_stored(scores: np.ndarray) -> np.ndarray:
    """Scores rounded to 12 significant digits, as NAB's results files hold them (module docstring)."""
    return np.char.mod("%.12g", np.asarray(scores, dtype=np.float64)).astype(np.float64)


def sweep(corpus: list[Series], scores: list[np.ndarray], profile: str = "standard") -> tuple[np.ndarray, np.ndarray]:
    """The corpus's raw score at every distinct anomaly score (as stored) as threshold, highest first: (thresholds,
    raw scores). A threshold above every score detects nothing."""
    weights = PROFILES[profile]
    parts = [(_rows(series, weights), as_stored(score)) for series, score in zip(corpus, scores)]
    window_ids, sweeps, values, offset = [], [], [], 0
    windows_scored = 0
    for (window, sweep_score, scored), score in parts:
        ids = np.where(window >= 0, window + offset, -1)
        windows_scored += len(np.unique(ids[scored & (ids >= 0)]))
        offset += int(window.max()) + 1 if len(window) and window.max() >= 0 else 0
        window_ids.append(ids[scored])
        sweeps.append(sweep_score[scored])
        values.append(score[scored])
    ids, gains, score = np.concatenate(window_ids), np.concatenate(sweeps), np.concatenate(values)
    order = np.argsort(-score, kind="stable")
    ids, gains, score = ids[order], gains[order], score[order]
    # Outside windows every detection adds its (negative) sweep; inside, a window's part is max(−A_FN, best so far),
    # so a detection adds how much it raises its window's best.
    delta = np.where(ids < 0, gains, 0.0)
    inside = np.flatnonzero(ids >= 0)
    if len(inside):
        group_order = inside[np.lexsort((inside, ids[inside]))]  # by window, then by rank
        group = ids[group_order]
        floor = -weights["fn"]
        best = np.maximum(gains[group_order], floor)
        starts = np.r_[True, group[1:] != group[:-1]]
        running = _grouped_running_max(best, starts)
        before = np.where(starts, floor, np.r_[floor, running[:-1]])
        delta[group_order] = running - before
    total = -weights["fn"] * windows_scored + np.cumsum(delta)
    last_of_level = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    return np.r_[np.inf, score[last_of_level]], np.r_[-weights["fn"] * windows_scored, total[last_of_level]]


def _grouped_running_max(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The running maximum of ``values`` restarting at every ``starts``."""
    group = np.cumsum(starts) - 1
    shift = group * (np.abs(values).max() * 4 + 4)  # lift each group above the previous ones, then take a plain cummax
    return np.maximum.accumulate(values + shift) - shift


def normalised(raw: float, corpus: list[Series], profile: str = "standard") -> float:
    """100·(S − S_null)/(S_perfect − S_null) over the windows of the corpus that have scored rows."""
    weights = PROFILES[profile]
    windows = sum(1 for series in corpus for left, right in series.windows if right >= probation(len(series.values)))
    null, perfect = -weights["fn"] * windows, weights["tp"] * windows
    return 100.0 * (raw - null) / (perfect - null)


def score_at(corpus: list[Series], scores: list[np.ndarray], threshold: float, profile: str = "standard") -> float:
    """The normalised score with detections where the anomaly score is at least ``threshold``."""
    thresholds, raw = sweep(corpus, scores, profile)
    return normalised(float(raw[np.flatnonzero(thresholds >= threshold)[-1]]), corpus, profile)


def best_score(corpus: list[Series], scores: list[np.ndarray], profile: str = "standard") -> tuple[float, float]:
    """NAB's optimised threshold on the corpus and the normalised score there."""
    thresholds, raw = sweep(corpus, scores, profile)
    best = int(np.argmax(raw))
    return float(thresholds[best]), normalised(float(raw[best]), corpus, profile)


def windowed_gaussian(values: np.ndarray, window: int = 6400, step: int = 100) -> np.ndarray:
    """NAB's windowed Gaussian baseline (module docstring): a score per value, from the values before it. The window's
    statistics are numpy's (pairwise summation), as NAB computes them, so that scores at the saturation edge agree."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    out = np.zeros(n)
    # The window after value i covers values[max(0, end - window) : end], end growing by one up to the window size,
    # then by whole steps; value i + 1 is scored with the statistics of the window after value i.
    ends = np.minimum(np.arange(1, n + 1), window)
    beyond = np.arange(1, n + 1) > window
    ends[beyond] = window + (np.arange(1, n + 1)[beyond] - window) // step * step
    change = np.flatnonzero(np.r_[True, np.diff(ends) != 0])
    for position, first in enumerate(change.tolist()):
        end = int(ends[first])
        recent = values[max(0, end - window):end]
        mean, std = np.mean(recent), np.std(recent)
        std = std if std != 0.0 else 0.000001
        last = int(change[position + 1]) if position + 1 < len(change) else n  # rows scored with these statistics
        rows = slice(first + 1, last + 1)
        x = values[rows]
        # NAB's arithmetic: a value below the mean is mirrored (2·mean − x) first; the saturation edge depends on it.
        z = (np.where(x < mean, 2 * mean - x, x) - mean) / std
        out[rows] = 1 - 0.5 * _erfc(z / math.sqrt(2))
    return out


_erfc = np.vectorize(math.erfc, otypes=[np.float64])
