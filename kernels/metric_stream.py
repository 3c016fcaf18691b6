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
* **new pattern** (after the novelty memory of NAB's leaders, CAD OSE and ARTime): every ``block`` values become one
  level, the block's value farthest from the previous block's mean (so spikes and dips survive) placed among
  ``levels`` equal bins of the range of earlier blocks; the last ``pattern`` levels form a code, and a code never seen
  before scores −log₁₀(r)/``novelty_saturation`` (at most 1), r being the stream's running rate of new codes
  (weight ``novelty_alpha``): a new shape is surprising in proportion to how rarely shapes are new. The codes seen are
  one bit each (``levels`` ** ``pattern`` bits); scoring starts after ``novelty_warmup`` blocks;
* **first crossing, then silence**: the stream's score is the largest of these five, and it is emitted only if it
  is higher than each of the stream's previous ``refractory`` scores, else 0. Whatever threshold a user alerts at,
  a burst of surprise crosses it once; a re-alarm within the period needs something more surprising.

Nothing is scored during the first ``warmup`` values of a stream. Memory per stream is constant: the two profiles
(``day_buckets`` × 8 buckets of a float and a count, 27 KB by default), the pattern bits (4 KB by default) and a few
numbers per prediction. A value that is not finite is skipped (score NaN, not learned). Every row updates only its
own stream with correctly rounded float64 arithmetic, so a score does not depend on batching or on other streams.
No parameter depends on a series' length or range: timescales are counts of values or spans of event time.

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

Smirnov, M. (2016). CAD: Contextual Anomaly Detector (CAD OSE), https://github.com/smirmik/CAD.

Chavarria, M. (2021). ARTime: anomaly detection with adaptive resonance theory, https://github.com/markNZed/ARTimeNAB.jl.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from kernels.profiling import timed
from kernels.state import SlotArrays, Stateful, tensor_bytes

MS_PER_DAY = 86_400_000
PREDICTIONS = 3  # naive, daily, weekly
REASONS = ("naive", "daily profile", "weekly profile", "new range", "new pattern")
NEW_RANGE, NEW_PATTERN = 3, 4
LOG_SATURATION = 10.0  # a likelihood score reaches 1 at tail probability 1e-10, as the reference's log score does
ERROR_CAP = 50.0  # an error counts at most this many typical errors: one outlier cannot own the average for long
MAD_TO_SIGMA = math.sqrt(math.pi / 2.0)  # standard deviation per mean absolute deviation of a Gaussian


class MetricStreamSettings(NamedTuple):
    """The detector's parameters (documented on :class:`operators.metric_stream.MetricStreamParams`)."""

    warmup: int = 150
    day_buckets: int = 288
    profile_alpha: float = 0.3
    min_seen: int = 2
    error_alpha: float = 0.003
    average: int = 10
    likelihood_alpha: float = 0.002
    likelihood_warmup: int = 300
    range_tolerance: float = 0.05
    block: int = 6
    levels: int = 8
    pattern: int = 5
    novelty_alpha: float = 0.02
    novelty_saturation: float = 3.0
    novelty_warmup: int = 50
    refractory: int = 120


class State(NamedTuple):
    """Per stream (first axis): the arrays of the module docstring's parts."""

    count: np.ndarray  # values seen
    low: np.ndarray  # range of the values seen
    high: np.ndarray
    last: np.ndarray  # the naive prediction
    day: np.ndarray  # daily profile per bucket, and values seen per bucket
    day_seen: np.ndarray
    week: np.ndarray
    week_seen: np.ndarray
    scale: np.ndarray  # per prediction: running error size, errors seen
    scale_n: np.ndarray
    ring: np.ndarray  # per prediction: the last `average` normalised errors, their sum, how many
    ring_sum: np.ndarray
    filled: np.ndarray
    mu: np.ndarray  # per prediction: the Gaussian of the averages, averages seen
    var: np.ndarray
    fit_n: np.ndarray
    block: np.ndarray  # per stream: sum, values, extreme and its distance to the last block mean, that mean
    block_n: np.ndarray
    block_level: np.ndarray
    block_low: np.ndarray  # range of the blocks' extremes
    block_high: np.ndarray
    pattern: np.ndarray  # the code of the last `pattern` levels, blocks seen, novelty rate, patterns seen (bits)
    blocks: np.ndarray
    novelty: np.ndarray
    patterns_seen: np.ndarray
    recent: np.ndarray  # the last `refractory` scores


def allocate(settings: MetricStreamSettings, streams: int) -> State:
    s, n = settings, streams
    return State(np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n), np.zeros(n),
                 np.zeros((n, s.day_buckets)), np.zeros((n, s.day_buckets), dtype=np.int32),
                 np.zeros((n, 7 * s.day_buckets)), np.zeros((n, 7 * s.day_buckets), dtype=np.int32),
                 np.zeros((n, PREDICTIONS)), np.zeros((n, PREDICTIONS), dtype=np.int64),
                 np.zeros((n, PREDICTIONS, s.average)), np.zeros((n, PREDICTIONS)), np.zeros((n, PREDICTIONS), dtype=np.int64),
                 np.zeros((n, PREDICTIONS)), np.zeros((n, PREDICTIONS)), np.zeros((n, PREDICTIONS), dtype=np.int64),
                 np.zeros((n, 4)), np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n), np.zeros(n),
                 np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n),
                 np.zeros((n, (s.levels ** s.pattern + 7) // 8), dtype=np.uint8), np.zeros((n, s.refractory)))


@numba.njit(cache=True)
def _upper_tail(z):  # pragma: no cover - compiled
    return 0.5 * math.erfc(z / math.sqrt(2.0))


@numba.njit(cache=True)
def _likelihood(st, stream, p, error, s, scoring):  # pragma: no cover - compiled
    """The anomaly likelihood score of one prediction error (module docstring; NaN before it can score), after which the
    state learns the error."""
    e = abs(error)
    if st.scale_n[stream, p] == 0:
        st.scale[stream, p] = e
        st.scale_n[stream, p] = 1
        return math.nan
    size = st.scale[stream, p]
    z = min(e / size, ERROR_CAP) if size > 1e-12 else (0.0 if e <= 1e-12 else ERROR_CAP)
    k = s.average
    position = st.filled[stream, p] % k
    st.ring_sum[stream, p] += z - st.ring[stream, p, position]
    st.ring[stream, p, position] = z
    st.filled[stream, p] += 1
    st.scale[stream, p] = size + max(s.error_alpha, 1.0 / (st.filled[stream, p] + 1.0)) * (e - size)
    if st.filled[stream, p] < k:
        return math.nan
    average = st.ring_sum[stream, p] / k
    score = math.nan
    n = st.fit_n[stream, p]
    if scoring and n >= s.likelihood_warmup:
        sd = math.sqrt(max(st.var[stream, p], 0.0003))
        tail = _upper_tail((average - max(st.mu[stream, p], 0.03)) / sd)
        score = min(1.0, -math.log10(max(tail, 1e-300)) / LOG_SATURATION)
    d = average - st.mu[stream, p]
    if n < 1.0 / s.likelihood_alpha:
        st.mu[stream, p] += d / (n + 1.0)
        st.var[stream, p] += (d * d * n / (n + 1.0) - st.var[stream, p]) / (n + 1.0)
    else:
        st.mu[stream, p] += s.likelihood_alpha * d
        st.var[stream, p] = (1.0 - s.likelihood_alpha) * (st.var[stream, p] + s.likelihood_alpha * d * d)
    st.fit_n[stream, p] = n + 1
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
def _pattern_novelty(st, stream, x, s):  # pragma: no cover - compiled
    """Adds x to its block; at a block's end, the novelty score of the pattern of the last blocks (0 if seen before,
    NaN between block ends and during the novelty warm-up), after which the pattern is remembered."""
    b = st.block[stream]
    b[0] += x
    distance = abs(x - st.block_level[stream])
    if st.block_n[stream] == 0 or distance > b[3]:
        b[2], b[3] = x, distance  # the block's value farthest from the last block mean: spikes and dips survive
    st.block_n[stream] += 1
    if st.block_n[stream] < s.block:
        return math.nan
    extreme, low, high = b[2], st.block_low[stream], st.block_high[stream]
    st.block_level[stream] = b[0] / s.block
    b[0] = 0.0
    st.block_n[stream] = 0
    level = 0
    if st.blocks[stream] > 0 and high > low:
        level = min(max(int((extreme - low) / (high - low) * s.levels), 0), s.levels - 1)
    st.block_low[stream] = extreme if st.blocks[stream] == 0 else min(low, extreme)
    st.block_high[stream] = extreme if st.blocks[stream] == 0 else max(high, extreme)
    code = (st.pattern[stream] * s.levels + level) % (s.levels ** s.pattern)
    st.pattern[stream] = code
    st.blocks[stream] += 1
    if st.blocks[stream] < s.pattern:
        return math.nan
    byte, bit = code >> 3, np.uint8(1 << (code & 7))
    novel = (st.patterns_seen[stream, byte] & bit) == 0
    st.patterns_seen[stream, byte] |= bit
    rate = st.novelty[stream] if st.blocks[stream] > s.pattern else 1.0
    st.novelty[stream] = rate + s.novelty_alpha * ((1.0 if novel else 0.0) - rate)
    if st.blocks[stream] < s.novelty_warmup:
        return math.nan
    return min(1.0, -math.log10(max(rate, 1e-12)) / s.novelty_saturation) if novel else 0.0


@numba.njit(cache=True)
def _expectation(st, stream, x, errors, scoring, row, field, expected, spread):  # pragma: no cover - compiled
    """The prediction with the smallest running error size (before this value is learned), and its error's standard
    deviation (the size is a mean absolute error: sigma = size * sqrt(pi / 2) for Gaussian errors); NaN until the
    stream scores."""
    best_size, value = math.inf, math.nan
    for p in range(PREDICTIONS):
        if not math.isnan(errors[p]) and st.scale_n[stream, p] > 0 and st.scale[stream, p] < best_size:
            best_size, value = st.scale[stream, p], x - errors[p]
    known = scoring and not math.isnan(value)
    expected[row, field] = value if known else math.nan
    spread[row, field] = best_size * MAD_TO_SIGMA if known else math.nan


@numba.njit(cache=True)
def _score_and_learn(slots, ts_ms, values, st, s, scores, reasons, surprise, expected=None,
                     spread=None):  # pragma: no cover - compiled
    # ``expected`` / ``spread`` None compile a version without their stores (numba prunes the branches).
    n_fields = values.shape[1]
    week_buckets = 7 * s.day_buckets
    for row in range(slots.shape[0]):
        ms = ts_ms[row]
        day_bucket = (ms % MS_PER_DAY) * s.day_buckets // MS_PER_DAY
        week_bucket = (ms % (7 * MS_PER_DAY)) * week_buckets // (7 * MS_PER_DAY)
        for field in range(n_fields):
            stream = slots[row] * n_fields + field
            x = values[row, field]
            if not math.isfinite(x):
                scores[row, field] = math.nan
                surprise[row, field] = math.nan
                reasons[row, field] = -1
                if expected is not None:
                    expected[row, field] = math.nan
                    spread[row, field] = math.nan
                continue
            seen = st.count[stream]
            scoring = seen >= s.warmup
            best, why = math.nan, -1
            errors = (x - st.last[stream] if seen > 0 else math.nan,
                      _profile_error(stream, day_bucket, x, st.day, st.day_seen, s.profile_alpha, s.min_seen),
                      _profile_error(stream, week_bucket, x, st.week, st.week_seen, s.profile_alpha, s.min_seen))
            if expected is not None:
                _expectation(st, stream, x, errors, scoring, row, field, expected, spread)
            for p in range(PREDICTIONS):
                if not math.isnan(errors[p]):
                    score = _likelihood(st, stream, p, errors[p], s, scoring)
                    if not math.isnan(score) and (math.isnan(best) or score > best):
                        best, why = score, p
            novelty = _pattern_novelty(st, stream, x, s)
            if scoring and not math.isnan(novelty) and (math.isnan(best) or novelty > best):
                best, why = novelty, NEW_PATTERN
            width = st.high[stream] - st.low[stream]
            if scoring and width > 0 and (x > st.high[stream] + s.range_tolerance * width
                                          or x < st.low[stream] - s.range_tolerance * width):
                best, why = 1.0, NEW_RANGE
            st.low[stream] = x if seen == 0 else min(st.low[stream], x)
            st.high[stream] = x if seen == 0 else max(st.high[stream], x)
            st.last[stream] = x
            # First crossing, then silence: emit only a score above each of the previous `refractory` ones.
            surprise[row, field] = best  # NaN until something can score
            best = 0.0 if math.isnan(best) else best
            emitted = best > st.recent[stream].max()
            st.recent[stream, seen % s.refractory] = best
            scores[row, field] = best if emitted else 0.0
            reasons[row, field] = why if emitted else -1
            st.count[stream] = seen + 1


class MetricStreamDetector(SlotArrays, Stateful):
    """The detector's state for ``streams`` streams (grows on demand); see the module docstring."""

    kernel_name = "metric_stream"

    def __init__(self, settings: MetricStreamSettings | None = None, n_fields: int = 1, streams: int = 1) -> None:
        self.settings = MetricStreamSettings() if settings is None else settings
        self.n_fields = n_fields
        self._allocate(streams)

    def _allocate(self, streams: int) -> None:
        self.state = allocate(self.settings, streams)

    def _arrays(self) -> list[np.ndarray]:
        return list(self.state)

    def score_and_learn(self, slots: np.ndarray, ts_ms: np.ndarray, values: np.ndarray,
                        expected: np.ndarray | None = None,
                        spread: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per (row, field): the score in [0, 1] (NaN where the value is missing), the index in :data:`REASONS` of what
        scored it (−1 where nothing was emitted) and the surprise before the refractory gate (the largest of the five
        scores, NaN until one can score); rows are scored in order, each before its stream learns it. ``expected`` and
        ``spread`` (both or neither), float64 arrays of ``values``' shape, receive the best prediction of each value
        (the one whose errors have been smallest) and the standard deviation of its errors, NaN until the stream
        scores: the expected band."""
        values = np.ascontiguousarray(values, dtype=np.float64).reshape(len(slots), self.n_fields)
        scores, surprise = np.zeros(values.shape), np.zeros(values.shape)
        reasons = np.full(values.shape, -1, dtype=np.int8)
        if len(slots) == 0:
            return scores, reasons, surprise
        self.resize(max(self.slots, (int(slots.max()) + 1) * self.n_fields))
        with timed(self.kernel_name, "cpu"):
            _score_and_learn(np.ascontiguousarray(slots, dtype=np.int64), np.ascontiguousarray(ts_ms, dtype=np.int64),
                             values, self.state, self.settings, scores, reasons, surprise, expected, spread)
        return scores, reasons, surprise

    def evict(self, slots: np.ndarray) -> None:
        """These entities' streams back to a stream never seen."""
        streams = (np.asarray(slots, dtype=np.int64)[:, None] * self.n_fields + np.arange(self.n_fields)).ravel()
        self.reset(streams[streams < self.slots])

    def snapshot(self) -> dict[str, np.ndarray]:
        return {name: array.copy() for name, array in zip(State._fields, self.state)}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self.state = State(*(np.array(state[name], dtype=array.dtype) for name, array in zip(State._fields, self.state)))

    def state_bytes(self) -> int:
        return tensor_bytes(self.state)
