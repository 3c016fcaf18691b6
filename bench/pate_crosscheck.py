"""PATE and PATE-F1 of :mod:`pipeline.evaluation.timeseries` against the reference implementation, the PyPI package
``PATE`` (Ghorbani, Reinders and Tax, KDD 2024), on seeded random cases.

The reference pins old numpy, pandas and scikit-learn, so it runs in an isolated virtual environment of its own
(``.pate-env``, created on first use) and receives the cases as JSON on a pipe; it is never a dependency of Vigil.

    .venv/bin/python bench/pate_crosscheck.py > bench/results/pate_crosscheck.md
"""
from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.evaluation.timeseries import pate, pate_f1  # noqa: E402

ENV = Path(__file__).resolve().parent.parent / ".pate-env"
REFERENCE = "PATE==0.1.1"
RUNNER = """
import json, sys
import numpy as np
from pate.PATE_metric import PATE
out = []
for case in json.load(sys.stdin):
    out.append(PATE(np.array(case["y_true"]), np.array(case["y_score"]), case["e"], case["d"],
                    num_splits_MaxBuffer=case["splits"], include_zero=case["include_zero"], binary_scores=case["binary"]))
json.dump([float(v) for v in out], sys.stdout)
"""


def reference_python() -> Path:
    python = ENV / "bin" / "python"
    if not python.exists():
        venv.create(ENV, with_pip=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--only-binary=:all:",
                        REFERENCE], check=True)
    return python


def planted_events(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One series of 200 to 1,500 points with 1 to 6 labelled events (0/1 labels) and a noisy score in [0, 0.6) that
    rises near 70 % of them, early or late: the random cases of this and bench/tsbad_crosscheck.py."""
    n = int(rng.integers(200, 1500))
    labels = np.zeros(n, dtype=np.int64)
    score = rng.random(n) * 0.6
    for _ in range(int(rng.integers(1, 7))):
        start, length = int(rng.integers(0, n - 60)), int(rng.integers(1, 50))
        labels[start:start + length] = 1
        if rng.random() < 0.7:  # detected, early or late
            shift = int(rng.integers(-40, 40))
            lo, hi = max(0, start + shift), max(0, min(n, start + shift + length))
            score[lo:hi] += rng.random() * 0.8
    return labels, score


def cases(count: int, seed: int) -> list[dict]:
    """Series of 200 to 1,500 points with 1 to 6 labelled events; scores that rise near some events and are noisy
    elsewhere (continuous), or their thresholded predictions (binary); buffers, splits and the zero buffer varied."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        y_true, score = planted_events(rng)
        binary = i % 3 == 0
        out.append({"y_true": y_true.tolist(), "y_score": (score > 0.7).astype(int).tolist() if binary else score.tolist(),
                    "e": int(rng.choice([0, 10, 50, 100])), "d": int(rng.choice([0, 10, 50, 100])),
                    "splits": int(rng.choice([1, 2, 3])), "include_zero": bool(rng.random() < 0.8), "binary": binary})
    return out


def ours(case: dict) -> float:
    if case["binary"]:
        return pate_f1(case["y_true"], case["y_score"], case["e"], case["d"], splits=case["splits"],
                       include_zero=case["include_zero"])
    return pate(case["y_true"], case["y_score"], case["e"], case["d"], splits=case["splits"],
                include_zero=case["include_zero"])


def main(count: int = 150, seed: int = 0) -> None:
    batch = cases(count, seed)
    reference = json.loads(subprocess.run([reference_python(), "-c", RUNNER], input=json.dumps(batch), text=True,
                                          capture_output=True, check=True).stdout)
    differences = np.abs(np.array([ours(case) for case in batch]) - np.array(reference))
    binary = np.array([case["binary"] for case in batch])
    print(f"# PATE against the reference package {REFERENCE} ({count} seeded cases, seed {seed})\n")
    print("| kind | cases | largest absolute difference | within 1e-6 |")
    print("|---|---|---|---|")
    for name, mask in (("PATE (continuous scores)", ~binary), ("PATE-F1 (binary predictions)", binary)):
        print(f"| {name} | {int(mask.sum())} | {differences[mask].max():.2e} | {int((differences[mask] <= 1e-6).sum())} |")
    if differences.max() > 1e-6:
        raise SystemExit(f"{int((differences > 1e-6).sum())} cases differ from the reference by more than 1e-6")


if __name__ == "__main__":
    main()
