"""Calibrated alerting: raw scores become per-entity p-values, and alerts follow a false-alarm budget.

Every scoring operator publishes one raw score per event, and what counts as a large raw score differs
per operator and per entity. Alerting therefore judges a calibrated value: the conformal p-value of the
score among the entity's last ``window`` scores,

    p = (1 + #{past scores >= s}) / (n + 1),

which is (close to) uniform on normal data whatever the score's scale. Far in the tail, where fewer than
``tail`` past scores are as large, p comes from an exponential fit to the ``tail`` largest past scores
(peaks over threshold), so it keeps falling smoothly below 1 / (n + 1) and a severity can ask for a rarity
the window cannot count.

An event alerts when ``p <= budget_per_day / rate``, where ``rate`` is the entity's events per day
estimated from event-time gaps: on normal data that gives about ``budget_per_day`` alerts per entity per
day. A severity level of rarity R needs ``p <= budget_per_day / (rate * R)``, so levels are monotone in p.
A score is judged before it joins the window (score-then-learn); NaN scores are skipped.

>>> policy = CalibratedAlerting(AlertingParams(budget_per_day=2.0, window=500, warmup=100))
>>> rng = np.random.default_rng(0)
>>> scores = np.r_[rng.normal(size=4900), 8.0]
>>> hourly = np.arange(4901) * 3_600_000
>>> p, levels = policy.judge(np.zeros(4901, dtype=np.int64), hourly, scores)
>>> judged_days = (4900 - 100) / 24
>>> round(float(np.sum(levels[:-1] >= 0)) / judged_days, 1)  # about the budget
1.9
>>> policy.level_names[levels[-1]], bool(p[-1] < 1e-5)
('critical', True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from kernels.state import Stateful
from operators.params import ParamError, param

MS_PER_DAY = 86_400_000.0
NO_ALERT = -1  # the level of an event that does not alert


@dataclass
class AlertingParams:
    """The false-alarm budget and severity levels of an outlier operator."""

    budget_per_day: float = param(1.0, "alerts per entity per day expected on normal data (the lowest level)",
                                  min=1e-9, unit="alerts per entity per day")
    window: int = param(1000, "past scores per entity that calibrate a new one", min=20, max=1_000_000, unit="scores")
    warmup: int = param(200, "scores an entity needs before it can alert (at least tail)", min=2, unit="scores")
    tail: int = param(20, "largest past scores that fit the exponential tail (smaller than window)", min=2, unit="scores")
    levels: dict[str, float] = param({"info": 1.0, "warning": 10.0, "critical": 100.0},
                                     "severity name to rarity: how many times rarer than the budget an event must be")


@numba.njit(cache=True)
def _learn(slot, ts, score, windows, count, last_ts, mean_gap, window):  # pragma: no cover - compiled
    c = count[slot]
    windows[slot, c % window] = np.float32(score)
    if c:
        gap = float(ts - last_ts[slot])
        previous = mean_gap[slot]
        # The rate adapts over about a window of events.
        mean_gap[slot] = gap if math.isnan(previous) else previous + (gap - previous) / min(c, window)
    last_ts[slot] = ts
    count[slot] = c + 1


@numba.njit(cache=True)
def _tail_p_value(past, score32, tail, at_least):  # pragma: no cover - compiled
    """The p-value of a score that fewer than ``tail`` of the ``past`` scores reach: an exponential fit to the tail.
    The tail is summed in sorted order, so the result does not depend on how the selection orders it."""
    n = past.shape[0]
    top = np.sort(np.partition(past, n - tail)[n - tail:]).astype(np.float64)
    threshold = top[0]
    excess = 0.0
    for value in top:
        excess += value - threshold
    scale = excess / tail
    if scale <= 0.0:  # a flat tail: nothing above it was ever seen
        return 0.0 if score32 > threshold else (1.0 + at_least) / (n + 1.0)
    return tail / (n + 1.0) * math.exp(-(float(score32) - threshold) / scale)


@numba.njit(cache=True)
def _judge(slots, ts, scores, windows, count, last_ts, mean_gap, window, warmup, tail,
           p_out, gap_out):  # pragma: no cover - compiled
    """Judge, then learn, each row in order."""
    for row in range(slots.shape[0]):
        score = scores[row]
        if math.isnan(score):
            continue
        slot = slots[row]
        c = count[slot]
        if c >= warmup:
            n = min(c, window)
            score32 = np.float32(score)
            at_least = 0
            for k in range(n):
                if windows[slot, k] >= score32:
                    at_least += 1
            if at_least < tail:
                p_out[row] = _tail_p_value(windows[slot, :n], score32, tail, at_least)
            else:
                p_out[row] = (1.0 + at_least) / (n + 1.0)
            gap_out[row] = mean_gap[slot]
        _learn(slot, ts[row], score, windows, count, last_ts, mean_gap, window)


class CalibratedAlerting(Stateful):
    """Per-slot score windows and event rates; :meth:`judge` returns p-values and severity levels."""

    def __init__(self, params: AlertingParams) -> None:
        if params.tail >= params.window:
            raise ParamError("alerting.tail", f"{params.tail} must be smaller than alerting.window ({params.window})")
        if params.warmup < params.tail:  # the tail fit needs `tail` past scores
            raise ParamError("alerting.warmup", f"{params.warmup} must be at least alerting.tail ({params.tail})")
        for name, rarity in params.levels.items():
            if not (isinstance(rarity, (int, float)) and rarity >= 1.0):
                raise ParamError(f"alerting.levels.{name}", f"{rarity!r} is out of range (must be at least 1.0)")
        self.params = params
        ordered = sorted(params.levels.items(), key=lambda item: item[1])
        self.level_names = [name for name, _ in ordered]
        self.level_rarities = [float(rarity) for _, rarity in ordered]
        self._allocate()

    def _allocate(self) -> None:
        """No slot yet: arrays grow as slots appear (:meth:`_ensure_rows`)."""
        self.rows = 0  # slots in use: every slot seen is below it
        self.scores = np.zeros((0, self.params.window), dtype=np.float32)  # ring buffer per slot
        self.count = np.zeros(0, dtype=np.int64)  # scores seen (the window holds min(count, window))
        self.last_ts = np.zeros(0, dtype=np.int64)
        self.mean_gap_ms = np.zeros(0)  # EWMA of event-time gaps, NaN until two events were seen

    def _ensure_rows(self, rows: int) -> None:
        if rows > len(self.count):
            grow = max(16, rows, 2 * len(self.count)) - len(self.count)
            self.scores = np.vstack([self.scores, np.zeros((grow, self.params.window), dtype=np.float32)])
            self.count = np.r_[self.count, np.zeros(grow, dtype=np.int64)]
            self.last_ts = np.r_[self.last_ts, np.zeros(grow, dtype=np.int64)]
            self.mean_gap_ms = np.r_[self.mean_gap_ms, np.full(grow, np.nan)]
        self.rows = max(self.rows, rows)

    def judge(self, slots: np.ndarray, ts_ms: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """p-value (NaN when not judged) and level (an index into ``level_names``, or ``NO_ALERT``) per
        event, in order; then each score joins its slot's window (one compiled loop, :func:`_judge`)."""
        n = len(slots)
        p_values = np.full(n, np.nan)
        gaps = np.full(n, np.nan)  # the slot's mean event gap when the row was judged
        if not n:
            return p_values, np.full(0, NO_ALERT, dtype=np.int64)
        self._ensure_rows(int(slots.max()) + 1)
        _judge(np.ascontiguousarray(slots, dtype=np.int64), np.ascontiguousarray(ts_ms, dtype=np.int64),
               np.ascontiguousarray(scores, dtype=np.float64), self.scores, self.count, self.last_ts, self.mean_gap_ms,
               self.params.window, self.params.warmup, self.params.tail, p_values, gaps)
        return p_values, self._levels(p_values, gaps)

    def _levels(self, p_values: np.ndarray, gaps: np.ndarray) -> np.ndarray:
        """The rarest level whose threshold each p-value meets (levels are nested: thresholds shrink with rarity);
        no level without a rate (NaN gap, or simultaneous events)."""
        alert_p = self.params.budget_per_day * gaps / MS_PER_DAY
        with np.errstate(invalid="ignore"):
            met = p_values[:, None] <= alert_p[:, None] / np.asarray(self.level_rarities)[None, :]
        levels = np.cumprod(met, axis=1).sum(axis=1) - 1  # the length of the prefix of levels met
        levels[~(gaps > 0.0)] = NO_ALERT
        return levels

    def evict(self, slots: np.ndarray) -> None:
        """Forget these slots: their next score starts a new window and a new rate estimate."""
        slots = slots[slots < len(self.count)]
        self.count[slots] = 0
        self.last_ts[slots] = 0
        self.mean_gap_ms[slots] = np.nan

    def state_bytes(self) -> int:
        """The score windows, counters, times and gaps of the slots in use."""
        return self.rows * (self.params.window * 4 + 8 + 8 + 8)

    def snapshot(self) -> dict[str, Any]:
        n = self.rows
        return {
            "scores": self.scores[:n].copy(),
            "count": self.count[:n].copy(),
            "last_ts": self.last_ts[:n].copy(),
            "mean_gap_ms": self.mean_gap_ms[:n].copy(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        n = len(state["count"])
        self._allocate()
        self._ensure_rows(n)
        # Copies: the snapshot may be restored again, and the windows are written in place.
        self.scores[:n] = np.asarray(state["scores"], dtype=np.float32).reshape(n, self.params.window)
        self.count[:n] = np.asarray(state["count"], dtype=np.int64)
        self.last_ts[:n] = np.asarray(state["last_ts"], dtype=np.int64)
        self.mean_gap_ms[:n] = np.asarray(state["mean_gap_ms"], dtype=np.float64)
