"""Streaming fairness monitoring: per-group positive rates over sliding windows, the demographic-parity and
equal-opportunity gaps, and their confidence intervals, for many monitored decision streams at once.

For each monitored stream (an entity, in an operator) and each group of a configured, bounded list,
:class:`ParityMonitor` keeps the last ``window`` decisions (0 or 1) and the last ``window`` decisions on truly positive
instances (added when their labels arrive). The demographic-parity gap is the difference of positive rates between
the groups with the highest and the lowest rate; the equal-opportunity gap is the same on the truly positive instances
(true-positive rates). Each rate gets Wilson's score interval, and each gap Newcombe's hybrid score interval for a
difference of proportions, which keeps its coverage near the nominal level for small windows and rates near 0 or 1,
where the Wald interval does not. With more than two groups the gap is taken between the two extreme groups, so its
interval is for that pair, not a simultaneous one. Gaps are evaluated after every observation (so results do not
depend on how the stream is cut into batches), once at least two groups have ``min_count`` observations in window.

Hand-written because it is a few lines of closed-form arithmetic over counts, compiled so that it runs per
observation; the intervals are the textbook ones (tests compare coverage on seeded streams).

>>> import numpy as np
>>> monitor = ParityMonitor(groups=2, window=1000)
>>> rng = np.random.default_rng(0)
>>> group = rng.integers(0, 2, 4000)
>>> monitor.update(group, (rng.random(4000) < np.where(group == 1, 0.5, 0.3)).astype(np.int64))
>>> report = monitor.report()
>>> round(report.parity_gap, 2), report.parity_interval[0] < 0.2 < report.parity_interval[1]
(0.2, True)

References
----------
Wilson, E. B. (1927). Probable inference, the law of succession, and statistical inference. *JASA* 22(158), 209-212.

Newcombe, R. G. (1998). Interval estimation for the difference between independent proportions: comparison of eleven
methods. *Statistics in Medicine* 17(8), 873-890 (method 10).

Hardt, M., Price, E. and Srebro, N. (2016). Equality of opportunity in supervised learning. *NeurIPS*.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numba
import numpy as np

from kernels.state import SlotArrays, Stateful, tensor_bytes

KINDS = ("parity", "opportunity")  # decisions on every instance, and on truly positive instances


def z_value(confidence: float) -> float:
    """The two-sided normal quantile of a confidence level."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


@numba.njit(cache=True)
def wilson_interval(positives, total, z):  # pragma: no cover - compiled
    """Wilson's score interval for a proportion ((0, 1) when there is no observation).

    >>> [round(v, 4) for v in wilson_interval(30, 100, z_value(0.95))]
    [0.2189, 0.3958]
    """
    if total == 0:
        return 0.0, 1.0
    p = positives / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


@numba.njit(cache=True)
def newcombe_interval(high_positives, high_total, low_positives, low_total, z):  # pragma: no cover - compiled
    """Newcombe's hybrid score interval for p_high - p_low."""
    p1 = high_positives / high_total if high_total else 0.0
    p2 = low_positives / low_total if low_total else 0.0
    l1, u1 = wilson_interval(high_positives, high_total, z)
    l2, u2 = wilson_interval(low_positives, low_total, z)
    difference = p1 - p2
    return difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


@numba.njit(cache=True)
def _gap(positives, counts, min_count, z):  # pragma: no cover - compiled
    """Highest minus lowest rate among the groups with at least ``min_count`` observations, with its interval, and the
    two groups; NaN and -1 while fewer than two groups qualify."""
    high, low = -1, -1
    for g in range(counts.shape[0]):
        if counts[g] >= min_count and counts[g] > 0:
            rate = positives[g] / counts[g]
            if high < 0 or rate > positives[high] / counts[high]:
                high = g
            if low < 0 or rate <= positives[low] / counts[low]:  # the last of equal rates: a gap of 0, not none
                low = g
    if high < 0 or high == low:
        return math.nan, math.nan, math.nan, -1, -1
    lower, upper = newcombe_interval(positives[high], counts[high], positives[low], counts[low], z)
    return positives[high] / counts[high] - positives[low] / counts[low], lower, upper, high, low


@numba.njit(cache=True)
def _observe(ring, pushed, positives, monitors, groups, values, min_count, z, gaps):  # pragma: no cover - compiled
    """Push each row's 0/1 value into its monitor's window for its group, then write the monitor's gap, the lower and
    upper ends of its interval, the highest rate and the groups with the highest and lowest rates into ``gaps[row]``
    (NaN for rows of groups outside the list)."""
    window = ring.shape[2]
    counts = np.empty(ring.shape[1], dtype=np.int64)
    for row in range(values.shape[0]):
        m, g = monitors[row], groups[row]
        if g < 0 or g >= ring.shape[1]:
            gaps[row, :] = math.nan
            continue
        position = pushed[m, g] % window
        if pushed[m, g] >= window:
            positives[m, g] -= ring[m, g, position]
        ring[m, g, position] = values[row]
        positives[m, g] += values[row]
        pushed[m, g] += 1
        for group in range(ring.shape[1]):
            counts[group] = min(pushed[m, group], window)
        gap, lower, upper, high, low = _gap(positives[m], counts, min_count, z)
        gaps[row, 0], gaps[row, 1], gaps[row, 2] = gap, lower, upper
        if high >= 0:
            gaps[row, 3], gaps[row, 4], gaps[row, 5] = positives[m, high] / counts[high], high, low
        else:
            gaps[row, 3:] = math.nan


@numba.njit(cache=True)
def crossings(evidence, gaps, monitors, alerting, bound):  # pragma: no cover - compiled
    """Rows at which a monitor's ``evidence`` (its gap, or its interval's lower bound) first exceeds ``bound``; a monitor
    raises again only after its gap has come back to the bound or below (``alerting`` holds that state)."""
    raised = np.zeros(evidence.shape[0], dtype=np.bool_)
    for row in range(evidence.shape[0]):
        m = monitors[row]
        if math.isnan(gaps[row]):
            continue
        if not alerting[m] and evidence[row] > bound:
            alerting[m] = True
            raised[row] = True
        elif alerting[m] and gaps[row] <= bound:
            alerting[m] = False
    return raised


@dataclass(frozen=True)
class ParityReport:
    counts: tuple[int, ...]  # decisions in each group's window
    positive_rates: tuple[float, ...]
    rate_intervals: tuple[tuple[float, float], ...]
    parity_gap: float  # highest minus lowest positive rate (NaN before two groups)
    parity_interval: tuple[float, float]
    opportunity_counts: tuple[int, ...]  # labelled positives in each group's window
    opportunity_gap: float  # highest minus lowest true-positive rate (NaN before labels of two groups)
    opportunity_interval: tuple[float, float]


class ParityMonitor(SlotArrays, Stateful):
    """Sliding windows of decisions per monitored stream and group (module docstring).

    Parameters
    ----------
    groups
        How many groups; observations of group indices outside ``0 .. groups - 1`` are ignored (a bounded list).
    window
        Decisions kept per stream and group (and labelled positives, for equal opportunity).
    confidence
        Level of the intervals.
    min_count
        Observations a group needs in window before it enters a gap.
    monitors
        Streams allocated at first (:meth:`resize` adds more).
    """

    def __init__(self, groups: int, window: int = 1000, confidence: float = 0.95, min_count: int = 1,
                 monitors: int = 1) -> None:
        if groups < 2 or window < 1 or not 0 < confidence < 1 or min_count < 1:
            raise ValueError("need at least 2 groups, a window of at least 1, a confidence in (0, 1), min_count >= 1")
        self.groups, self.window, self.confidence, self.min_count = groups, window, confidence, min_count
        self.z = z_value(confidence)
        self._allocate(monitors)

    def _allocate(self, monitors: int) -> None:
        self.rings = {kind: np.zeros((monitors, self.groups, self.window), dtype=np.int8) for kind in KINDS}
        self.pushed = {kind: np.zeros((monitors, self.groups), dtype=np.int64) for kind in KINDS}
        self.positives = {kind: np.zeros((monitors, self.groups), dtype=np.int64) for kind in KINDS}

    def _arrays(self) -> list[np.ndarray]:
        return [table[kind] for table in (self.rings, self.pushed, self.positives) for kind in KINDS]

    monitors = SlotArrays.slots

    def observe(self, kind: str, groups: np.ndarray, decisions: np.ndarray, monitors: np.ndarray | None = None) -> np.ndarray:
        """Add observations in stream order: decisions (``kind="parity"``) or decisions on truly positive instances
        (``"opportunity"``), with their group indices and streams (default 0). Returns, per row, the stream's gap after
        the row, its interval, the highest rate and the groups of the highest and lowest rates ([rows, 6]: gap, lower,
        upper, highest rate, its group, the lowest rate's group; NaN while undefined)."""
        n = len(decisions)
        monitors = np.zeros(n, dtype=np.int64) if monitors is None else np.ascontiguousarray(monitors, dtype=np.int64)
        gaps = np.empty((n, 6))
        _observe(self.rings[kind], self.pushed[kind], self.positives[kind], monitors,
                 np.ascontiguousarray(groups, dtype=np.int64), np.ascontiguousarray(decisions, dtype=np.int8),
                 self.min_count, self.z, gaps)
        return gaps

    def update(self, groups: np.ndarray, decisions: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Decisions of stream 0 whose labels, where given, are known at once (1 for truly positive, 0, or -1 for not
        known)."""
        self.observe("parity", groups, decisions)
        if labels is not None:
            positive = np.asarray(labels) == 1
            self.observe("opportunity", np.asarray(groups)[positive], np.asarray(decisions)[positive])

    def window_counts(self, kind: str, monitors: slice | np.ndarray = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Observations and positive decisions in window per group, summed over ``monitors`` (default: all)."""
        counts = np.minimum(self.pushed[kind][monitors], self.window)
        return counts.reshape(-1, self.groups).sum(axis=0), self.positives[kind][monitors].reshape(-1, self.groups).sum(axis=0)

    def gap(self, counts: np.ndarray, positives: np.ndarray) -> tuple[float, float, float]:
        """The gap and its interval for these window counts (NaN while undefined)."""
        return _gap(positives.astype(np.int64), counts.astype(np.int64), self.min_count, self.z)[:3]

    def report(self, monitor: int = 0) -> ParityReport:
        counts, positives = self.window_counts("parity", np.array([monitor]))
        opportunity, true_positives = self.window_counts("opportunity", np.array([monitor]))
        parity_gap, *parity_interval = self.gap(counts, positives)
        opportunity_gap, *opportunity_interval = self.gap(opportunity, true_positives)
        return ParityReport(
            tuple(counts.tolist()), tuple(p / n if n else math.nan for p, n in zip(positives.tolist(), counts.tolist())),
            tuple(wilson_interval(p, n, self.z) for p, n in zip(positives.tolist(), counts.tolist())),
            parity_gap, tuple(parity_interval), tuple(opportunity.tolist()), opportunity_gap, tuple(opportunity_interval))

    def snapshot(self) -> dict:
        return {name: {kind: table[kind].copy() for kind in KINDS}
                for name, table in (("rings", self.rings), ("pushed", self.pushed), ("positives", self.positives))}

    def restore(self, state: dict) -> None:
        self._allocate(len(state["pushed"]["parity"]))
        for name in ("rings", "pushed", "positives"):
            for kind in KINDS:
                getattr(self, name)[kind][...] = state[name][kind]

    def state_bytes(self) -> int:
        return tensor_bytes(self._arrays())
