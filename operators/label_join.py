"""Delayed labels: decisions wait for their labels, which arrive later as events with the same id, in bounded state.

A decision is made on an event with an ``id`` and no label; its label comes later in an event with the same ``id``
and key (so the same shard and entity) and a ``label``. :class:`LabelJoin` keeps the decisions of one operator waiting
for their labels, each with a payload (what the operator needs when the label comes: the inputs and the decision), and
joins each label event to the latest earlier decision with its id, under two bounds:

* **TTL** (``ttl_ms``): a label joins only while the event-time clock (the largest event time seen) has moved on by at
  most ``ttl_ms`` since its decision;
* **capacity**: a label joins only while fewer than ``capacity`` decisions came after its decision (the waiting
  decisions are a ring of that size).

Outcomes are counted: ``joined``; ``late``, a label with no decision waiting (past the TTL or the capacity, already
labelled, its entity evicted, or never decided here); ``never``, a decision that left the state unlabelled. Joins are
defined row by row in stream order, so they do not depend on how the stream is cut into batches. Vectorised: the
id lookups go through a dict in C (``map``), never a Python loop per event.

>>> from operators.event import Event, SourcePosition
>>> events = [Event("desk", t, {}, SourcePosition(file="f", line=t), id=i, label=l)
...           for t, i, l in [(0, "a", None), (1, "b", None), (2, "a", 1), (9, "b", 0), (9, "c", 1)]]
>>> batch = Batch.from_events(events)
>>> join = LabelJoin(ttl_ms=5, capacity=100, width=1)
>>> joined = join.join(batch, decided=batch.label == None, payload=np.arange(5.0)[:, None],  # noqa: E711
...                    groups=np.zeros(5, dtype=np.int64), labels=np.array([-1, -1, 1, 0, 1]))
>>> joined.rows.tolist(), joined.payload[:, 0].tolist(), join.totals  # "b" expired at t = 9, "c" was never decided
([2], [0.0], {'joined': 1, 'late': 2, 'never': 1})
"""
from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from kernels.state import Stateful, tensor_bytes
from operators.batch import Batch
from operators.entities import NEVER
from operators.params import param

OUTCOMES = ("joined", "late", "never")


@dataclass
class LabelParams:
    """How labels are read and how long decisions wait for them."""

    positive: list[str] = param(["1", "true"], "label values (as text; a boolean reads as 1 or 0) of the positive "
                                              "class; any other label is negative")
    ttl_seconds: float = param(86400.0, "event time a decision waits for its label", min=0.0, unit="seconds")
    max_pending: int = param(100000, "decisions waiting for labels per shard at most (the oldest leaves first)", min=1)


def group_codes(groups: np.ndarray, names: list[str]) -> np.ndarray:
    """The index of each row's group in the configured list ``names``; -1 for others and for none.

    >>> group_codes(np.array(["b", None, "z", "a"], dtype=object), ["a", "b"]).tolist()
    [1, -1, -1, 0]
    """
    index = {name: code for code, name in enumerate(names)}
    return np.fromiter(map(index.get, groups.tolist(), itertools.repeat(-1)), dtype=np.int64, count=len(groups))


class Joined(NamedTuple):
    """Label rows that joined a decision, in stream order, with the decision's payload and group and the label."""

    rows: np.ndarray
    payload: np.ndarray
    groups: np.ndarray
    labels: np.ndarray


def label_codes(labels: np.ndarray, positive: frozenset[str]) -> np.ndarray:
    """1 where a label's text is one of ``positive`` (a boolean reads as 1 or 0), 0 for other labels, -1 where there is
    none. Each distinct value is read once (labels take few values); the rows are looked up in C.

    >>> label_codes(np.array([None, "1", 0, True, "no"], dtype=object), frozenset({"1", "true"})).tolist()
    [-1, 1, 0, 1, 0]
    """
    values = labels.tolist()
    codes = {value: -1 if value is None else int(str(int(value) if isinstance(value, bool) else value) in positive)
             for value in set(values)}
    return np.fromiter(map(codes.__getitem__, values), dtype=np.int64, count=len(values))


class LabelJoin(Stateful):
    """Decisions waiting for their labels, joined by event id (module docstring).

    Parameters
    ----------
    ttl_ms
        Event time a decision waits for its label.
    capacity
        Decisions waiting at most (a ring: the oldest leaves when a new one arrives).
    width
        Floats of payload per decision.
    """

    def __init__(self, ttl_ms: int, capacity: int, width: int) -> None:
        self.ttl_ms, self.capacity, self.width = ttl_ms, capacity, width
        self.ids = np.full(capacity, None, dtype=object)
        self.seq = np.full(capacity, -1, dtype=np.int64)  # the decision's number, -1 for an empty place
        self.clock_at = np.zeros(capacity, dtype=np.int64)
        self.slot = np.zeros(capacity, dtype=np.int64)
        self.group = np.zeros(capacity, dtype=np.int64)
        self.waiting = np.zeros(capacity, dtype=np.bool_)
        self.payload = np.zeros((capacity, width))
        self.next_seq = 0
        self.clock = NEVER
        self.totals = dict.fromkeys(OUTCOMES, 0)
        self.index: dict[str, int] = {}  # id -> number of its latest decision (stale entries are checked and pruned)

    def __len__(self) -> int:
        return int(self.waiting.sum())

    def join(self, batch: Batch, *, decided: np.ndarray, payload: np.ndarray, groups: np.ndarray,
             labels: np.ndarray) -> Joined:
        """Add the decisions of ``batch`` (rows ``decided`` with an id; their ``payload`` and ``groups`` rows are kept)
        and join its label rows (``labels`` >= 0, with an id) to waiting decisions, in stream order."""
        n = len(batch)
        if not n:
            return Joined(np.zeros(0, dtype=np.int64), np.zeros((0, self.width)), np.zeros(0, dtype=np.int64),
                          np.zeros(0, dtype=np.int64))
        has_id = batch.ids != None  # noqa: E711 - element-wise
        clock = np.maximum.accumulate(np.maximum(batch.ts_ms, self.clock))
        new_rows = np.flatnonzero(decided & has_id)
        new_seq = self.next_seq + np.arange(len(new_rows))
        before = self.next_seq + np.searchsorted(new_rows, np.arange(n))  # decisions numbered before each row
        label_rows = np.flatnonzero((labels >= 0) & has_id)

        # Candidates in this batch: the latest earlier decision row with the same id.
        in_batch = np.full(len(label_rows), -1, dtype=np.int64)  # index into new_rows
        if len(new_rows) and len(label_rows):
            rows = np.r_[new_rows, label_rows]
            _, codes = np.unique(batch.ids[rows].astype(str), return_inverse=True)
            order = np.lexsort((rows, codes))
            is_decision = order < len(new_rows)
            latest = np.maximum.accumulate(np.where(is_decision, np.arange(len(order)), -1))
            for_label = order >= len(new_rows)
            found = latest[for_label]
            same = (found >= 0) & (codes[order[np.maximum(found, 0)]] == codes[order[for_label]])
            in_batch[order[for_label] - len(new_rows)] = np.where(same, order[np.maximum(found, 0)], -1)
        # Otherwise the waiting decision with the id.
        stored = np.fromiter(map(self.index.get, batch.ids[label_rows].tolist(), itertools.repeat(-1)), dtype=np.int64,
                             count=len(label_rows))
        use_stored = (in_batch < 0) & (stored >= 0)
        from_batch = in_batch >= 0
        place = np.where(use_stored, stored % self.capacity, 0)
        row_of = np.r_[new_rows, 0][in_batch]  # the in-batch decision's row (index -1 picks the padding)
        seq = np.where(from_batch, np.r_[new_seq, 0][in_batch], np.where(use_stored, stored, -1))
        decision_clock = np.where(from_batch, clock[row_of], self.clock_at[place])
        decision_slot = np.where(from_batch, batch.slots[row_of], self.slot[place])
        valid = (seq >= 0) & (before[label_rows] - seq < self.capacity) & (clock[label_rows] - decision_clock <= self.ttl_ms) \
            & (decision_slot == batch.slots[label_rows])
        valid &= from_batch | (self.waiting[place] & (self.seq[place] == stored))
        # The first label of a decision joins it; later ones are late.
        first = np.zeros(len(label_rows), dtype=np.bool_)
        _, firsts = np.unique(np.where(valid, seq, -1 - np.arange(len(label_rows))), return_index=True)
        first[firsts] = True
        valid &= first
        matched_batch, matched_store = valid & from_batch, valid & use_stored
        joined = Joined(
            label_rows[valid],
            np.where(from_batch[valid][:, None], payload[row_of[valid]], self.payload[place[valid]]),
            np.where(from_batch[valid], groups[row_of[valid]], self.group[place[valid]]),
            labels[label_rows[valid]],
        )
        self.waiting[place[matched_store]] = False
        self.totals["joined"] += int(valid.sum())
        self.totals["late"] += int(len(label_rows) - valid.sum())

        # The batch's decisions enter the ring (the last `capacity` of them), pushing out the oldest.
        keep = np.ones(len(new_rows), dtype=np.bool_)
        keep[in_batch[matched_batch]] = False
        tail = slice(max(0, len(new_rows) - self.capacity), None)
        places = new_seq[tail] % self.capacity
        self.totals["never"] += int(self.waiting[places].sum()) + int(keep[: tail.start].sum())
        rows = new_rows[tail]
        self.ids[places], self.seq[places], self.clock_at[places] = batch.ids[rows], new_seq[tail], clock[rows]
        self.slot[places], self.group[places], self.waiting[places] = batch.slots[rows], groups[rows], keep[tail]
        self.payload[places] = payload[rows]
        self.index.update(zip(batch.ids[rows][keep[tail]].tolist(), new_seq[tail][keep[tail]].tolist()))
        self.next_seq += len(new_rows)
        self.clock = int(clock[-1])
        self._expire()
        return joined

    def _expire(self) -> None:
        expired = self.waiting & (self.clock - self.clock_at > self.ttl_ms)
        self._drop(expired)
        if len(self.index) > 2 * self.capacity:  # prune stale ids, amortised
            self._rebuild_index()

    def _drop(self, mask: np.ndarray) -> None:
        self.totals["never"] += int(mask.sum())
        self.waiting &= ~mask

    def _rebuild_index(self) -> None:
        places = np.flatnonzero(self.waiting)
        places = places[np.argsort(self.seq[places], kind="stable")]  # a later decision of an id wins
        self.index = dict(zip(self.ids[places].tolist(), self.seq[places].tolist()))

    def evict(self, slots: np.ndarray) -> None:
        """Decisions of evicted entities stop waiting (a returning entity starts fresh)."""
        self._drop(self.waiting & np.isin(self.slot, slots))

    def snapshot(self) -> dict[str, Any]:
        return {"ids": self.ids.tolist(), "seq": self.seq.copy(), "clock_at": self.clock_at.copy(), "slot": self.slot.copy(),
                "group": self.group.copy(), "waiting": self.waiting.copy(), "payload": self.payload.copy(),
                "next_seq": self.next_seq, "clock": self.clock, "totals": dict(self.totals)}

    def restore(self, state: dict[str, Any]) -> None:
        self.ids[:] = state["ids"]
        for name in ("seq", "clock_at", "slot", "group", "waiting", "payload"):
            getattr(self, name)[...] = state[name]
        self.next_seq, self.clock = int(state["next_seq"]), int(state["clock"])
        self.totals = {name: int(count) for name, count in state["totals"].items()}
        self._rebuild_index()

    def state_bytes(self) -> int:
        return tensor_bytes([self.seq, self.clock_at, self.slot, self.group, self.waiting, self.payload]) \
            + self.ids.nbytes + sys.getsizeof(self.index)
