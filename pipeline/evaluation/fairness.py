"""Streaming fairness evaluation on a table (``vigil evaluate fairness``): Aranyani and baselines over the rows in a
seeded order, encoded and standardised online, predicted then learned one at a time, with time-averaged accuracy and
demographic parity.

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

from kernels.adam import BETAS_EPS, adam_step
from kernels.aranyani import FairLearner, ObliqueForest, ReservoirFairLearner
from kernels.standardise import RunningStandardiser


def read_table(path: str | Path) -> dict[str, list[str]]:
    """The columns of a CSV file with a header, values stripped of surrounding spaces (Adult's style)."""
    with open(path, newline="") as handle:
        rows = [[cell.strip() for cell in row] for row in csv.reader(handle) if row]
    header, body = rows[0], [row for row in rows[1:] if len(row) == len(rows[0])]
    return {name: [row[i] for row in body] for i, name in enumerate(header)}


def running_standardise(values: np.ndarray) -> np.ndarray:
    """Each row standardised with the mean and standard deviation of the rows before it."""
    return RunningStandardiser(values.shape[1]).transform(values)


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


@numba.njit(cache=True)
def _logistic(x, y, lr, beta1, beta2, eps, predictions):  # pragma: no cover - compiled
    weight, bias = np.zeros(x.shape[1]), np.zeros(1)
    moments = (np.zeros(x.shape[1]), np.zeros(x.shape[1]), np.zeros(1), np.zeros(1))
    grad_weight, grad_bias = np.empty(x.shape[1]), np.empty(1)
    for row in range(x.shape[0]):
        z = bias[0]
        for j in range(x.shape[1]):
            z += weight[j] * x[row, j]
        p = 1.0 / (1.0 + np.exp(-z))
        predictions[row] = 1 if p >= 0.5 else 0
        residual = p - y[row]
        for j in range(x.shape[1]):
            grad_weight[j] = residual * x[row, j]
        grad_bias[0] = residual
        c1, c2 = 1.0 - beta1 ** (row + 1), 1.0 - beta2 ** (row + 1)
        adam_step(weight, grad_weight, moments[0], moments[1], lr, beta1, beta2, eps, c1, c2)
        adam_step(bias, grad_bias, moments[2], moments[3], lr, beta1, beta2, eps, c1, c2)


@numba.njit(cache=True)
def _mlp(x, y, hidden_weight, output_weight, lr, beta1, beta2, eps, predictions):  # pragma: no cover - compiled
    hidden, features = hidden_weight.shape
    hidden_bias, output_bias = np.zeros(hidden), np.zeros(2)
    m_hw, v_hw, m_hb, v_hb = np.zeros_like(hidden_weight), np.zeros_like(hidden_weight), np.zeros(hidden), np.zeros(hidden)
    m_ow, v_ow, m_ob, v_ob = np.zeros_like(output_weight), np.zeros_like(output_weight), np.zeros(2), np.zeros(2)
    g_hw, g_hb, g_ow, g_ob = np.empty_like(hidden_weight), np.empty(hidden), np.empty_like(output_weight), np.empty(2)
    h, out = np.empty(hidden), np.empty(2)
    for row in range(x.shape[0]):
        for u in range(hidden):
            z = hidden_bias[u]
            for j in range(features):
                z += hidden_weight[u, j] * x[row, j]
            h[u] = max(z, 0.0)
        for k in range(2):
            z = output_bias[k]
            for u in range(hidden):
                z += output_weight[k, u] * h[u]
            out[k] = z
        top = max(out[0], out[1])
        e0, e1 = np.exp(out[0] - top), np.exp(out[1] - top)
        p1 = e1 / (e0 + e1)
        predictions[row] = 1 if out[1] > out[0] else 0
        delta = (1.0 - p1 - (1.0 if y[row] == 0 else 0.0), p1 - (1.0 if y[row] == 1 else 0.0))
        for k in range(2):
            g_ob[k] = delta[k]
            for u in range(hidden):
                g_ow[k, u] = delta[k] * h[u]
        for u in range(hidden):
            back = (output_weight[0, u] * delta[0] + output_weight[1, u] * delta[1]) if h[u] > 0 else 0.0
            g_hb[u] = back
            for j in range(features):
                g_hw[u, j] = back * x[row, j]
        c1, c2 = 1.0 - beta1 ** (row + 1), 1.0 - beta2 ** (row + 1)
        adam_step(hidden_weight, g_hw, m_hw, v_hw, lr, beta1, beta2, eps, c1, c2)
        adam_step(hidden_bias, g_hb, m_hb, v_hb, lr, beta1, beta2, eps, c1, c2)
        adam_step(output_weight, g_ow, m_ow, v_ow, lr, beta1, beta2, eps, c1, c2)
        adam_step(output_bias, g_ob, m_ob, v_ob, lr, beta1, beta2, eps, c1, c2)


def _hoeffding_adaptive_tree(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    from river import tree  # imported on use: river's tree package is heavy

    model = tree.HoeffdingAdaptiveTreeClassifier(seed=seed)
    predictions = np.empty(len(y), dtype=np.int64)
    for row, (features, label) in enumerate(zip(x.tolist(), y.tolist())):
        sample = dict(enumerate(features))
        predictions[row] = model.predict_one(sample) or 0
        model.learn_one(sample, label)
    return predictions


def _majority_mixing(predictions: np.ndarray, y: np.ndarray, seed: int, keep: float = 0.5) -> np.ndarray:
    """The authors' majority baseline: each prediction is kept with probability ``keep``, otherwise replaced by the
    majority label among the labels seen before it."""
    positives_before = np.r_[0, np.cumsum(y)[:-1]]
    majority = (2 * positives_before > np.arange(len(y))).astype(np.int64)
    return np.where(np.random.default_rng([seed, 1]).random(len(y)) < keep, predictions, majority)


METHODS = ("aranyani", "reservoir", "logistic", "mlp", "hoeffding_adaptive_tree", "majority")
FAIR_METHODS = ("aranyani", "reservoir")  # run once per λ


def evaluate_method(method: str, x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int, fairness: float = 0.0,
                    *, trees: int = 3, depth: int = 4) -> dict[str, float]:
    """One method on the rows in the order of ``seed``, standardised online in that order. ``aranyani`` and
    ``reservoir`` (the storage-based fairness baseline, 100 stored inputs per group) use ``fairness`` (λ); the other
    baselines learn without fairness: online logistic regression and a one-hidden-layer MLP of 2^depth - 1 ReLU units
    (Adam, learning rate 2e-3 like Aranyani), river's Hoeffding Adaptive Tree, and majority mixing on top of Aranyani
    at λ = 0."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    order = np.random.default_rng(seed).permutation(len(y))
    x, y, groups = running_standardise(np.ascontiguousarray(x[order])), y[order], groups[order]
    beta1, beta2, eps = BETAS_EPS
    predictions = np.empty(len(y), dtype=np.int64)
    if method in ("aranyani", "reservoir", "majority"):
        forest = ObliqueForest(x.shape[1], trees=trees, depth=depth, seed=seed)
        learner = (ReservoirFairLearner(forest, fairness, seed=seed) if method == "reservoir"
                   else FairLearner(forest, fairness=fairness if method == "aranyani" else 0.0))
        predictions = learner.learn(x, y, groups)
        if method == "majority":
            predictions = _majority_mixing(predictions, y, seed)
    elif method == "logistic":
        _logistic(x, y, 2e-3, beta1, beta2, eps, predictions)
    elif method == "mlp":
        rng = np.random.default_rng(seed)
        hidden = 2 ** depth - 1
        _mlp(x, y, rng.normal(0, 1 / np.sqrt(x.shape[1]), (hidden, x.shape[1])),
             rng.normal(0, 1 / np.sqrt(hidden), (2, hidden)), 2e-3, beta1, beta2, eps, predictions)
    else:
        predictions = _hoeffding_adaptive_tree(x, y, seed)
    return time_averaged(predictions, y, groups)


def compare(x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, fairness: tuple[float, ...], seeds: int,
            methods: tuple[str, ...] = METHODS) -> list[dict]:
    """Per method (and per λ for Aranyani): accuracy and demographic parity, means over seeds 0 .. seeds - 1."""
    results = []
    for method in methods:
        for weight in (fairness if method in FAIR_METHODS else (0.0,)):
            runs = [evaluate_method(method, x, y, groups, seed, weight) for seed in range(seeds)]
            results.append({"method": method, "lambda": weight,
                            **{key: float(np.mean([run[key] for run in runs])) for key in runs[0]},
                            "per_seed": runs})
    return results


def plot_trade_off(results: list[dict], path: str | Path, title: str) -> None:
    """Accuracy against demographic parity: the λ sweeps as lines, each other baseline as a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for method, style in zip(FAIR_METHODS, ("o-", "^--")):
        sweep = sorted((r for r in results if r["method"] == method), key=lambda r: r["lambda"])
        axes.plot([r["demographic_parity"] for r in sweep], [r["accuracy"] for r in sweep], style,
                  label=f"{method} (λ sweep)")
        for r in sweep:
            axes.annotate(f"λ={r['lambda']:g}", (r["demographic_parity"], r["accuracy"]), fontsize=7,
                          textcoords="offset points", xytext=(4, 4))
    for r in results:
        if r["method"] not in FAIR_METHODS:
            axes.plot(r["demographic_parity"], r["accuracy"], "s", label=r["method"])
    axes.set_xlabel("demographic parity (time-averaged, lower is fairer)")
    axes.set_ylabel("accuracy (time-averaged)")
    axes.set_title(title)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
