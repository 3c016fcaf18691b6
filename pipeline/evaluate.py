"""``vigil evaluate tabular``: a detector on a labelled table, scored by ROC-AUC and average precision.

The protocol is label-free: hyper-parameters are fixed before looking at the data, every row is both
training and scoring data (the contaminated, unsupervised setting), labels are read only to compute
the two metrics, and the result is the mean over ``seeds`` random initialisations. Features are
z-scored with the table's own mean and standard deviation (+1e-5). ``river-hst`` learns every row once,
in an order shuffled by the seed, then scores every row; ``zscore`` streams the shuffled rows
score-then-learn, as it does in the pipeline.

Tables: ``.mat`` (ODDS: ``X``, ``y``), ``.npz`` (``X``, ``y``) or ``.csv`` (header line, label in the
last column); label 1 marks an outlier.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch


@dataclass(frozen=True)
class Protocol:
    """Fixed hyper-parameters of the label-free protocol."""

    epochs: int = 1000
    k: int = 65
    iterations: int = 1
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)


def load_table(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(X as float64 rows, y as 0/1) from a .mat, .npz or .csv file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table not found: {path}")
    if path.suffix == ".mat":
        from scipy.io import loadmat

        data = loadmat(path)
        X, y = data["X"], data["y"]
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            X, y = data["X"], data["y"]
    elif path.suffix == ".csv":
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        X, y = table[:, :-1], table[:, -1]
    else:
        raise ValueError(f"{path}: expected a .mat, .npz or .csv file")
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y).ravel().astype(int)
    if len(X) != len(y) or not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"{path}: needs one 0/1 label per row")
    return X, y


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney ROC-AUC, ties counted as one half.

    >>> roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Sum over score thresholds of (recall gain) x precision, as scikit-learn defines it.

    >>> round(average_precision(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])), 4)
    0.8333
    """
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, hits = scores[order], labels[order]
    last_of_threshold = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(scores) - 1]
    true_positives = np.cumsum(hits)[last_of_threshold]
    precision = true_positives / (last_of_threshold + 1)
    recall = true_positives / hits.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _autoencoder_scores(X: np.ndarray, seed: int, protocol: Protocol, *, probabilistic: bool, mean_shift: bool) -> np.ndarray:
    from kernels.autoencoder import AutoEncoder, fit
    from kernels.mean_shift import shift_reference

    data = torch.tensor(X, dtype=torch.float32)
    torch.manual_seed(seed)
    model = fit(AutoEncoder(X.shape[1], probabilistic), data, protocol.epochs)
    target = None
    if mean_shift:  # every row is in the reference set, so its target is its own blurred position
        k = min(protocol.k, len(X) - 1)
        target = shift_reference(torch.tensor(X), k, protocol.iterations)[-1].float()
    return model.score(data, target).numpy()


def _river_hst_scores(X: np.ndarray, seed: int, protocol: Protocol) -> np.ndarray:
    from river.anomaly import HalfSpaceTrees

    low, high = X.min(0), X.max(0)
    scaled = (X - low) / np.where(high > low, high - low, 1.0)  # HST expects features in [0, 1]
    rows = [dict(enumerate(row.tolist())) for row in scaled]
    # HST scores 0 until its first window is full: small tables get a window of half their rows.
    model = HalfSpaceTrees(window_size=min(250, max(1, len(X) // 2)), seed=seed)
    for index in np.random.default_rng(seed).permutation(len(X)):
        model.learn_one(rows[index])
    return np.array([model.score_one(x) for x in rows])


def _zscore_scores(X: np.ndarray, seed: int, protocol: Protocol) -> np.ndarray:
    from kernels.ewma import RobustEwma

    order = np.random.default_rng(seed).permutation(len(X))
    kernel = RobustEwma(X.shape[1], alpha=0.02, clip=3.0, warmup=30, min_std=1e-6, device="cpu")
    z = kernel.score_and_learn(np.zeros(len(X), dtype=np.int64), X[order])  # one entity; NaN while warming up
    scores = np.empty(len(X))
    scores[order] = np.nan_to_num(z, nan=0.0).max(axis=1)
    return scores


DETECTORS: dict[str, Callable[[np.ndarray, int, Protocol], np.ndarray]] = {
    "apre-mss": lambda X, seed, p: _autoencoder_scores(X, seed, p, probabilistic=True, mean_shift=True),
    "apre": lambda X, seed, p: _autoencoder_scores(X, seed, p, probabilistic=True, mean_shift=False),
    "mse-ae": lambda X, seed, p: _autoencoder_scores(X, seed, p, probabilistic=False, mean_shift=False),
    "river-hst": _river_hst_scores,
    "zscore": _zscore_scores,
}


def evaluate(X: np.ndarray, y: np.ndarray, detector: str, protocol: Protocol = Protocol()) -> dict:
    """Label-free evaluation: mean (and per-seed) ROC-AUC and average precision."""
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("the labels need both outliers and inliers")
    standardised = (X - X.mean(0)) / (X.std(0) + 1e-5)
    per_seed = []
    for seed in protocol.seeds:
        scores = DETECTORS[detector](standardised, seed, protocol)
        if not np.isfinite(scores).all():
            raise FloatingPointError(f"{detector} produced non-finite scores with seed {seed}")
        per_seed.append({"seed": seed, "roc_auc": roc_auc(scores, y), "average_precision": average_precision(scores, y)})
    mean = lambda key: math.fsum(run[key] for run in per_seed) / len(per_seed)  # noqa: E731
    return {
        "detector": detector,
        "protocol": "label-free",
        "rows": int(len(X)),
        "features": int(X.shape[1]),
        "outliers": int(y.sum()),
        "epochs": protocol.epochs,
        "k": protocol.k,
        "iterations": protocol.iterations,
        "roc_auc": mean("roc_auc"),
        "average_precision": mean("average_precision"),
        "per_seed": per_seed,
    }
