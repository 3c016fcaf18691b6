"""Streaming fairness monitoring of any decision stream: per-group positive rates, the demographic-parity gap and, once
labels arrive, the equal-opportunity gap, each with a confidence interval, over sliding windows; alerts when a gap
exceeds its bound.

The one input field is the decision: an event field of a user's model (1 / 0, or a score) or ``score:<name>`` of a
:mod:`operators.fair_decision` operator; a decision is positive when the value is above ``threshold``. Each entity (a
decision process) has its own windows (:class:`kernels.parity_monitor.ParityMonitor`) of the last ``window`` decisions
per group, and of the last ``window`` decisions on truly positive instances, added when their labels arrive (joined by
event id as in :mod:`operators.label_join`; a labelled decision without an id counts at once). The operator publishes
the parity gap after each decision as ``score:<name>`` and the equal-opportunity gap after each joined label as
``score:<name>.opportunity``. An alert (kind ``fairness``) is raised when a gap's evidence exceeds its bound: with
``evidence = "interval"`` the lower end of its interval (the gap is significant), with ``"estimate"`` the gap itself;
it is raised again only after the gap has come back to the bound.

Metrics: ``vigil_fairness_window_decisions`` and ``vigil_fairness_window_positive_decisions`` (per group and window,
summed over the monitored entities and shards of a process, so PromQL can add processes up),
``vigil_fairness_positive_ratio`` (per group, with its Wilson interval) and ``vigil_fairness_gap_ratio`` (with its
Newcombe interval), both computed from those sums; decision and label outcomes as counters. Group label values come
from the configured list only.

>>> import numpy as np
>>> from operators.event import Event, SourcePosition
>>> op = FairnessMonitorOperator("parity", ["approved"], FairnessMonitorParams(groups=["a", "b"], min_decisions=50))
>>> rng = np.random.default_rng(0)
>>> events = [Event("desk", i, {"approved": float(rng.random() < (0.3 if i % 2 else 0.7))},
...                 SourcePosition(file="f", line=i), group="ab"[i % 2]) for i in range(400)]
>>> alerts = op.process(Batch.from_events(events))
>>> [(a.kind, a.key) for a in alerts], alerts[0].reason.split(":")[0]
([('fairness', 'desk')], 'demographic-parity gap 0.46 [0.27, 0.61] between a (0.70) and b (0.24) exceeds 0.1')

References
----------
Hardt, M., Price, E. and Srebro, N. (2016). Equality of opportunity in supervised learning. *NeurIPS*.

Newcombe, R. G. (1998). Interval estimation for the difference between independent proportions: comparison of eleven
methods. *Statistics in Medicine* 17(8), 873-890.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from collections.abc import Sequence

import numpy as np

from kernels.parity_monitor import KINDS, ParityMonitor, crossings, wilson_interval
from operators.base import Operator, Reading
from operators.batch import Batch
from operators.entities import ModelIndex
from operators.event import Alert
from operators.label_join import OUTCOMES, LabelJoin, LabelParams, group_codes, label_codes
from operators.params import ParamError, param

OPPORTUNITY_SUFFIX = ".opportunity"  # score:<name>.opportunity holds the equal-opportunity gap
GAP_NAMES = {"parity": "demographic-parity gap", "opportunity": "equal-opportunity gap"}
RATE_NAMES = {"parity": "positive rate", "opportunity": "true-positive rate"}


@dataclass
class FairnessMonitorParams:
    """Parameters of :class:`FairnessMonitorOperator`."""

    groups: list[str] = param([], "groups in order (values of the events' group attribute), at least 2; the only "
                                  "group label values of the metrics")
    threshold: float = param(0.5, "a decision is positive when the field's value is above this")
    window: int = param(1000, "decisions kept per group and entity (and decisions on labelled positives)", min=1,
                        unit="decisions")
    confidence: float = param(0.95, "level of the confidence intervals", min=0.5, max=0.999)
    min_decisions: int = param(30, "decisions a group needs in its window before it enters a gap", min=1)
    parity_bound: float = param(0.1, "alert when the demographic-parity gap exceeds this (1: never)", min=0.0, max=1.0)
    opportunity_bound: float = param(0.1, "alert when the equal-opportunity gap exceeds this (1: never)", min=0.0,
                                     max=1.0)
    evidence: Literal["interval", "estimate"] = param(
        "interval", "what must exceed the bound: the interval's lower end (a significant gap) or the estimate",
        choices=("interval", "estimate"))
    severity: str = param("warning", "severity of the alerts")
    labels: LabelParams = param(LabelParams(), "delayed labels: positive values, wait and bound")


class FairnessMonitorOperator(Operator):
    kind: ClassVar[str] = "fairness"
    publishes: ClassVar[tuple[str, ...]] = ("", OPPORTUNITY_SUFFIX)
    Params: ClassVar[type] = FairnessMonitorParams

    def __init__(self, name: str, fields: Sequence[str], params: FairnessMonitorParams) -> None:
        super().__init__(name, fields, params)
        if len(set(params.groups)) < 2 or len(set(params.groups)) != len(params.groups):
            raise ParamError("groups", f"needs at least 2 distinct groups, got {params.groups!r}")
        if len(self.fields) != 1:
            raise ParamError("fields", f"needs exactly one field, the decision; got {list(self.fields)!r}")
        self.positive = frozenset(params.labels.positive)
        self.windows = ParityMonitor(len(params.groups), params.window, params.confidence, params.min_decisions)
        self.models = ModelIndex()
        self.join = LabelJoin(int(params.labels.ttl_seconds * 1000), params.labels.max_pending, 1)
        self.alerting = {kind: np.zeros(1, dtype=np.bool_) for kind in KINDS}
        self.bounds = {"parity": params.parity_bound, "opportunity": params.opportunity_bound}
        n = len(params.groups)
        self.decisions = np.zeros((n, 2), dtype=np.int64)  # totals per group: negative, positive decisions
        self.labelled = np.zeros((n, 2), dtype=np.int64)  # totals per group: wrong, correct labelled decisions

    @classmethod
    def contract_cases(cls) -> list[tuple[list[str], FairnessMonitorParams]]:
        labels = LabelParams(ttl_seconds=120.0, max_pending=64)
        return [(["x0"], FairnessMonitorParams(groups=["g0", "g1"], threshold=12.0, window=40, min_decisions=5,
                                               parity_bound=0.05, opportunity_bound=0.05, labels=labels)),
                (["x1"], FairnessMonitorParams(groups=["g1", "g0", "g2"], threshold=8.0, window=25, min_decisions=2,
                                               evidence="estimate", labels=labels))]

    def process(self, batch: Batch) -> list[Alert]:
        values = batch.column(self.fields[0])
        labels = label_codes(batch.label, self.positive)
        groups = group_codes(batch.group, self.params.groups)
        has_id = batch.ids != None  # noqa: E711 - element-wise
        decided = np.flatnonzero(~np.isnan(values) & ((labels < 0) | ~has_id))
        decision = (values > self.params.threshold).astype(np.int64)
        models, fresh = self.models.assign(batch.slots[decided])
        if len(fresh):
            self._ensure_models(int(fresh.max()) + 1)
            self.windows.reset(fresh)
            self.alerting["parity"][fresh] = self.alerting["opportunity"][fresh] = False
        parity = self.windows.observe("parity", groups[decided], decision[decided], models)
        joined = self.join.join(batch, decided=~np.isnan(values) & (labels < 0), payload=decision[:, None].astype(float),
                                groups=groups, labels=labels)
        # Labels: known at once (decided rows with a label) or joined later, in row order.
        immediate = decided[labels[decided] >= 0]
        label_rows = np.r_[immediate, joined.rows]
        order = np.argsort(label_rows, kind="stable")
        label_rows = label_rows[order]
        label_groups = np.r_[groups[immediate], joined.groups][order]
        label_decisions = np.r_[decision[immediate], joined.payload[:, 0].astype(np.int64)][order]
        truth = np.r_[labels[immediate], joined.labels][order]
        positives = truth == 1
        opportunity = self.windows.observe("opportunity", label_groups[positives], label_decisions[positives],
                                           self.models.of_slot[batch.slots[label_rows[positives]]])
        self._count(groups[decided], decision[decided], label_groups, label_decisions == truth)

        scores = np.full(len(batch), np.nan)
        scores[decided] = parity[:, 0]
        batch.scores[self.name] = scores
        opportunity_scores = np.full(len(batch), np.nan)
        opportunity_scores[label_rows[positives]] = opportunity[:, 0]
        batch.scores[self.name + OPPORTUNITY_SUFFIX] = opportunity_scores
        alerts = self._alerts(batch, "parity", decided, models, parity)
        alerts += self._alerts(batch, "opportunity", label_rows[positives],
                               self.models.of_slot[batch.slots[label_rows[positives]]], opportunity)
        alerts.sort(key=lambda alert: alert.source.sort_key())
        return alerts

    def _count(self, groups: np.ndarray, decisions: np.ndarray, label_groups: np.ndarray, correct: np.ndarray) -> None:
        listed, labelled_listed = groups >= 0, label_groups >= 0
        n = len(self.params.groups)
        self.decisions += np.bincount(groups[listed] * 2 + decisions[listed], minlength=2 * n).reshape(n, 2)
        self.labelled += np.bincount(label_groups[labelled_listed] * 2 + correct[labelled_listed], minlength=2 * n
                                     ).reshape(n, 2)

    def _alerts(self, batch: Batch, kind: str, rows: np.ndarray, models: np.ndarray, gaps: np.ndarray) -> list[Alert]:
        evidence = gaps[:, 1] if self.params.evidence == "interval" else gaps[:, 0]
        raised = crossings(np.ascontiguousarray(evidence), np.ascontiguousarray(gaps[:, 0]), models,
                           self.alerting[kind], self.bounds[kind])
        alerts = []
        for index in np.flatnonzero(raised).tolist():
            gap, lower, upper, high_rate, high, low = gaps[index].tolist()
            reason = (f"{GAP_NAMES[kind]} {gap:.2f} [{lower:.2f}, {upper:.2f}] between {self.params.groups[int(high)]} "
                      f"({high_rate:.2f}) and {self.params.groups[int(low)]} ({high_rate - gap:.2f}) exceeds "
                      f"{self.bounds[kind]:g}: {RATE_NAMES[kind]}s over the last {self.params.window} per group, "
                      f"{self.params.confidence:.0%} interval")
            alerts.append(self.alert(batch, int(rows[index]), score=gap, severity=self.params.severity, reason=reason,
                                     fields=list(self.fields)))
        return alerts

    def _ensure_models(self, models: int) -> None:
        if models > self.windows.monitors:
            grown = max(models, 2 * self.windows.monitors)
            self.windows.resize(grown)
            for kind in KINDS:
                self.alerting[kind] = np.r_[self.alerting[kind], np.zeros(grown - len(self.alerting[kind]), dtype=np.bool_)]

    def evict(self, slots: np.ndarray) -> None:
        self.models.release(slots)  # reset when handed out again
        self.join.evict(slots)

    def readings(self) -> list[Reading]:
        readings = [*(Reading("vigil_fairness_labels_total", (outcome,), self.join.totals[outcome]) for outcome in OUTCOMES),
                    Reading("vigil_fairness_pending_decisions", (), len(self.join))]
        live = np.flatnonzero(self.models.of_slot >= 0)
        for kind in KINDS:
            counts, positives = self.windows.window_counts(kind, self.models.of_slot[live])
            for group, count, positive in zip(self.params.groups, counts.tolist(), positives.tolist()):
                readings += [Reading("vigil_fairness_window_decisions", (group, kind), count),
                             Reading("vigil_fairness_window_positive_decisions", (group, kind), positive)]
        for g, group in enumerate(self.params.groups):
            readings += [Reading("vigil_fairness_decisions_total", (group, decision), int(self.decisions[g, d]))
                         for d, decision in enumerate(("negative", "positive"))]
            readings += [Reading("vigil_fairness_labelled_decisions_total", (group, outcome), int(self.labelled[g, o]))
                         for o, outcome in enumerate(("wrong", "correct"))]
        return readings

    def combine(self, sums: dict[tuple[str, tuple[str, ...]], float]) -> list[Reading]:
        readings = []
        for kind in KINDS:
            counts = np.array([sums.get(("vigil_fairness_window_decisions", (g, kind)), 0) for g in self.params.groups])
            positives = np.array([sums.get(("vigil_fairness_window_positive_decisions", (g, kind)), 0)
                                  for g in self.params.groups])
            for group, count, positive in zip(self.params.groups, counts.tolist(), positives.tolist()):
                low, high = wilson_interval(int(positive), int(count), self.windows.z)
                rate = positive / count if count else float("nan")
                readings += [Reading("vigil_fairness_positive_ratio", (group, kind, bound), value)
                             for bound, value in (("estimate", rate), ("lower", low), ("upper", high))]
            gap = self.windows.gap(counts, positives)
            readings += [Reading("vigil_fairness_gap_ratio", (kind, bound), value)
                         for bound, value in zip(("estimate", "lower", "upper"), gap)]
        return readings

    def snapshot(self) -> dict[str, Any]:
        return {"windows": self.windows.snapshot(), "models": self.models.snapshot(), "join": self.join.snapshot(),
                "alerting": {kind: flags.copy() for kind, flags in self.alerting.items()},
                "decisions": self.decisions.copy(), "labelled": self.labelled.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        self.windows.restore(state["windows"])
        self.models.restore(state["models"])
        self.join.restore(state["join"])
        self.alerting = {kind: np.array(flags, dtype=np.bool_) for kind, flags in state["alerting"].items()}
        self.decisions[...], self.labelled[...] = state["decisions"], state["labelled"]

    def state_bytes(self) -> int:
        return self.windows.state_bytes() + self.models.state_bytes() + self.join.state_bytes() \
            + self.decisions.nbytes + self.labelled.nbytes + sum(flags.nbytes for flags in self.alerting.values())
