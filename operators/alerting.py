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

>>> import numpy as np
>>> policy = CalibratedAlerting(AlertingParams(budget_per_day=2.0, window=500, warmup=100))
>>> rng = np.random.default_rng(0)
>>> hourly = [("a", hour * 3_600_000, float(s)) for hour, s in enumerate(rng.normal(size=4900))]
>>> hourly.append(("a", 4900 * 3_600_000, 8.0))
>>> p, levels = policy.judge(*map(list, zip(*hourly)))
>>> judged_days = (4900 - 100) / 24
>>> round(sum(level is not None for level in levels[:-1]) / judged_days, 1)  # about the budget
1.9
>>> levels[-1], bool(p[-1] < 1e-5)
('critical', True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

MS_PER_DAY = 86_400_000.0


@dataclass
class AlertingParams:
    """``budget_per_day``: alerts per entity per day expected on normal data (the ``info`` level);
    ``window``: past scores per entity that calibrate a new one; ``warmup``: scores an entity needs
    before it can alert; ``tail``: how many of the largest past scores fit the exponential tail;
    ``levels``: severity name to rarity, i.e. how many times rarer than the budget an event must be."""

    budget_per_day: float = field(default=1.0, metadata={"min": 1e-9})
    window: int = field(default=1000, metadata={"min": 20})
    warmup: int = field(default=200, metadata={"min": 1})
    tail: int = field(default=20, metadata={"min": 2})
    levels: dict[str, float] = field(default_factory=lambda: {"info": 1.0, "warning": 10.0, "critical": 100.0})


class CalibratedAlerting:
    """Per-entity score windows and event rates; :meth:`judge` returns p-values and severity levels."""

    def __init__(self, params: AlertingParams) -> None:
        if params.tail >= params.window:
            raise ValueError("alerting.tail must be smaller than alerting.window")
        self.params = params
        ordered = sorted(params.levels.items(), key=lambda item: item[1])
        self.level_names = [name for name, _ in ordered]
        self.level_rarities = [float(rarity) for _, rarity in ordered]
        self.slots: dict[str, int] = {}
        self.scores = np.zeros((0, params.window), dtype=np.float32)  # ring buffer per entity
        self.count = np.zeros(0, dtype=np.int64)  # scores seen (the window holds min(count, window))
        self.last_ts = np.zeros(0, dtype=np.int64)
        self.mean_gap_ms = np.zeros(0)  # EWMA of event-time gaps, NaN until two events were seen

    def _slot(self, key: str) -> int:
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = len(self.slots)
            if slot == len(self.count):
                grow = max(16, slot)
                self.scores = np.vstack([self.scores, np.zeros((grow, self.params.window), dtype=np.float32)])
                self.count = np.r_[self.count, np.zeros(grow, dtype=np.int64)]
                self.last_ts = np.r_[self.last_ts, np.zeros(grow, dtype=np.int64)]
                self.mean_gap_ms = np.r_[self.mean_gap_ms, np.full(grow, np.nan)]
        return slot

    def judge(self, keys: Sequence[str], ts_ms: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, list[str | None]]:
        """p-value (NaN when not judged) and severity level (None: no alert) per event, in order."""
        p_values = np.full(len(keys), np.nan)
        levels: list[str | None] = [None] * len(keys)
        for row, (key, ts, score) in enumerate(zip(keys, ts_ms, scores)):
            if math.isnan(score):
                continue
            slot = self._slot(key)
            if self.count[slot] >= self.params.warmup:
                p_values[row] = p = self._p_value(slot, score)
                levels[row] = self._level(slot, p)
            self._learn(slot, ts, score)
        return p_values, levels

    def _p_value(self, slot: int, score: float) -> float:
        n = int(min(self.count[slot], self.params.window))
        past = self.scores[slot, :n]
        score32 = np.float32(score)
        at_least = int(np.count_nonzero(past >= score32))
        tail = self.params.tail
        if at_least >= tail:
            return (1 + at_least) / (n + 1)
        top = np.partition(past, n - tail)[n - tail :].astype(np.float64)
        threshold = top.min()
        scale = float(np.mean(top - threshold))
        if scale <= 0.0:  # a flat tail: nothing above it was ever seen
            return 0.0 if score32 > threshold else (1 + at_least) / (n + 1)
        return tail / (n + 1) * math.exp(-(float(score32) - threshold) / scale)

    def _level(self, slot: int, p: float) -> str | None:
        gap = self.mean_gap_ms[slot]
        if not gap > 0.0:  # NaN or simultaneous events: no rate, no alert
            return None
        alert_p = self.params.budget_per_day * gap / MS_PER_DAY
        level = None
        for name, rarity in zip(self.level_names, self.level_rarities):  # ascending rarity: nested levels
            if p > alert_p / rarity:
                break
            level = name
        return level

    def _learn(self, slot: int, ts: int, score: float) -> None:
        count = self.count[slot]
        self.scores[slot, count % self.params.window] = score
        if count:
            gap = float(ts - self.last_ts[slot])
            previous = self.mean_gap_ms[slot]
            # The rate adapts over about a window of events.
            self.mean_gap_ms[slot] = gap if math.isnan(previous) else previous + (gap - previous) / min(count, self.params.window)
        self.last_ts[slot] = ts
        self.count[slot] = count + 1

    def state_bytes(self) -> int:
        entities = len(self.slots)
        return entities * (self.params.window * 4 + 8 + 8 + 8)

    def snapshot(self) -> dict[str, Any]:
        n = len(self.slots)
        return {
            "keys": list(self.slots),
            "scores": self.scores[:n].copy(),
            "count": self.count[:n].copy(),
            "last_ts": self.last_ts[:n].copy(),
            "mean_gap_ms": self.mean_gap_ms[:n].copy(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.slots = {key: slot for slot, key in enumerate(state["keys"])}
        # Copies: the snapshot may be restored again, and the windows are written in place.
        self.scores = np.array(state["scores"], dtype=np.float32).reshape(len(self.slots), self.params.window)
        self.count = np.array(state["count"], dtype=np.int64)
        self.last_ts = np.array(state["last_ts"], dtype=np.int64)
        self.mean_gap_ms = np.array(state["mean_gap_ms"], dtype=np.float64)
