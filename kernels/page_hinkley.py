"""Page-Hinkley drift detectors for many streams at once: one compiled loop over a batch, river's alarms exactly.

The Page-Hinkley test (Page, 1954) accumulates the deviations of each value from the running mean, less (or plus)
a tolerance ``delta``, with forgetting factor ``alpha``, and alarms when the cumulative sum rises more than
``threshold`` above its minimum (an increase) or falls that far below its maximum (a decrease), once
``min_instances`` values were seen. As in river, the detector starts afresh with the value after an alarm.

:class:`PageHinkleyBank` keeps the state of many detectors in arrays; :meth:`PageHinkleyBank.update` feeds a
batch of (detector, value) pairs in order in one numba loop, with river's arithmetic (``river.drift.PageHinkley``,
river 0.26) operation for operation, so alarms fire at the same stream index (``tests/test_drift.py``).

>>> import numpy as np
>>> bank = PageHinkleyBank(threshold=5.0, min_instances=10)
>>> alarms = bank.update(np.zeros(120, dtype=np.int64), np.r_[np.zeros(100), np.full(20, 10.0)])
>>> np.flatnonzero(alarms).tolist()
[100]

References
----------
Page, E. S. (1954). Continuous inspection schemes. *Biometrika* 41(1/2), 100-115.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from kernels.profiling import timed
from kernels.state import Stateful, tensor_bytes

MODES = {"up": 0, "down": 1, "both": 2}
# Columns of the state: river's Mean (n, mean), the two cumulative sums and their extremes.
N, MEAN, SUM_UP, SUM_DOWN, MIN_UP, MAX_DOWN = range(6)
FRESH = np.array([0.0, 0.0, 0.0, 0.0, math.inf, -1.0])  # river's _reset


@numba.njit(cache=True)
def _update(detectors, values, state, fresh, alarmed, out, min_instances, delta, threshold, alpha,
            mode):  # pragma: no cover - compiled
    for row in range(values.shape[0]):
        d = detectors[row]
        if alarmed[d]:
            state[d, :] = fresh
            alarmed[d] = False
        x = values[row]
        n = state[d, 0] + 1.0
        mean = state[d, 1] + (1.0 / n) * (x - state[d, 1])
        deviation = x - mean
        sum_up = alpha * state[d, 2] + deviation - delta
        sum_down = alpha * state[d, 3] + deviation + delta
        min_up = sum_up if sum_up < state[d, 4] else state[d, 4]
        max_down = sum_down if sum_down > state[d, 5] else state[d, 5]
        state[d, 0], state[d, 1], state[d, 2], state[d, 3], state[d, 4], state[d, 5] = (
            n, mean, sum_up, sum_down, min_up, max_down)
        if n >= min_instances:
            up = sum_up - min_up > threshold
            down = max_down - sum_down > threshold
            out[row] = up if mode == 0 else (down if mode == 1 else (up or down))
            alarmed[d] = out[row]


class PageHinkleyBank(Stateful):
    """Page-Hinkley detectors ``0 .. rows - 1``, grown on demand. Parameters as river's ``drift.PageHinkley``:

    Parameters
    ----------
    min_instances
        Values before the test may alarm.
    delta
        Tolerated change of the mean.
    threshold
        Alarm when a cumulative sum moves this far from its extreme.
    alpha
        Forgetting factor of the cumulative sums.
    mode
        Which changes alarm: ``up``, ``down`` or ``both``.
    """

    kernel_name = "page_hinkley"

    def __init__(self, min_instances: int = 30, delta: float = 0.005, threshold: float = 50.0,
                 alpha: float = 1 - 0.0001, mode: str = "both") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if isinstance(min_instances, bool) or not isinstance(min_instances, int) or min_instances < 1:
            raise ValueError(f"min_instances must be an integer >= 1, not {min_instances!r}")
        self.min_instances, self.delta, self.threshold, self.alpha = min_instances, float(delta), float(threshold), float(alpha)
        self.mode = mode
        self.rows = 0
        self.state = np.tile(FRESH, (0, 1))
        self.alarmed = np.zeros(0, dtype=np.bool_)

    def ensure_detectors(self, detectors: int) -> None:
        if detectors > len(self.state):
            grown = max(detectors, 2 * len(self.state), 16)
            self.state = np.concatenate([self.state, np.tile(FRESH, (grown - len(self.state), 1))])
            self.alarmed = np.concatenate([self.alarmed, np.zeros(grown - len(self.alarmed), dtype=np.bool_)])

    def update(self, detectors: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Feed ``values[i]`` to detector ``detectors[i]``, in order; True where that value raised an alarm."""
        alarms = np.zeros(len(values), dtype=np.bool_)
        if not len(values):
            return alarms
        detectors = np.ascontiguousarray(detectors, dtype=np.int64)
        top = int(detectors.max()) + 1
        self.ensure_detectors(top)
        self.rows = max(self.rows, top)
        with timed(self.kernel_name, "cpu"):
            _update(detectors, np.ascontiguousarray(values, dtype=np.float64), self.state, FRESH, self.alarmed, alarms,
                    float(self.min_instances), self.delta, self.threshold, self.alpha, MODES[self.mode])
        return alarms

    def reset(self, detectors: np.ndarray) -> None:
        """Forget these detectors: their next value starts afresh."""
        detectors = detectors[detectors < len(self.state)]
        self.state[detectors] = FRESH
        self.alarmed[detectors] = False

    def snapshot(self) -> dict[str, np.ndarray]:
        return {"state": self.state[: self.rows].copy(), "alarmed": self.alarmed[: self.rows].copy()}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        self.rows = len(state["state"])
        self.state = np.array(state["state"], dtype=np.float64).reshape(self.rows, len(FRESH))
        self.alarmed = np.array(state["alarmed"], dtype=np.bool_)

    def state_bytes(self) -> int:
        return tensor_bytes((self.state, self.alarmed))
