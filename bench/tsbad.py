"""TSB-AD (Liu and Paparrizos, NeurIPS 2024; PyPI ``tsb-ad`` 1.5) as a reference for Vigil's cross-dataset
evaluation: its own VUS-PR, its own sliding-window choice and its own POLY, Sub-PCA and PCA detectors as anchors.

TSB-AD pins numpy < 2 and pulls torch and transformers, so it is never a dependency of Vigil: it runs in an isolated
virtual environment (``.tsbad-env``, created on first use) with the package installed without its dependencies plus
only what its ``evaluation`` module and these three detectors import, at the versions of TSB-AD's own
requirements.txt. Each call starts that environment once for a whole batch (a few seconds) and exchanges arrays
through ``.npz`` files.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import venv
from pathlib import Path

import numpy as np

ENV = Path(__file__).resolve().parent.parent / ".tsbad-env"
REFERENCE = "tsb-ad==1.5"
# TSB-AD's requirements.txt pins for what the evaluation module, find_length_rank, POLY and PCA import
# (statsmodels for acf and AR, arch for POLY's distance module, hurst for the feature module), then what those
# pulled in when this was written.
STACK = ["numpy==1.24.4", "scipy==1.13.1", "pandas==2.0.3", "scikit-learn==1.3.2", "statsmodels==0.14.1",
         "arch==7.0.0", "hurst==0.0.5", "joblib==1.4.2",
         "patsy==1.0.3", "python-dateutil==4.0.0", "pytz==2026.6", "tzdata==2026.6", "threadpoolctl==3.8.0",
         "packaging==26.4"]
# One BLAS thread: on a shared machine OpenBLAS's spinning threads made a 6 s PCA fit take 90 s.
THREADS = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
METHODS = ("POLY", "Sub-PCA", "PCA")
RUNNER = """
import sys, types
import numpy as np
# TSB_AD.utils.utility imports torch.nn only for the neural detectors' activation functions; these detectors never
# reach it, so an empty module stands in for torch (not installed).
torch = types.ModuleType("torch")
torch.nn = types.ModuleType("torch.nn")
sys.modules.update({"torch": torch, "torch.nn": torch.nn})
request = dict(np.load(sys.argv[1]))
task, count, out = str(request["task"]), int(request["count"]), {}
if task == "vus_pr":
    from TSB_AD.evaluation.basic_metrics import generate_curve  # what get_metrics calls, version 'opt', thre 250
    for i in range(count):
        out[f"out_{i}"] = generate_curve(request[f"labels_{i}"].astype(int), request[f"scores_{i}"],
                                         int(request[f"window_{i}"]), version="opt", thre=250)[-1]
elif task == "acf":
    from statsmodels.tsa.stattools import acf  # as find_length_rank calls it
    for i in range(count):
        out[f"out_{i}"] = acf(request[f"values_{i}"], nlags=int(request[f"lags_{i}"]), fft=True)
elif task == "find_length":
    from TSB_AD.utils.slidingWindows import find_length_rank
    for i in range(count):
        out[f"out_{i}"] = find_length_rank(request[f"values_{i}"], rank=int(request[f"rank_{i}"]))
elif task == "POLY":  # run_POLY with Optimal_Uni_algo_HP_dict's power 4, the window given
    from TSB_AD.models.POLY import POLY
    for i in range(count):
        clf = POLY(power=4, window=int(request[f"window_{i}"]))
        clf.fit(request[f"test_{i}"])
        out[f"out_{i}"] = clf.decision_scores_.ravel()
elif task == "Sub-PCA":  # run_Sub_PCA with Optimal_Uni_algo_HP_dict's n_components None, the window given
    from TSB_AD.models.PCA import PCA
    for i in range(count):
        clf = PCA(slidingWindow=int(request[f"window_{i}"]), n_components=None)
        clf.fit(request[f"test_{i}"])
        out[f"out_{i}"] = clf.decision_scores_.ravel()
elif task == "PCA":  # Optimal_Multi_algo_HP_dict's n_components 0.25, fitted on train, scoring test
    from TSB_AD.models.PCA import PCA
    for i in range(count):
        # fit drops the columns constant in train (zero_pruning) but decision_function keeps them and fails: keep them
        clf = PCA(slidingWindow=int(request[f"window_{i}"]), n_components=0.25, zero_pruning=False)
        clf.fit(request[f"train_{i}"])
        out[f"out_{i}"] = clf.decision_function(request[f"test_{i}"]).ravel()
np.savez(sys.argv[2], **out)
"""


def reference_python() -> Path:
    """The isolated environment's interpreter, installing TSB-AD 1.5 and its pinned stack on first use."""
    python = ENV / "bin" / "python"
    if not python.exists():
        venv.create(ENV, with_pip=True)
        pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--only-binary=:all:"]
        subprocess.run([*pip, *STACK], check=True)
        subprocess.run([*pip, "--no-deps", REFERENCE], check=True)
    return python


def _call(task: str, cases: list[dict[str, np.ndarray | int]]) -> list[np.ndarray]:
    """Run one task on a batch of cases in the environment; each case's arrays go in as ``NAME_i``."""
    python = reference_python()
    arrays = {f"{key}_{i}": np.asarray(value) for i, case in enumerate(cases) for key, value in case.items()}
    with tempfile.TemporaryDirectory() as folder:
        request, reply = Path(folder) / "request.npz", Path(folder) / "reply.npz"
        np.savez(request, task=task, count=len(cases), **arrays)
        done = subprocess.run([python, "-c", RUNNER, request, reply], capture_output=True, text=True,
                              env={**os.environ, **THREADS})
        if done.returncode:
            raise RuntimeError(f"TSB-AD {task} failed:\n{done.stderr[-4000:]}")
        with np.load(reply) as out:
            return [out[f"out_{i}"] for i in range(len(cases))]


def vus_pr_reference(cases: list[tuple[np.ndarray, np.ndarray, int]]) -> list[float]:
    """TSB-AD's VUS-PR of each (labels, scores, sliding window) case: ``generate_curve(labels, scores, window,
    version='opt', thre=250)``, the computation ``TSB_AD.evaluation.metrics.get_metrics(score, labels,
    slidingWindow=window)['VUS-PR']`` runs. Each case needs at least one labelled point (TSB-AD fails otherwise)."""
    batch = [{"labels": np.asarray(labels, dtype=np.int64), "scores": np.asarray(scores, dtype=np.float64),
              "window": int(window)} for labels, scores, window in cases]
    return [float(v) for v in _call("vus_pr", batch)]


def find_length_reference(series: list[np.ndarray], rank: int = 1) -> list[int]:
    """TSB-AD's ``find_length_rank(values, rank)`` of each 1-D series (the benchmark passes a multivariate series's
    first channel)."""
    batch = [{"values": np.asarray(values, dtype=np.float64), "rank": rank} for values in series]
    return [int(v) for v in _call("find_length", batch)]


def acf_reference(series: list[np.ndarray], lags: int = 400) -> list[np.ndarray]:
    """statsmodels' ``acf(values, nlags=lags, fft=True)`` of each 1-D series, the autocorrelation
    ``find_length_rank`` reads."""
    return _call("acf", [{"values": np.asarray(values, dtype=np.float64), "lags": lags} for values in series])


def anchor_scores_many(method: str, cases: list[tuple[np.ndarray | None, np.ndarray, int]]) -> list[np.ndarray]:
    """TSB-AD's own detector ``method`` on each (train, test, window) case, in one start of the environment; one
    score per test row, higher is more anomalous.

    * ``"POLY"`` and ``"Sub-PCA"``: univariate and unsupervised, as TSB-AD runs them: each is fitted on the whole
      test series and scores that same series (it sees the test data, labels aside); ``train`` must be None. POLY
      fits degree-4 polynomials over windows of ``window`` points; Sub-PCA scores subsequences of ``window`` points
      with all components kept (TSB-AD's tuned defaults, ``Optimal_Uni_algo_HP_dict``). TSB-AD's ``window`` there is
      ``find_length_rank(series, rank=1)``, :func:`pipeline.evaluation.timeseries.sliding_window` here.
    * ``"PCA"``: multivariate and semi-supervised: fitted on ``train`` (rows by channels), then scoring ``test``;
      subsequences of ``window`` rows, components explaining 25 % of the variance (``Optimal_Multi_algo_HP_dict``).
      TSB-AD's multivariate benchmark uses ``run_PCA``'s default window, 100.
    """
    if method not in METHODS:
        raise ValueError(f"unknown TSB-AD anchor {method!r}; one of {', '.join(METHODS)}")
    batch = []
    for train, test, window in cases:
        test = np.asarray(test, dtype=np.float64)
        if method == "PCA":
            if train is None:
                raise ValueError("PCA is semi-supervised: it needs the train part")
            train = np.asarray(train, dtype=np.float64)
            batch.append({"train": train.reshape(len(train), -1), "test": test.reshape(len(test), -1),
                          "window": int(window)})
        else:
            if train is not None or test.squeeze().ndim != 1:
                raise ValueError(f"{method} is univariate and unsupervised: one test series, no train part")
            batch.append({"test": test.reshape(-1, 1), "window": int(window)})
    scores = _call(method, batch)
    for (_, test, _), score in zip(cases, scores):
        if len(score) != len(test):
            raise RuntimeError(f"TSB-AD {method} gave {len(score)} scores for {len(test)} rows")
    return scores


def anchor_scores(method: str, train: np.ndarray | None, test: np.ndarray, window: int) -> np.ndarray:
    """One case of :func:`anchor_scores_many` (each call starts the environment: batch where possible)."""
    return anchor_scores_many(method, [(train, test, window)])[0]
