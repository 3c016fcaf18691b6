"""Per-entity robust EWMA z-score outlier scoring, batched across entities.

The fast baseline scorer: for every entity and numeric field it keeps a winsorised exponentially
weighted mean and variance (:class:`kernels.ewma.RobustEwma`) and scores each event, before learning
from it, by the largest absolute z-score over its fields. Events score NaN until the entity has seen
``warmup`` values of a field. Alerts follow the calibrated false-alarm budget
(:mod:`operators.alerting`) and name the field responsible; the expected band is the running mean plus and minus three
running standard deviations. Guardrails (:mod:`operators.guardrails`) compare a value with the running mean it was
scored against.

>>> from operators.event import Event, SourcePosition
>>> op = ZScoreOperator.from_config("outlier", ["cpu"], ZScoreParams(warmup=5, alerting=AlertingParams(warmup=50)))
>>> values = [10 + i % 2 + 0.1 * (i % 7) for i in range(200)] + [40]
>>> events = [Event("host-1", i * 60_000, {"cpu": float(v)}, SourcePosition(topic="m", partition=0, offset=i))
...           for i, v in enumerate(values)]
>>> [(a.source.offset, a.severity, a.fields) for a in op.process(Batch.from_events(events))]
[(200, 'critical', ['cpu'])]

References
----------
Lucas, J. M. and Saccucci, M. S. (1990). Exponentially weighted moving average control schemes:
properties and enhancements. *Technometrics* 32(1), 1-12.

West, D. H. D. (1979). Updating mean and variance estimates: an improved method. *CACM* 22(9), 532-535.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar
from collections.abc import Sequence

import numpy as np

from kernels.ewma import RobustEwma
from operators.alerting import AlertingParams
from operators.base import ScoringOperator
from operators.batch import SCORE_PREFIX, Batch
from operators.guardrails import GuardrailParams
from operators.params import param


@dataclass
class ZScoreParams:
    """Parameters of :class:`ZScoreOperator`."""

    alpha: float = param(0.02, "EWMA weight of a new value (time constant 1/alpha events)", min=1e-9, max=1.0)
    clip: float = param(3.0, "residuals are winsorised at this many standard deviations before they update the state",
                        min=0.0, unit="standard deviations")
    warmup: int = param(30, "values per field before an entity is scored", min=0, unit="events")
    min_std: float = param(1e-6, "floor on the standard deviation, so constant fields do not score infinity", min=0.0)
    alerting: AlertingParams = param(AlertingParams(), "the false-alarm budget and severity levels")
    guardrails: GuardrailParams = param(GuardrailParams(), "direction, minimum deviation and valid range of an alert")


class ZScoreOperator(ScoringOperator):
    Params: ClassVar[type] = ZScoreParams
    entity_state: ClassVar[bool] = True

    def __init__(self, name: str, fields: Sequence[str], params: ZScoreParams) -> None:
        super().__init__(name, fields, params)
        self.kernel = RobustEwma(
            len(self.fields),
            alpha=params.alpha,
            clip=params.clip,
            warmup=params.warmup,
            min_std=params.min_std,
        )
        self._worst_field = np.empty(0, dtype=np.int64)  # per row of the batch being processed
        # per row: the means and standard deviations it was scored against
        self._means = self._stds = np.empty((0, len(self.fields)))
        self._numeric = [j for j, name in enumerate(self.fields) if not name.startswith(SCORE_PREFIX)]

    @classmethod
    def contract_cases(cls) -> list[tuple[list[str], ZScoreParams]]:
        alerting = AlertingParams(window=50, warmup=10, tail=5)
        return [(["x0", "x1"], ZScoreParams(warmup=5, alerting=alerting)),
                (["x0", "x1"], ZScoreParams(warmup=5, alerting=alerting, guardrails=GuardrailParams(
                    direction="up", min_deviation=1.0, range=[-40.0, 150.0])))]

    def score(self, batch: Batch) -> np.ndarray:
        x = batch.matrix(self.fields)
        self._means, self._stds = np.empty(x.shape), np.empty(x.shape)
        z = self.kernel.score_and_learn(batch.slots, x, self._means, self._stds)
        finite = np.where(np.isnan(z), -np.inf, z)
        self._worst_field = finite.argmax(axis=1) if len(batch) else np.empty(0, dtype=np.int64)
        score = finite.max(axis=1, initial=-np.inf)
        score[score == -np.inf] = np.nan
        return score

    def expected(self, batch: Batch) -> np.ndarray:
        """The running means each row was scored against (before it updated them), NaN until a field is warm."""
        return self._means[:, self._numeric]

    def level(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """The running means and robust standard deviations each row was scored against."""
        return self._means[:, self._numeric], self._stds[:, self._numeric]

    def explain(self, batch: Batch, row: int) -> tuple[str, list[str]]:
        field_name = self.fields[self._worst_field[row]]
        z, value = batch.scores[self.name][row], batch.column(field_name)[row]
        return f"{field_name}={value:g} is {z:.1f} robust standard deviations from its running mean", [field_name]

    def evict(self, slots: np.ndarray) -> None:
        super().evict(slots)
        self.kernel.evict(slots)

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "ewma": self.kernel.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.kernel.restore(state["ewma"])

    def state_bytes(self) -> int:
        return super().state_bytes() + self.kernel.state_bytes()
