"""A long-memory, contamination-resistant reference per entity: the fields' mean and covariance, and how far an event
is from it (its Mahalanobis distance), for many entities at once, causal.

Per entity slot the reference is an exponentially weighted mean and covariance of its ``d`` fields with horizon
``horizon`` events (weight max(1/n, 1/horizon), an exact running mean and covariance at first). Scores come first,
learning after (score-then-learn), in stream order per slot:

* **distance**: m = qᵀPq, q = x − mean, P the inverse of the covariance shrunk by ``shrinkage`` towards its
  diagonal (so it is invertible with few events or collinear fields). It grows with a deviation on one field as a
  squared z-score does, and also with values that are each ordinary but break the fields' usual relationship (cpu
  high while requests are low), which a per-field score cannot see;
* **bounded influence** (Huber, 1964): an event moves the reference with weight w = min(1, ``influence`` · √d / √m),
  so an event within ``influence`` · √d of the mean counts fully and one far away (a wild spike, a unit error)
  moves the reference by a bounded amount. With the long horizon, a long incident keeps scoring for hours instead
  of becoming the new normal, without the failure of a hard "skip learning while anomalous" rule: a reference that
  never learns again once the entity has really changed (on ASD such a rule cost omi-7 two thirds of its VUS-PR);
* **a bounded way back**: a deviation (m beyond the χ²_d quantile of 10⁻³) that lasts ``rebaseline_ms`` of event
  time, with no ``settle`` normal events in a row to end it, is taken as the entity's new level: the mean jumps to
  a fast running mean of the recent events (weight ``recent_alpha``) and the covariance is kept;
* **surprise**: −log₁₀ of m's upper-tail probability under χ²_d (Wilson and Hilferty's cube-root normal
  approximation), so it is comparable with the other parts of :mod:`operators.baseline`;
* **which fields**: the standardised conditional residual of each field given the others, |(Pq)ᵢ| / √Pᵢᵢ, the
  root-cause ranking of an alert (for one field, its z-score).

P is refreshed (Cholesky factorisation, then its inverse) after 1, 2, 4, 8 … events and then every ``refresh``
events of the slot. A row with a missing field is not scored (NaN) and not learned. Every row updates only its own
slot with correctly rounded float64 arithmetic, so results do not depend on batching or on other entities.

Why hand-written: the recurrence is sequential per entity with per-row weights; numba compiles it over the batch in
one loop. The d×d Cholesky factorisation is written out (d is small, tens of fields) so the kernel needs no LAPACK
binding and every step is deterministic.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> load = rng.normal(size=2000)
>>> rows = np.c_[load, load + 0.1 * rng.normal(size=2000)]  # two strongly correlated fields
>>> rows = np.r_[rows, [[1.5, -1.5]]]  # each value ordinary, together impossible
>>> reference = LongMemoryReference(n_fields=2)
>>> surprise, residual = reference.score_and_learn(np.zeros(len(rows), dtype=np.int64), np.arange(len(rows)), rows)
>>> bool(surprise[-1] > 20), bool(np.nanmax(surprise[100:-1]) < 10)
(True, True)

References
----------
Huber, P. J. (1964). Robust estimation of a location parameter. *Annals of Mathematical Statistics* 35(1), 73-101.

Mahalanobis, P. C. (1936). On the generalised distance in statistics. *Proceedings of the National Institute of
Sciences of India* 2, 49-55.

Wilson, E. B. and Hilferty, M. M. (1931). The distribution of chi-square. *PNAS* 17(12), 684-688.

Ledoit, O. and Wolf, M. (2004). A well-conditioned estimator for large-dimensional covariance matrices. *Journal of
Multivariate Analysis* 88(2), 365-411 (shrinkage of a covariance estimate).
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numba
import numpy as np

from kernels.profiling import timed
from kernels.state import SlotArrays, Stateful, tensor_bytes

DEVIANT_LOG10_P = 3.0  # a distance beyond the chi-square quantile of 1e-3 counts towards a re-baseline
LN10 = math.log(10.0)


@numba.njit(cache=True)
def neglog10_upper_normal(z):  # pragma: no cover - compiled
    """−log₁₀ of the standard normal upper tail beyond z, finite for any z (Mills-ratio asymptote past z = 30)."""
    if z < 30.0:
        return -math.log10(max(0.5 * math.erfc(z / math.sqrt(2.0)), 1e-300))
    return (z * z / 2.0 + math.log(z * math.sqrt(2.0 * math.pi))) / LN10


@numba.njit(cache=True)
def _neglog10_two_sided(z, tests, out):  # pragma: no cover - compiled
    penalty = math.log10(2.0 * tests)
    for row in range(z.shape[0]):
        out[row] = math.nan if math.isnan(z[row]) else max(0.0, neglog10_upper_normal(z[row]) - penalty)


def neglog10_two_sided(z: np.ndarray, tests: int) -> np.ndarray:
    """−log₁₀ of the Bonferroni-adjusted two-sided normal p-value of the largest of ``tests`` |z| (NaN stays NaN).

    >>> neglog10_two_sided(np.array([1.959964, np.nan]), 1).round(3).tolist()[0]
    1.301
    """
    out = np.empty(len(z))
    _neglog10_two_sided(np.ascontiguousarray(z, dtype=np.float64), int(tests), out)
    return out


@numba.njit(cache=True)
def neglog10_chi2(m, d):  # pragma: no cover - compiled
    """−log₁₀ P(χ²_d ≥ m) by Wilson and Hilferty's approximation: (m/d)^(1/3) is about normal."""
    spread = 2.0 / (9.0 * d)
    z = ((max(m, 0.0) / d) ** (1.0 / 3.0) - (1.0 - spread)) / math.sqrt(spread)
    return neglog10_upper_normal(z)


def chi2_quantile(tail: float, d: int) -> float:
    """The m with P(χ²_d ≥ m) = tail, by the inverse of Wilson and Hilferty's approximation."""
    spread = 2.0 / (9.0 * d)
    return d * (1.0 - spread + NormalDist().inv_cdf(1.0 - tail) * math.sqrt(spread)) ** 3


@numba.njit(cache=True)
def _refresh_precision(cov, shrinkage, min_var, precision, lower):  # pragma: no cover - compiled
    """precision ← (cov + shrinkage · diag(cov) + min_var · I)⁻¹ by a Cholesky factorisation written out."""
    d = cov.shape[0]
    for i in range(d):
        for j in range(i + 1):
            a = cov[i, j]
            if i == j:
                a += shrinkage * cov[i, i] + min_var
            for k in range(j):
                a -= lower[i, k] * lower[j, k]
            if i == j:
                lower[i, i] = math.sqrt(max(a, min_var))
            else:
                lower[i, j] = a / lower[j, j]
    # inverse of the lower factor, in place of its upper triangle's mirror: inv[i, j] for j <= i
    inverse = np.zeros((d, d))
    for j in range(d):
        inverse[j, j] = 1.0 / lower[j, j]
        for i in range(j + 1, d):
            a = 0.0
            for k in range(j, i):
                a -= lower[i, k] * inverse[k, j]
            inverse[i, j] = a / lower[i, i]
    for i in range(d):
        for j in range(i + 1):
            a = 0.0
            for k in range(i, d):
                a += inverse[k, i] * inverse[k, j]
            precision[i, j] = a
            precision[j, i] = a


@numba.njit(cache=True)
def _score_and_learn(slots, ts_ms, values, count, mean, cov, precision, recent, streak_start, normal_run, horizon,
                     influence, shrinkage, min_var, refresh, warmup, recent_alpha, rebaseline_ms, settle, deviant,
                     surprise, residual, expected=None, spread=None):  # pragma: no cover - compiled
    # ``expected`` / ``spread`` None compile a version without their stores (numba prunes the branches).
    d = values.shape[1]
    q = np.empty(d)
    pq = np.empty(d)
    lower = np.zeros((d, d))
    for row in range(slots.shape[0]):
        slot = slots[row]
        x = values[row]
        missing = False
        for i in range(d):
            if not math.isfinite(x[i]):
                missing = True
        n = count[slot]
        if expected is not None:
            for i in range(d):
                expected[row, i] = mean[slot, i] if n >= warmup else math.nan
        if spread is not None:
            for i in range(d):
                spread[row, i] = math.sqrt(max(cov[slot, i, i], min_var)) if n >= warmup else math.nan
        if missing:
            surprise[row] = math.nan
            residual[row, :] = math.nan
            continue
        for i in range(d):
            q[i] = x[i] - mean[slot, i]
        m = 0.0
        for i in range(d):
            a = 0.0
            for j in range(d):
                a += precision[slot, i, j] * q[j]
            pq[i] = a
            m += q[i] * a
        if n >= warmup:
            surprise[row] = neglog10_chi2(m, d)
            for i in range(d):
                residual[row, i] = abs(pq[i]) / math.sqrt(max(precision[slot, i, i], 1e-300))
        else:
            surprise[row] = math.nan
            residual[row, :] = math.nan
        # learn: Huber weight, then the weighted mean and covariance
        weight = 1.0 if n < warmup or m <= 0.0 else min(1.0, influence * math.sqrt(d) / math.sqrt(m))
        alpha = max(1.0 / (n + 1.0), 1.0 / horizon)
        step = alpha * weight
        for i in range(d):
            mean[slot, i] += step * q[i]
        for i in range(d):
            for j in range(i + 1):
                c = (1.0 - alpha) * cov[slot, i, j] + step * weight * q[i] * q[j]
                cov[slot, i, j] = c
                cov[slot, j, i] = c
        fast = max(1.0 / (n + 1.0), recent_alpha)
        for i in range(d):
            recent[slot, i] += fast * (x[i] - recent[slot, i])
        n += 1
        count[slot] = n
        # the bounded way back: a deviation that lasts rebaseline_ms becomes the new level
        if n > warmup and m > deviant:
            if streak_start[slot] < 0:
                streak_start[slot] = ts_ms[row]
            normal_run[slot] = 0
            if ts_ms[row] - streak_start[slot] >= rebaseline_ms:
                for i in range(d):
                    mean[slot, i] = recent[slot, i]
                streak_start[slot] = -1
                n = 0  # refresh P now (n is 0 only here): the reference moved
        elif streak_start[slot] >= 0:
            normal_run[slot] += 1
            if normal_run[slot] >= settle:
                streak_start[slot] = -1
        if n == 0 or (n & (n - 1)) == 0 or n % refresh == 0:
            _refresh_precision(cov[slot], shrinkage, min_var, precision[slot], lower)


class LongMemoryReference(SlotArrays, Stateful):
    """Per slot: events seen, mean, covariance, precision, recent mean and the re-baseline streak (module docstring)."""

    kernel_name = "long_memory_reference"

    def __init__(self, n_fields: int, *, horizon: float = 8640.0, influence: float = 8.0, shrinkage: float = 0.01,
                 min_std: float = 1e-6, refresh: int = 64, warmup: int = 30, recent_alpha: float = 0.02,
                 rebaseline_ms: float = 86_400_000.0, settle: int = 30, slots: int = 1) -> None:
        self.n_fields = n_fields
        self.horizon, self.influence, self.shrinkage = float(horizon), float(influence), float(shrinkage)
        self.min_var = float(min_std) ** 2
        self.refresh, self.warmup, self.settle = int(refresh), int(warmup), int(settle)
        self.recent_alpha, self.rebaseline_ms = float(recent_alpha), float(rebaseline_ms)
        self.deviant = chi2_quantile(10.0 ** -DEVIANT_LOG10_P, n_fields)
        self._allocate(slots)

    def _allocate(self, slots: int) -> None:
        d = self.n_fields
        self.count = np.zeros(slots, dtype=np.int64)
        self.mean = np.zeros((slots, d))
        self.cov = np.zeros((slots, d, d))
        self.precision = np.zeros((slots, d, d))
        self.recent = np.zeros((slots, d))
        self.streak_start = np.full(slots, -1, dtype=np.int64)
        self.normal_run = np.zeros(slots, dtype=np.int64)

    def _arrays(self) -> list[np.ndarray]:
        return [self.count, self.mean, self.cov, self.precision, self.recent, self.streak_start, self.normal_run]

    def score_and_learn(self, slots: np.ndarray, ts_ms: np.ndarray, values: np.ndarray,
                        expected: np.ndarray | None = None,
                        spread: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per row: the surprise (−log₁₀ of the χ² tail of its distance; NaN while warming up or with a missing field)
        and per field the conditional residual; then each row is learned, in order. ``expected`` and ``spread``, float64
        arrays of ``values``' shape, receive the mean and each field's standard deviation the row was scored against
        (NaN while warming up): for guardrails and the expected band."""
        values = np.ascontiguousarray(values, dtype=np.float64).reshape(len(slots), self.n_fields)
        surprise, residual = np.empty(len(slots)), np.empty(values.shape)
        if len(slots) == 0:
            return surprise, residual
        self.resize(int(slots.max()) + 1)
        with timed(self.kernel_name, "cpu"):
            _score_and_learn(np.ascontiguousarray(slots, dtype=np.int64), np.ascontiguousarray(ts_ms, dtype=np.int64),
                             values, self.count, self.mean, self.cov, self.precision, self.recent, self.streak_start,
                             self.normal_run, self.horizon, self.influence, self.shrinkage, self.min_var, self.refresh,
                             self.warmup, self.recent_alpha, self.rebaseline_ms, self.settle, self.deviant,
                             surprise, residual, expected, spread)
        return surprise, residual

    def reset(self, slots) -> None:
        super().reset(slots)
        self.streak_start[slots] = -1

    def evict(self, slots: np.ndarray) -> None:
        """These slots back to a slot never seen."""
        slots = np.asarray(slots, dtype=np.int64)
        self.reset(slots[slots < self.slots])

    def snapshot(self) -> dict[str, np.ndarray]:
        return {name: array.copy() for name, array in zip(_STATE, self._arrays())}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        for name, array in zip(_STATE, self._arrays()):
            setattr(self, name, np.array(state[name], dtype=array.dtype))

    def state_bytes(self) -> int:
        return tensor_bytes(self._arrays())


_STATE = ("count", "mean", "cov", "precision", "recent", "streak_start", "normal_run")


@numba.njit(cache=True)
def _gate(slots, surprise, saturation, recent, seen, gated):  # pragma: no cover - compiled
    window = recent.shape[1]
    for row in range(slots.shape[0]):
        slot = slots[row]
        value = 0.0 if math.isnan(surprise[row]) else surprise[row]
        emitted = value > 0.0 and value > recent[slot].max()
        recent[slot, seen[slot] % window] = value
        seen[slot] += 1
        gated[row] = min(1.0, value / saturation) if emitted else 0.0


class FirstCrossing(SlotArrays, Stateful):
    """First crossing, then silence: a surprise (−log₁₀ p) per row becomes min(1, surprise / ``saturation``) where it
    exceeds each of the slot's previous ``refractory`` surprises, else 0, so a burst crosses any threshold once.

    >>> import numpy as np
    >>> gate = FirstCrossing(refractory=3)
    >>> gate.gate(np.zeros(6, dtype=np.int64), np.array([1.0, 2.0, 1.0, 0.0, 0.0, 1.5])).tolist()
    [0.1, 0.2, 0.0, 0.0, 0.0, 0.15]
    """

    kernel_name = "first_crossing"

    def __init__(self, refractory: int = 120, saturation: float = 10.0, slots: int = 1) -> None:
        self.refractory, self.saturation = int(refractory), float(saturation)
        self._allocate(slots)

    def _allocate(self, slots: int) -> None:
        self.recent = np.zeros((slots, self.refractory))
        self.seen = np.zeros(slots, dtype=np.int64)

    def _arrays(self) -> list[np.ndarray]:
        return [self.recent, self.seen]

    def gate(self, slots: np.ndarray, surprise: np.ndarray) -> np.ndarray:
        """The gated score per row (NaN surprise counts as 0), in order, each row then joining its slot's history."""
        gated = np.empty(len(slots))
        if len(slots) == 0:
            return gated
        self.resize(int(slots.max()) + 1)
        _gate(np.ascontiguousarray(slots, dtype=np.int64), np.ascontiguousarray(surprise, dtype=np.float64),
              self.saturation, self.recent, self.seen, gated)
        return gated

    def evict(self, slots: np.ndarray) -> None:
        slots = np.asarray(slots, dtype=np.int64)
        self.reset(slots[slots < self.slots])

    def snapshot(self) -> dict[str, np.ndarray]:
        return {"recent": self.recent.copy(), "seen": self.seen.copy()}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self.recent = np.array(state["recent"], dtype=np.float64)
        self.seen = np.array(state["seen"], dtype=np.int64)

    def state_bytes(self) -> int:
        return tensor_bytes(self._arrays())
