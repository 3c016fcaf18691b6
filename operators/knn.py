"""Label-free multivariate outlier scoring: the mean distance to the k nearest of the shard's last events.

One :class:`kernels.knn.KnnDistance` per shard scores every event whose fields are all numbers by the mean distance,
in past-only standard units, to its ``k`` nearest neighbours among the shard's last ``window`` such events, then
learns it. Every hyper-parameter is fixed, the same on every data set: ``vigil evaluate tabular`` chose k = 50 and a
2,048-event window on the 12 development ODDS sets under both protocols (README, "Offline evaluation"), where it beat
scikit-learn's IsolationForest on average. Scores do not depend on how the stream is cut into batches. An event with
a missing or non-numeric field scores NaN and is not learned. Alerts follow the calibrated false-alarm budget
(:mod:`operators.alerting`) and name the fields farthest, in standard units, from the shard's running mean.

>>> from operators.event import Event, SourcePosition
>>> rng = np.random.default_rng(0)
>>> rows = np.r_[rng.normal(size=(900, 3)), [[0.0, 5.0, -5.0]]]
>>> events = [Event(f"host-{i % 3}", i * 1000, dict(zip(("a", "b", "c"), map(float, row))),
...                 SourcePosition(topic="m", partition=0, offset=i)) for i, row in enumerate(rows)]
>>> op = KnnOperator.from_config("knn", ["a", "b", "c"], KnnParams(alerting=AlertingParams(warmup=50)))
>>> [(a.source.offset, a.fields) for a in op.process(Batch.from_events(events)) if a.severity == "critical"]
[(900, ['b', 'c'])]

References
----------
Angiulli, F. and Pizzuti, C. (2002). Fast outlier detection in high dimensional spaces. *PKDD*.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from kernels.knn import KnnDistance
from operators.alerting import AlertingParams
from operators.base import ScoringOperator
from operators.batch import Batch
from operators.guardrails import GuardrailParams
from operators.params import param

TOP_FIELDS = 2


@dataclass
class KnnParams:
    """Parameters of :class:`KnnOperator`."""

    k: int = param(50, "neighbours whose distances are averaged", min=1, max=10_000)
    window: int = param(2048, "the shard's last events searched for neighbours (window x fields floats of memory)",
                        min=1, max=1_000_000, unit="events")
    block: int = param(256, "the standard units are updated every this many events (and at 1, 2, 4, ... before)",
                       min=1, max=1_000_000, unit="events")
    warmup: int = param(256, "events the shard learns before it scores", min=0, unit="events")
    min_std: float = param(1e-6, "floor on a field's standard deviation, so a constant field does not divide by 0",
                           min=0.0)
    alerting: AlertingParams = param(AlertingParams(), "the false-alarm budget and severity levels")
    guardrails: GuardrailParams = param(GuardrailParams(), "direction, minimum deviation and valid range of an alert")


class KnnOperator(ScoringOperator):
    Params: ClassVar[type] = KnnParams

    def __init__(self, name: str, fields: Sequence[str], params: KnnParams) -> None:
        super().__init__(name, fields, params)
        self.kernel = self.build_kernel(len(self.fields), params)
        self._z = np.empty((0, len(self.fields)))

    @staticmethod
    def build_kernel(n_fields: int, params: KnnParams) -> KnnDistance:
        return KnnDistance(n_fields, k=params.k, window=params.window, block=params.block, min_std=params.min_std)

    @classmethod
    def contract_cases(cls) -> list[tuple[list[str], KnnParams]]:
        return [(["x0", "x1", "x2"], KnnParams(k=5, window=40, block=16, warmup=10,
                                               alerting=AlertingParams(window=50, warmup=10, tail=5)))]

    def score(self, batch: Batch) -> np.ndarray:
        x = batch.matrix(self.fields)
        learned_before = self.kernel.seen + np.cumsum(np.isfinite(x).all(axis=1)) - 1  # rows learned before each row
        scores = self.kernel.score_and_learn(x)
        self._z = self.kernel.deviations
        scores[learned_before < self.params.warmup] = np.nan
        return scores

    def explain(self, batch: Batch, row: int) -> tuple[str, list[str]]:
        order = np.argsort(-np.nan_to_num(self._z[row], nan=-1.0), kind="stable")[: min(TOP_FIELDS, len(self.fields))]
        names = [self.fields[j] for j in order]
        parts = [f"{self.fields[j]}={batch.column(self.fields[j])[row]:g} ({self._z[row, j]:.1f} standard deviations "
                 "from its mean)" for j in order]
        return f"{self.describe(batch.scores[self.name][row])}; farthest fields: {', '.join(parts)}", names

    def describe(self, score: float) -> str:
        return f"mean distance {score:.3g} to its {self.params.k} nearest recent events"

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "knn": self.kernel.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.kernel.restore(state["knn"])

    def state_bytes(self) -> int:
        return super().state_bytes() + self.kernel.state_bytes()
