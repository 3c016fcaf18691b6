"""Online standardisation without look-ahead: each row scaled with the running mean and standard deviation of the rows
of its stream before it (Welford's update), for many streams at once.

Hand-written as a compiled loop because the statistics must be those of the earlier rows only, row by row (river's
``StandardScaler`` learns from a row before scaling it, and runs per event in Python).

>>> import numpy as np
>>> scaler = RunningStandardiser(features=1)
>>> scaler.transform(np.array([[1.0], [2.0], [3.0], [4.0]]))[:, 0].tolist()
[1.0, 1.0, 3.0, 2.449489742783178]

References
----------
Welford, B. P. (1962). Note on a method for calculating corrected sums of squares and products. *Technometrics* 4(3).
"""
from __future__ import annotations

import numba
import numpy as np

from kernels.state import SlotArrays, Stateful, tensor_bytes


@numba.njit(cache=True)
def _standardise(values, streams, mean, m2, count, out):  # pragma: no cover - compiled
    for row in range(values.shape[0]):
        s = streams[row]
        seen = count[s]
        for col in range(values.shape[1]):
            std = np.sqrt(m2[s, col] / seen) if seen > 1 else 0.0
            out[row, col] = (values[row, col] - mean[s, col]) / (std if std > 0 else 1.0)
            delta = values[row, col] - mean[s, col]
            mean[s, col] += delta / (seen + 1)
            m2[s, col] += delta * (values[row, col] - mean[s, col])
        count[s] = seen + 1


class RunningStandardiser(SlotArrays, Stateful):
    """Running means and variances of ``features`` inputs for each of ``streams`` streams (:meth:`resize` adds more)."""

    def __init__(self, features: int, streams: int = 1) -> None:
        self.features = features
        self._allocate(streams)

    def _allocate(self, streams: int) -> None:
        self.mean = np.zeros((streams, self.features))
        self.m2 = np.zeros((streams, self.features))
        self.count = np.zeros(streams, dtype=np.int64)

    def _arrays(self) -> list[np.ndarray]:
        return [self.mean, self.m2, self.count]

    def transform(self, values: np.ndarray, streams: np.ndarray | None = None) -> np.ndarray:
        """Each row standardised with its stream's statistics so far, which it then joins."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        streams = np.zeros(len(values), dtype=np.int64) if streams is None else np.ascontiguousarray(streams, dtype=np.int64)
        out = np.empty_like(values)
        _standardise(values, streams, self.mean, self.m2, self.count, out)
        return out

    def snapshot(self) -> dict:
        return {"mean": self.mean.copy(), "m2": self.m2.copy(), "count": self.count.copy()}

    def restore(self, state: dict) -> None:
        self.mean, self.m2 = np.array(state["mean"], dtype=np.float64), np.array(state["m2"], dtype=np.float64)
        self.count = np.array(state["count"], dtype=np.int64)

    def state_bytes(self) -> int:
        return tensor_bytes([self.mean, self.m2, self.count])
