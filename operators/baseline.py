"""The default outlier operator for numeric metric streams: a long-memory reference per entity across its fields and,
for narrow events, each field's own metric-stream detector, fused by their p-values.

Each part turns what it sees into a surprise, −log₁₀ of a p-value, and the event's score is the larger (Tippett's
min-p combination), so one scale serves short spikes, sustained shifts, pattern changes and long incidents:

* **long** (:class:`kernels.baseline.LongMemoryReference`, ``horizon``): the Mahalanobis distance of the event from
  the entity's long-run mean and covariance (30 days at 5 minutes), so an incident that lasts hours stays anomalous
  rather than becoming the reference (a fast z-score absorbs it in about 50 events), one extreme event moves it by a
  bounded amount (Huber weights), and a change that lasts ``rebaseline_seconds`` becomes the new level. It sees a
  field far from its usual range and fields that break their usual relationship (cpu high while requests are low),
  which no per-field score can;
* **patterns** (:class:`kernels.metric_stream.MetricStreamDetector`), on events with at most ``per_field_max_fields``
  fields: each field's anomaly likelihood of its naive, daily and weekly predictions, a new range and a never-seen
  shape. It costs about ten times the long part per field, and on wide events the long reference already carries
  what the fields share;
* **fast** (:class:`kernels.ewma.RobustEwma`), on events of two to ``per_field_max_fields`` fields: each field's
  winsorised EWMA z-score against its recent level, as :mod:`operators.zscore` (the largest over fields, two-sided
  normal tail, Bonferroni over the fields). Short spikes against a level that moves (a daily cycle) are its job: the
  long reference counts the cycle as spread, and the pattern part averages a single spike away (demo, seed 7: recall
  on spikes 0.38 without it). It gates alerts only: in the score it lowered VUS-PR on ASD from 0.365 to 0.246, and on
  ASD's 19 fields its gate flooded the detections (NAB score of ASD's label runs 0 at every threshold, 35.5 without).

The score (``score:<name>``) stays high while an incident lasts: it is for ranking and plotting. Alerts are gated
instead. Each part's surprise passes its own first-crossing gate, min(1, surprise / 10), emitted only where it exceeds
each of the entity's previous ``refractory`` (fast part: ``fast_refractory``) surprises of that part, else 0;
``score:<name>.alert`` is the largest gated value. On one field the long gate stands in only while the pattern part
warms up (its first 150 values): after that the pattern part's naive, profile and new-range rules judge the level, and
a long-run z-score on skewed metrics only adds false alarms (NAB development files, best threshold: 67.0 with the
pattern gate alone, 33.7 with the long one too). An alert needs a gated score to reach its part's threshold
(``alert_threshold`` for the long and pattern parts, ``fast_alert_threshold`` for the fast one) and the calibrated
false-alarm budget (:mod:`operators.alerting`) to find the event rare. What the budget calibrates is what the gates
judge: the long and pattern surprises (as gated), and the fast part apart, so a spike is judged among spikes and not
among a long incident's scores (on half the budget each, spike recall on the demo fell from 0.86 to 0.79).
Calibrating the fused score instead let the long part's frequent high values on one skewed field hide real pattern
alerts (NAB development files, alerts at the budget: 46.4 then, 55.8 with the same thresholds calibrating the gated
surprises). The gates and the thresholds keep the alert rate well below the budget on normal data, and quiet
entities raise none. Alerts name the fields that drive them: the
long reference's standardised conditional residuals (the fields that break the learned relationship).

Constants chosen on the development data (``vigil evaluate cross-dataset``, ``bench/results/cross-dataset.md``):
``horizon`` 8,640 events and ``shrinkage`` 0.01 on ASD (the train parts of its servers; 2,000 and 30,000 events, and
0.1, scored lower); ``influence`` 8 by the mean VUS-PR over ASD, NAB and the demo (2: 1.207, 4: 1.212, 8: 1.223,
unbounded: 1.222; smaller bounds under-learn heavy-tailed normal variation); ``fast_alpha`` 0.05 (0.02: spike recall
0.79, 0.1: outlier precision 0.83), ``fast_refractory`` 10 and ``fast_alert_threshold`` 0.5 on the demo (seed 7,
200,000 events), never on NAB; ``alert_threshold`` 0.7 on the demo too, the least strict value of its precision
plateau (long and pattern thresholds 0.5, 0.7, 0.8, 0.9, 1.0 with the fast one at 0.5: outlier precision 0.897,
0.931, 0.932, 0.932, 0.934 at the same recall on spikes and level shifts, 0.889), the least strict so that milder
incidents elsewhere still pass; the pattern part keeps :mod:`operators.metric_stream`'s defaults (chosen on NAB's development
files).

>>> from operators.event import Event, SourcePosition
>>> rng = np.random.default_rng(3)
>>> load = 50 + 10 * rng.normal(size=1500)
>>> rows = np.c_[load, 2 * load + rng.normal(size=1500)]
>>> rows[1400] = [60.0, 60.0]  # cpu ordinary, requests ordinary, together unheard of
>>> events = [Event("host-1", i * 60_000, {"cpu": float(r[0]), "requests": float(r[1])}, SourcePosition(topic="m", partition=0,
...           offset=i)) for i, r in enumerate(rows)]
>>> op = BaselineOperator.from_config("baseline", ["cpu", "requests"], BaselineParams())
>>> [(a.source.offset, a.fields) for a in op.process(Batch.from_events(events))]
[(1400, ['requests', 'cpu'])]

References
----------
Tippett, L. H. C. (1931). *The Methods of Statistics*. Williams and Norgate (combining tests by their least p-value).

Huber, P. J. (1964). Robust estimation of a location parameter. *Annals of Mathematical Statistics* 35(1), 73-101.

Ahmad, S., Lavin, A., Purdy, S. and Agha, Z. (2017). Unsupervised real-time anomaly detection for streaming data.
*Neurocomputing* 262, 134-147.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kernels.baseline import FirstCrossing, LongMemoryReference, neglog10_two_sided
from kernels.ewma import RobustEwma
from kernels.metric_stream import MetricStreamDetector, MetricStreamSettings
from operators.alerting import NO_ALERT, AlertingParams, CalibratedAlerting
from operators.base import ScoringOperator
from operators.guardrails import GuardrailParams
from operators.batch import ALERT_SUFFIX, P_VALUE_SUFFIX, Batch, row_max
from operators.params import ParamError, param

LONG, PATTERNS, FAST = 0, 1, 2
PATTERN_SCALE = 10.0  # metric_stream's scores are −log₁₀ p / 10 (saturated at p = 1e-10): back to −log₁₀ p
GATES = ("gate_long", "gate_patterns", "gate_fast")  # the state names of the parts' gates, by part
GATE_SATURATION = 10.0  # the gated score reaches 1 at p = 1e-10, as metric_stream's does


@dataclass
class BaselineParams:
    """Parameters of :class:`BaselineOperator`."""

    warmup: int = param(30, "events before the long reference scores (at least twice the fields), and values per "
                        "field before the fast one does", min=0, unit="events")
    fast_alpha: float = param(0.05, "EWMA weight of the fast reference (time constant 1/fast_alpha events)",
                              min=1e-9, max=1.0)
    clip: float = param(3.0, "the fast reference winsorises residuals at this many standard deviations", min=0.0,
                        unit="standard deviations")
    horizon: float = param(8640.0, "events the long reference remembers (weight 1/horizon; 30 days at 5 minutes)",
                           min=2.0, unit="events")
    influence: float = param(8.0, "an event moves the long reference with weight min(1, influence * sqrt(d / m)), "
                             "m its squared Mahalanobis distance, d the fields", min=1e-3)
    shrinkage: float = param(0.01, "the long reference's covariance is shrunk by this share towards its diagonal",
                             min=0.0, max=1.0)
    recent_alpha: float = param(0.02, "weight of a new event in the recent mean a re-baseline moves the reference to",
                                min=1e-9, max=1.0)
    rebaseline_seconds: float = param(86_400.0, "a deviation from the long reference that lasts this long (event "
                                      "time) becomes the entity's new level", min=0.0, unit="seconds")
    per_field_max_fields: int = param(8, "the per-field parts (patterns, fast) run when the operator reads at most this "
                                      "many fields (0: never)", min=0, max=1000)
    refractory: int = param(120, "the gated score is emitted only above each of the entity's previous this many scores",
                            min=1, max=100_000, unit="events")
    fast_refractory: int = param(10, "the fast part's gate: its surprise is emitted only above each of its previous this "
                                 "many", min=1, max=100_000, unit="events")
    alert_threshold: float = param(0.7, "an alert of the long or pattern part needs its gated score (surprise / 10, in "
                                   "[0, 1]) at least this", min=0.0, max=1.0)
    fast_alert_threshold: float = param(0.5, "an alert of the fast part needs its gated score at least this", min=0.0,
                                        max=1.0)
    min_std: float = param(1e-6, "floor on standard deviations, so constant fields do not score infinity", min=0.0)
    alerting: AlertingParams = param(AlertingParams(), "the false-alarm budget and severity levels")
    guardrails: GuardrailParams = param(GuardrailParams(), "direction, minimum deviation and valid range of an alert "
                                        "(deviations from the long reference's mean)")


class BaselineOperator(ScoringOperator):
    Params: ClassVar[type] = BaselineParams
    entity_state: ClassVar[bool] = True
    publishes: ClassVar[tuple[str, ...]] = ("", P_VALUE_SUFFIX, ALERT_SUFFIX)

    def __init__(self, name: str, fields: Sequence[str], params: BaselineParams) -> None:
        super().__init__(name, fields, params)
        d = len(self.fields)
        if d == 0:
            raise ParamError("fields", "needs at least one numeric input field")
        self.long = LongMemoryReference(d, horizon=params.horizon, influence=params.influence,
                                        shrinkage=params.shrinkage, min_std=params.min_std,
                                        warmup=max(params.warmup, 2 * d), recent_alpha=params.recent_alpha,
                                        rebaseline_ms=1000.0 * params.rebaseline_seconds)
        self.patterns = (MetricStreamDetector(MetricStreamSettings(refractory=params.refractory), n_fields=d)
                         if d <= params.per_field_max_fields else None)
        self.fast = (RobustEwma(d, alpha=params.fast_alpha, clip=params.clip, warmup=params.warmup,
                                min_std=params.min_std) if d >= 2 and self.patterns is not None else None)
        gated_parts = [LONG, PATTERNS] if self.patterns else [LONG]
        # On one field the long gate stands in only while the pattern detector cannot judge yet (its warm-up).
        self._long_stands_in = d == 1 and self.patterns is not None
        if self.fast is not None:
            gated_parts.append(FAST)
        self.fast_alerting = CalibratedAlerting(params.alerting) if self.fast is not None else None
        self.gates = {GATES[part]: FirstCrossing(params.fast_refractory if part == FAST else params.refractory,
                                                 GATE_SATURATION) for part in gated_parts}
        self._residual = self._pattern = self._z = np.empty((0, d))
        self._expected = self._spread = np.empty((0, d))
        self._numeric = [self.fields.index(name) for name in self.numeric_inputs]
        self._parts = self._gated = np.empty((0, len(GATES)))
        self._judged = np.empty(0)

    @classmethod
    def contract_cases(cls) -> list[tuple[list[str], BaselineParams]]:
        alerting = AlertingParams(window=50, warmup=10, tail=5)
        return [(["x0", "x1"], BaselineParams(warmup=5, refractory=5, alert_threshold=0.0, alerting=alerting)),
                (["x0", "x1", "x2"], BaselineParams(warmup=5, per_field_max_fields=0, horizon=50.0, alerting=alerting)),
                (["x0", "x1"], BaselineParams(warmup=5, refractory=5, alerting=alerting, guardrails=GuardrailParams(
                    direction="up", min_deviation=0.5, range=[-10.0, 10.0])))]

    def score(self, batch: Batch) -> np.ndarray:
        values = batch.matrix(self.fields)
        self._expected, self._spread = np.empty(values.shape), np.empty(values.shape)
        long_surprise, self._residual = self.long.score_and_learn(batch.slots, batch.ts_ms, values, self._expected,
                                                                  self._spread)
        pattern_surprise = np.full(len(batch), np.nan)
        if self.patterns is not None:
            _, _, surprise = self.patterns.score_and_learn(batch.slots, batch.ts_ms, values)
            self._pattern = PATTERN_SCALE * surprise
            pattern_surprise = row_max(self._pattern)
        fast_surprise = np.full(len(batch), np.nan)
        if self.fast is not None:
            self._z = self.fast.score_and_learn(batch.slots, values)
            fast_surprise = neglog10_two_sided(row_max(self._z), len(self.fields))
        self._parts = np.column_stack([long_surprise, pattern_surprise, fast_surprise])
        self._gated = np.zeros(self._parts.shape)
        gated = self._parts.copy()
        if self._long_stands_in:
            gated[~np.isnan(pattern_surprise), LONG] = np.nan
        self._judged = row_max(gated[:, :FAST])
        for part, name in enumerate(GATES):
            if name in self.gates:
                self._gated[:, part] = self.gates[name].gate(batch.slots, gated[:, part])
        return row_max(self._parts[:, :FAST])

    def expected(self, batch: Batch) -> np.ndarray:
        """The long reference's mean each row was scored against (before it learned the row), NaN while warming up."""
        return self._expected[:, self._numeric]

    def level(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """The long reference's mean and each field's standard deviation each row was scored against."""
        return self._expected[:, self._numeric], self._spread[:, self._numeric]

    def judge(self, batch: Batch, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The gated parts' surprises and the fast part are calibrated apart (a spike must be rare among spikes, not
        among a long incident's scores); each alerts where its gates emitted at least its threshold. What is
        calibrated is what the gates judge, not the fused score: on one field the score also holds the long part's
        surprise, whose many high values on skewed metrics would make a real pattern alert look ordinary."""
        p_values, levels = self.alerting.judge(batch.slots, batch.ts_ms, self._judged)
        levels = np.where(self._may_alert([LONG, PATTERNS], self.params.alert_threshold), levels, NO_ALERT)
        if self.fast is not None:
            fast_p, fast_levels = self.fast_alerting.judge(batch.slots, batch.ts_ms, self._parts[:, FAST])
            p_values = np.fmin(p_values, fast_p)
            levels = np.maximum(levels, np.where(self._may_alert([FAST], self.params.fast_alert_threshold),
                                                 fast_levels, NO_ALERT))
        return p_values, levels, levels != NO_ALERT

    def _may_alert(self, parts: list[int], threshold: float) -> np.ndarray:
        gated = self._gated[:, parts].max(axis=1)
        return (gated > 0) & (gated >= threshold)

    def process(self, batch: Batch) -> list:
        alerts = super().process(batch)
        batch.scores[f"{self.name}{ALERT_SUFFIX}"] = self._gated.max(axis=1)
        return alerts

    def field_contributions(self, batch: Batch) -> np.ndarray:
        """Per row of the last batch and field: how much the field drives the score, the long reference's
        standardised conditional residual |(Pq)ᵢ| / √Pᵢᵢ (kernels.baseline)."""
        return self._residual

    def explain(self, batch: Batch, row: int) -> tuple[str, list[str]]:
        part = int(self._gated[row].argmax())
        surprise = float(self._parts[row, part])
        if part == PATTERNS:
            name = self.fields[int(np.nanargmax(self._pattern[row]))]
            return (f"{name}={batch.column(name)[row]:g} is unlike its stream's history (p = 1e-{surprise:.1f})",
                    [name])
        if part == FAST:
            field = int(np.nanargmax(self._z[row]))
            name = self.fields[field]
            return (f"{name}={batch.column(name)[row]:g} is {self._z[row, field]:.1f} standard deviations from its "
                    f"recent level"), [name]
        contributions = np.nan_to_num(self._residual[row], nan=0.0)
        order = np.argsort(-contributions, kind="stable")
        names = [self.fields[i] for i in order[:3] if contributions[i] >= 0.5 * contributions[order[0]]]
        shown = ", ".join(f"{name}={batch.column(name)[row]:g}" for name in names)
        return f"{shown}: far from the entity's long-run level and relationships (p = 1e-{surprise:.1f})", names

    def evict(self, slots: np.ndarray) -> None:
        super().evict(slots)
        for kernel in self._kernels().values():
            kernel.evict(slots)

    def _kernels(self) -> dict[str, Any]:
        kernels = {"long": self.long, **self.gates}
        if self.patterns is not None:
            kernels["patterns"] = self.patterns
        if self.fast is not None:
            kernels.update(fast=self.fast, fast_alerting=self.fast_alerting)
        return kernels

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), **{name: kernel.snapshot() for name, kernel in self._kernels().items()}}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        for name, kernel in self._kernels().items():
            kernel.restore(state[name])

    def state_bytes(self) -> int:
        return super().state_bytes() + sum(kernel.state_bytes() for kernel in self._kernels().values())

