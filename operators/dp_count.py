"""Differentially private counts of a categorical field, released continually per event-time window.

For each entity (a stream: a service, a desk), the events are cut into tumbling event-time windows of
``window_seconds``; each configured category has a continual counter (:mod:`operators.privacy.counters`) whose step
is one window's count. When an event opens a later window, the closed window's releases go out as one alert record
(kind ``dp_count``): every category's private running count since the epoch began, with its standard error (the
counter's exact per-step variance), and, with ``top_rho`` > 0, the private top category (SumSelect). The same row
publishes them as columns (for the scores sink): ``score:<name>`` (the total), ``score:<name>.<category>`` and
``score:<name>.stderr``. Empty windows in
between are steps of the counters too (zero counts), not released. Events of a window already released are late:
dropped and counted.

**What is protected.** Event-level privacy: two streams that differ in one event (one person's one event) give
releases whose distributions differ by at most ``rho`` (zCDP, per epoch; ``binary-laplace``: ε with ρ = ε²/2). One
event changes one category's count in one window by one, so the d counters share the budget by parallel composition,
and the top-category selection adds ``top_rho``. A person with many events is protected per event only; the window
boundaries, the category list, the release times and the number of events that carry no listed category are not
private (the first three are configuration, the fourth is not released). An epoch lasts ``horizon`` windows; a new
epoch costs another ``rho`` + ``top_rho``.

**The budget.** Each stream may spend ``budget`` (ρ) in all; spends and release steps are written to the ledger
(:mod:`operators.privacy.ledger`, one file per operator in ``ledger``) before each release. When the budget cannot pay
a new epoch (or a replay: a restart from a snapshot older than the ledger's last release re-releases with fresh
noise, which costs again), the counters repeat their last release (post-processing) and the record says so.

>>> import tempfile
>>> from operators.event import Event, SourcePosition
>>> params = DpCountParams(categories=["a", "b"], window_seconds=60, horizon=64, rho=0.5, budget=1.0,
...                        ledger=tempfile.mkdtemp(), seed=1)
>>> op = DpCountOperator("counts", ["kind"], params)
>>> events = [Event("web", i * 20_000, {"kind": "ab"[i % 3 == 0]}, SourcePosition(file="f", line=i)) for i in range(40)]
>>> alerts = op.process(Batch.from_events(events))
>>> len(alerts), alerts[0].kind, alerts[0].reason
(13, 'dp_count', 'window 1 of epoch 0: a 2 ± 1.5, b 2 ± 1.5')
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from collections.abc import Sequence

import numpy as np

from operators.base import Operator, Reading
from operators.batch import Batch
from operators.event import Alert
from operators.params import ParamError, param
from operators.privacy.accounting import epsilon_for
from operators.privacy.counters import MECHANISMS, continual_counter
from operators.privacy.ledger import BudgetLedger
from operators.privacy.selection import sum_select

TOP_DELTA = 1e-6  # the δ at which the top-category selection's (ε, δ) is set from top_rho


@dataclass
class DpCountParams:
    """Parameters of :class:`DpCountOperator`."""

    categories: list[str] = param([], "the categories counted (values of the field), at least 1; others are not counted")
    window_seconds: float = param(3600.0, "tumbling event-time window: one counter step", min=0.001, unit="seconds")
    horizon: int = param(720, "T: windows per epoch (each epoch is paid once)", min=1, max=1 << 20)
    mechanism: Literal["binary-laplace", "binary-gaussian", "honaker", "smooth", "sqrt"] = param(
        "sqrt", "continual counter", choices=MECHANISMS)
    rho: float = param(0.5, "zCDP cost of an epoch's counts", min=1e-6, max=100.0)
    epsilon: float = param(0.0, "pure-DP cost of an epoch's counts, for binary-laplace (its rho is epsilon² / 2); "
                                "0: epsilon = sqrt(2 rho)", min=0.0, max=100.0)
    top_rho: float = param(0.0, "zCDP cost of an epoch's private top category (SumSelect); 0: none", min=0.0, max=100.0)
    budget: float = param(1.0, "zCDP budget of a stream over all its epochs", min=1e-6)
    ledger: str = param("runs/dp-ledger", "directory of the budget ledger (relative to the working directory)")
    seed: int = param(-1, "noise seed for tests and reproducible demos; -1: the OS CSPRNG (production)", min=-1)


class _Stream:
    """One entity's counters: the open window, its counts, and the epoch."""

    def __init__(self, operator: DpCountOperator, epoch: int) -> None:
        p = operator.params
        seed = None if p.seed < 0 else p.seed + epoch
        kwargs = ({"epsilon": p.epsilon or math.sqrt(2 * p.rho)} if p.mechanism == "binary-laplace" else {"rho": p.rho})
        self.counters = [continual_counter(p.mechanism, p.horizon, seed=None if seed is None else seed * 1000 + c, **kwargs)
                         for c in range(len(p.categories))]
        self.top = (sum_select(p.horizon, len(p.categories), epsilon=epsilon_for(p.top_rho, TOP_DELTA), delta=TOP_DELTA,
                               seed=None if seed is None else seed * 1000 + 999)
                    if p.top_rho > 0 and len(p.categories) > 1 else None)
        self.epoch = epoch
        self.window = -1  # the open window's index (event time // window), -1 before any event
        self.counts = np.zeros(len(p.categories), dtype=np.int64)


class DpCountOperator(Operator):
    kind: ClassVar[str] = "dp_count"
    durable: ClassVar[bool] = True  # its budget outlives the entity's state (the ledger)
    findings: ClassVar[bool] = False  # its alerts are the scheduled releases
    Params: ClassVar[type] = DpCountParams

    def __init__(self, name: str, fields: Sequence[str], params: DpCountParams) -> None:
        super().__init__(name, fields, params)
        if len(self.fields) != 1:
            raise ParamError("fields", f"needs exactly one field, the category; got {list(self.fields)!r}")
        if not params.categories or len(set(params.categories)) != len(params.categories):
            raise ParamError("categories", f"needs distinct categories, got {params.categories!r}")
        self.window_ms = int(round(params.window_seconds * 1000))
        counts_rho = params.epsilon ** 2 / 2 if params.mechanism == "binary-laplace" and params.epsilon else params.rho
        self.epoch_cost = counts_rho + params.top_rho
        if self.epoch_cost > params.budget:
            raise ParamError("budget", f"{params.budget:g} cannot pay one epoch (rho + top_rho = {self.epoch_cost:g})")
        self.ledger = BudgetLedger(params.ledger, name, params.budget)
        self.index = {category: c for c, category in enumerate(params.categories)}
        self.streams: dict[str, _Stream] = {}
        self.slot_keys: dict[int, str] = {}
        # Columns of the release rows: the total, each category's count, the standard error of each count.
        self.columns = [name, *(f"{name}.{category}" for category in params.categories), f"{name}.stderr"]
        self.replays_paid: set[tuple[str, int]] = set()
        self.totals = {"released": 0, "refused": 0, "late": 0}

    @property
    def text_inputs(self) -> tuple[str, ...]:
        return self.fields

    @property
    def numeric_inputs(self) -> tuple[str, ...]:
        return ()

    @classmethod
    def contract_cases(cls) -> list[tuple[list[str], DpCountParams]]:
        import tempfile

        return [(["c2"], DpCountParams(categories=["p0", "p1", "p2"], window_seconds=30, horizon=16, rho=0.5, budget=100.0,
                                       ledger=tempfile.mkdtemp(prefix="vigil-dp-"), seed=3)),
                (["c2"], DpCountParams(categories=["p0", "p1"], window_seconds=20, horizon=8, mechanism="honaker",
                                       top_rho=0.2, rho=0.3, budget=100.0, ledger=tempfile.mkdtemp(prefix="vigil-dp-"),
                                       seed=4))]

    def process(self, batch: Batch) -> list[Alert]:
        codes = np.fromiter(map(self.index.get, batch.text(self.fields[0]).tolist(), [-1] * len(batch)), dtype=np.int64,
                            count=len(batch))
        rows = np.flatnonzero(codes >= 0)
        alerts: list[Alert] = []
        for column in self.columns:
            batch.scores[column] = np.full(len(batch), np.nan)
        names, first, inverse = np.unique(batch.keys[rows], return_index=True, return_inverse=True)
        by_entity = np.split(rows[np.argsort(inverse, kind="stable")], np.cumsum(np.bincount(inverse))[:-1])
        for entity in np.argsort(first).tolist():  # entities in order of first appearance, each its rows in order
            key, mine = str(names[entity]), by_entity[entity]
            stream = self.streams.get(key)
            if stream is None:
                stream = self.streams[key] = _Stream(self, self._epoch_of(key))
            self.slot_keys[int(batch.slots[mine[0]])] = key
            window = batch.ts_ms[mine] // self.window_ms
            opened = np.maximum.accumulate(np.maximum(window, stream.window))
            counted = window == opened  # events of an already closed window are late
            self.totals["late"] += int((~counted).sum())
            if stream.window < 0:
                stream.window = int(opened[0])
            start = 0
            for position in np.flatnonzero(np.diff(np.r_[stream.window, opened]) > 0).tolist():
                segment = slice(start, position)  # rows of the open window, before the row that opens a later one
                stream.counts += np.bincount(codes[mine[segment][counted[segment]]], minlength=len(self.index))
                alerts.append(self._close(batch, int(mine[position]), key, int(opened[position])))
                stream = self.streams[key]
                start = position
            stream.counts += np.bincount(codes[mine[start:][counted[start:]]], minlength=len(self.index))
        alerts.sort(key=lambda alert: alert.source.sort_key())
        return alerts

    def _epoch_of(self, key: str) -> int:
        """The epoch a stream starts in: after the epochs the ledger has paid for it (a restart resumes them)."""
        spent = self.ledger.spent(key)
        return int(math.ceil(spent / self.epoch_cost - 1e-9)) if spent else 0

    def _close(self, batch: Batch, row: int, key: str, new_window: int) -> Alert:
        """Release the open window (stepping the counters through the empty windows before ``new_window``) and return
        its record; without budget, the last release again."""
        stream = self.streams[key]
        if stream.counters[0].exhausted:
            stream = self._new_epoch(key, stream)
        released, why = self._pay(key, stream)
        if released:
            steps = np.zeros((new_window - stream.window, len(self.index)), dtype=np.int64)
            steps[0] = stream.counts
            self.ledger.record_step(key, stream.epoch, stream.counters[0].t + 1)  # written before the release
            estimates = [c.update_many(steps[:, i])[0] for i, c in enumerate(stream.counters)]
            top = stream.top.update_many(steps)[0] if stream.top is not None else None
        else:
            estimates, top = [c.last for c in stream.counters], None
        stream.window, stream.counts = new_window, np.zeros_like(stream.counts)
        self.totals["released" if released else "refused"] += 1
        step = stream.counters[0].t
        errors = [math.sqrt(c.variance(max(1, min(c.t, c.horizon)))) for c in stream.counters]
        for column, value in zip(self.columns, [sum(estimates), *estimates, errors[0]]):
            batch.scores[column][row] = value
        text = ", ".join(f"{category} {value:.0f} ± {error:.1f}"
                         for category, value, error in zip(self.params.categories, estimates, errors))
        reason = (f"window {step} of epoch {stream.epoch}: {text}"
                  + (f"; top {self.params.categories[int(top)]}" if top is not None else "")
                  + ("" if released else f"; {why}: last release repeated"))
        return self.alert(batch, row, score=float(sum(estimates)), severity="info", reason=reason,
                          fields=list(self.params.categories))

    def _new_epoch(self, key: str, stream: _Stream) -> _Stream:
        if self.ledger.spent(key) + self.epoch_cost > self.params.budget * (1 + 1e-12):
            return stream  # no budget: the exhausted counters keep repeating their last release
        fresh = _Stream(self, stream.epoch + 1)
        fresh.window, fresh.counts = stream.window, stream.counts
        self.streams[key] = fresh
        return fresh

    def _pay(self, key: str, stream: _Stream) -> tuple[bool, str]:
        """Whether the stream's next release may go out, paying for its epoch (or a replay) first if needed."""
        counter = stream.counters[0]
        if counter.exhausted:
            return False, "budget exhausted"
        if counter.t == 0 and not self.ledger.released_steps(key, stream.epoch):
            if not self.ledger.charge(key, self.epoch_cost, epoch=stream.epoch, why="epoch"):
                return False, "budget exhausted"
        elif self.ledger.released_steps(key, stream.epoch) > counter.t and (key, stream.epoch) not in self.replays_paid:
            # Restored from a snapshot older than the ledger: the releases again carry fresh noise, and cost again.
            if not self.ledger.charge(key, self.epoch_cost, epoch=stream.epoch, why="replay"):
                return False, "budget exhausted by a replay"
            self.replays_paid.add((key, stream.epoch))
        return True, ""

    def evict(self, slots: np.ndarray) -> None:
        """An evicted entity's counters are freed; its spent budget stays in the ledger, so when it returns it starts
        a new epoch, paid again."""
        for slot in slots.tolist():
            key = self.slot_keys.pop(int(slot), None)
            if key is not None:
                self.streams.pop(key, None)

    def readings(self) -> list[Reading]:
        spent = self.ledger.streams()
        mine = [key for key in self.streams]
        return [Reading("vigil_dp_budget_spent", (), sum(spent.get(key, 0.0) for key in mine)),
                Reading("vigil_dp_budget_total", (), self.params.budget * len(mine)),
                Reading("vigil_dp_streams_exhausted", (),
                        sum(spent.get(key, 0.0) + self.epoch_cost > self.params.budget * (1 + 1e-12) for key in mine)),
                *(Reading("vigil_dp_releases_total", (outcome,), count) for outcome, count in self.totals.items()),
                *(Reading("vigil_dp_released_count", (category,),
                          sum(float(np.asarray(s.counters[c].last)) for s in self.streams.values()))
                  for c, category in enumerate(self.params.categories))]

    def snapshot(self) -> dict[str, Any]:
        return {"totals": dict(self.totals), "slot_keys": {str(k): v for k, v in self.slot_keys.items()},
                "streams": {key: {"epoch": s.epoch, "window": s.window, "counts": s.counts.copy(),
                                  "counters": [c.snapshot() for c in s.counters],
                                  "top": s.top.snapshot() if s.top is not None else None}
                            for key, s in self.streams.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        self.totals = {name: int(count) for name, count in state["totals"].items()}
        self.slot_keys = {int(k): v for k, v in state["slot_keys"].items()}
        self.streams = {}
        for key, saved in state["streams"].items():
            stream = self.streams[key] = _Stream(self, int(saved["epoch"]))
            stream.window, stream.counts = int(saved["window"]), np.array(saved["counts"], dtype=np.int64)
            for counter, counter_state in zip(stream.counters, saved["counters"]):
                counter.restore(counter_state)
            if stream.top is not None:
                stream.top.restore(saved["top"])

    def state_bytes(self) -> int:
        return sum(c.state_bytes() for s in self.streams.values() for c in s.counters)
