"""Streaming fairness evaluation of Aranyani on a table: the rows in a seeded order, encoded and standardised
online, predicted then learned one at a time, with time-averaged accuracy and demographic parity.

Encoding follows the authors' (Basu Roy Chowdhury et al., 2024): every column but the label is an input, the protected
one included; a categorical column becomes the index of each value's first appearance, and every input is standardised
with the running mean and standard deviation of the rows before it (no look-ahead). The label's two values and the
protected attribute's two values are numbered in sorted order (Adult: ``>50K`` is the positive class).

Metrics are prequential and time-averaged, as the paper reports them: at each step ``t`` the running accuracy and
the running demographic parity ``|P(ŷ = 1 | a = 1) - P(ŷ = 1 | a = 0)|`` over the predictions so far, averaged over
the steps once both groups have been seen.

>>> x, y, a = encode_table({"f": ["1", "2", "3", "4"], "g": ["u", "v", "u", "v"], "y": ["n", "p", "n", "p"]}, "g", "y")
>>> x.tolist(), y.tolist(), a.tolist()
([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [4.0, 1.0]], [0, 1, 0, 1], [0, 1, 0, 1])
>>> running_standardise(x)[:, 0].tolist()  # each row with the statistics of the rows before it
[1.0, 1.0, 3.0, 2.449489742783178]
"""
from __future__ import annotations

import csv
from pathlib import Path

import numba
import numpy as np

from kernels.aranyani import FairLearner, ObliqueForest


def read_table(path: str | Path) -> dict[str, list[str]]:
    """The columns of a CSV file with a header, values stripped of surrounding spaces (Adult's style)."""
    with open(path, newline="") as handle:
        rows = [[cell.strip() for cell in row] for row in csv.reader(handle) if row]
    header, body = rows[0], [row for row in rows[1:] if len(row) == len(rows[0])]
    return {name: [row[i] for row in body] for i, name in enumerate(header)}


@numba.njit(cache=True)
def running_standardise(values):  # pragma: no cover - compiled
    """Each row standardised with the mean and standard deviation of the rows before it (Welford's update)."""
    out = np.empty_like(values)
    mean = np.zeros(values.shape[1])
    m2 = np.zeros(values.shape[1])
    for row in range(values.shape[0]):
        for col in range(values.shape[1]):
            std = np.sqrt(m2[col] / row) if row > 1 else 0.0
            out[row, col] = (values[row, col] - mean[col]) / (std if std > 0 else 1.0)
            delta = values[row, col] - mean[col]
            mean[col] += delta / (row + 1)
            m2[col] += delta * (values[row, col] - mean[col])
    return out


def _binary(values: list[str], name: str) -> np.ndarray:
    levels = sorted(set(values))
    if len(levels) != 2:
        raise ValueError(f"column {name!r} has {len(levels)} values; it must have exactly 2")
    return np.array([levels.index(v) for v in values], dtype=np.int64)


def encode_table(columns: dict[str, list[str]], protected: str, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs (encoded, not yet standardised), labels and protected groups, rows in the file's order."""
    for name in (protected, label):
        if name not in columns:
            raise ValueError(f"no column {name!r} (columns: {', '.join(columns)})")
    inputs = []
    for name, values in columns.items():
        if name == label:
            continue
        try:
            inputs.append(np.array([float(v) for v in values]))
        except ValueError:
            first_seen: dict[str, int] = {}
            inputs.append(np.array([first_seen.setdefault(v, len(first_seen)) for v in values], dtype=np.float64))
    return np.column_stack(inputs), _binary(columns[label], label), _binary(columns[protected], protected)


def time_averaged(predictions: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Running accuracy and demographic parity at every step, averaged over the steps once both groups were seen."""
    steps = np.arange(1, len(y) + 1)
    accuracy = np.cumsum(predictions == y) / steps
    rates = []
    for group in (0, 1):
        members = np.cumsum(groups == group)
        positives = np.cumsum((groups == group) & (predictions == 1))
        rates.append(np.divide(positives, members, out=np.zeros(len(y)), where=members > 0))
    both = (np.cumsum(groups == 0) > 0) & (np.cumsum(groups == 1) > 0)
    return {"accuracy": float(accuracy[both].mean()), "demographic_parity": float(np.abs(rates[1] - rates[0])[both].mean())}


def evaluate_aranyani(x: np.ndarray, y: np.ndarray, groups: np.ndarray, fairness: float, seed: int, *,
                      trees: int = 3, depth: int = 4) -> dict[str, float]:
    """Aranyani over the rows in the order of ``seed``, standardised online in that order."""
    order = np.random.default_rng(seed).permutation(len(y))
    learner = FairLearner(ObliqueForest(x.shape[1], trees=trees, depth=depth, seed=seed), fairness=fairness)
    predictions = learner.learn(running_standardise(np.ascontiguousarray(x[order])), y[order], groups[order])
    return time_averaged(predictions, y[order], groups[order])
