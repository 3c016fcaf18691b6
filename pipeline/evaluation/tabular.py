"""``vigil evaluate tabular``: a detector on a labelled table, scored by ROC-AUC and average precision.

Both protocols follow the authors' code for MSS-PAE (Tan et al., references below) and share one split:

* **Split.** Stratified 50 / 25 / 25 % (train / valid / test), inliers and outliers split separately,
  exactly as the authors' ``load_data`` does it with ``np.random.seed(42)``: the legacy NumPy generator
  shuffles the inliers, then the outliers, position ``i < 0.5 n`` goes to train, ``< 0.75 n`` to valid,
  the rest to test; each part is then shuffled. Labels are read here only to stratify.
* **Standardisation.** z-score with the mean and the (unbiased, as ``torch.std``) standard deviation of
  train ∪ valid, plus 1e-5; the test part uses the same statistics.
* **Learning.** Every detector learns from train ∪ valid (75 %, outliers included: contaminated and
  unsupervised) and scores the test part (25 %). The autoencoders train full batch (Adam 1e-3,
  StepLR(1000, 0.5)); the PAE trains on APRE(1, 1) and scores with APRE(0.5, 2).
* **MSS.** The reference set is standardised train ∪ valid, blurred by ``iterations`` steps of mean shift
  with ``k`` neighbours (the point included); a test point is shifted inductively (itself plus its k - 1
  nearest reference points, ``kernels.mean_shift.shift_queries``). The score compares the autoencoder's
  output for the *original* point with its shifted version.

``Protocol`` (``--protocol label-free``, the default) fixes everything before looking at labels: k = 65,
m = 1, the model after the last epoch, the mean over seeds 0-4; labels are read only to compute the
metrics on the test part. ``river-hst`` and PySAD's ``xstream``, ``loda`` and ``rshash`` learn train ∪ valid
once in an order shuffled by the seed, then score the test rows; ``zscore``, ``knn`` and ``knn-rshash`` (the
default) learn train ∪ valid in seeded order, then score each test row against the learned state without learning
from it (the seed also draws knn-rshash's grids).

``AuthorsProtocol`` (``--protocol authors``) is the authors' **label-tuned** selection (their ``main.py``):
20 random inits (seeds 0-19); k in 2..min(100, n_fit - 1) chosen on validation
labels (the k whose mean min-max-normalised validation score over the seeds {0, 10, 20, 30, 40}, each
taken at its best validation epoch, has the best validation ROC-AUC); then, for each seed, the epoch with
the best validation ROC-AUC, and the seed with the best validation ROC-AUC, whose test metrics are
reported. The validation rows are part of the training set, as in the authors' code. ``apre`` and
``mse-ae`` have no k: only the epoch and the seed are tuned. Results are optimistic by construction and
marked ``label_tuned``. The authors evaluate the validation part after every epoch; ``eval_every``
(``--eval-every``) evaluates it every N epochs (and after the last), which is what makes the protocol
affordable on a CPU. All k are scored at once: for m = 1 the shifted targets of every k come from one
sorted list of the nearest reference rows and a cumulative sum over it.

Tables: ``.mat`` (ODDS: ``X``, ``y``), ``.npz`` (``X``, ``y``) or ``.csv`` (header line, label in the
last column); label 1 marks an outlier.

References
----------
Tan, X., Yang, J., Chen, J., Rahardja, S. and Rahardja, S. (2025). MSS-PAE: Saving autoencoder-based
outlier detection from unexpected reconstruction. *Pattern Recognition* 163, 111467 (arXiv 2304.00709);
code: github.com/Ra1demmmm/Autoencoder-based-Outlier-Detection (``load_data``, ``main.py``, ``run_main.sh``).

Rayana, S. (2016). ODDS Library. Stony Brook University.

Yilmaz, S. F. and Kozat, S. S. (2020). PySAD: A streaming anomaly detection framework in Python. arXiv 2009.02572
(xStream: Manzoor, Lamba and Akoglu, KDD 2018; LODA: Pevný, Machine Learning 102, 2016; RS-Hash: Sathe and
Aggarwal, ICDM 2016).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from pipeline.evaluation import timeseries
from pipeline.evaluation.timeseries import roc_auc_rows

DEFAULT_EPOCHS = 5000  # the authors' run_main.sh
AUTOENCODERS = ("apre-mss", "apre", "mse-ae")


@dataclass(frozen=True)
class Protocol:
    """Fixed hyper-parameters of the label-free protocol."""

    epochs: int = DEFAULT_EPOCHS
    k: int = 65
    iterations: int = 1
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    split_seed: int = 42


@dataclass(frozen=True)
class AuthorsProtocol:
    """The authors' label-tuned protocol: k, epoch and seed chosen on validation labels."""

    epochs: int = DEFAULT_EPOCHS
    iterations: int = 1
    seeds: tuple[int, ...] = tuple(range(20))
    k_seeds: tuple[int, ...] = (0, 10, 20, 30, 40)
    k_max: int = 100
    eval_every: int = 10
    split_seed: int = 42


@dataclass(frozen=True)
class Split:
    """Row indices of the three parts; ``fit`` (train then valid) is what detectors learn from."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    @property
    def fit(self) -> np.ndarray:
        return np.r_[self.train, self.valid]


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


def stratified_split(y: np.ndarray, seed: int = 42, train: float = 0.5, valid: float = 0.25) -> Split:
    """The authors' stratified split (``libs/data.py``), reproduced with the legacy NumPy generator.

    >>> split = stratified_split(np.r_[np.zeros(8, int), np.ones(4, int)])
    >>> len(split.train), len(split.valid), len(split.test)
    (6, 3, 3)
    """
    rng = np.random.RandomState(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for label in (0, 1):  # inliers first, as the authors do
        rows = np.flatnonzero(y == label)
        order = list(range(len(rows)))
        rng.shuffle(order)
        rows, position = rows[order], np.arange(len(rows))
        parts[0].append(rows[position < train * len(rows)])
        parts[1].append(rows[(position >= train * len(rows)) & (position < (train + valid) * len(rows))])
        parts[2].append(rows[position >= (train + valid) * len(rows)])
    shuffled = []
    for part in parts:
        rows = np.concatenate(part)
        shuffled.append(rows[rng.choice(range(len(rows)), len(rows), replace=False)])
    return Split(*shuffled)


def standardise(X: np.ndarray, split: Split) -> np.ndarray:
    """z-score every row with the train ∪ valid mean and unbiased standard deviation (+1e-5)."""
    fit = X[split.fit]
    return (X - fit.mean(0)) / (fit.std(0, ddof=1) + 1e-5)


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney ROC-AUC, ties counted as one half (:func:`pipeline.evaluation.timeseries.roc_auc`).

    >>> roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    return timeseries.roc_auc(labels, scores)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Sum over score thresholds of (recall gain) x precision, as scikit-learn defines it
    (:func:`pipeline.evaluation.timeseries.average_precision`).

    >>> round(average_precision(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])), 4)
    0.8333
    """
    return timeseries.average_precision(labels, scores)


# ----------------------------------------------------------------------------------------------------
# Label-free detectors: (standardised train ∪ valid, standardised test, seed, protocol) -> test scores.
# None of them sees a label.


def _train_autoencoder(X_fit: np.ndarray, seed: int, epochs: int, probabilistic: bool):
    from kernels.autoencoder import AutoEncoder, fit

    torch.manual_seed(seed)
    return fit(AutoEncoder(X_fit.shape[1], probabilistic), torch.tensor(X_fit, dtype=torch.float32), epochs)


def mss_targets(X_fit: np.ndarray, X_test: np.ndarray, k: int, iterations: int) -> torch.Tensor:
    """Test rows after ``iterations`` inductive mean-shift steps against the blurred train ∪ valid."""
    from kernels.mean_shift import shift_queries, shift_reference

    steps = shift_reference(torch.tensor(X_fit), k, iterations)
    return shift_queries(torch.tensor(X_test), steps, k).float()


def _effective_k(k: int, n_fit: int) -> int:
    if n_fit < 3:
        raise ValueError("mean-shift scoring needs at least 3 training rows")
    return max(2, min(k, n_fit - 1))


def _autoencoder_scores(X_fit: np.ndarray, X_test: np.ndarray, seed: int, protocol: Protocol, *,
                        probabilistic: bool, mean_shift: bool) -> np.ndarray:
    model = _train_autoencoder(X_fit, seed, protocol.epochs, probabilistic)
    target = mss_targets(X_fit, X_test, _effective_k(protocol.k, len(X_fit)), protocol.iterations) if mean_shift else None
    return model.score(torch.tensor(X_test, dtype=torch.float32), target).numpy()


def _scaled_hst(reference: np.ndarray, seed: int):
    """river's HalfSpaceTrees and the rows' scaling to [0, 1] by the range of ``reference`` (rows outside it are
    allowed); HST scores 0 until its first window is full, so small tables get a window of half their rows."""
    from river.anomaly import HalfSpaceTrees

    low, high = reference.min(0), reference.max(0)
    span = np.where(high > low, high - low, 1.0)
    model = HalfSpaceTrees(window_size=min(250, max(1, len(reference) // 2)), seed=seed)
    return model, lambda row: dict(enumerate(((row - low) / span).tolist()))


def _zscore_kernel(d: int):
    """The zscore operator's kernel with the operator's defaults."""
    from kernels.ewma import RobustEwma
    from operators.zscore import ZScoreParams

    p = ZScoreParams()
    return RobustEwma(d, alpha=p.alpha, clip=p.clip, warmup=p.warmup, min_std=p.min_std)


def _river_hst_scores(X_fit: np.ndarray, X_test: np.ndarray, seed: int, protocol: Protocol) -> np.ndarray:
    model, features = _scaled_hst(X_fit, seed)
    for index in np.random.default_rng(seed).permutation(len(X_fit)):
        model.learn_one(features(X_fit[index]))
    return np.array([model.score_one(features(row)) for row in X_test])


def _zscore_scores(X_fit: np.ndarray, X_test: np.ndarray, seed: int, protocol: Protocol) -> np.ndarray:
    kernel = _zscore_kernel(X_fit.shape[1])
    order = np.random.default_rng(seed).permutation(len(X_fit))
    kernel.score_and_learn(np.zeros(len(X_fit), dtype=np.int64), X_fit[order])  # one entity
    # Score without learning: every test row gets its own copy of the learned state.
    learned = kernel.snapshot()
    kernel.restore({name: np.repeat(value, len(X_test), axis=0) for name, value in learned.items()})
    z = kernel.score_and_learn(np.arange(len(X_test)), X_test)  # NaN if train ∪ valid was too short to warm up
    return np.nan_to_num(z, nan=0.0).max(axis=1)


def _window_detector(name: str, d: int, seed: int):
    """The knn or knn-rshash kernel with the operator's defaults; the seed draws knn-rshash's grids."""
    from kernels.knn import KnnDistance
    from kernels.knn_ensemble import KnnSubspaceEnsemble

    return KnnDistance(d) if name == "knn" else KnnSubspaceEnsemble(d, seed=seed)


def _knn_scores(name: str, X_fit: np.ndarray, X_test: np.ndarray, seed: int, protocol: Protocol) -> np.ndarray:
    detector = _window_detector(name, X_fit.shape[1], seed)
    detector.score_and_learn(X_fit[np.random.default_rng(seed).permutation(len(X_fit))])  # the window: the last rows
    return detector.score_only(X_test)


def _iforest() -> type:
    try:
        from sklearn.ensemble import IsolationForest
    except ImportError:
        raise RuntimeError("the iforest baseline needs scikit-learn: pip install 'vigil[baselines]'") from None
    return IsolationForest


def _iforest_scores(X_fit: np.ndarray, X_test: np.ndarray, seed: int, protocol: Protocol) -> np.ndarray:
    """scikit-learn's IsolationForest with its defaults (100 trees, 256 samples each)."""
    return -_iforest()(random_state=seed).fit(X_fit).score_samples(X_test)


# PySAD's streaming detectors with their defaults (pysad 0.7.0: its earlier LODA rebuilt every histogram from the
# current row alone). RS-Hash normalises by feature ranges given up front: those of the rows it learns first.
PYSAD = {"xstream": "xStream", "loda": "LODA", "rshash": "RSHash"}


def _pysad_model(name: str, first_rows: np.ndarray, seed: int):
    try:
        import pysad.models
    except ImportError:
        raise RuntimeError(f"the {name} baseline needs pysad: pip install 'vigil[baselines]'") from None
    ranges = {"feature_mins": first_rows.min(0), "feature_maxes": first_rows.max(0)} if name == "rshash" else {}
    return getattr(pysad.models, PYSAD[name])(random_state=seed, **ranges)


def _pysad_scores(name: str, X_fit: np.ndarray, X_test: np.ndarray, seed: int, protocol: Protocol) -> np.ndarray:
    """Learn train ∪ valid row by row in an order shuffled by the seed, then score the test rows without learning."""
    model = _pysad_model(name, X_fit, seed)
    for index in np.random.default_rng(seed).permutation(len(X_fit)):
        model.fit_partial(X_fit[index])
    return np.array([model.score_partial(row) for row in X_test])


DETECTORS: dict[str, Callable[[np.ndarray, np.ndarray, int, Protocol], np.ndarray]] = {
    "knn-rshash": partial(_knn_scores, "knn-rshash"),
    "knn": partial(_knn_scores, "knn"),
    "iforest": _iforest_scores,
    **{name: partial(_pysad_scores, name) for name in PYSAD},
    "apre-mss": lambda F, T, seed, p: _autoencoder_scores(F, T, seed, p, probabilistic=True, mean_shift=True),
    "apre": lambda F, T, seed, p: _autoencoder_scores(F, T, seed, p, probabilistic=True, mean_shift=False),
    "mse-ae": lambda F, T, seed, p: _autoencoder_scores(F, T, seed, p, probabilistic=False, mean_shift=False),
    "river-hst": _river_hst_scores,
    "zscore": _zscore_scores,
}


def _check_labels(y: np.ndarray, split: Split, parts: tuple[str, ...] = ("test",)) -> None:
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("the labels need both outliers and inliers")
    for name in parts:
        part = y[getattr(split, name)]
        if len(part) == 0 or part.sum() in (0, len(part)):
            raise ValueError(f"the {name} part needs both outliers and inliers: the table is too small for a 50/25/25 split")


def _header(X: np.ndarray, y: np.ndarray, split: Split, detector: str) -> dict:
    return {
        "detector": detector,
        "rows": int(len(X)),
        "features": int(X.shape[1]),
        "outliers": int(y.sum()),
        "split": {"train": int(len(split.train)), "valid": int(len(split.valid)), "test": int(len(split.test)),
                  "test_outliers": int(y[split.test].sum())},
    }


def label_free_test_scores(X: np.ndarray, split: Split, detectors: list[str], protocol: Protocol = Protocol()
                           ) -> dict[str, list[np.ndarray]]:
    """Test-part scores per detector and seed. Takes no labels; one PAE per seed serves apre and apre-mss."""
    standardised = standardise(X, split)
    X_fit, X_test = standardised[split.fit], standardised[split.test]
    scores: dict[str, list[np.ndarray]] = {name: [] for name in detectors}
    for seed in protocol.seeds:
        if {"apre", "apre-mss"} & set(detectors):
            model = _train_autoencoder(X_fit, seed, protocol.epochs, probabilistic=True)
            test = torch.tensor(X_test, dtype=torch.float32)
            if "apre" in detectors:
                scores["apre"].append(model.score(test).numpy())
            if "apre-mss" in detectors:
                target = mss_targets(X_fit, X_test, _effective_k(protocol.k, len(X_fit)), protocol.iterations)
                scores["apre-mss"].append(model.score(test, target).numpy())
        for name in detectors:
            if name not in ("apre", "apre-mss"):
                scores[name].append(DETECTORS[name](X_fit, X_test, seed, protocol))
    for name, runs in scores.items():
        for seed, run in zip(protocol.seeds, runs):
            if not np.isfinite(run).all():
                raise FloatingPointError(f"{name} produced non-finite scores with seed {seed}")
    return scores


def evaluate_label_free(X: np.ndarray, y: np.ndarray, detectors: list[str], protocol: Protocol = Protocol(), *,
                        split: Split | None = None, keep_scores: bool = False) -> dict[str, dict]:
    """Label-free evaluation of several detectors on one split: mean and per-seed test metrics."""
    unknown = [name for name in detectors if name not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; choose from {list(DETECTORS)}")
    split = stratified_split(y, protocol.split_seed) if split is None else split
    _check_labels(y, split)
    started = time.perf_counter()
    scores = label_free_test_scores(X, split, detectors, protocol)  # labels are not passed
    seconds = time.perf_counter() - started
    test_labels = y[split.test]
    results = {}
    for name in detectors:
        per_seed = [{"seed": seed, "roc_auc": roc_auc(run, test_labels), "average_precision": average_precision(run, test_labels)}
                    for seed, run in zip(protocol.seeds, scores[name])]
        if keep_scores:
            for entry, run in zip(per_seed, scores[name]):
                entry["test_scores"] = run.tolist()
        mean = lambda key: math.fsum(run[key] for run in per_seed) / len(per_seed)  # noqa: E731, B023
        results[name] = {
            **_header(X, y, split, name),
            "protocol": "label-free",
            "label_tuned": False,
            "split_seed": protocol.split_seed,
            "epochs": protocol.epochs if name in AUTOENCODERS else None,
            "k": _effective_k(protocol.k, len(split.fit)) if name == "apre-mss" else None,
            "iterations": protocol.iterations if name == "apre-mss" else None,
            "seeds": list(protocol.seeds),
            "roc_auc": mean("roc_auc"),
            "average_precision": mean("average_precision"),
            "per_seed": per_seed,
            "seconds_all_detectors": seconds,
        }
    return results


def evaluate(X: np.ndarray, y: np.ndarray, detector: str, protocol: Protocol | AuthorsProtocol | Prequential = Protocol(),
             *, split: Split | None = None, keep_scores: bool = False) -> dict:
    """One detector under ``protocol`` (label-free by default): test ROC-AUC and average precision."""
    if isinstance(protocol, AuthorsProtocol):
        return evaluate_authors(X, y, detector, protocol, split=split)
    if isinstance(protocol, Prequential):
        return evaluate_prequential(X, y, [detector], protocol)[detector]
    return evaluate_label_free(X, y, [detector], protocol, split=split, keep_scores=keep_scores)[detector]


# ----------------------------------------------------------------------------------------------------
# The prequential protocol: how an operator runs.


@dataclass(frozen=True)
class Prequential:
    """Rows in a seeded random order; each is scored before the detector learns it; ROC-AUC and average precision
    over the rows after the first ``warmup_share``. Every detector sees raw values and keeps its own units: kNN its
    past-only standard deviations, zscore its running moments, river's HalfSpaceTrees and PySAD's RS-Hash the range of
    the warm-up rows, IsolationForest none (trees split each column on its own scale), refit every ``refit_every``
    rows on the last ``window`` rows (iForestASD: Ding and Fei, 2013). PySAD's detectors score, then learn, each row."""

    seeds: tuple[int, ...] = (0, 1, 2)
    warmup_share: float = 0.2
    window: int = 2048
    refit_every: int = 256


def _prequential_knn(name: str, X: np.ndarray, warm: int, seed: int, protocol: Prequential) -> np.ndarray:
    return _window_detector(name, X.shape[1], seed).score_and_learn(X)


def _prequential_iforest(X: np.ndarray, warm: int, seed: int, protocol: Prequential) -> np.ndarray:
    forest, scores = _iforest(), np.full(len(X), np.nan)
    for start in range(warm, len(X), protocol.refit_every):
        model = forest(random_state=seed).fit(X[max(0, start - protocol.window):start])
        scores[start:start + protocol.refit_every] = -model.score_samples(X[start:start + protocol.refit_every])
    return scores


def _prequential_zscore(X: np.ndarray, warm: int, seed: int, protocol: Prequential) -> np.ndarray:
    z = _zscore_kernel(X.shape[1]).score_and_learn(np.zeros(len(X), dtype=np.int64), X)
    return np.nan_to_num(z, nan=0.0).max(axis=1)


def _prequential_river_hst(X: np.ndarray, warm: int, seed: int, protocol: Prequential) -> np.ndarray:
    model, features = _scaled_hst(X[:warm], seed)  # the warm-up rows' range: no look-ahead
    scores = np.empty(len(X))
    for row, values in enumerate(X):
        scores[row] = model.score_one(point := features(values))
        model.learn_one(point)
    return scores


def _prequential_pysad(name: str, X: np.ndarray, warm: int, seed: int, protocol: Prequential) -> np.ndarray:
    model = _pysad_model(name, X[:warm], seed)  # RS-Hash: the warm-up rows' range, no look-ahead
    return np.array([model.fit_score_partial(row) for row in X])  # scores each row, then learns it


PREQUENTIAL: dict[str, Callable[[np.ndarray, int, int, Prequential], np.ndarray]] = {
    "knn-rshash": partial(_prequential_knn, "knn-rshash"),
    "knn": partial(_prequential_knn, "knn"),
    "iforest": _prequential_iforest,
    **{name: partial(_prequential_pysad, name) for name in PYSAD},
    "zscore": _prequential_zscore,
    "river-hst": _prequential_river_hst,
}


def evaluate_prequential(X: np.ndarray, y: np.ndarray, detectors: list[str], protocol: Prequential = Prequential()
                         ) -> dict[str, dict]:
    """The prequential protocol (:class:`Prequential`) for several detectors: mean and per-seed metrics."""
    unknown = [name for name in detectors if name not in PREQUENTIAL]
    if unknown:
        raise ValueError(f"no prequential run for {unknown}; choose from {list(PREQUENTIAL)}")
    warm = math.ceil(protocol.warmup_share * len(X))
    if warm < 2 or warm >= len(X):
        raise ValueError(f"{len(X)} rows leave nothing to warm up on or to score")
    results = {}
    for name in detectors:
        per_seed, started = [], time.perf_counter()
        for seed in protocol.seeds:
            order = np.random.default_rng(seed).permutation(len(X))
            scores = PREQUENTIAL[name](np.asarray(X, dtype=np.float64)[order], warm, seed, protocol)[warm:]
            labels = y[order][warm:]
            if not np.isfinite(scores).all():
                raise FloatingPointError(f"{name} produced non-finite scores after the warm-up with seed {seed}")
            if labels.sum() in (0, len(labels)):
                raise ValueError("the rows after the warm-up need both outliers and inliers")
            per_seed.append({"seed": seed, "roc_auc": roc_auc(scores, labels),
                             "average_precision": average_precision(scores, labels)})
        mean = lambda key: math.fsum(run[key] for run in per_seed) / len(per_seed)  # noqa: E731, B023
        results[name] = {"detector": name, "rows": int(len(X)), "features": int(X.shape[1]), "outliers": int(y.sum()),
                         "protocol": "prequential", "label_tuned": False, "seeds": list(protocol.seeds),
                         "warmup_rows": warm, "roc_auc": mean("roc_auc"), "average_precision": mean("average_precision"),
                         "per_seed": per_seed, "seconds": time.perf_counter() - started}
    return results


# ----------------------------------------------------------------------------------------------------
# The authors' label-tuned protocol.


def _nearest(queries: torch.Tensor, reference: torch.Tensor, n: int, chunk_rows: int = 1024) -> torch.Tensor:
    """Indices of the ``n`` nearest reference rows of every query, nearest first."""
    reference_norms = (reference**2).sum(-1)
    out = []
    for start in range(0, len(queries), chunk_rows):
        block = queries[start : start + chunk_rows]
        distances = (block**2).sum(-1, keepdim=True) + reference_norms - 2 * block @ reference.T
        out.append(distances.topk(n, dim=1, largest=False, sorted=True).indices)
    return torch.cat(out)


def all_k_targets(X_fit: np.ndarray, valid_rows: np.ndarray, X_test: np.ndarray, ks: list[int], iterations: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-shifted (valid, test) targets for every k: tensors of shape (len(ks), rows, features).

    Valid rows belong to the reference set (their target is their blurred position); test rows are shifted
    inductively. For one iteration, one sorted neighbour list per row and a cumulative sum give every k;
    for more, each k is shifted with ``kernels.mean_shift``.
    """
    reference, test = torch.tensor(X_fit), torch.tensor(X_test)
    if iterations == 1:
        k_max = max(ks)
        valid = reference[valid_rows]
        valid_sums = reference[_nearest(valid, reference, k_max)].cumsum(1)  # the point itself comes first
        test_sums = reference[_nearest(test, reference, k_max - 1)].cumsum(1)
        index = torch.tensor(ks)
        sizes = index.to(reference.dtype)[:, None, None]
        valid_targets = valid_sums[:, index - 1].transpose(0, 1) / sizes
        test_targets = (test[None] + test_sums[:, index - 2].transpose(0, 1)) / sizes
        return valid_targets.float(), test_targets.float()
    from kernels.mean_shift import shift_queries, shift_reference

    valid_targets, test_targets = [], []
    for k in ks:
        steps = shift_reference(reference, k, iterations)
        valid_targets.append(steps[-1][valid_rows])
        test_targets.append(shift_queries(test, steps, k))
    return torch.stack(valid_targets).float(), torch.stack(test_targets).float()


def _train_tracking_best(X_fit: np.ndarray, X_valid: np.ndarray, valid_targets: torch.Tensor, valid_labels: np.ndarray,
                         X_test: np.ndarray, test_targets: torch.Tensor, seed: int, protocol: AuthorsProtocol,
                         probabilistic: bool) -> dict:
    """Train like ``kernels.autoencoder.fit``; every ``eval_every`` epochs score the valid part against every
    target and keep, per target, the first epoch with the best validation ROC-AUC and its valid and test scores."""
    from kernels.autoencoder import AutoEncoder

    torch.manual_seed(seed)
    model = AutoEncoder(X_fit.shape[1], probabilistic)
    data = torch.tensor(X_fit, dtype=torch.float32)
    valid, test = torch.tensor(X_valid, dtype=torch.float32), torch.tensor(X_test, dtype=torch.float32)
    n_targets = len(valid_targets)
    best = {"auc": np.zeros(n_targets), "epoch": np.zeros(n_targets, dtype=int),
            "valid_scores": np.zeros((n_targets, len(X_valid))), "test_scores": np.zeros((n_targets, len(X_test)))}
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.StepLR(optimiser, step_size=1000, gamma=0.5)
    for epoch in range(1, protocol.epochs + 1):
        model.train()
        optimiser.zero_grad()
        model.training_loss(data).backward()
        optimiser.step()
        schedule.step()
        if epoch % protocol.eval_every and epoch != protocol.epochs:
            continue
        model.eval()
        valid_scores = model.score(valid, valid_targets).numpy().astype(np.float64)  # (targets, rows) by broadcasting
        aucs = roc_auc_rows(valid_scores, valid_labels)
        improved = aucs > best["auc"]
        if improved.any():
            chosen = torch.from_numpy(np.flatnonzero(improved))
            best["auc"][improved] = aucs[improved]
            best["epoch"][improved] = epoch
            best["valid_scores"][improved] = valid_scores[improved]
            best["test_scores"][improved] = model.score(test, test_targets[chosen]).numpy()
    return best


def _min_max(scores: np.ndarray) -> np.ndarray:
    low, high = scores.min(-1, keepdims=True), scores.max(-1, keepdims=True)
    return (scores - low) / np.where(high > low, high - low, 1.0)


def evaluate_authors(X: np.ndarray, y: np.ndarray, detector: str, protocol: AuthorsProtocol = AuthorsProtocol(), *,
                     split: Split | None = None) -> dict:
    """The authors' label-tuned protocol for an autoencoder detector (see the module docstring)."""
    if detector not in AUTOENCODERS:
        raise ValueError(f"--protocol authors applies to the autoencoders {list(AUTOENCODERS)}, not {detector}")
    if protocol.eval_every < 1 or protocol.epochs < 1 or not protocol.seeds:
        raise ValueError("the authors' protocol needs epochs >= 1, eval_every >= 1 and at least one seed")
    split = stratified_split(y, protocol.split_seed) if split is None else split
    _check_labels(y, split, ("valid", "test"))
    started = time.perf_counter()
    standardised = standardise(X, split)
    X_fit, X_valid, X_test = standardised[split.fit], standardised[split.valid], standardised[split.test]
    valid_labels, test_labels = y[split.valid], y[split.test]
    mean_shift = detector == "apre-mss"
    # Target 0 is the row itself (no MSS); targets 1.. are the mean-shifted rows for k = 2..k_max.
    ks = list(range(2, min(protocol.k_max, len(X_fit) - 1) + 1)) if mean_shift else []
    valid_targets = torch.tensor(X_valid, dtype=torch.float32)[None]
    test_targets = torch.tensor(X_test, dtype=torch.float32)[None]
    if ks:
        valid_rows = np.arange(len(split.train), len(split.fit))  # valid rows sit after train rows in X_fit
        shifted_valid, shifted_test = all_k_targets(X_fit, valid_rows, X_test, ks, protocol.iterations)
        valid_targets, test_targets = torch.cat([valid_targets, shifted_valid]), torch.cat([test_targets, shifted_test])
    runs = {}
    for seed in sorted(set(protocol.seeds) | (set(protocol.k_seeds) if ks else set())):
        runs[seed] = _train_tracking_best(X_fit, X_valid, valid_targets, valid_labels, X_test, test_targets, seed, protocol,
                                          probabilistic=detector != "mse-ae")
    if ks:  # pick k: the mean over the k-seeds of the min-max-normalised best-epoch validation scores
        mean_scores = np.mean([_min_max(runs[seed]["valid_scores"][1:]) for seed in protocol.k_seeds], axis=0)
        k_aucs = roc_auc_rows(mean_scores, valid_labels)
        target = 1 + int(np.argmax(k_aucs))
    else:
        target = 0

    def select(target: int) -> dict:
        per_seed = [{"seed": seed, "epoch": int(runs[seed]["epoch"][target]),
                     "validation_roc_auc": float(runs[seed]["auc"][target]),
                     "roc_auc": roc_auc(runs[seed]["test_scores"][target], test_labels),
                     "average_precision": average_precision(runs[seed]["test_scores"][target], test_labels)}
                    for seed in protocol.seeds]
        chosen = max(per_seed, key=lambda run: run["validation_roc_auc"])  # the first seed among equals
        return {"seed": chosen["seed"], "epoch": chosen["epoch"], "validation_roc_auc": chosen["validation_roc_auc"],
                "roc_auc": chosen["roc_auc"], "average_precision": chosen["average_precision"], "per_seed": per_seed}

    selected = select(target)
    result = {
        **_header(X, y, split, detector),
        "protocol": "authors (label-tuned)",
        "label_tuned": True,
        "note": "label-tuned: " + ("k, " if ks else "")
        + "epoch and seed chosen on validation labels; optimistic by construction",
        "split_seed": protocol.split_seed,
        "epochs": protocol.epochs,
        "eval_every": protocol.eval_every,
        "iterations": protocol.iterations if ks else None,
        "seeds": list(protocol.seeds),
        "k_seeds": list(protocol.k_seeds) if ks else None,
        "k_range": [ks[0], ks[-1]] if ks else None,
        "k": ks[target - 1] if ks else None,
        "k_validation_roc_auc": {str(k): float(auc) for k, auc in zip(ks, k_aucs)} if ks else None,
        "roc_auc": selected["roc_auc"],
        "average_precision": selected["average_precision"],
        "selected_seed": selected["seed"],
        "selected_epoch": selected["epoch"],
        "validation_roc_auc": selected["validation_roc_auc"],
        "per_seed": selected["per_seed"],
    }
    if ks:  # the same runs without MSS (the authors' "non-MSS" column)
        without = select(0)
        result["without_mss"] = {key: without[key]
                                 for key in ("roc_auc", "average_precision", "seed", "epoch", "validation_roc_auc")}
    result["seconds"] = time.perf_counter() - started
    return result
