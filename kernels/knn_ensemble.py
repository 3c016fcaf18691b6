"""Label-free multivariate outlier scores: kNN distance and RS-Hash rarity, each turned into a p-value among its own
past scores, combined.

Two detectors with opposite blind spots share one sliding window of the last ``window`` rows:

* :class:`kernels.knn.KnnDistance`, the mean distance to the k nearest rows, is strongest where outliers sit
  between or beside dense regions ("local" outliers) and weakest when many fields are irrelevant or sparse;
* :class:`kernels.subspace_hash.SubspaceGridCounts` (RS-Hash) counts the window's rows in the row's cell of 100
  randomly shifted grids over random subspaces, which finds rows that are rare in a few fields.

Their scores have different units, so each is replaced by its surprise, −ln p, where p is its upper-tail p-value
among the same detector's last ``window`` scores: the share at or above it (ties counting half) and, beyond the 20
largest, an exponential fit to their excesses (peaks over threshold, as :mod:`operators.alerting` does), so a
surprise keeps growing past the largest score seen. The score is the mean of the two surprises, which orders events
as Fisher's combination of the two p-values does; it needs no labels and no assumption about either detector's
score distribution, and on normal data it is about 1 (each surprise is then close to exponential with mean 1).
Only past scores enter a p-value, and within a batch each row is compared with the rows before it, so scores do not
depend on the batching. On the 12 development ODDS sets the pair beats either member and every baseline under both
protocols of ``vigil evaluate tabular`` (README, "Offline evaluation").

The grids' units (each field's window minimum and range) are set from the window, and the counts rebuilt from it,
at the first end of a block of the kNN's units (:mod:`kernels.knn`) on or after rows 1, 2, 4, … ``window``, then
every ``window`` rows; between rebuilds rows join and leave the counts one by one.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> detector = KnnSubspaceEnsemble(n_features=3, k=10, window=400, block=100)
>>> rows = np.r_[rng.normal(size=(600, 3)), [[0.0, 0.0, 7.0]]]
>>> scores = detector.score_and_learn(rows)
>>> bool(scores[-1] > 3 * np.quantile(scores[400:-1], 0.99))
True

References
----------
Aggarwal, C. C. and Sathe, S. (2015). Theoretical foundations and algorithms for outlier ensembles. *ACM SIGKDD
Explorations* 17(1).

Fisher, R. A. (1925). *Statistical Methods for Research Workers*. Oliver and Boyd (combining p-values).

Sathe, S. and Aggarwal, C. C. (2016). Subspace outlier detection in linear time with randomized hashing. *ICDM*.
"""
from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from kernels.knn import KnnDistance
from kernels.profiling import timed
from kernels.subspace_hash import SubspaceGridCounts

TAIL = 20  # past scores in the exponential tail fit, as in operators.alerting


@numba.njit(cache=True)
def _surprise(ordered, filled, value, tail):  # pragma: no cover - compiled
    """−ln of the upper-tail p-value of ``value`` among the ``filled`` sorted past scores: the empirical share at or
    above it (ties half), and beyond the ``tail`` largest an exponential fit to their excesses (peaks over threshold),
    so the surprise keeps growing past the largest score seen."""
    below = np.searchsorted(ordered[:filled], value, side="left")
    above = np.searchsorted(ordered[:filled], value, side="right")
    p = 1.0 - (below + 0.5 * (above - below)) / filled
    top = min(tail, filled)
    threshold = ordered[filled - top]
    if filled - below < top and value > threshold:
        excess = 0.0
        for j in range(filled - top, filled):
            excess += ordered[j] - threshold
        excess /= top
        p = top / filled * math.exp(-(value - threshold) / excess) if excess > 0 else 0.5 / filled
    return -math.log(max(p, 1e-300))


@numba.njit(cache=True)
def _past_surprise(scores, ring, ordered, stored, learn, out):  # pragma: no cover - compiled
    """``out[i]``: the surprise (:func:`_surprise`) of score i among the last ``len(ring)`` scores before it; NaN
    where a score is NaN or nothing precedes it. ``ring`` holds the ``stored`` scores so far (NaN scores are
    skipped) and ``ordered`` its filled part sorted. With ``learn`` each score then joins, the oldest leaving a full
    ring, before the next is judged. Returns the new ``stored``."""
    size = ring.shape[0]
    for i in range(scores.shape[0]):
        value = scores[i]
        filled = min(stored, size)
        if value != value or filled == 0:
            out[i] = np.nan
        else:
            out[i] = _surprise(ordered, filled, value, TAIL)
        if not learn or value != value:
            continue
        if filled == size:  # the oldest leaves: close its gap
            position = np.searchsorted(ordered[:filled], ring[stored % size], side="left")
            for j in range(position, filled - 1):
                ordered[j] = ordered[j + 1]
            filled -= 1
        position = np.searchsorted(ordered[:filled], value, side="left")
        for j in range(filled, position, -1):
            ordered[j] = ordered[j - 1]
        ordered[position] = value
        ring[stored % size] = value
        stored += 1
    return stored


class KnnSubspaceEnsemble(KnnDistance):
    """kNN distance and RS-Hash rarity over one window, combined as the mean of their past-only surprises (module
    docstring). Scores are at least 0, about 1 on normal data.

    Parameters are those of :class:`kernels.knn.KnnDistance`, plus ``components`` (RS-Hash grids) and ``seed``
    (the grids' random draws)."""

    kernel_name = "knn_subspace_ensemble"

    def __init__(self, n_features: int, *, k: int = 50, window: int = 2048, block: int = 256, min_std: float = 1e-6,
                 components: int = 100, seed: int = 0) -> None:
        super().__init__(n_features, k=k, window=window, block=block, min_std=min_std)
        if block > window:
            raise ValueError("block must not exceed window: a row leaves the counts before a block's rows join the ring")
        self.grids = SubspaceGridCounts(n_features, max(window, 2), components=components, seed=seed)
        self.grid_due = 0  # rows learned at which the grids' units are next set and the counts rebuilt
        self.histories = np.zeros((2, window))  # past kNN distances and rarities, rings
        self.ordered = np.zeros((2, window))  # the histories' filled parts, sorted
        self.judged = 0  # scores stored in each history

    def _window_rows(self) -> np.ndarray:
        filled = min(self.seen, self.window)
        return self.ring[(self.seen - filled + np.arange(filled)) % self.window]

    def _rebuild_if_due(self) -> None:
        """Rebuild at the first block end on or after ``grid_due``: block ends depend on the row count alone."""
        at_block_end = self.seen == 0 or self._block_end(self.seen - 1) == self.seen
        if self.seen < self.grid_due or not at_block_end:
            return
        self.grids.reset(self._window_rows())
        self.grid_due = 1 << self.seen.bit_length() if self.seen < self.window else (self.seen // self.window + 1) * self.window

    def _score_segment(self, segment: np.ndarray, chained: bool = True) -> np.ndarray:
        distances = super()._score_segment(segment, chained)
        with timed(self.kernel_name, "cpu"):
            self._rebuild_if_due()
            if chained:
                rows = self.seen + np.arange(len(segment))  # the segment's rows; row t - window leaves after row t
                rarity = self.grids.rarity(segment, self.ring[rows % self.window], rows >= self.window, learn=True)
            else:
                rarity = self.grids.rarity(segment)
            rarity[np.isnan(distances)] = np.nan  # judged and remembered only beside a distance
            surprises = np.empty((2, len(segment)))
            for member, scores in enumerate((distances, rarity)):
                stored = _past_surprise(scores, self.histories[member], self.ordered[member], self.judged, chained,
                                        surprises[member])
            self.judged = stored
        return surprises.mean(axis=0)

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "grids": self.grids.snapshot(), "grid_due": self.grid_due,
                "histories": self.histories.copy(), "judged": self.judged}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.grids.restore(state["grids"])
        self.grid_due = int(state["grid_due"])
        self.histories = np.array(state["histories"], dtype=np.float64).reshape(2, self.window)
        self.judged = int(state["judged"])
        filled = min(self.judged, self.window)
        self.ordered = np.zeros_like(self.histories)
        self.ordered[:, :filled] = np.sort(self.histories[:, :filled], axis=1)
        self.grids.reset(self._window_rows(), low=self.grids.low, span=self.grids.span)  # the counts of the window

    def state_bytes(self) -> int:
        return super().state_bytes() + self.grids.state_bytes() + self.histories.nbytes + self.ordered.nbytes
