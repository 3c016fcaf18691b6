"""Per-entity anomaly scoring of univariate metric streams: predictions, anomaly likelihood, first crossing.

Each numeric field of each entity is its own stream, scored by :class:`kernels.metric_stream.MetricStreamDetector`:
the anomaly likelihood of the errors of three predictions (the previous value, the daily and the weekly profile of
event time), a new-range rule, the novelty of the recent shape, and a refractory period that lets a burst of surprise
cross any threshold once. The
event's score is the largest over its fields, in [0, 1], and 0 except where something newly surprising happened, so a
single threshold means the same thing on every stream (it is NAB's detector score, ``vigil evaluate nab``). Alerts
follow the calibrated false-alarm budget (:mod:`operators.alerting`) like every scoring operator's, judged on the
surprise before the refractory gate (a mostly-zero score would make any positive one look rare), and only where the
gate emitted a score: one alert per burst. The expected band is a field's best prediction (of the three, the one whose
errors have been smallest) plus and minus three standard deviations of its errors. Guardrails
(:mod:`operators.guardrails`) compare values with their own steady reference rather than with that prediction, which is
often the previous value and would follow a slow drift. Timescales are fixed counts of events or spans of event
time: nothing depends on the length or the range of a whole series.

>>> from operators.event import Event, SourcePosition
>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> values = np.r_[20 + rng.uniform(-1, 1, size=700), 45.0]
>>> events = [Event("host-1", i * 300_000, {"cpu": float(v)}, SourcePosition(topic="m", partition=0, offset=i))
...           for i, v in enumerate(values)]
>>> op = MetricStreamOperator.from_config("metric", ["cpu"], MetricStreamParams())
>>> [(a.source.offset, a.fields, a.reason) for a in op.process(Batch.from_events(events))]
[(700, ['cpu'], 'cpu=45 is beyond every earlier value of its stream; expected 20 [17.67, 22.32]')]

References
----------
Ahmad, S., Lavin, A., Purdy, S. and Agha, Z. (2017). Unsupervised real-time anomaly detection for streaming data.
*Neurocomputing* 262, 134-147.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kernels.metric_stream import NEW_PATTERN, NEW_RANGE, REASONS, MetricStreamDetector, MetricStreamSettings
from operators.alerting import AlertingParams
from operators.base import ScoringOperator
from operators.batch import Batch, row_max
from operators.guardrails import GuardrailParams
from operators.params import param

_DEFAULTS = MetricStreamSettings()


@dataclass
class MetricStreamParams:
    """Parameters of :class:`MetricStreamOperator`."""

    warmup: int = param(_DEFAULTS.warmup, "values per stream before it is scored", min=0, unit="events")
    day_buckets: int = param(_DEFAULTS.day_buckets, "time-of-day buckets of the daily profile (the weekly one has 7 times "
                             "as many); memory per stream is about 24 bytes times 8 times this", min=1, max=86_400)
    profile_alpha: float = param(_DEFAULTS.profile_alpha, "weight of a new value in its profile bucket", min=1e-9, max=1.0)
    min_seen: int = param(_DEFAULTS.min_seen, "values a profile bucket needs before it predicts", min=1, unit="events")
    error_alpha: float = param(_DEFAULTS.error_alpha, "weight of a new error in a prediction's running error size",
                               min=1e-9, max=1.0)
    average: int = param(_DEFAULTS.average, "errors averaged before the likelihood judges them", min=1, max=10_000,
                         unit="events")
    likelihood_alpha: float = param(_DEFAULTS.likelihood_alpha, "weight of a new average in the Gaussian it is judged by",
                                    min=1e-9, max=1.0)
    likelihood_warmup: int = param(_DEFAULTS.likelihood_warmup, "averages a prediction needs before it scores", min=0,
                                   unit="events")
    range_tolerance: float = param(_DEFAULTS.range_tolerance, "share of the range seen so far a value must exceed it by "
                                   "to score as a new range", min=0.0)
    block: int = param(_DEFAULTS.block, "values per block of the pattern memory", min=1, max=100_000, unit="events")
    levels: int = param(_DEFAULTS.levels, "levels a block's value is binned into (levels ** pattern bits per stream)",
                        min=2, max=64)
    pattern: int = param(_DEFAULTS.pattern, "blocks per pattern", min=1, max=12, unit="blocks")
    novelty_alpha: float = param(_DEFAULTS.novelty_alpha, "weight of a block in the running rate of new patterns",
                                 min=1e-9, max=1.0)
    novelty_saturation: float = param(_DEFAULTS.novelty_saturation, "a new pattern scores 1 when new patterns are "
                                      "rarer than 10 to the minus this", min=1e-9)
    novelty_warmup: int = param(_DEFAULTS.novelty_warmup, "blocks before new patterns score", min=0, unit="blocks")
    refractory: int = param(_DEFAULTS.refractory, "a score is emitted only above each of the stream's previous this many",
                            min=1, max=100_000, unit="events")
    alerting: AlertingParams = param(AlertingParams(), "the false-alarm budget and severity levels")
    guardrails: GuardrailParams = param(GuardrailParams(), "direction, minimum deviation and valid range of an alert")


class MetricStreamOperator(ScoringOperator):
    Params: ClassVar[type] = MetricStreamParams
    entity_state: ClassVar[bool] = True

    def __init__(self, name: str, fields: Sequence[str], params: MetricStreamParams) -> None:
        super().__init__(name, fields, params)
        settings = MetricStreamSettings(**{k: getattr(params, k) for k in MetricStreamSettings._fields})
        self.kernel = MetricStreamDetector(settings, n_fields=len(self.fields))
        self._per_field = np.empty((0, len(self.fields)))
        self._surprise = np.empty(0)
        self._reasons = np.empty((0, len(self.fields)), dtype=np.int8)
        self._expected = self._spread = np.empty((0, len(self.fields)))
        self._numeric = [self.fields.index(name) for name in self.numeric_inputs]

    @classmethod
    def contract_cases(cls) -> list[tuple[list[str], MetricStreamParams]]:
        return [(["x0", "x1"], MetricStreamParams(warmup=10, likelihood_warmup=10, day_buckets=4, refractory=5, block=2,
                                                  levels=3, pattern=3, novelty_warmup=5,
                                                  alerting=AlertingParams(window=50, warmup=10, tail=5)))]

    def score(self, batch: Batch) -> np.ndarray:
        values = batch.matrix(self.fields)
        self._expected, self._spread = np.empty(values.shape), np.empty(values.shape)
        self._per_field, self._reasons, surprise = self.kernel.score_and_learn(batch.slots, batch.ts_ms, values,
                                                                               self._expected, self._spread)
        self._surprise = row_max(surprise)
        return row_max(self._per_field)

    def level(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Per field, its best prediction (the one whose errors have been smallest) and the spread of its errors."""
        return self._expected[:, self._numeric], self._spread[:, self._numeric]

    def calibrated(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Alerting judges the surprise before the refractory gate, and alerts only where the gate emitted."""
        return self._surprise, scores > 0

    def explain(self, batch: Batch, row: int) -> tuple[str, list[str]]:
        field = int(np.nan_to_num(self._per_field[row], nan=-1.0).argmax())
        name, reason = self.fields[field], int(self._reasons[row, field])
        value = batch.column(name)[row]
        if reason == NEW_RANGE:
            return f"{name}={value:g} is beyond every earlier value of its stream", [name]
        if reason == NEW_PATTERN:
            return f"{name}={value:g} ends a shape its stream has not shown before", [name]
        return (f"{name}={value:g}: the errors of its {REASONS[reason]} prediction are unusually large "
                f"(score {self._per_field[row, field]:.3f})", [name])

    def evict(self, slots: np.ndarray) -> None:
        super().evict(slots)
        self.kernel.evict(slots)

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "detector": self.kernel.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.kernel.restore(state["detector"])

    def state_bytes(self) -> int:
        return super().state_bytes() + self.kernel.state_bytes()
