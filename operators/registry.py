"""Operator types by configuration name, and the chain that runs them inside one shard.

>>> from operators.drift import DriftParams
>>> from operators.event import Event, SourcePosition
>>> from operators.zscore import ZScoreParams
>>> chain = OperatorChain.build([
...     OperatorSpec("zscore", "outlier", ("cpu",), ZScoreParams(warmup=3)),
...     OperatorSpec("drift", "drift", ("score:outlier",), DriftParams()),
... ], max_entities=100)
>>> events = [Event("a", i, {"cpu": 1.0 + i % 2}, SourcePosition(file="f", line=i)) for i in range(6)]
>>> chain.process(events)
[]
>>> sorted(chain.snapshot()["operators"]), len(chain.entities)
(['drift', 'outlier'], 1)
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kernels.state import Stateful
from operators.base import Operator
from operators.batch import Band, Batch
from operators.entities import EntityIndex
from operators.event import Alert, Event


class _OperatorTypes(Mapping[str, type[Operator]]):
    """Configuration name to operator class. A class's module is imported when its name is first looked up, so
    a pipeline that uses no torch-based operator does not pay torch's import (about a second of start-up)."""

    _PATHS = {
        "baseline": "operators.baseline:BaselineOperator",
        "zscore": "operators.zscore:ZScoreOperator",
        "hst": "operators.hst:HalfSpaceTreesOperator",
        "metric_stream": "operators.metric_stream:MetricStreamOperator",
        "knn": "operators.knn:KnnOperator",
        "knn_rshash": "operators.knn_ensemble:KnnEnsembleOperator",
        "apre_mss": "operators.apre_mss:ApreMssOperator",
        "ape": "operators.ape:ApeOperator",
        "drift": "operators.drift:DriftOperator",
        "cnn": "operators.cnn:CnnOperator",
        "fair_decision": "operators.fair_decision:FairDecisionOperator",
        "fairness_monitor": "operators.fairness_monitor:FairnessMonitorOperator",
        "dp_count": "operators.dp_count:DpCountOperator",
    }

    def __getitem__(self, name: str) -> type[Operator]:
        module, _, attribute = self._PATHS[name].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(self._PATHS)

    def __len__(self) -> int:
        return len(self._PATHS)


OPERATOR_TYPES: Mapping[str, type[Operator]] = _OperatorTypes()


@dataclass(frozen=True)
class OperatorSpec:
    """A validated operator configuration: its type name, instance name, input fields and params."""

    type: str
    name: str
    fields: tuple[str, ...]
    params: Any


def build_operator(spec: OperatorSpec) -> Operator:
    return OPERATOR_TYPES[spec.type].from_config(spec.name, spec.fields, spec.params)


class OperatorFailure(Exception):
    """An operator raised inside :meth:`OperatorChain.run`. ``alerts`` are those the chain made before it (earlier
    segments, earlier operators of the failing segment); rows from ``first_row`` on were not finished."""

    def __init__(self, operator: str, error: Exception, alerts: list[Alert], first_row: int) -> None:
        super().__init__(f"operator {operator!r} raised {type(error).__name__}: {error}")
        self.operator, self.error, self.alerts, self.first_row = operator, error, alerts, first_row


class OperatorFailuresExceeded(RuntimeError):
    """A shard's operators failed on too many consecutive batches: the run stops rather than dead-letter everything."""


class OperatorChain(Stateful):
    """The operators of one shard and its entity index, run in configuration order over each batch.

    Later operators see the scores earlier ones published in the same batch. Every batch first goes
    through the entity index, which gives each row its entity slot and evicts idle or excess
    entities; the evicted slots are reset in every operator before the rows that follow run.
    """

    def __init__(self, operators: Sequence[Operator], entities: EntityIndex) -> None:
        self.operators = list(operators)
        self.entities = entities
        self.numeric_inputs = tuple(dict.fromkeys(name for op in self.operators for name in op.numeric_inputs))
        self.text_inputs = tuple(dict.fromkeys(name for op in self.operators for name in op.text_inputs))

    @classmethod
    def build(cls, specs: Sequence[OperatorSpec], *, max_entities: int, ttl_ms: int = 0) -> OperatorChain:
        return cls([build_operator(spec) for spec in specs], EntityIndex(max_entities, ttl_ms))

    def process(self, events: Sequence[Event]) -> list[Alert]:
        return self.process_batch(events)[0]

    def process_batch(self, events: Sequence[Event]) -> tuple[list[Alert], Batch]:
        """Alerts plus the batch, whose ``scores`` hold each scoring operator's per-event values."""
        batch = Batch.from_events(events, numeric=self.numeric_inputs, text=self.text_inputs,
                                  slots=np.zeros(len(events), dtype=np.int64))
        return self.run(batch), batch

    def run(self, batch: Batch) -> list[Alert]:
        """Assign entity slots to ``batch`` (segment by segment, see :class:`EntityIndex`) and run the operators.

        An exception in an operator's ``process`` leaves that operator consistent (:meth:`_recover`) and raises
        :class:`OperatorFailure`, which carries the alerts made so far and the first row no operator finished."""
        alerts: list[Alert] = []
        parts: list[Batch] = []
        for start, stop, slots, evicted in self.entities.admit(batch.keys, batch.ts_ms):
            part = batch if (start, stop) == (0, len(batch)) else batch.rows(start, stop)
            part.slots = slots
            if evicted:
                freed = np.concatenate([np.asarray(s, dtype=np.int64) for s in evicted.values()])
                for operator in self.operators:
                    operator.evict(freed)
            for position, operator in enumerate(self.operators):
                try:
                    alerts.extend(operator.process(part))
                except Exception as error:  # an operator's bug must not take the shard down (OperatorFailure)
                    self._recover(position, part.slots)
                    raise OperatorFailure(operator.name, error, alerts, start) from error
            parts.append(part)
        if len(parts) > 1:
            batch.slots = np.concatenate([part.slots for part in parts])
            batch.scores = {name: np.concatenate([part.scores[name] for part in parts]) for name in parts[0].scores}
            batch.bands = {name: Band.concat([part.bands[name] for part in parts]) for name in parts[0].bands}
        return alerts

    def _recover(self, position: int, slots: np.ndarray) -> None:
        """After a failed ``process``: an operator whose state lives in entity slots forgets the batch's entities (as
        if evicted); any other is rebuilt afresh from its configuration (its shard-wide models may be half-updated).
        Costs nothing until an operator fails."""
        operator = self.operators[position]
        if operator.entity_state:
            operator.evict(np.unique(slots))
        else:
            self.operators[position] = type(operator).from_config(operator.name, operator.fields, operator.params)

    def snapshot(self) -> dict[str, Any]:
        return {"entities": self.entities.snapshot(),
                "operators": {operator.name: operator.snapshot() for operator in self.operators}}

    def restore(self, state: dict[str, Any]) -> None:
        self.entities.restore(state["entities"])
        for operator in self.operators:
            if operator.name in state["operators"]:
                operator.restore(state["operators"][operator.name])

    def state_bytes(self) -> int:
        return self.entities.state_bytes() + sum(operator.state_bytes() for operator in self.operators)
