"""Guardrails on an outlier operator's alerts: which way a deviation must go, how large it must be, what is impossible.

Calibrated alerting (:mod:`operators.alerting`) decides how *rare* an event is; it cannot know what matters to the
user of a metric. Guardrails add that knowledge, per operator (``[operators.params.guardrails]``):

* ``direction``: ``up`` alerts only where some field is above its expected value (a latency spike, not a dip),
  ``down`` only below it, ``both`` (the default) either way;
* ``min_deviation`` and ``min_relative_deviation``: an alert needs some field to differ from its expected value by
  at least this much, in the field's units and as a share of the expected value's magnitude (both, where both are
  set), so a rare but tiny wobble of a very quiet series does not page anyone;
* ``range``: ``[low, high]``, the values a field can validly take (one range for all the operator's numeric fields).
  A value outside it alerts at the top severity whatever the calibration says, even while the entity warms up.

A row that fails ``direction`` or the minimum deviations keeps its raw score but publishes p-value 1 and raises no
alert (rows never judged keep NaN). The expected value is the operator's own where it has one (its ``expected``
hook: zscore's running mean) or else a reference kept here per entity slot and field (metric_stream, knn, knn_rshash,
hst, apre_mss): a winsorised EWMA mean (:class:`kernels.ewma.RobustEwma`, alpha 0.02, clip 3, 30 values of warm-up),
read before each row updates it. A field whose expected value is unknown (warming up, missing) cannot
carry an alert past these two guardrails. Default parameters build nothing: no reference, no extra work.

>>> from operators.alerting import AlertingParams
>>> from operators.batch import Batch
>>> from operators.event import Event, SourcePosition
>>> from operators.zscore import ZScoreOperator, ZScoreParams
>>> def alerts(guardrails, values):
...     params = ZScoreParams(warmup=5, alerting=AlertingParams(warmup=50), guardrails=guardrails)
...     op = ZScoreOperator.from_config("outlier", ["cpu"], params)
...     events = [Event("host-1", i * 60_000, {"cpu": v}, SourcePosition(topic="m", partition=0, offset=i))
...               for i, v in enumerate(values)]
...     return [(a.source.offset, a.severity, a.reason) for a in op.process(Batch.from_events(events))]
>>> values = [10 + i % 2 + 0.1 * (i % 7) for i in range(300)]
>>> values[250], values[280] = 2.0, 25.0  # a dip about 9 below the mean, a spike about 14 above
>>> [row for row, _, _ in alerts(GuardrailParams(), values)]
[250, 280]
>>> [row for row, _, _ in alerts(GuardrailParams(direction="up"), values)]
[280]
>>> [row for row, _, _ in alerts(GuardrailParams(min_deviation=10.0), values)]
[280]
>>> alerts(GuardrailParams(range=[0.0, 100.0]), [50.0, 51.0, 140.0, 50.0])  # while warming up
[(2, 'critical', 'cpu=140 is outside its valid range [0, 100]')]
>>> Guardrails(GuardrailParams(range=[5.0, 1.0]), ["cpu"], own_reference=False)
Traceback (most recent call last):
...
operators.params.ParamError: guardrails.range: [5.0, 1.0] must be [low, high] with low < high
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal
from collections.abc import Sequence

import numpy as np

from kernels.ewma import RobustEwma
from kernels.state import Stateful
from operators.alerting import NO_ALERT
from operators.params import ParamError, param

DIRECTIONS = ("both", "up", "down")
# The own reference's EWMA: zscore's defaults, so its expected value is what a zscore operator would expect.
REFERENCE_ALPHA, REFERENCE_CLIP, REFERENCE_WARMUP = 0.02, 3.0, 30


@dataclass
class GuardrailParams:
    """Guardrails of an outlier operator's alerts (module docstring); the defaults change nothing."""

    direction: Literal["both", "up", "down"] = param(
        "both", "up: alert only where a field is above its expected value; down: only below; both: either way",
        choices=DIRECTIONS)
    min_deviation: float = param(0.0, "an alert needs some field at least this far from its expected value "
                                      "(in that direction); 0: no minimum", min=0.0, unit="the field's units")
    min_relative_deviation: float = param(0.0, "an alert needs some field at least this share of its expected value's "
                                               "magnitude away from it (0.1: 10 %); 0: no minimum", min=0.0,
                                          unit="share of |expected|")
    range: list[float] = param([], "[low, high]: the valid values of every numeric field of the operator; a value "
                                   "outside alerts at the top severity, even while warming up; []: no range")


def range_limits(params: GuardrailParams) -> tuple[float, float] | None:
    """``range`` as (low, high), None when empty; :class:`ParamError` unless it is two finite numbers, low < high."""
    bounds = params.range
    if not bounds:
        return None
    numbers = len(bounds) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
    if not (numbers and math.isfinite(bounds[0]) and math.isfinite(bounds[1]) and bounds[0] < bounds[1]):
        raise ParamError("guardrails.range", f"{bounds!r} must be [low, high] with low < high")
    return float(bounds[0]), float(bounds[1])


class Guardrails(Stateful):
    """The guardrails of one operator over its numeric ``fields``; ``own_reference``: keep the expected values here
    (the operator has no :meth:`~operators.base.ScoringOperator.expected` of its own)."""

    def __init__(self, params: GuardrailParams, fields: Sequence[str], *, own_reference: bool) -> None:
        self.params = params
        self.fields = tuple(fields)
        self.limits = range_limits(params)
        if not self.fields:
            raise ParamError("guardrails", "the operator reads no numeric fields to guard")
        self.checks_deviation = (params.direction != "both" or params.min_deviation > 0.0
                                 or params.min_relative_deviation > 0.0)
        self.reference = (RobustEwma(len(self.fields), alpha=REFERENCE_ALPHA, clip=REFERENCE_CLIP, warmup=REFERENCE_WARMUP)
                          if own_reference and self.checks_deviation else None)

    def reference_expected(self, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The own reference's mean per (row, field) before the row updates it (NaN until warm); then it learns from
        the finite values (an infinite one would be its mean for ever)."""
        expected = np.empty(values.shape)
        self.reference.score_and_learn(slots, np.where(np.isfinite(values), values, np.nan), expected)
        return expected

    def failing(self, values: np.ndarray, expected: np.ndarray) -> np.ndarray:
        """Rows where no field deviates from its expected value in ``direction`` by the minimum deviations."""
        p = self.params
        deviation = values - expected
        directed = {"up": deviation, "down": -deviation, "both": np.abs(deviation)}[p.direction]
        with np.errstate(invalid="ignore"):  # NaN (unknown) compares False: that field cannot carry the alert
            passes = (directed > 0.0) & (directed >= p.min_deviation)
            if p.min_relative_deviation > 0.0:
                passes &= directed >= p.min_relative_deviation * np.abs(expected)
        return ~passes.any(axis=1)

    def outside(self, values: np.ndarray) -> np.ndarray:
        """Per (row, field): the value is outside ``range`` (NaN is not); all False without a range."""
        if self.limits is None:
            return np.zeros(values.shape, dtype=bool)
        low, high = self.limits
        return (values < low) | (values > high)

    def apply(self, values: np.ndarray, expected: np.ndarray | None, p_values: np.ndarray,
              levels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The p-values and levels after the direction and minimum-deviation guardrails (``expected`` None: not
        checked), and the (row, field) mask of values outside ``range``. A row outside the range is not suppressed:
        it alerts anyway, and publishes the p-value calibration gave it."""
        outside = self.outside(values)
        if expected is not None:
            suppressed = self.failing(values, expected) & ~outside.any(axis=1)
            p_values, levels = p_values.copy(), levels.copy()
            p_values[suppressed & ~np.isnan(p_values)] = 1.0
            levels[suppressed] = NO_ALERT
        return p_values, levels, outside

    def range_reason(self, values: np.ndarray, outside: np.ndarray) -> tuple[str, list[str]]:
        """The reason and fields of one row's range alert, from its values and outside mask."""
        low, high = self.limits
        columns = np.flatnonzero(outside).tolist()
        reason = "; ".join(f"{self.fields[j]}={values[j]:g} is outside its valid range [{low:g}, {high:g}]"
                           for j in columns)
        return reason, [self.fields[j] for j in columns]

    def evict(self, slots: np.ndarray) -> None:
        if self.reference is not None:
            self.reference.evict(slots)

    def snapshot(self) -> dict[str, Any]:
        return {} if self.reference is None else {"reference": self.reference.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        if self.reference is not None and "reference" in state:  # absent: guardrails added since, the reference starts anew
            self.reference.restore(state["reference"])

    def state_bytes(self) -> int:
        return 0 if self.reference is None else self.reference.state_bytes()
