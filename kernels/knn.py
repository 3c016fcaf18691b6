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
* **Arithmetic.** Distances are computed pairwise without the matrix-product shortcut, so each one depends only on
  its two rows.

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

import numpy as np
import torch

from kernels.state import Stateful


class KnnDistance(Stateful):
    """Mean distance to the k nearest of the last ``window`` rows (module docstring), for one stream of rows."""

    kernel_name = "knn_distance"

    def __init__(self, n_features: int, *, k: int = 50, window: int = 2048, block: int = 256, min_std: float = 1e-6,
                 device: torch.device | str = "cpu") -> None:
        if k < 1 or window < 1 or block < 1:
            raise ValueError("k, window and block must be at least 1")
        self.d, self.k, self.window, self.block, self.min_std = n_features, k, window, block, min_std
        self.device = torch.device(device)
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

    def _chronological(self) -> np.ndarray:
        """The ring's rows, oldest first."""
        filled = min(self.seen, self.window)
        start = self.seen % self.window if self.seen >= self.window else 0
        return np.roll(self.ring[:filled], -start, axis=0) if filled == self.window else self.ring[:filled]

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
        scale = torch.as_tensor(self._scale(), device=self.device)
        past = torch.as_tensor(self._chronological(), device=self.device) / scale
        distances = torch.cdist(torch.as_tensor(rows, device=self.device) / scale, past,
                                compute_mode="donot_use_mm_for_euclid_dist")
        return distances.topk(min(self.k, len(past)), dim=1, largest=False).values.mean(1).cpu().numpy()

    def _score_segment(self, segment: np.ndarray) -> np.ndarray:
        scale = torch.as_tensor(self._scale(), device=self.device)
        past = torch.as_tensor(self._chronological(), device=self.device) / scale
        queries = torch.as_tensor(segment, device=self.device) / scale
        n, filled = len(segment), len(past)
        # Query i sees past rows j >= filled + i - window (the window slides as earlier queries join) and queries < i.
        to_past = torch.cdist(queries, past, compute_mode="donot_use_mm_for_euclid_dist") if filled else queries[:, :0]
        to_batch = torch.cdist(queries, queries, compute_mode="donot_use_mm_for_euclid_dist")
        i = torch.arange(n, device=self.device)[:, None]
        hidden_past = torch.arange(filled, device=self.device)[None, :] < filled + i - self.window
        j = torch.arange(n, device=self.device)[None, :]
        hidden_batch = (j >= i) | (j < i - self.window)
        distances = torch.cat([to_past.masked_fill(hidden_past, torch.inf), to_batch.masked_fill(hidden_batch, torch.inf)], 1)
        k = min(self.k, distances.shape[1])
        if k == 0:
            return np.full(n, np.nan)
        nearest = distances.topk(k, dim=1, largest=False).values  # ascending
        finite = torch.isfinite(nearest)
        total = torch.where(finite, nearest, torch.zeros_like(nearest)).sum(1)
        counted = finite.sum(1)
        return torch.where(counted > 0, total / counted.clamp(min=1), torch.nan).cpu().numpy()

    def _block_end(self) -> int:
        """The row count at which the current block ends: the next power of two up to ``block``, then multiples."""
        if self.seen < self.block:
            return min(1 << self.seen.bit_length(), self.block)
        return (self.seen // self.block + 1) * self.block

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
