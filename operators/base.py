"""The operator contract: one abstract base class for every operator type.

An operator is built from a name, the fields it reads and its ``Params`` (a dataclass whose fields
are declared with :func:`operators.params.param`, so bounds, choices and units are data, checked by
:func:`operators.params.validate` here and by ``vigil config check``). It implements:

* ``process(batch) -> list[Alert]``: a :class:`~operators.batch.Batch` of one shard's events as
  columns, in stream order. State is per entity slot (``batch.slots``) or per shard; the operator may
  publish one value per row in ``batch.scores[name]``, which later operators read as ``score:<name>``;
* ``evict(slots)``: forget the state of these entity slots (the shard's entity index evicted their
  entities; a slot may be handed to a new entity right after);
* ``snapshot()``, ``restore(state)`` and ``state_bytes()``: the state vocabulary of
  :class:`kernels.state.Stateful`, shared with kernels and alerting;
* ``contract_cases()``: cheap fields and params on which the shared contract suite runs it;
* ``readings()`` and ``combine(sums)`` (optional): values for the engine's metrics, as :class:`Reading` records: counter
  totals and gauges of the shard, which the engine adds up over a process's shards, and gauges derived from those sums
  (a rate from summed counts).

:class:`ScoringOperator` is the outlier operators' base: a subclass scores, the base turns scores into
calibrated p-values and alerts (:mod:`operators.alerting`), then applies the operator's guardrails
(:mod:`operators.guardrails`).

Operators never import the streaming engine: they are tested and benchmarked on plain arrays.
"""
from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar, NamedTuple
from collections.abc import Sequence

import numpy as np

from kernels.device import select_device
from kernels.state import Stateful
from operators.alerting import CalibratedAlerting
from operators.batch import P_VALUE_SUFFIX, SCORE_PREFIX, Band, Batch
from operators.event import Alert, Expectation, alert_id, format_ts
from operators.guardrails import GuardrailParams, Guardrails
from operators.params import ParamError, validate


# The expected band is the expected value plus and minus this many standard deviations: Shewhart's control limits.
BAND_SIGMAS = 3.0


def expectations(batch: Batch, band: Band, row: int, fields: Sequence[str]) -> dict[str, Expectation] | None:
    """What ``band`` expected of ``fields`` on ``row`` (those it knew), for an alert's record."""
    found = {}
    for name in fields:
        if name in band.fields:
            j = band.fields.index(name)
            if np.isfinite(band.expected[row, j]):
                found[name] = Expectation(float(batch.column(name)[row]), float(band.expected[row, j]),
                                          float(band.lower[row, j]), float(band.upper[row, j]))
    return found or None


class Reading(NamedTuple):
    """One value an operator reports for the engine's metrics (families declared in ``pipeline.engine.metrics``)."""

    metric: str  # the family, e.g. vigil_fairness_labels_total
    labels: tuple[str, ...]  # label values after the operator's name: bounded (outcomes, configured groups)
    value: float  # a counter's total so far, or a gauge's value


class Operator(Stateful):
    """The contract every operator type implements (module docstring)."""

    kind: ClassVar[str]
    Params: ClassVar[type]
    publishes: ClassVar[tuple[str, ...]] = ()  # the columns it publishes: score:<name><suffix> for each suffix
    durable: ClassVar[bool] = False  # True: part of its state outlives an evicted entity on purpose (a privacy ledger)
    # True: all its state lives in entity slots, so after a failed batch resetting that batch's entities leaves it
    # consistent; otherwise (models shared by a shard's entities) the chain rebuilds the operator afresh.
    entity_state: ClassVar[bool] = False
    findings: ClassVar[bool] = True  # its alerts are findings that open incidents (False: releases, decisions)

    def __init__(self, name: str, fields: Sequence[str], params: Any) -> None:
        validate(params)
        if hasattr(params, "device"):
            try:
                select_device(params.device)
            except ValueError as error:  # e.g. cuda asked for on a machine without it: found by vigil config check
                raise ParamError("device", str(error)) from None
        self.name = name
        self.fields = tuple(fields)
        self.params = params

    @classmethod
    def from_config(cls, name: str, fields: Sequence[str], params: Any) -> Operator:
        return cls(name, fields, params)

    @classmethod
    @abstractmethod
    def contract_cases(cls) -> list[tuple[list[str], Any]]:
        """Fields and cheap ``Params`` for the contract suite, one pair per variant worth checking. The
        suite's stream has numeric fields ``x0``, ``x1``, ``x2``, text fields ``c0``, ``c1``, ``c2`` and
        groups, over many entities."""

    @property
    def numeric_inputs(self) -> tuple[str, ...]:
        """Event fields this operator reads as numbers (``score:`` inputs come from earlier operators)."""
        return tuple(name for name in self.fields if not name.startswith(SCORE_PREFIX))

    @property
    def text_inputs(self) -> tuple[str, ...]:
        """Event fields this operator reads as text."""
        return ()

    def readings(self) -> list[Reading]:
        """This shard's counter totals and additive gauges (none by default)."""
        return []

    def combine(self, sums: dict[tuple[str, tuple[str, ...]], float]) -> list[Reading]:
        """Gauges derived from :meth:`readings` summed over shards, keyed by (metric, labels) (none by default)."""
        return []

    @abstractmethod
    def process(self, batch: Batch) -> list[Alert]:
        """Alerts for the batch's rows; per-entity state follows ``batch.slots``."""

    @abstractmethod
    def evict(self, slots: np.ndarray) -> None:
        """Forget the state of these entity slots."""

    def severity_ranks(self) -> dict[str, float]:
        """Each severity this operator's alerts may carry, with its rarity (larger is worse); incidents keep the
        worst. None by default (every severity ranks alike)."""
        return {}

    def alert(self, batch: Batch, row: int, *, score: float, severity: str, reason: str, fields: list[str],
              p_value: float | None = None, expected: dict[str, Expectation] | None = None) -> Alert:
        source = batch.source(row)
        return Alert(
            id=alert_id(source, self.name),
            key=batch.keys[row],
            ts=format_ts(int(batch.ts_ms[row])),
            operator=self.name,
            kind=self.kind,
            score=score,
            severity=severity,
            reason=reason,
            fields=fields,
            source=source,
            p_value=p_value,
            expected=expected,
        )


class ScoringOperator(Operator):
    """An outlier operator: one raw score per event, alerts by :mod:`operators.alerting`.

    It publishes the raw score as ``score:<name>`` and its calibrated p-value as ``score:<name>.p`` and, when the
    operator models a level (:meth:`level`), its expected band in ``batch.bands[<name>]``: the expected value plus and
    minus :data:`BAND_SIGMAS` standard deviations, which each alert also states for the fields it names.
    Subclasses implement :meth:`score` and :meth:`explain`, and extend :meth:`snapshot`,
    :meth:`restore`, :meth:`state_bytes` and :meth:`evict` (calling ``super()``, which covers the
    calibration and the guardrails) with their scorer's state. Their ``Params`` has an ``alerting: AlertingParams``
    field and a ``guardrails: GuardrailParams`` field; default guardrails build nothing (``self.guardrails`` is None).
    """

    kind: ClassVar[str] = "outlier"
    publishes: ClassVar[tuple[str, ...]] = ("", P_VALUE_SUFFIX)

    def __init__(self, name: str, fields: Sequence[str], params: Any) -> None:
        super().__init__(name, fields, params)
        self.alerting = CalibratedAlerting(params.alerting)
        guardrails = getattr(params, "guardrails", GuardrailParams())
        own_reference = type(self).expected is ScoringOperator.expected
        self.guardrails = (None if guardrails == GuardrailParams()
                           else Guardrails(guardrails, self.numeric_inputs, own_reference=own_reference))

    @abstractmethod
    def score(self, batch: Batch) -> np.ndarray:
        """Raw scores (higher is more anomalous, NaN while warming up), learning from each event after scoring it."""

    @abstractmethod
    def explain(self, batch: Batch, row: int) -> tuple[str, list[str]]:
        """Why row ``row`` scored high: a reason sentence and the fields responsible."""

    def severity_ranks(self) -> dict[str, float]:
        return dict(zip(self.alerting.level_names, self.alerting.level_rarities))

    def expected(self, batch: Batch) -> np.ndarray | None:
        """The value each of :attr:`numeric_inputs` was expected to take, per (row, field), as the last :meth:`score`
        saw it before learning from the row (NaN where unknown), for the guardrails. An operator whose level model
        suits them overrides it; by default (None) the guardrails keep their own reference
        (:class:`operators.guardrails.Guardrails`)."""
        return None

    def level(self, batch: Batch) -> tuple[np.ndarray, np.ndarray] | None:
        """Per (row, field of :attr:`numeric_inputs`): the value the last :meth:`score` expected, and the standard
        deviation it expected around it, before learning from the row (NaN where unknown); None for an operator without
        a level model (no band)."""
        return None

    def _band(self, batch: Batch) -> Band | None:
        level = self.level(batch)
        if level is None:
            return None
        expected, spread = level
        return Band(self.numeric_inputs, expected, expected - BAND_SIGMAS * spread, expected + BAND_SIGMAS * spread)

    def calibrated(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What alerting judges, and where an alert may be raised: by default the raw scores, everywhere."""
        return scores, np.ones(len(scores), dtype=bool)

    def judge(self, batch: Batch, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: the calibrated p-value, the alert level (``alerting.NO_ALERT`` for none) and where an alert may be
        raised; by default the alerting judges :meth:`calibrated`'s values."""
        judged, may_alert = self.calibrated(scores)
        p_values, levels = self.alerting.judge(batch.slots, batch.ts_ms, judged)
        return p_values, levels, may_alert

    def process(self, batch: Batch) -> list[Alert]:
        scores = self.score(batch)
        p_values, levels, may_alert = self.judge(batch, scores)
        outside = None  # per (row, numeric input): outside the guardrails' valid range
        if self.guardrails is not None:
            p_values, levels, outside = self._guard(batch, p_values, levels)
        batch.scores[self.name] = scores
        batch.scores[f"{self.name}{P_VALUE_SUFFIX}"] = p_values
        band = self._band(batch)
        if band is not None:
            batch.bands[self.name] = band
        alerting = (levels >= 0) & may_alert
        if outside is not None:
            alerting |= outside.any(axis=1)
        alerts = []
        for row in np.flatnonzero(alerting).tolist():
            if outside is not None and outside[row].any():
                alerts.append(self._range_alert(batch, row, outside[row], scores, p_values))
                continue
            reason, fields = self.explain(batch, row)
            expected = None
            if band is not None:
                reason = "; ".join(filter(None, [reason, band.describe(row, fields)]))
                expected = expectations(batch, band, row, fields)
            alerts.append(self.alert(batch, row, score=float(scores[row]), severity=self.alerting.level_names[levels[row]],
                                     reason=reason, fields=fields, p_value=float(p_values[row]), expected=expected))
        return alerts

    def _guard(self, batch: Batch, p_values: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply the guardrails to the batch's judgement (:meth:`operators.guardrails.Guardrails.apply`)."""
        values = batch.matrix(self.numeric_inputs)
        expected = None  # what direction and the minimum deviations compare with; None when they are off
        if self.guardrails.checks_deviation:
            own = self.guardrails.reference is not None
            expected = self.guardrails.reference_expected(batch.slots, values) if own else self.expected(batch)
        return self.guardrails.apply(values, expected, p_values, levels)

    def _range_alert(self, batch: Batch, row: int, outside: np.ndarray, scores: np.ndarray, p_values: np.ndarray) -> Alert:
        """A value outside the valid range alerts at the top severity, whatever calibration says. Where the operator
        has not scored the row yet (warming up) the score is 0, and the p-value None where calibration has not judged
        it (a NaN would make the record unequal to itself, and JSON has no NaN)."""
        values = np.array([batch.column(name)[row] for name in self.numeric_inputs])
        reason, fields = self.guardrails.range_reason(values, outside)
        score, p_value = float(scores[row]), float(p_values[row])
        return self.alert(batch, row, score=0.0 if math.isnan(score) else score, severity=self.alerting.level_names[-1],
                          reason=reason, fields=fields, p_value=None if math.isnan(p_value) else p_value)

    def evict(self, slots: np.ndarray) -> None:
        self.alerting.evict(slots)
        if self.guardrails is not None:
            self.guardrails.evict(slots)

    def snapshot(self) -> dict[str, Any]:
        guardrails = self.guardrails.snapshot() if self.guardrails is not None else {}
        return {"alerting": self.alerting.snapshot(), **({"guardrails": guardrails} if guardrails else {})}

    def restore(self, state: dict[str, Any]) -> None:
        self.alerting.restore(state["alerting"])
        if self.guardrails is not None:
            self.guardrails.restore(state.get("guardrails", {}))

    def state_bytes(self) -> int:
        return self.alerting.state_bytes() + (self.guardrails.state_bytes() if self.guardrails is not None else 0)
