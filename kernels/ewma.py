"""Robust EWMA z-scores for many entities at once, as one compiled loop over the batch.

Each (entity slot, field) keeps an exponentially weighted mean and variance. For an observation x the
score is ``|x - mean| / sqrt(var + eps)``, computed *before* x updates the state (score-then-learn).
Updates are winsorised: once warm, a residual is clipped to ``clip`` standard deviations before it
moves the state, so a single spike barely disturbs the baseline while a level shift is still absorbed
over time. Until an entity has seen ``1 / alpha`` values the weight is ``1 / (n + 1)``, which makes the
first estimates exact running means and variances.

The recurrence is inherently sequential per entity, so it runs as a numba-compiled loop over the
batch's rows in order (Lucas and Saccucci's EWMA, with West's incremental weighted variance). Every row
updates only its own slot with correctly rounded float64 arithmetic and ``sqrt`` (no fast-math, no
reductions), so a score does not depend on how events were grouped into batches, nor on other entities.

>>> import numpy as np
>>> kernel = RobustEwma(n_fields=1, alpha=0.1, clip=3.0, warmup=3)
>>> scores = kernel.score_and_learn(np.array([0, 0, 0, 0, 0]), np.array([[1.0], [2.0], [1.0], [2.0], [9.0]]))
>>> bool(np.isnan(scores[:3, 0]).all()), float(scores[4, 0])  # mean 1.5, std 0.5 before the 9
(True, 15.0)

References
----------
Lucas, J. M. and Saccucci, M. S. (1990). Exponentially weighted moving average control schemes:
properties and enhancements. *Technometrics* 32(1), 1-12.

West, D. H. D. (1979). Updating mean and variance estimates: an improved method. *CACM* 22(9), 532-535.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from kernels.profiling import timed
from kernels.state import Stateful, tensor_bytes


@numba.njit(cache=True)
def _score_and_learn(slots, values, mean, var, count, alpha, clip, warmup, min_var, out,
                     expected=None, spread=None):  # pragma: no cover - compiled
    # ``expected`` / ``spread`` None compile a version without their stores (numba prunes the branches), so the default
    # costs nothing.
    for row in range(slots.shape[0]):
        slot = slots[row]
        for field in range(values.shape[1]):
            x = values[row, field]
            if math.isnan(x):
                out[row, field] = math.nan
                if expected is not None:
                    expected[row, field] = math.nan
                if spread is not None:
                    spread[row, field] = math.nan
                continue
            m, v, c = mean[slot, field], var[slot, field], count[slot, field]
            std = math.sqrt(max(v, min_var))
            residual = x - m
            if c >= warmup:
                out[row, field] = abs(residual) / std
                bound = clip * std
                residual = max(min(residual, bound), -bound)
            else:
                out[row, field] = math.nan
            if expected is not None:
                expected[row, field] = m if c >= warmup and c > 0.0 else math.nan  # a slot never seen expects nothing
            if spread is not None:
                spread[row, field] = std if c >= warmup and c > 0.0 else math.nan
            weight = max(1.0 / (c + 1.0), alpha)
            mean[slot, field] = m + weight * residual
            var[slot, field] = (1.0 - weight) * (v + weight * residual * residual)
            count[slot, field] = c + 1.0


class RobustEwma(Stateful):
    """State arrays ``mean``, ``var`` and ``count`` of shape (slots, fields); ``rows`` slots in use."""

    kernel_name = "robust_ewma"

    def __init__(self, n_fields: int, *, alpha: float = 0.02, clip: float = 3.0, warmup: int = 30,
                 min_std: float = 1e-6, capacity: int = 64) -> None:
        self.n_fields = n_fields
        self.alpha = alpha
        self.clip = clip
        self.warmup = warmup
        self.min_var = min_std * min_std
        self.mean = np.zeros((capacity, n_fields))
        self.var = np.zeros_like(self.mean)
        self.count = np.zeros_like(self.mean)
        self.rows = 0

    @property
    def capacity(self) -> int:
        return self.mean.shape[0]

    def ensure_capacity(self, n_slots: int) -> None:
        if n_slots <= self.capacity:
            return
        pad = max(n_slots, 2 * self.capacity) - self.capacity
        self.mean, self.var, self.count = (np.concatenate([a, np.zeros((pad, self.n_fields))])
                                           for a in (self.mean, self.var, self.count))

    def score_and_learn(self, slots: np.ndarray, values: np.ndarray, expected: np.ndarray | None = None,
                        spread: np.ndarray | None = None) -> np.ndarray:
        """Absolute z-score per (event, field), NaN where missing or not warm yet; then learn, row by row.

        ``expected`` and ``spread``, float64 arrays of ``values``' shape, receive the mean and the standard deviation each
        value was scored against, before it learned (NaN where the value is missing, not warm yet, or the first of its
        slot): for guardrails and the expected band."""
        scores = np.empty(values.shape)
        if len(slots) == 0:
            return scores
        top = int(slots.max()) + 1
        self.ensure_capacity(top)
        self.rows = max(self.rows, top)
        with timed(self.kernel_name, "cpu"):
            _score_and_learn(np.ascontiguousarray(slots, dtype=np.int64), np.ascontiguousarray(values, dtype=np.float64),
                             self.mean, self.var, self.count, float(self.alpha), float(self.clip), float(self.warmup),
                             float(self.min_var), scores, expected, spread)
        return scores

    def evict(self, slots: np.ndarray) -> None:
        """Reset these slots to the state of a slot never seen."""
        slots = slots[slots < self.capacity]
        for array in (self.mean, self.var, self.count):
            array[slots] = 0.0

    def snapshot(self) -> dict[str, np.ndarray]:
        """The rows in use as plain arrays."""
        return {name: getattr(self, name)[: self.rows].copy() for name in ("mean", "var", "count")}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        n_slots = len(state["mean"])
        self.ensure_capacity(n_slots)
        self.rows = n_slots
        for name in ("mean", "var", "count"):
            getattr(self, name)[:n_slots] = np.asarray(state[name], dtype=np.float64).reshape(n_slots, self.n_fields)

    def state_bytes(self) -> int:
        """The allocated state arrays (they grow to the slots in use, doubling)."""
        return tensor_bytes((self.mean, self.var, self.count))
