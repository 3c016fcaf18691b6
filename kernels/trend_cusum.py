"""Drift of a field's level or trend: two-sided CUSUMs on the forecast errors of a local linear trend, many streams.

Each stream (an entity's field) keeps a local linear trend (Holt's level and slope, weights ``alpha`` and ``beta``)
and judges every value by its one-step forecast error in standard units. Two CUSUMs (Page, 1954) add up the
clipped standard errors beyond an allowance ``k``, one for rises and one for falls; when one passes ``threshold``
the stream has drifted in that direction: the alarm names it, the level restarts at the value with a flat slope
(the new regime's trend is not known yet) and both sums restart.

What makes the alarms mean drift:

* **Fields, not scores.** Watching a field's level and trend, the end of an incident is no change at all; watching
  an outlier score, its fall back to normal looks like a drift.
* **The trend stops learning from evidence of a change.** The trend's updates are weighted by
  1 − S / ``threshold``, S the larger CUSUM, so a gradual ramp is not absorbed into the slope while the evidence
  for it builds up; in-control data (S near 0) are tracked at full weight, which follows daily cycles.
* **Units that account for smooth cycles.** A forecast error is divided by the long-run standard deviation of the
  errors: their standard deviation (at least the noise's, from the mean absolute difference of consecutive values)
  times √((1 + ρ) / (1 − ρ)), ρ their lag-1 autocorrelation (the variance of a mean of AR(1) errors). Forecast
  errors on a steep daily cycle run in long same-signed stretches; without this they would add up to false alarms.
  These statistics learn (weight ``scale_rate``) only while both CUSUMs are below a tenth of the threshold.
* **Spikes count little.** Each standard error is clipped at ±``clip`` before it enters a sum, so one wild value
  adds at most ``clip`` − ``k``; drift needs persistence.

:class:`TrendCusumBank` keeps the state of many detectors in arrays and feeds a batch of (detector, value) pairs
in order in one compiled loop; :attr:`TrendCusumBank.directions` and :attr:`TrendCusumBank.deviations` give, for the
values of the last update, the direction (+1 rise, −1 fall) and the forecast error in standard units where an
alarm fired.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> values = np.r_[rng.normal(size=300), rng.normal(size=100) + 4.0]  # the level rises by 4 at 300
>>> bank = TrendCusumBank()
>>> alarms = bank.update(np.zeros(400, dtype=np.int64), values)
>>> [(int(i), int(bank.directions[i])) for i in np.flatnonzero(alarms)]
[(311, 1)]

References
----------
Page, E. S. (1954). Continuous inspection schemes. *Biometrika* 41(1/2), 100-115.

Holt, C. C. (1957, reprinted 2004). Forecasting seasonals and trends by exponentially weighted moving averages.
*International Journal of Forecasting* 20(1), 5-10.

Lu, C.-W. and Reynolds, M. R. (2001). CUSUM charts for monitoring an autocorrelated process. *Journal of Quality
Technology* 33(3), 316-334.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from kernels.profiling import timed
from kernels.state import Stateful, tensor_bytes

# Columns of the state.
(SEEN, LEVEL, SLOPE, PREVIOUS, MEAN_ABS_DIFF, ERROR_VAR, ERROR_COV, PREVIOUS_ERROR, RISE, FALL) = range(10)
COLUMNS = 10
FIRST_DIFFS = 30  # differences averaged before the noise level follows the exponential weights
NOISE_RATE = 0.01  # weight of a new absolute difference in the noise level
MAX_RHO = 0.95  # caps the long-run inflation at √39
GAUSSIAN_ABS_DIFF = math.sqrt(math.pi) / 2  # σ = E|x_t − x_{t−1}| · √π / 2 for independent Gaussian noise


@numba.njit(cache=True)
def _update(detectors, values, state, out, directions, deviations, alpha, beta, k, threshold, warmup, scale_rate,
            clip):  # pragma: no cover - compiled
    for row in range(values.shape[0]):
        s = state[detectors[row]]
        x = values[row]
        seen = s[SEEN]
        s[SEEN] = seen + 1.0
        if seen == 0.0:
            s[LEVEL], s[PREVIOUS] = x, x
            continue
        # The noise level, from consecutive differences (blind to slow cycles and to the trend).
        noise = s[MEAN_ABS_DIFF] * GAUSSIAN_ABS_DIFF
        change = abs(x - s[PREVIOUS])
        s[PREVIOUS] = x
        if seen <= FIRST_DIFFS:
            s[MEAN_ABS_DIFF] += (change - s[MEAN_ABS_DIFF]) / seen
        else:
            s[MEAN_ABS_DIFF] += NOISE_RATE * (min(change, 5.0 * s[MEAN_ABS_DIFF]) - s[MEAN_ABS_DIFF])
        forecast = s[LEVEL] + s[SLOPE]
        error = x - forecast
        spread = max(math.sqrt(s[ERROR_VAR]), noise)
        rho = min(max(s[ERROR_COV] / s[ERROR_VAR], 0.0), MAX_RHO) if s[ERROR_VAR] > 0.0 else 0.0
        scale = spread * math.sqrt((1.0 + rho) / (1.0 - rho))
        clipped = error
        if seen > warmup and scale > 0.0:
            z = error / scale
            z_clipped = min(max(z, -clip), clip)
            s[RISE] = max(0.0, s[RISE] + z_clipped - k)
            s[FALL] = max(0.0, s[FALL] - z_clipped - k)
            if s[RISE] > threshold or s[FALL] > threshold:
                out[row] = True
                directions[row] = 1 if s[RISE] > threshold else -1
                deviations[row] = z
                s[LEVEL], s[SLOPE] = x, 0.0  # the new regime, whose trend is not known yet, is the reference
                s[RISE], s[FALL], s[PREVIOUS_ERROR] = 0.0, 0.0, 0.0
                continue
            clipped = z_clipped * scale
        evidence = max(s[RISE], s[FALL]) / threshold
        if seen > 2 and evidence < 0.1:
            bounded = min(max(error, -4.0 * noise), 4.0 * noise) if noise > 0.0 else error
            s[ERROR_VAR] += scale_rate * (bounded * bounded - s[ERROR_VAR])
            s[ERROR_COV] += scale_rate * (bounded * s[PREVIOUS_ERROR] - s[ERROR_COV])
            s[PREVIOUS_ERROR] = bounded
        weight = max(0.0, 1.0 - evidence)
        level = forecast + weight * alpha * clipped
        s[SLOPE] += weight * beta * (level - s[LEVEL] - s[SLOPE])
        s[LEVEL] = level


FRESH = np.zeros(COLUMNS)


class TrendCusumBank(Stateful):
    """Trend-CUSUM drift detectors ``0 .. rows - 1``, grown on demand (module docstring).

    Parameters
    ----------
    alpha
        Weight of a new value in the level (about 1/alpha values of memory).
    beta
        Weight of a new level step in the slope.
    k
        Allowance, in standard units: forecast errors below it do not add to a CUSUM.
    threshold
        A CUSUM above it alarms.
    warmup
        Values a detector learns before it may alarm.
    scale_rate
        Weight of a new forecast error in the error variance and autocorrelation.
    clip
        Standard errors are clipped at ± this before they enter a CUSUM.
    """

    kernel_name = "trend_cusum"

    def __init__(self, alpha: float = 0.02, beta: float = 0.02, k: float = 1.0, threshold: float = 20.0,
                 warmup: int = 100, scale_rate: float = 0.005, clip: float = 3.0) -> None:
        for name, value in (("alpha", alpha), ("beta", beta), ("scale_rate", scale_rate)):
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], not {value!r}")
        if k < 0 or threshold <= 0 or clip <= k:
            raise ValueError("k must be at least 0, threshold above 0 and clip above k")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be an integer >= 0, not {warmup!r}")
        self.alpha, self.beta, self.k, self.threshold = float(alpha), float(beta), float(k), float(threshold)
        self.warmup, self.scale_rate, self.clip = warmup, float(scale_rate), float(clip)
        self.rows = 0
        self.state = np.zeros((0, COLUMNS))
        self.directions = np.zeros(0, dtype=np.int8)
        self.deviations = np.zeros(0)

    def update(self, detectors: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Feed ``values[i]`` to detector ``detectors[i]``, in order; True where that value raised an alarm."""
        alarms = np.zeros(len(values), dtype=np.bool_)
        self.directions = np.zeros(len(values), dtype=np.int8)
        self.deviations = np.full(len(values), np.nan)
        if not len(values):
            return alarms
        detectors = np.ascontiguousarray(detectors, dtype=np.int64)
        top = int(detectors.max()) + 1
        if top > len(self.state):
            grown = max(top, 2 * len(self.state), 16)
            self.state = np.concatenate([self.state, np.zeros((grown - len(self.state), COLUMNS))])
        self.rows = max(self.rows, top)
        with timed(self.kernel_name, "cpu"):
            _update(detectors, np.ascontiguousarray(values, dtype=np.float64), self.state, alarms, self.directions,
                    self.deviations, self.alpha, self.beta, self.k, self.threshold, float(self.warmup),
                    self.scale_rate, self.clip)
        return alarms

    def reset(self, detectors: np.ndarray) -> None:
        """Forget these detectors: their next value starts afresh."""
        self.state[detectors[detectors < len(self.state)]] = FRESH

    def snapshot(self) -> dict[str, np.ndarray]:
        return {"state": self.state[: self.rows].copy()}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self.state = np.array(state["state"], dtype=np.float64).reshape(-1, COLUMNS)
        self.rows = len(self.state)

    def state_bytes(self) -> int:
        return tensor_bytes((self.state,))
