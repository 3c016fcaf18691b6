"""Online group-fair decisions (Aranyani): a decision per event from an oblique decision forest per entity, trained on
labels that arrive later.

An entity is a decision process (a product's loan desk, a moderation queue), its events are decisions to make, each
with an ``id``, the configured numeric ``fields`` as inputs and a ``group`` attribute. For each such event the operator
publishes the decision (1.0 or 0.0) as ``score:<name>``: the forest's predicted class, made with the parameters in
force when the event arrives. The label arrives later, in an event with the same key and id and a ``label``
(:mod:`operators.label_join` joins them, within ``labels.ttl_seconds`` of event time and ``labels.max_pending``
decisions); the forest then takes one Adam step on the joined pair: cross-entropy plus λ times the node-level
demographic-parity penalty, from running per-group aggregates (:mod:`kernels.aranyani`). An event with a label and
features but no id is a decision whose label is known at once (a backtest over a labelled table): decided, then
learned. The inputs (the fields and, with ``group_input``, the group one-hot) are standardised with the entity's running
mean and standard deviation of earlier decisions (no look-ahead). Groups come from the configured list ``groups``;
events of another group are decided and learned from without entering the fairness terms. More than two groups: the
penalty is the mean of the pairwise gaps.

Each entity with decisions gets its own forest (all start from the same seeded parameters), so the results do not
depend on the shard count; the events of one decision process must share a key. Label outcomes (``joined``,
``late``, ``never``) are reported as ``vigil_fairness_labels_total`` and the decisions waiting as
``vigil_fairness_pending_decisions``. Pair it with :mod:`operators.fairness_monitor` on ``score:<name>``.

>>> from operators.event import Event, SourcePosition
>>> op = FairDecisionOperator("credit", ["income"], FairDecisionParams(groups=["a", "b"], fairness=10.0))
>>> events = [Event("desk", i, {"income": float(i % 7)}, SourcePosition(file="f", line=i), group="ab"[i % 2],
...                 id=f"app-{i}") for i in range(4)]
>>> events.append(Event("desk", 5, {}, SourcePosition(file="f", line=5), id="app-1", label="1"))
>>> batch = Batch.from_events(events)
>>> _ = op.process(batch)
>>> batch.scores["credit"].tolist()[:4], op.join.totals["joined"]
([0.0, 1.0, 1.0, 1.0], 1)

References
----------
Basu Roy Chowdhury, S., Monath, N., Beirami, A., Kidambi, R., Dubey, A., Ahmed, A. and Chaturvedi, S. (2024).
Enhancing group fairness in online settings using oblique decision forests. *ICLR*.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar
from collections.abc import Sequence

import numpy as np

from kernels.aranyani import HUBER_DELTA, ForestBank
from kernels.standardise import RunningStandardiser
from operators.base import Operator, Reading
from operators.batch import Batch
from operators.entities import ModelIndex
from operators.event import Alert
from operators.label_join import OUTCOMES, LabelJoin, LabelParams, group_codes, label_codes
from operators.params import ParamError, param


@dataclass
class FairDecisionParams:
    """Parameters of :class:`FairDecisionOperator`."""

    groups: list[str] = param([], "protected groups in order (values of the events' group attribute), at least 2")
    fairness: float = param(1.0, "λ: weight of the node-level demographic-parity penalty; 0 = plain online learning",
                            min=0.0)
    trees: int = param(3, "T: trees in the forest", min=1, max=64)
    depth: int = param(4, "h: depth of each tree (2^h - 1 routing nodes, 2^h leaves)", min=1, max=10)
    learning_rate: float = param(2e-3, "Adam's step size", min=1e-9, max=1.0)
    delta: float = param(HUBER_DELTA, "Huber threshold δ of the parity penalty (tail slope 1 beyond it)", min=1e-9)
    seed: int = param(0, "seed of the forest's initial parameters (the same for every entity)", min=0)
    group_input: bool = param(True, "also feed the group (one-hot) to the forest, as in the paper's setup: the model can "
                                    "then close the gap by group rather than by deciding alike for everyone (turn off "
                                    "where decisions must not read the protected attribute)")
    labels: LabelParams = param(LabelParams(), "delayed labels: positive values, wait and bound")


class FairDecisionOperator(Operator):
    kind: ClassVar[str] = "decision"
    findings: ClassVar[bool] = False
    publishes: ClassVar[tuple[str, ...]] = ("",)
    Params: ClassVar[type] = FairDecisionParams

    def __init__(self, name: str, fields: Sequence[str], params: FairDecisionParams) -> None:
        super().__init__(name, fields, params)
        if len(set(params.groups)) < 2 or len(set(params.groups)) != len(params.groups):
            raise ParamError("groups", f"needs at least 2 distinct groups, got {params.groups!r}")
        if not self.fields:
            raise ParamError("fields", "needs at least one numeric input field")
        self.positive = frozenset(params.labels.positive)
        inputs = len(self.fields) + (len(params.groups) if params.group_input else 0)
        self.forests = ForestBank(inputs, groups=len(params.groups), trees=params.trees, depth=params.depth,
                                  fairness=params.fairness, learning_rate=params.learning_rate, delta=params.delta,
                                  seed=params.seed)
        self.scaler = RunningStandardiser(inputs)
        self.models = ModelIndex()
        self.join = LabelJoin(int(params.labels.ttl_seconds * 1000), params.labels.max_pending, inputs)

    @classmethod
    def contract_cases(cls) -> list[tuple[list[str], FairDecisionParams]]:
        labels = LabelParams(ttl_seconds=120.0, max_pending=64)
        return [(["x0", "x1", "x2"], FairDecisionParams(groups=["g0", "g1"], fairness=10.0, labels=labels)),
                (["x0", "x1"], FairDecisionParams(groups=["g1", "g0", "g9"], fairness=1.0, depth=2, group_input=False,
                                                  labels=labels))]

    def process(self, batch: Batch) -> list[Alert]:
        x = batch.matrix(self.fields)
        labels = label_codes(batch.label, self.positive)
        groups = group_codes(batch.group, self.params.groups)
        complete = ~np.isnan(x).any(axis=1)
        if self.params.group_input:
            x = np.column_stack([x, groups[:, None] == np.arange(len(self.params.groups))])
        has_id = batch.ids != None  # noqa: E711 - element-wise
        decide = complete & ((labels < 0) | ~has_id)  # a labelled event without an id is decided and learned at once
        decided = np.flatnonzero(decide)
        models, fresh = self.models.assign(batch.slots[decided])
        if len(fresh):
            self._ensure_models(int(fresh.max()) + 1)
            self.forests.reset(fresh)
            self.scaler.reset(fresh)
        inputs = np.zeros_like(x)
        inputs[decided] = self.scaler.transform(x[decided], models)
        joined = self.join.join(batch, decided=decide & (labels < 0), payload=inputs, groups=groups, labels=labels)
        # One stream in row order: decisions (predicted only, or learned at once) and joined labels (learned).
        rows = np.r_[decided, joined.rows]
        order = np.argsort(rows, kind="stable")
        targets = np.r_[np.where(labels[decided] >= 0, labels[decided], -1), joined.labels][order]
        predictions = self.forests.learn(np.r_[inputs[decided], joined.payload][order], targets,
                                         np.r_[groups[decided], joined.groups][order],
                                         self.models.of_slot[batch.slots[rows[order]]])
        scores = np.full(len(batch), np.nan)
        is_decision = order < len(decided)
        scores[rows[order][is_decision]] = predictions[is_decision]
        batch.scores[self.name] = scores
        return []

    def _ensure_models(self, models: int) -> None:
        if models > self.forests.models:
            grown = max(models, 2 * self.forests.models)
            self.forests.resize(grown)
            self.scaler.resize(grown)

    def evict(self, slots: np.ndarray) -> None:
        self.models.release(slots)  # reset when handed out again
        self.join.evict(slots)

    def readings(self) -> list[Reading]:
        return [*(Reading("vigil_fairness_labels_total", (outcome,), self.join.totals[outcome]) for outcome in OUTCOMES),
                Reading("vigil_fairness_pending_decisions", (), len(self.join))]

    def snapshot(self) -> dict[str, Any]:
        return {"forests": self.forests.snapshot(), "scaler": self.scaler.snapshot(), "models": self.models.snapshot(),
                "join": self.join.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        self.forests.restore(state["forests"])
        self.scaler.restore(state["scaler"])
        self.models.restore(state["models"])
        self.join.restore(state["join"])

    def state_bytes(self) -> int:
        return self.forests.state_bytes() + self.scaler.state_bytes() + self.models.state_bytes() + self.join.state_bytes()
