"""Per-entity robust EWMA z-score outlier scoring, batched across entities.

The fast baseline scorer: for every entity and numeric field it keeps a winsorised exponentially
weighted mean and variance (:class:`kernels.ewma.RobustEwma`) and scores each event, before learning
from it, by the largest absolute z-score over its fields. Events score NaN until the entity has seen
``warmup`` values of a field. Alerts follow the calibrated false-alarm budget
(:mod:`operators.alerting`) and name the field responsible.

>>> from operators.event import Event, SourcePosition
>>> op = ZScoreOperator.from_config("outlier", ["cpu"], ZScoreParams(warmup=5, alerting=AlertingParams(warmup=50)))
>>> values = [10 + i % 2 + 0.1 * (i % 7) for i in range(200)] + [40]
>>> events = [Event("host-1", i * 60_000, {"cpu": float(v)}, SourcePosition(topic="m", partition=0, offset=i))
...           for i, v in enumerate(values)]
>>> [(a.source.offset, a.severity, a.fields) for a in op.process(Batch(events))]
[(200, 'critical', ['cpu'])]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

from kernels.ewma import RobustEwma
from operators.alerting import AlertingParams
from operators.base import Batch, ScoringOperator


@dataclass
class ZScoreParams:
    """``alpha``: EWMA weight of a new value (time constant ``1/alpha`` events); ``clip``: residuals
    are winsorised at this many standard deviations before they update the state; ``warmup``: values
    per field before an entity is scored; ``min_std``: floor on the standard deviation, so constant
    fields do not produce infinite scores; ``device``: ``auto``, ``cpu`` or ``cuda``; ``alerting``:
    the false-alarm budget and severity levels (:class:`operators.alerting.AlertingParams`)."""

    alpha: float = 0.02
    clip: float = 3.0
    warmup: int = 30
    min_std: float = 1e-6
    device: str = "auto"
    alerting: AlertingParams = field(default_factory=AlertingParams)


class ZScoreOperator(ScoringOperator):
    Params: ClassVar[type] = ZScoreParams

    def __init__(self, name: str, fields: Sequence[str], params: ZScoreParams) -> None:
        super().__init__(name, fields, params)
        self.kernel = RobustEwma(
            len(self.fields),
            alpha=params.alpha,
            clip=params.clip,
            warmup=params.warmup,
            min_std=params.min_std,
            device=params.device,
        )
        self.slots: dict[str, int] = {}
        self._worst_field = np.empty(0, dtype=np.int64)  # per row of the batch being processed

    def _slot(self, key: str) -> int:
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = len(self.slots)
        return slot

    def score(self, batch: Batch) -> np.ndarray:
        slots = np.fromiter((self._slot(event.key) for event in batch.events), dtype=np.int64, count=len(batch))
        z = self.kernel.score_and_learn(slots, batch.matrix(self.fields))
        finite = np.where(np.isnan(z), -np.inf, z)
        self._worst_field = finite.argmax(axis=1) if len(batch) else np.empty(0, dtype=np.int64)
        score = finite.max(axis=1, initial=-np.inf)
        score[score == -np.inf] = np.nan
        return score

    def explain(self, batch: Batch, row: int) -> tuple[str, list[str]]:
        field_name = self.fields[self._worst_field[row]]
        z, value = batch.scores[self.name][row], batch.events[row].fields[field_name]
        return f"{field_name}={value:g} is {z:.1f} robust standard deviations from its running mean", [field_name]

    def scorer_state(self) -> dict[str, Any]:
        return {"keys": list(self.slots), **self.kernel.state(len(self.slots))}

    def load_scorer_state(self, state: dict[str, Any]) -> None:
        self.slots = {key: slot for slot, key in enumerate(state["keys"])}
        self.kernel.load_state({name: state[name] for name in ("mean", "var", "count")})

    def scorer_bytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.kernel.mean, self.kernel.var, self.kernel.count))
