"""Per-entity robust EWMA z-score outlier scoring, batched across entities.

The fast baseline scorer: for every entity and numeric field it keeps a winsorised exponentially
weighted mean and variance (:class:`kernels.ewma.RobustEwma`) and scores each event, before learning
from it, by the largest absolute z-score over its fields. Events score NaN until the entity has seen
``warmup`` values of a field. An event whose score reaches the lowest severity threshold yields an
alert naming the field responsible.

>>> from operators.event import Event, SourcePosition
>>> op = ZScoreOperator.from_config("outlier", ["cpu"], ZScoreParams(warmup=5))
>>> values = [10, 11, 10, 11, 10, 11, 10, 40]
>>> events = [Event("host-1", i * 60_000, {"cpu": float(v)}, SourcePosition(topic="m", partition=0, offset=i))
...           for i, v in enumerate(values)]
>>> [(a.key, a.source.offset, a.severity) for a in op.process(Batch(events))]
[('host-1', 7, 'critical')]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

from kernels.ewma import RobustEwma
from operators.base import Batch, OperatorBase, SeverityLevels
from operators.event import Alert


@dataclass
class ZScoreParams:
    """``alpha``: EWMA weight of a new value (time constant ``1/alpha`` events); ``clip``: residuals
    are winsorised at this many standard deviations before they update the state; ``warmup``: values
    per field before an entity is scored; ``min_std``: floor on the standard deviation, so constant
    fields do not produce infinite scores; ``severity``: level name to minimum score; ``device``:
    ``auto``, ``cpu`` or ``cuda``."""

    alpha: float = 0.02
    clip: float = 3.0
    warmup: int = 30
    min_std: float = 1e-6
    severity: dict[str, float] = field(default_factory=lambda: {"info": 5.0, "warning": 7.0, "critical": 10.0})
    device: str = "auto"


class ZScoreOperator(OperatorBase):
    kind: ClassVar[str] = "outlier"
    Params: ClassVar[type] = ZScoreParams

    def __init__(self, name: str, fields: Sequence[str], params: ZScoreParams) -> None:
        super().__init__(name, fields, params)
        self.levels = SeverityLevels.from_mapping(params.severity)
        self.kernel = RobustEwma(
            len(self.fields),
            alpha=params.alpha,
            clip=params.clip,
            warmup=params.warmup,
            min_std=params.min_std,
            device=params.device,
        )
        self.slots: dict[str, int] = {}

    def _slot(self, key: str) -> int:
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = len(self.slots)
        return slot

    def process(self, batch: Batch) -> list[Alert]:
        slots = np.fromiter((self._slot(event.key) for event in batch.events), dtype=np.int64, count=len(batch))
        z = self.kernel.score_and_learn(slots, batch.matrix(self.fields))
        finite = np.where(np.isnan(z), -np.inf, z)
        worst = finite.argmax(axis=1) if len(batch) else np.empty(0, dtype=np.int64)
        score = finite.max(axis=1, initial=-np.inf)
        score[score == -np.inf] = np.nan
        batch.scores[self.name] = score
        alerts = []
        for row in np.flatnonzero(score >= self.levels.lowest):
            event, value = batch.events[row], float(score[row])
            field_name = self.fields[worst[row]]
            alerts.append(
                self.alert(
                    event,
                    score=value,
                    severity=self.levels.level(value),
                    reason=f"{field_name}={event.fields[field_name]:g} is {value:.1f} robust standard deviations from its running mean",
                    fields=[field_name],
                )
            )
        return alerts

    def snapshot(self) -> dict[str, Any]:
        return {"keys": list(self.slots), **self.kernel.state(len(self.slots))}

    def restore(self, state: dict[str, Any]) -> None:
        self.slots = {key: slot for slot, key in enumerate(state["keys"])}
        self.kernel.load_state({name: state[name] for name in ("mean", "var", "count")})
