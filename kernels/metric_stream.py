"""Anomaly scores for univariate metric streams (CPU, latency, request counts, traffic), many streams at once, causal.

Each stream keeps three predictions of its next value and, for each, how surprising its recent errors are:

* **predictions**: the previous value (naive), the stream's daily profile and its weekly profile (an exponentially
  weighted mean per time-of-day, and per time-of-week, bucket of event time; a bucket predicts once it has seen
  ``min_seen`` values);
* **anomaly likelihood** (Ahmad et al., 2017), per prediction: the error's size in units of its running mean size
  (``error_alpha``, a running mean while fewer than 1/``error_alpha`` errors are seen), averaged over the last
  ``average`` errors; that average is compared with a Gaussian fitted to its own history (weight
  ``likelihood_alpha``; mean floored at 0.03, variance at 0.0003, as in the reference), and its upper tail
  probability q becomes the score min(1, log q / log 10⁻¹⁰). A prediction starts scoring once it has
  ``likelihood_warmup`` averages behind it;
* **new range** (the spatial rule of NAB's HTM detector): a value beyond the range of every earlier value by more than
  ``range_tolerance`` of that range's width scores 1;
* **first crossing, then silence**: the stream's score is the largest of these four, and it is emitted only if it
  is higher than each of the stream's previous ``refractory`` scores, else 0. Whatever threshold a user alerts at,
  a burst of surprise crosses it once; a re-alarm within the period needs something more surprising.

Nothing is scored during the first ``warmup`` values of a stream. Memory per stream is constant: the two profiles
(``day_buckets`` × 8 buckets of a float and a count) and a few numbers per prediction. A value that is not finite is
skipped (score NaN, not learned). Every row updates only its own stream with correctly rounded float64 arithmetic,
so a score does not depend on batching or on other streams.

Why hand-written: the detector is a sequential recurrence per stream, fused here into one compiled loop; no library
provides the anomaly likelihood on residuals of several predictors, nor the score-then-learn discipline per row.

>>> import numpy as np
>>> detector = MetricStreamDetector(MetricStreamSettings(warmup=50, likelihood_warmup=50))
>>> rng = np.random.default_rng(0)
>>> values = np.r_[50 + rng.normal(size=600), 80.0, 50 + rng.normal(size=50)]
>>> ts = np.arange(len(values), dtype=np.int64) * 300_000
>>> scores, reasons, _ = detector.score_and_learn(np.zeros(len(values), dtype=np.int64), ts, values[:, None])
>>> float(scores[600, 0]), REASONS[reasons[600, 0]], float(scores[601:, 0].max())  # then silent
(1.0, 'new range', 0.0)

References
----------
Ahmad, S., Lavin, A., Purdy, S. and Agha, Z. (2017). Unsupervised real-time anomaly detection for streaming data.
*Neurocomputing* 262, 134-147.

Lavin, A. and Ahmad, S. (2015). Evaluating real-time anomaly detection algorithms: the Numenta Anomaly Benchmark.
*IEEE ICMLA*.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from kernels.profiling import timed
from kernels.state import SlotArrays, Stateful, tensor_bytes

MS_PER_DAY = 86_400_000
PREDICTIONS = 3  # naive, daily, weekly
REASONS = ("naive", "daily profile", "weekly profile", "new range")
NEW_RANGE = 3
_LOG_1E10 = math.log(1e-10)


@dataclass(frozen=True)
class MetricStreamSettings:
    warmup: int = 150
    day_buckets: int = 288
    profile_alpha: float = 0.3
    min_seen: int = 2
    error_alpha: float = 0.003
    average: int = 10
    likelihood_alpha: float = 0.002
    likelihood_warmup: int = 300
    range_tolerance: float = 0.05
    refractory: int = 120


@numba.njit(cache=True)
def _upper_tail(z):  # pragma: no cover - compiled
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@numba.njit(cache=True)
def _likelihood(stream, p, error, scale, scale_n, ring, ring_sum, filled, mu, var, fit_n, error_alpha,
                likelihood_alpha, likelihood_warmup, scoring):  # pragma: no cover - compiled
    """The anomaly likelihood score of one prediction error (module docstring; NaN before it can score), after which the
    state learns the error."""
    e = abs(error)
    if scale_n[stream, p] == 0:
        scale[stream, p] = e
        scale_n[stream, p] = 1
        return math.nan
    s = scale[stream, p]
    z = min(e / s, 50.0) if s > 1e-12 else (0.0 if e <= 1e-12 else 50.0)
    k = ring.shape[2]
    position = filled[stream, p] % k
    ring_sum[stream, p] += z - ring[stream, p, position]
    ring[stream, p, position] = z
    filled[stream, p] += 1
    weight = max(error_alpha, 1.0 / (filled[stream, p] + 1.0))
    scale[stream, p] = s + weight * (e - s)
    if filled[stream, p] < k:
        return math.nan
    average = ring_sum[stream, p] / k
    score = math.nan
    n = fit_n[stream, p]
    if scoring and n >= likelihood_warmup:
        sd = math.sqrt(max(var[stream, p], 0.0003))
        tail = _upper_tail((average - max(mu[stream, p], 0.03)) / sd)
        score = min(1.0, math.log(max(tail, 1e-300)) / _LOG_1E10)
    d = average - mu[stream, p]
    if n < 1.0 / likelihood_alpha:
        mu[stream, p] += d / (n + 1.0)
        var[stream, p] += (d * d * n / (n + 1.0) - var[stream, p]) / (n + 1.0)
    else:
        mu[stream, p] += likelihood_alpha * d
        var[stream, p] = (1.0 - likelihood_alpha) * (var[stream, p] + likelihood_alpha * d * d)
    fit_n[stream, p] = n + 1
    return score


@numba.njit(cache=True)
def _profile_error(stream, bucket, x, profile, seen, alpha, min_seen):  # pragma: no cover - compiled
    """x minus its bucket's profile (NaN while the bucket has seen fewer than min_seen values); then learn x."""
    error = x - profile[stream, bucket] if seen[stream, bucket] >= min_seen else math.nan
    if seen[stream, bucket] == 0:
        profile[stream, bucket] = x
    else:
        profile[stream, bucket] += alpha * (x - profile[stream, bucket])
    seen[stream, bucket] += 1
    return error


@numba.njit(cache=True)
def _score_and_learn(slots, ts_ms, values, count, low, high, last, day, day_seen, week, week_seen, scale, scale_n,
                     ring, ring_sum, filled, mu, var, fit_n, recent, warmup, profile_alpha, min_seen, error_alpha,
                     likelihood_alpha, likelihood_warmup, range_tolerance, scores, reasons, surprise):  # pragma: no cover
    n_fields = values.shape[1]
    day_buckets = day.shape[1]
    week_buckets = week.shape[1]
    refractory = recent.shape[1]
    for row in range(slots.shape[0]):
        ms = ts_ms[row]
        day_bucket = (ms % MS_PER_DAY) * day_buckets // MS_PER_DAY
        week_bucket = (ms % (7 * MS_PER_DAY)) * week_buckets // (7 * MS_PER_DAY)
        for field in range(n_fields):
            stream = slots[row] * n_fields + field
            x = values[row, field]
            if not math.isfinite(x):
                scores[row, field] = math.nan
                surprise[row, field] = math.nan
                reasons[row, field] = -1
                continue
            seen = count[stream]
            scoring = seen >= warmup
            best, why = math.nan, -1
            if seen > 0:
                errors = (x - last[stream],
                          _profile_error(stream, day_bucket, x, day, day_seen, profile_alpha, min_seen),
                          _profile_error(stream, week_bucket, x, week, week_seen, profile_alpha, min_seen))
                for p in range(PREDICTIONS):
                    if not math.isnan(errors[p]):
                        s = _likelihood(stream, p, errors[p], scale, scale_n, ring, ring_sum, filled, mu, var, fit_n,
                                        error_alpha, likelihood_alpha, likelihood_warmup, scoring)
                        if not math.isnan(s) and (math.isnan(best) or s > best):
                            best, why = s, p
                width = high[stream] - low[stream]
                if scoring and width > 0 and (x > high[stream] + range_tolerance * width
                                              or x < low[stream] - range_tolerance * width):
                    best, why = 1.0, NEW_RANGE
                low[stream] = min(low[stream], x)
                high[stream] = max(high[stream], x)
            else:
                _profile_error(stream, day_bucket, x, day, day_seen, profile_alpha, min_seen)
                _profile_error(stream, week_bucket, x, week, week_seen, profile_alpha, min_seen)
                low[stream] = x
                high[stream] = x
            last[stream] = x
            # First crossing, then silence: emit only a score above each of the previous `refractory` ones.
            surprise[row, field] = best  # NaN until something can score
            best = 0.0 if math.isnan(best) else best
            position = seen % refractory
            emitted = best > recent[stream].max()
            recent[stream, position] = best
            scores[row, field] = best if emitted else 0.0
            reasons[row, field] = why if emitted else -1
            count[stream] = seen + 1


class MetricStreamDetector(SlotArrays, Stateful):
    """The detector's state for ``streams`` streams (grows on demand); see the module docstring."""

    kernel_name = "metric_stream"

    def __init__(self, settings: MetricStreamSettings = MetricStreamSettings(), n_fields: int = 1, streams: int = 1) -> None:
        self.settings = settings
        self.n_fields = n_fields
        self._allocate(streams)

    def _allocate(self, streams: int) -> None:
        s = self.settings
        self.count = np.zeros(streams, dtype=np.int64)
        self.low, self.high, self.last = (np.zeros(streams) for _ in range(3))
        self.day = np.zeros((streams, s.day_buckets))
        self.day_seen = np.zeros((streams, s.day_buckets), dtype=np.int32)
        self.week = np.zeros((streams, 7 * s.day_buckets))
        self.week_seen = np.zeros((streams, 7 * s.day_buckets), dtype=np.int32)
        self.scale, self.ring_sum, self.mu, self.var = (np.zeros((streams, PREDICTIONS)) for _ in range(4))
        self.scale_n, self.filled, self.fit_n = (np.zeros((streams, PREDICTIONS), dtype=np.int64) for _ in range(3))
        self.ring = np.zeros((streams, PREDICTIONS, s.average))
        self.recent = np.zeros((streams, s.refractory))

    def _arrays(self) -> list[np.ndarray]:
        return [self.count, self.low, self.high, self.last, self.day, self.day_seen, self.week, self.week_seen,
                self.scale, self.scale_n, self.ring, self.ring_sum, self.filled, self.mu, self.var, self.fit_n, self.recent]

    _NAMES = ("count", "low", "high", "last", "day", "day_seen", "week", "week_seen", "scale", "scale_n", "ring",
              "ring_sum", "filled", "mu", "var", "fit_n", "recent")

    def score_and_learn(self, slots: np.ndarray, ts_ms: np.ndarray,
                        values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per (row, field): the score in [0, 1] (NaN where the value is missing), the index in :data:`REASONS` of what
        scored it (−1 where nothing was emitted) and the surprise before the refractory gate (the largest of the four
        scores, NaN until one can score); rows are scored in order, each before its stream learns it."""
        values = np.ascontiguousarray(values, dtype=np.float64).reshape(len(slots), self.n_fields)
        scores, surprise = np.zeros(values.shape), np.zeros(values.shape)
        reasons = np.full(values.shape, -1, dtype=np.int8)
        if len(slots) == 0:
            return scores, reasons, surprise
        self.resize(max(self.slots, (int(slots.max()) + 1) * self.n_fields))
        s = self.settings
        with timed(self.kernel_name, "cpu"):
            _score_and_learn(np.ascontiguousarray(slots, dtype=np.int64), np.ascontiguousarray(ts_ms, dtype=np.int64),
                             values, *self._arrays(), s.warmup, s.profile_alpha, s.min_seen, s.error_alpha,
                             s.likelihood_alpha, s.likelihood_warmup, s.range_tolerance, scores, reasons, surprise)
        return scores, reasons, surprise

    def evict(self, slots: np.ndarray) -> None:
        """These entities' streams back to a stream never seen."""
        streams = (np.asarray(slots, dtype=np.int64)[:, None] * self.n_fields + np.arange(self.n_fields)).ravel()
        self.reset(streams[streams < self.slots])

    def snapshot(self) -> dict[str, np.ndarray]:
        return {name: array.copy() for name, array in zip(self._NAMES, self._arrays())}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        for name, array in zip(self._NAMES, self._arrays()):
            setattr(self, name, np.array(state[name], dtype=array.dtype))

    def state_bytes(self) -> int:
        return tensor_bytes(self._arrays())
