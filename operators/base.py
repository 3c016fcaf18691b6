"""The operator boundary.

An operator is an online estimator that the pipeline runs inside one *shard*:

* it is built from its configuration: ``Operator.from_config(name, fields, params)``, where
  ``params`` is an instance of the operator's ``Params`` dataclass (the config loader validates the
  TOML table against it, so unknown keys and wrong types are reported before anything runs);
* ``process(batch)`` receives a :class:`Batch` of events of many entities (all routed to this shard),
  keeps per-entity state, and returns :class:`~operators.event.Alert` records. It may also publish a
  per-event value under its own name in ``batch.scores``, which later operators read as the field
  ``score:<name>``;
* ``snapshot()`` returns its state as plain data (numbers, strings, bytes, lists, dicts and numpy
  arrays: no pickled code) and ``restore(state)`` loads it into a freshly built operator.

Operators never import the streaming engine, so they are tested and benchmarked on plain lists.
"""
from __future__ import annotations

from typing import Any, ClassVar, Protocol, Sequence

import numpy as np

from operators.alerting import CalibratedAlerting
from operators.event import Alert, Event, alert_id, format_ts

SCORE_PREFIX = "score:"
P_VALUE_SUFFIX = ".p"  # score:<operator>.p is the calibrated p-value of score:<operator>


class Batch:
    """Events of one shard plus the per-event scores published by operators so far."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = list(events)
        self.scores: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.events)

    def column(self, name: str) -> np.ndarray:
        """A numeric column: an event field, or ``score:<operator>``. Missing or text values are NaN."""
        if name.startswith(SCORE_PREFIX):
            return self.scores[name[len(SCORE_PREFIX) :]]
        column = np.full(len(self.events), np.nan)
        for row, event in enumerate(self.events):
            value = event.fields.get(name)
            if value.__class__ is float or value.__class__ is int:
                column[row] = value
        return column

    def matrix(self, names: Sequence[str]) -> np.ndarray:
        return np.column_stack([self.column(name) for name in names]) if names else np.empty((len(self), 0))


class Operator(Protocol):
    """What the pipeline needs from an operator (see the module docstring)."""

    kind: ClassVar[str]
    name: str
    fields: tuple[str, ...]

    def process(self, batch: Batch) -> list[Alert]: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


class OperatorBase:
    """Shared plumbing for operators: construction from config and alert records."""

    kind: ClassVar[str]
    Params: ClassVar[type]

    def __init__(self, name: str, fields: Sequence[str], params: Any) -> None:
        self.name = name
        self.fields = tuple(fields)
        self.params = params

    @classmethod
    def from_config(cls, name: str, fields: Sequence[str], params: Any) -> "OperatorBase":
        return cls(name, fields, params)

    def alert(self, event: Event, *, score: float, severity: str, reason: str, fields: list[str],
              p_value: float | None = None) -> Alert:
        return Alert(
            id=alert_id(event.source, self.name),
            key=event.key,
            ts=format_ts(event.ts_ms),
            operator=self.name,
            kind=self.kind,
            score=score,
            severity=severity,
            reason=reason,
            fields=fields,
            source=event.source,
            p_value=p_value,
        )


class ScoringOperator(OperatorBase):
    """An outlier operator: one raw score per event, alerts by :mod:`operators.alerting`.

    It publishes the raw score as ``score:<name>`` and its calibrated p-value as ``score:<name>.p``.
    Subclasses implement :meth:`score` (score-then-learn over the batch, in order), :meth:`explain`,
    and the scorer's own :meth:`scorer_state` / :meth:`load_scorer_state` / :meth:`scorer_bytes`.
    Their ``Params`` dataclass has an ``alerting: AlertingParams`` field.
    """

    kind: ClassVar[str] = "outlier"

    def __init__(self, name: str, fields: Sequence[str], params: Any) -> None:
        super().__init__(name, fields, params)
        self.alerting = CalibratedAlerting(params.alerting)

    def score(self, batch: Batch) -> np.ndarray:
        """Raw scores (higher is more anomalous, NaN while warming up), learning from each event after scoring it."""
        raise NotImplementedError

    def explain(self, batch: Batch, row: int) -> tuple[str, list[str]]:
        """Why event ``row`` scored high: a reason sentence and the fields responsible."""
        raise NotImplementedError

    def scorer_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_scorer_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def scorer_bytes(self) -> int:
        """Memory held by the scorer's state (model, buffers), for ``vigil_operator_state_bytes``."""
        raise NotImplementedError

    def process(self, batch: Batch) -> list[Alert]:
        scores = self.score(batch)
        events = batch.events
        p_values, levels = self.alerting.judge([e.key for e in events], [e.ts_ms for e in events], scores)
        batch.scores[self.name] = scores
        batch.scores[f"{self.name}{P_VALUE_SUFFIX}"] = p_values
        alerts = []
        for row, level in enumerate(levels):
            if level is not None:
                reason, fields = self.explain(batch, row)
                alerts.append(self.alert(events[row], score=float(scores[row]), severity=level, reason=reason,
                                         fields=fields, p_value=float(p_values[row])))
        return alerts

    def state_bytes(self) -> int:
        return self.scorer_bytes() + self.alerting.state_bytes()

    def snapshot(self) -> dict[str, Any]:
        return {"scorer": self.scorer_state(), "alerting": self.alerting.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        self.load_scorer_state(state["scorer"])
        self.alerting.restore(state["alerting"])
