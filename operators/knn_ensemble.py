"""Label-free multivariate outlier scoring, the default: kNN distance and RS-Hash rarity judged against past scores.

The :mod:`operators.knn` operator with :class:`kernels.knn_ensemble.KnnSubspaceEnsemble` as its kernel: per shard,
an event's mean distance to its ``k`` nearest among the last ``window`` events and its rarity in 100 random-subspace
grids over the same events are each turned into a surprise, −ln of its upper-tail p-value among the same member's
past scores, and the score is the mean of the two surprises (about 1 on normal data, unbounded above). The pair
covers each member's blind spot (irrelevant or sparse fields for kNN, local outliers for the grids). Every
hyper-parameter is fixed, the same on every data set, chosen on the 12 development ODDS sets only; under both
protocols of ``vigil evaluate tabular`` it beats each member, scikit-learn's IsolationForest and PySAD's xStream,
LODA and RS-Hash on average (README, "Offline evaluation"). Scores do not depend on how the stream is cut into
batches. An event with a missing or non-numeric field scores NaN and is not learned. Alerts follow the calibrated
false-alarm budget (:mod:`operators.alerting`) and name the fields farthest, in standard units, from the shard's
running mean.

>>> import numpy as np
>>> from operators.batch import Batch
>>> from operators.event import Event, SourcePosition
>>> rng = np.random.default_rng(0)
>>> rows = np.r_[rng.normal(size=(900, 3)), [[0.0, 5.0, -5.0]]]
>>> events = [Event(f"host-{i % 3}", i * 1000, dict(zip(("a", "b", "c"), map(float, row))),
...                 SourcePosition(topic="m", partition=0, offset=i)) for i, row in enumerate(rows)]
>>> op = KnnEnsembleOperator.from_config("knn_rshash", ["a", "b", "c"],
...                                      KnnEnsembleParams(alerting=AlertingParams(warmup=50)))
>>> [(a.source.offset, a.fields) for a in op.process(Batch.from_events(events)) if a.severity == "critical"]
[(900, ['b', 'c'])]

References
----------
Aggarwal, C. C. and Sathe, S. (2015). Theoretical foundations and algorithms for outlier ensembles. *ACM SIGKDD
Explorations* 17(1).

Sathe, S. and Aggarwal, C. C. (2016). Subspace outlier detection in linear time with randomized hashing. *ICDM*.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from kernels.knn_ensemble import KnnSubspaceEnsemble
from operators.alerting import AlertingParams
from operators.guardrails import GuardrailParams
from operators.knn import KnnOperator, KnnParams
from operators.params import ParamError, param


@dataclass
class KnnEnsembleParams(KnnParams):
    """Parameters of :class:`KnnEnsembleOperator`: those of :class:`operators.knn.KnnParams`, and the grids'."""

    components: int = param(100, "RS-Hash grids over random subspaces (each holds up to 2 x window cells)",
                            min=1, max=10_000)
    seed: int = param(0, "seeds the grids' subspaces, cell widths and shifts", min=0)


class KnnEnsembleOperator(KnnOperator):
    Params: ClassVar[type] = KnnEnsembleParams

    @staticmethod
    def build_kernel(n_fields: int, params: KnnEnsembleParams) -> KnnSubspaceEnsemble:
        if params.block > params.window:
            raise ParamError("block", f"must not exceed window ({params.window})")
        return KnnSubspaceEnsemble(n_fields, k=params.k, window=params.window, block=params.block,
                                   min_std=params.min_std, components=params.components, seed=params.seed)

    @classmethod
    def contract_cases(cls) -> list[tuple[list[str], KnnEnsembleParams]]:
        small = dict(k=5, window=40, block=16, warmup=10, components=8, alerting=AlertingParams(window=50, warmup=10, tail=5))
        return [(["x0", "x1", "x2"], KnnEnsembleParams(**small)),
                (["x0", "x1", "x2"], KnnEnsembleParams(**small, guardrails=GuardrailParams(  # its own reference
                    direction="down", min_relative_deviation=0.05, range=[-40.0, 150.0])))]

    def describe(self, score: float) -> str:
        return (f"surprise {score:.3g} (mean of -ln p) by distance to its {self.params.k} nearest recent events and "
                f"by rarity in {self.params.components} random subspaces")
