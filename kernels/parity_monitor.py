"""Streaming fairness monitoring: per-group positive rates over sliding windows, the demographic-parity and
equal-opportunity gaps, and their confidence intervals.

For each group of a configured, bounded list, :class:`ParityMonitor` keeps the last ``window`` decisions (0 or 1)
and, once labels arrive, the last ``window`` decisions on truly positive instances. The demographic-parity gap is
the difference of positive rates between the groups with the highest and the lowest rate; the equal-opportunity gap
is the same on the truly positive instances (true-positive rates). Each rate gets Wilson's score interval, and each
gap Newcombe's hybrid score interval for a difference of proportions, which keeps its coverage near the nominal level
for small windows and rates near 0 or 1, where the Wald interval does not. With more than two groups the gap is taken
between the two extreme groups, so its interval is for that pair, not a simultaneous one.

Hand-written because it is a few lines of closed-form arithmetic over counts, computed per batch; the intervals are
the textbook ones (tests compare coverage on seeded streams).

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

import numpy as np

from kernels.state import Stateful, tensor_bytes


def wilson_interval(positives: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a proportion ((0, 1) when there is no observation).

    >>> [round(v, 4) for v in wilson_interval(30, 100)]
    [0.2189, 0.3958]
    """
    if total == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = positives / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(high: tuple[int, int], low: tuple[int, int], confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p_high - p_low, each given as (positives, total)."""
    p1, p2 = high[0] / high[1] if high[1] else 0.0, low[0] / low[1] if low[1] else 0.0
    (l1, u1), (l2, u2) = wilson_interval(*high, confidence), wilson_interval(*low, confidence)
    difference = p1 - p2
    return difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


@dataclass(frozen=True)
class ParityReport:
    counts: tuple[int, ...]  # decisions in each group's window
    positive_rates: tuple[float, ...]
    rate_intervals: tuple[tuple[float, float], ...]
    parity_gap: float  # highest minus lowest positive rate
    parity_interval: tuple[float, float]
    opportunity_counts: tuple[int, ...]  # labelled positives in each group's window
    opportunity_gap: float | None  # highest minus lowest true-positive rate; None before labels of every group
    opportunity_interval: tuple[float, float] | None


class ParityMonitor(Stateful):
    """Sliding windows of decisions per group (module docstring).

    Parameters
    ----------
    groups
        How many groups; decisions of group indices outside ``0 .. groups - 1`` are ignored (a bounded list).
    window
        Decisions kept per group (and labelled positives per group, for equal opportunity).
    confidence
        Level of the intervals.
    """

    def __init__(self, groups: int, window: int = 1000, confidence: float = 0.95) -> None:
        if groups < 2 or window < 1 or not 0 < confidence < 1:
            raise ValueError("need at least 2 groups, a window of at least 1 and a confidence in (0, 1)")
        self.groups, self.window, self.confidence = groups, window, confidence
        self.decisions = [np.zeros(0, dtype=np.int8) for _ in range(groups)]
        self.opportunities = [np.zeros(0, dtype=np.int8) for _ in range(groups)]

    def update(self, groups: np.ndarray, decisions: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Add a batch of decisions (0/1) in stream order, with their group indices and, where known, labels (1 for
        truly positive, 0, or -1 for not yet known)."""
        decisions = np.asarray(decisions, dtype=np.int8)
        for group in range(self.groups):
            mine = groups == group
            self.decisions[group] = np.concatenate([self.decisions[group], decisions[mine]])[-self.window:]
            if labels is not None:
                positive = mine & (np.asarray(labels) == 1)
                self.opportunities[group] = np.concatenate([self.opportunities[group], decisions[positive]])[-self.window:]

    def _gap(self, windows: list[np.ndarray]) -> tuple[float, tuple[float, float]]:
        counts = [(int(w.sum()), len(w)) for w in windows]
        rates = [p / n if n else math.nan for p, n in counts]
        seen = [g for g in range(self.groups) if counts[g][1]]
        high, low = max(seen, key=lambda g: rates[g]), min(seen, key=lambda g: rates[g])
        return rates[high] - rates[low], newcombe_interval(counts[high], counts[low], self.confidence)

    def report(self) -> ParityReport:
        counts = tuple(len(w) for w in self.decisions)
        rates = tuple(float(w.mean()) if len(w) else math.nan for w in self.decisions)
        intervals = tuple(wilson_interval(int(w.sum()), len(w), self.confidence) for w in self.decisions)
        parity_gap, parity_interval = self._gap(self.decisions) if sum(c > 0 for c in counts) >= 2 else (0.0, (0.0, 0.0))
        opportunity = tuple(len(w) for w in self.opportunities)
        labelled = all(opportunity)
        gap, interval = self._gap(self.opportunities) if labelled else (None, None)
        return ParityReport(counts, rates, intervals, parity_gap, parity_interval, opportunity, gap, interval)

    def snapshot(self) -> dict:
        return {"decisions": [w.copy() for w in self.decisions], "opportunities": [w.copy() for w in self.opportunities]}

    def restore(self, state: dict) -> None:
        self.decisions = [np.asarray(w, dtype=np.int8) for w in state["decisions"]]
        self.opportunities = [np.asarray(w, dtype=np.int8) for w in state["opportunities"]]

    def state_bytes(self) -> int:
        return tensor_bytes([*self.decisions, *self.opportunities])
