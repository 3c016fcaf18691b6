"""The trend CUSUM: a plain-Python reference value by value, batch cuts and snapshots, and what it must and must not
call drift."""
import math

import numpy as np
import pytest

from kernels.trend_cusum import TrendCusumBank
from operators.batch import Batch
from operators.drift import DriftOperator, DriftParams
from operators.event import Event, SourcePosition

PARAMS = {"alpha": 0.02, "beta": 0.02, "k": 1.0, "threshold": 20.0, "warmup": 100, "scale_rate": 0.005, "clip": 3.0}


class Reference:
    """The kernel's recurrence for one stream, written out in plain Python."""

    def __init__(self, alpha, beta, k, threshold, warmup, scale_rate, clip):
        self.p = dict(alpha=alpha, beta=beta, k=k, threshold=threshold, warmup=warmup, rate=scale_rate, clip=clip)
        self.seen, self.level, self.slope, self.previous, self.abs_diff = 0, 0.0, 0.0, 0.0, 0.0
        self.var, self.cov, self.previous_error, self.rise, self.fall = 0.0, 0.0, 0.0, 0.0, 0.0

    def update(self, x):
        p, seen = self.p, self.seen
        self.seen += 1
        if seen == 0:
            self.level = self.previous = x
            return 0
        noise = self.abs_diff * math.sqrt(math.pi) / 2
        change, self.previous = abs(x - self.previous), x
        if seen <= 30:
            self.abs_diff += (change - self.abs_diff) / seen
        else:
            self.abs_diff += 0.01 * (min(change, 5 * self.abs_diff) - self.abs_diff)
        forecast = self.level + self.slope
        error = x - forecast
        rho = min(max(self.cov / self.var, 0.0), 0.95) if self.var > 0 else 0.0
        scale = max(math.sqrt(self.var), noise) * math.sqrt((1 + rho) / (1 - rho))
        clipped = error
        if seen > p["warmup"] and scale > 0:
            z = min(max(error / scale, -p["clip"]), p["clip"])
            self.rise, self.fall = max(0.0, self.rise + z - p["k"]), max(0.0, self.fall - z - p["k"])
            if self.rise > p["threshold"] or self.fall > p["threshold"]:
                direction = 1 if self.rise > p["threshold"] else -1
                self.level, self.slope, self.rise, self.fall, self.previous_error = x, 0.0, 0.0, 0.0, 0.0
                return direction
            clipped = z * scale
        evidence = max(self.rise, self.fall) / p["threshold"]
        if seen > 2 and evidence < 0.1:
            bounded = min(max(error, -4 * noise), 4 * noise) if noise > 0 else error
            self.var += p["rate"] * (bounded * bounded - self.var)
            self.cov += p["rate"] * (bounded * self.previous_error - self.cov)
            self.previous_error = bounded
        level = forecast + max(0.0, 1 - evidence) * p["alpha"] * clipped
        self.slope += max(0.0, 1 - evidence) * p["beta"] * (level - self.level - self.slope)
        self.level = level
        return 0


def streams(n=3000, seed=0):
    """Three interleaved streams: a daily-like cycle with a ramp, a level shift down, and plain noise with spikes."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    a = 8 * np.sin(2 * np.pi * t / 1440) + np.clip((t - 1500) / 240, 0, 1) * 10 + rng.normal(size=n)
    b = np.where(t < 1000, 5.0, -2.0) + rng.normal(size=n)
    c = rng.normal(size=n)
    c[[400, 1700, 2500]] += 12.0
    ids = np.tile([0, 1, 2], n)
    return ids, np.column_stack([a, b, c]).ravel()


def test_equals_the_reference_across_batch_cuts_and_snapshots():
    ids, values = streams()
    references = [Reference(**PARAMS) for _ in range(3)]
    expected = np.array([references[i].update(v) for i, v in zip(ids.tolist(), values.tolist())])
    bank, got = TrendCusumBank(**PARAMS), np.zeros(len(values), dtype=int)
    cuts = np.r_[0, np.sort(np.random.default_rng(1).choice(np.arange(1, len(values)), 25, replace=False)), len(values)]
    for a, b in zip(cuts[:-1], cuts[1:]):
        alarms = bank.update(ids[a:b], values[a:b])
        got[a:b] = np.where(alarms, bank.directions, 0)
        restored = TrendCusumBank(**PARAMS)
        restored.restore(bank.snapshot())
        bank = restored
    assert np.array_equal(got, expected)
    assert (expected != 0).any()


def test_what_counts_as_drift():
    ids, values = streams()
    bank = TrendCusumBank()
    alarms = bank.update(ids, values)
    position = np.arange(len(values)) // 3
    by_stream = {s: [(int(position[i]), int(bank.directions[i])) for i in np.flatnonzero(alarms & (ids == s))]
                 for s in range(3)}
    # The ramp (1500-1740) is found while it rises, upwards; the steep cycle around it raises nothing.
    assert by_stream[0] and all(1500 < tick < 1740 and direction == 1 for tick, direction in by_stream[0])
    # The level shift down at 1000 is found within a few values, once.
    assert [direction for _, direction in by_stream[1]] == [-1] and 1000 <= by_stream[1][0][0] < 1020
    # Spikes are not drift.
    assert by_stream[2] == []


def test_the_operator_names_the_fields_and_their_directions():
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(400, 2))
    rows[300:, 0] += 6.0
    rows[300:, 1] -= 6.0
    events = [Event("a", i, {"x": float(r[0]), "y": float(r[1])}, SourcePosition(topic="t", partition=0, offset=i))
              for i, r in enumerate(rows)]
    alerts = DriftOperator("drift", ["x", "y"], DriftParams()).process(Batch.from_events(events))
    assert len(alerts) == 1 and alerts[0].fields == ["x", "y"] and alerts[0].score == 2.0
    assert "x drifted up (+" in alerts[0].reason and "y drifted down (-" in alerts[0].reason


@pytest.mark.parametrize("params", [{"alpha": 0.0}, {"beta": 1.5}, {"k": 3.0, "clip": 3.0}, {"threshold": 0.0},
                                    {"warmup": -1}, {"scale_rate": 2.0}])
def test_bad_parameters_are_refused(params):
    with pytest.raises(ValueError):
        TrendCusumBank(**params)
