"""ADWIN drift detectors for many streams at once: one compiled loop over a batch, river's alarms exactly.

ADWIN (Bifet and Gavaldà, 2007) keeps a window of recent values as an exponential histogram (ADWIN2): level ``i``
holds up to ``max_buckets`` buckets (a sum and a variance each) of ``2**i`` values, and every ``clock`` values it
checks each cut of the window into an older and a newer part; when their means differ by more than the
Hoeffding-style bound it drops the oldest bucket and reports drift. As in river, the detector starts afresh with
the value after an alarm.

A :class:`AdwinBank` holds the state of many detectors in arrays, and :meth:`AdwinBank.update` feeds a batch of
(detector, value) pairs in order in one numba loop. The arithmetic is river's (``river.drift.ADWIN``, river 0.26,
whose Rust helper is itself a line-by-line port of the original Cython), operation for operation in float64, so
alarms fire at the same stream index as river's; ``tests/test_drift.py`` compares them on long random streams.
Written here because river's detector is one Python call and one native object per value and per stream, which
made it a third of the default pipeline's time.

>>> import numpy as np
>>> bank = AdwinBank(delta=0.002)
>>> values = np.r_[np.zeros(1000), np.ones(1000)]
>>> alarms = bank.update(np.zeros(2000, dtype=np.int64), values)
>>> np.flatnonzero(alarms).tolist()
[1023]

References
----------
Bifet, A. and Gavaldà, R. (2007). Learning from time-changing data with adaptive windowing. *SDM*, 443-448.

Babcock, B., Datar, M., Motwani, R. and O'Callaghan, L. (2003). Maintaining variance and k-medians over data
stream windows. *PODS*, 234-243.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from kernels.profiling import timed
from kernels.state import Stateful, tensor_bytes

LEVELS_STEP = 4  # levels added to every detector when one needs more (a level doubles the values a bucket holds)


@numba.njit(cache=True)
def _delete_oldest(d, totals, variances, counts, levels, scalars):  # pragma: no cover - compiled
    total, variance, width = scalars[d, 0], scalars[d, 1], scalars[d, 2]
    last = levels[d] - 1
    n = float(1 << last)
    u, v = totals[d, last, 0], variances[d, last, 0]
    mu = u / n
    width -= n
    total -= u
    mu_window = total / width
    variance -= v + n * width * (mu - mu_window) * (mu - mu_window) / (n + width)
    used = counts[d, last]
    for k in range(used - 1):
        totals[d, last, k] = totals[d, last, k + 1]
        variances[d, last, k] = variances[d, last, k + 1]
    totals[d, last, used - 1] = 0.0
    variances[d, last, used - 1] = 0.0
    counts[d, last] = used - 1
    if used == 1 and last > 0:  # river drops an emptied last level (level 0 always stays)
        levels[d] = last
    scalars[d, 0], scalars[d, 1], scalars[d, 2] = total, variance, width


@numba.njit(cache=True)
def _insert(d, value, totals, variances, counts, levels, scalars, max_buckets):  # pragma: no cover - compiled
    totals[d, 0, counts[d, 0]] = value
    variances[d, 0, counts[d, 0]] = 0.0
    counts[d, 0] += 1
    total, variance, width = scalars[d, 0], scalars[d, 1], scalars[d, 2] + 1.0
    increment = 0.0
    if width > 1.0:
        delta_v = value - total / (width - 1.0)
        increment = (width - 1.0) * delta_v * delta_v / width
    scalars[d, 0], scalars[d, 1], scalars[d, 2] = total + value, variance + increment, width
    level = 0
    while counts[d, level] == max_buckets + 1:  # a full level merges its two oldest buckets into the next
        size = float(1 << level)
        t0, t1 = totals[d, level, 0], totals[d, level, 1]
        mu1, mu2 = t0 / size, t1 / size
        merged_variance = variances[d, level, 0] + variances[d, level, 1] + size * 0.5 * (mu1 - mu2) * (mu1 - mu2)
        if level + 1 >= levels[d]:
            levels[d] = level + 2
        nxt = counts[d, level + 1]
        totals[d, level + 1, nxt] = t0 + t1
        variances[d, level + 1, nxt] = merged_variance
        counts[d, level + 1] = nxt + 1
        used = counts[d, level]
        for k in range(used - 2):
            totals[d, level, k] = totals[d, level, k + 2]
            variances[d, level, k] = variances[d, level, k + 2]
        for k in range(used - 2, used):
            totals[d, level, k] = 0.0
            variances[d, level, k] = 0.0
        counts[d, level] = used - 2
        if counts[d, level + 1] <= max_buckets:
            break
        level += 1


@numba.njit(cache=True)
def _cut_found(width, variance, n0, n1, delta_mean, delta, min_window):  # pragma: no cover - compiled
    delta_prime = math.log(2.0 * math.log(width) / delta)
    m_recip = 1.0 / (n0 - min_window + 1.0) + 1.0 / (n1 - min_window + 1.0)
    epsilon = math.sqrt(2.0 * m_recip * (variance / width) * delta_prime) + 2.0 / 3.0 * delta_prime * m_recip
    return abs(delta_mean) > epsilon


@numba.njit(cache=True)
def _detect(d, totals, variances, counts, levels, scalars, ticks, clock, grace, delta, min_window):  # pragma: no cover
    ticks[d] += 1
    change = False
    if ticks[d] % clock != 0 or scalars[d, 2] <= grace:
        return False
    reduce_width = True
    while reduce_width:
        reduce_width = False
        n0, n1, u0, u1 = 0.0, scalars[d, 2], 0.0, scalars[d, 0]
        level = levels[d] - 1
        done = False
        while level >= 0 and not done:
            size = float(1 << level)
            used = counts[d, level]
            for k in range(used):
                n0 += size
                n1 -= size
                u0 += totals[d, level, k]
                u1 -= totals[d, level, k]
                if level == 0 and k == used - 1:
                    done = True
                    break
                if (n1 >= min_window and n0 >= min_window
                        and _cut_found(scalars[d, 2], scalars[d, 1], n0, n1, u0 / n0 - u1 / n1, delta, min_window)):
                    reduce_width = True
                    change = True
                    if scalars[d, 2] > 0.0:
                        _delete_oldest(d, totals, variances, counts, levels, scalars)
                        done = True
                        break
            level -= 1
    return change


@numba.njit(cache=True)
def _update(detectors, values, start, totals, variances, counts, levels, scalars, ticks, alarmed, out,
            max_buckets, clock, grace, delta, min_window):  # pragma: no cover - compiled
    """Feeds rows ``start..`` in order; returns the row it stopped at (len(values) when done, earlier when a
    detector may need a level beyond the arrays' capacity: the caller grows them and calls again)."""
    capacity = counts.shape[1]
    for row in range(start, values.shape[0]):
        d = detectors[row]
        if alarmed[d]:  # river resets a detector on the value after its alarm
            totals[d, :, :] = 0.0
            variances[d, :, :] = 0.0
            counts[d, :] = 0
            levels[d] = 1
            scalars[d, :] = 0.0
            ticks[d] = 0
            alarmed[d] = False
        if levels[d] >= capacity:
            return row
        _insert(d, values[row], totals, variances, counts, levels, scalars, max_buckets)
        out[row] = _detect(d, totals, variances, counts, levels, scalars, ticks, clock, grace, delta, min_window)
        alarmed[d] = out[row]
    return values.shape[0]


class AdwinBank(Stateful):
    """ADWIN detectors ``0 .. rows - 1``, grown on demand. Parameters as river's ``drift.ADWIN``:

    Parameters
    ----------
    delta
        Significance of the test between the two sub-windows, in (0, 1).
    clock
        Check for a change every ``clock`` values.
    max_buckets
        Buckets per level before the two oldest merge.
    min_window_length
        Smallest sub-window a cut may leave.
    grace_period
        Values before the first check.
    """

    kernel_name = "adwin"

    def __init__(self, delta: float = 0.002, clock: int = 32, max_buckets: int = 5, min_window_length: int = 5,
                 grace_period: int = 10) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), not {delta}")
        for name, value, low in (("clock", clock, 1), ("max_buckets", max_buckets, 1),
                                 ("min_window_length", min_window_length, 1), ("grace_period", grace_period, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, not {value!r}")
        self.delta, self.clock, self.max_buckets = float(delta), clock, max_buckets
        self.min_window_length, self.grace_period = min_window_length, grace_period
        self.rows = 0
        self._allocate(0, LEVELS_STEP)

    def _allocate(self, detectors: int, levels: int) -> None:
        self.totals = np.zeros((detectors, levels, self.max_buckets + 1))
        self.variances = np.zeros_like(self.totals)
        self.counts = np.zeros((detectors, levels), dtype=np.int64)
        self.levels = np.ones(detectors, dtype=np.int64)  # levels in use (river's bucket list length)
        self.scalars = np.zeros((detectors, 3))  # total, variance, width
        self.ticks = np.zeros(detectors, dtype=np.int64)
        self.alarmed = np.zeros(detectors, dtype=np.bool_)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in ("totals", "variances", "counts", "levels", "scalars", "ticks",
                                                      "alarmed")}

    def _resize(self, detectors: int, levels: int) -> None:
        old = self._arrays()
        self._allocate(detectors, levels)
        keep = min(detectors, len(old["levels"]))
        keep_levels = min(levels, old["counts"].shape[1])
        for name, array in old.items():
            target = getattr(self, name)
            if array.ndim == 1:
                target[:keep] = array[:keep]
            else:
                target[:keep, :keep_levels] = array[:keep, :keep_levels]

    def ensure_detectors(self, detectors: int) -> None:
        if detectors > len(self.levels):
            self._resize(max(detectors, 2 * len(self.levels), 16), self.counts.shape[1])

    def update(self, detectors: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Feed ``values[i]`` to detector ``detectors[i]``, in order; True where that value raised an alarm."""
        alarms = np.zeros(len(values), dtype=np.bool_)
        if not len(values):
            return alarms
        detectors = np.ascontiguousarray(detectors, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=np.float64)
        top = int(detectors.max()) + 1
        self.ensure_detectors(top)
        self.rows = max(self.rows, top)
        row = 0
        with timed(self.kernel_name, "cpu"):
            while True:
                row = _update(detectors, values, row, self.totals, self.variances, self.counts, self.levels,
                              self.scalars, self.ticks, self.alarmed, alarms, self.max_buckets, self.clock,
                              float(self.grace_period), self.delta, float(self.min_window_length))
                if row == len(values):
                    return alarms
                self._resize(len(self.levels), self.counts.shape[1] + LEVELS_STEP)

    def reset(self, detectors: np.ndarray) -> None:
        """Forget these detectors: their next value starts a fresh window."""
        detectors = detectors[detectors < len(self.levels)]
        for name, array in self._arrays().items():
            array[detectors] = 1 if name == "levels" else 0

    def window_width(self, detector: int) -> int:
        """Values in the detector's window (river's ``ADWIN.width``)."""
        return int(self.scalars[detector, 2]) if detector < self.rows else 0

    def snapshot(self) -> dict[str, np.ndarray]:
        used = max(1, int(self.levels[: self.rows].max(initial=1)))
        return {name: (array[: self.rows, :used] if array.ndim > 1 and name != "scalars" else array[: self.rows]).copy()
                for name, array in self._arrays().items()}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        rows, used = len(state["levels"]), np.asarray(state["counts"]).shape[1]
        self._allocate(rows, used + LEVELS_STEP)
        self.rows = rows
        for name, target in self._arrays().items():
            source = np.asarray(state[name], dtype=target.dtype)
            if source.ndim > 1 and name != "scalars":
                target[:, :used] = source
            else:
                target[:] = source

    def state_bytes(self) -> int:
        return tensor_bytes(self._arrays().values())
