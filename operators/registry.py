"""Operator types by configuration name, and the chain that runs them inside one shard.

>>> from operators.drift import DriftParams
>>> from operators.event import Event, SourcePosition
>>> from operators.zscore import ZScoreParams
>>> chain = OperatorChain.build([
...     OperatorSpec("zscore", "outlier", ("cpu",), ZScoreParams(warmup=3)),
...     OperatorSpec("drift", "drift", ("score:outlier",), DriftParams()),
... ])
>>> events = [Event("a", i, {"cpu": 1.0 + i % 2}, SourcePosition(file="f", line=i)) for i in range(6)]
>>> chain.process(events)
[]
>>> sorted(chain.snapshot())
['drift', 'outlier']
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from operators.ape import ApeOperator
from operators.apre_mss import ApreMssOperator
from operators.base import Batch, Operator
from operators.drift import DriftOperator
from operators.event import Alert, Event
from operators.hst import HalfSpaceTreesOperator
from operators.zscore import ZScoreOperator

OPERATOR_TYPES: dict[str, type] = {
    "zscore": ZScoreOperator,
    "hst": HalfSpaceTreesOperator,
    "apre_mss": ApreMssOperator,
    "ape": ApeOperator,
    "drift": DriftOperator,
}


@dataclass(frozen=True)
class OperatorSpec:
    """A validated operator configuration: its type name, instance name, input fields and params."""

    type: str
    name: str
    fields: tuple[str, ...]
    params: Any


def build_operator(spec: OperatorSpec) -> Operator:
    return OPERATOR_TYPES[spec.type].from_config(spec.name, spec.fields, spec.params)


class OperatorChain:
    """The operators of one shard, run in configuration order over each batch.

    Later operators see the scores earlier ones published in the same batch.
    """

    def __init__(self, operators: Sequence[Operator]) -> None:
        self.operators = list(operators)

    @classmethod
    def build(cls, specs: Sequence[OperatorSpec]) -> "OperatorChain":
        return cls([build_operator(spec) for spec in specs])

    def process(self, events: Sequence[Event]) -> list[Alert]:
        return self.process_batch(events)[0]

    def process_batch(self, events: Sequence[Event]) -> tuple[list[Alert], Batch]:
        """Alerts plus the batch, whose ``scores`` hold each scoring operator's per-event values."""
        batch = Batch(events)
        alerts: list[Alert] = []
        for operator in self.operators:
            alerts.extend(operator.process(batch))
        return alerts, batch

    def snapshot(self) -> dict[str, Any]:
        return {operator.name: operator.snapshot() for operator in self.operators}

    def restore(self, state: dict[str, Any]) -> None:
        for operator in self.operators:
            if operator.name in state:
                operator.restore(state[operator.name])
