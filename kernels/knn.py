"""Label-free multivariate outlier scores: the mean distance to the k nearest of the last ``window`` rows, streaming.

A row's score is the mean Euclidean distance, in standard units, to its ``k`` nearest neighbours among the
``window`` rows before it (fewer while fewer are seen). Large-k kNN distance is the label-free default that large
benchmarks find hardest to beat (Campos et al., 2016; Bouman et al., 2024): it has one knob, and a large k makes it
insensitive to duplicates and to small clusters of outliers.

Streaming, exactly, whatever the batching:

* **Reference.** The raw rows of the last ``window`` rows are kept in a ring. Row t is scored against rows
  t − window … t − 1, including the earlier rows of its own batch (masks select them), and only then joins.
* **Units.** Each column is divided by its standard deviation (floored at ``min_std``) over all rows before the
  current block, so the statistics change at fixed row counts, not at batch edges, and no future row is ever used.
  (A mean does not change a distance.) Blocks end at rows 1, 2, 4, … up to ``block``, then every ``block`` rows, so
  the units settle early. Statistics are merged block by block (Chan et al.), the same for every batching.
* **Arithmetic.** One compiled loop per query computes each distance from its two rows only (no matrix-product
  shortcut, whose rounding depends on shapes) and keeps the k smallest sorted, so their sum runs in the same order
  for every batching. On the CPU this scan beats torch's ``cdist`` + ``topk`` by about three times at these sizes.

Rows with a missing value score NaN and are not learned. Memory: ``window`` × d floats plus one block.

Why hand-written: scikit-learn's ``NearestNeighbors`` and PyOD's ``KNN`` fit a fixed set; a bounded, causal,
batch-invariant reference with past-only units is what a stream needs.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> detector = KnnDistance(n_features=2, k=10, window=500, block=100)
>>> rows = np.r_[rng.normal(size=(400, 2)), [[6.0, 6.0]]]
>>> scores = detector.score_and_learn(rows)
>>> bool(scores[-1] > 4 * np.median(scores[200:-1]))
True

References
----------
Ramaswamy, S., Rastogi, R. and Shim, K. (2000). Efficient algorithms for mining outliers from large data sets. *SIGMOD*.

Angiulli, F. and Pizzuti, C. (2002). Fast outlier detection in high dimensional spaces. *PKDD* (the mean of the k
distances).

Campos, G. O. et al. (2016). On the evaluation of unsupervised outlier detection. *Data Min. Knowl. Disc.* 30(4).

Chan, T. F., Golub, G. H. and LeVeque, R. J. (1979). Updating formulae and a pairwise algorithm for computing sample
variances. Stanford CS report STAN-CS-79-773.
"""
from __future__ import annotations

from typing import Any

import numba
import numpy as np

from kernels.profiling import timed
from kernels.state import Stateful


@numba.njit(cache=True)
def _mean_knn(queries, ring, latest, seen, window, k, chained, out):  # pragma: no cover - compiled
    """For query i (row seen + i): the mean of the k smallest distances to the ring rows it sees (those not older than
    seen + i − window) and, if ``chained``, to queries 0 … i − 1; kept sorted while scanning, summed smallest first.
    Without ``chained`` every query is on its own, against the whole ring."""
    n, d = queries.shape
    nearest = np.empty(k)
    for i in range(n):
        first = seen + i - window if chained else seen - window
        nearest[:] = np.inf
        for j in range(ring.shape[0] + (i if chained else 0)):
            if j < ring.shape[0]:
                if latest[j] < first:
                    continue
                other = ring[j]
            else:
                if seen + j - ring.shape[0] < first:
                    continue
                other = queries[j - ring.shape[0]]
            total = 0.0
            for c in range(d):
                diff = queries[i, c] - other[c]
                total += diff * diff
            distance = np.sqrt(total)
            if distance < nearest[k - 1]:
                position = k - 1
                while position > 0 and nearest[position - 1] > distance:
                    nearest[position] = nearest[position - 1]
                    position -= 1
                nearest[position] = distance
        total, counted = 0.0, 0
        for position in range(k):
            if nearest[position] < np.inf:
                total += nearest[position]
                counted += 1
        out[i] = total / counted if counted else np.nan


class KnnDistance(Stateful):
    """Mean distance to the k nearest of the last ``window`` rows (module docstring), for one stream of rows."""

    kernel_name = "knn_distance"

    def __init__(self, n_features: int, *, k: int = 50, window: int = 2048, block: int = 256, min_std: float = 1e-6) -> None:
        if k < 1 or window < 1 or block < 1:
            raise ValueError("k, window and block must be at least 1")
        self.d, self.k, self.window, self.block, self.min_std = n_features, k, window, block, min_std
        self.ring = np.zeros((window, n_features))  # row t lives in slot t % window
        self.seen = 0  # rows learned
        self.count, self.mean, self.m2 = 0, np.zeros(n_features), np.zeros(n_features)  # rows of completed blocks
        self.pending = np.zeros((0, n_features))  # rows of the current block
        self.deviations = np.zeros((0, n_features))  # of the rows of the last score_and_learn call

    def _scale(self) -> np.ndarray:
        std = np.sqrt(self.m2 / self.count) if self.count else np.ones(self.d)
        return np.where(std > self.min_std, std, 1.0)

    def _merge(self, rows: np.ndarray) -> None:
        """Chan et al.'s merge of a completed block into the running moments."""
        n, mean = len(rows), rows.mean(axis=0)
        m2 = ((rows - mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta * delta * (self.count * n / total)
        self.count = total

    def score_and_learn(self, rows: np.ndarray) -> np.ndarray:
        """Scores of ``rows`` (n × d) in order, each against the rows before it; NaN where a value is missing. Each
        row's distance from the running mean in the same units, per column, is left in ``deviations`` (to explain)."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self.d)
        scores = np.full(len(rows), np.nan)
        self.deviations = np.full(rows.shape, np.nan)
        complete = np.flatnonzero(np.isfinite(rows).all(axis=1))
        learned = rows[complete]
        position = 0
        while position < len(learned):
            # A segment ends where the current block does: its rows share the block's units.
            room = self._block_end() - self.seen
            segment = learned[position:position + room]
            placed = complete[position:position + len(segment)]
            scores[placed] = self._score_segment(segment)
            self.deviations[placed] = np.abs(segment - self.mean) / self._scale()
            self._learn(segment)
            position += len(segment)
        return scores

    def score_only(self, rows: np.ndarray) -> np.ndarray:
        """Scores of ``rows`` against the current window, each on its own: nothing is learned (a held-out test set)."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self.d)
        return self._score_segment(rows, chained=False)

    def _score_segment(self, segment: np.ndarray, chained: bool = True) -> np.ndarray:
        scale = self._scale()
        filled = min(self.seen, self.window)
        slots = np.arange(filled)
        latest = self.seen - 1 - (self.seen - 1 - slots) % self.window  # the row each slot holds
        out = np.empty(len(segment))
        with timed(self.kernel_name, "cpu"):
            _mean_knn(segment / scale, self.ring[:filled] / scale, latest, self.seen, self.window, self.k, chained, out)
        return out

    def _block_end(self, seen: int | None = None) -> int:
        """The row count at which the block holding row ``seen`` (default: the next row) ends: the next power of two
        up to ``block``, then multiples."""
        seen = self.seen if seen is None else seen
        if seen < self.block:
            return min(1 << seen.bit_length(), self.block)
        return (seen // self.block + 1) * self.block

    def _learn(self, segment: np.ndarray) -> None:
        end = self._block_end()
        slots = np.arange(self.seen, self.seen + len(segment)) % self.window
        self.ring[slots] = segment
        self.seen += len(segment)
        self.pending = np.concatenate([self.pending, segment])
        if self.seen == end:
            self._merge(self.pending)
            self.pending = self.pending[:0]

    def snapshot(self) -> dict[str, Any]:
        return {"ring": self.ring.copy(), "seen": self.seen, "count": self.count, "mean": self.mean.copy(),
                "m2": self.m2.copy(), "pending": self.pending.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        self.ring = np.array(state["ring"], dtype=np.float64).reshape(self.window, self.d)
        self.seen, self.count = int(state["seen"]), int(state["count"])
        self.mean = np.array(state["mean"], dtype=np.float64)
        self.m2 = np.array(state["m2"], dtype=np.float64)
        self.pending = np.array(state["pending"], dtype=np.float64).reshape(-1, self.d)

    def state_bytes(self) -> int:
        return self.ring.nbytes + self.mean.nbytes + self.m2.nbytes + self.pending.nbytes
