"""The shard's entity index: entity key to state slot, with eviction of idle and excess entities.

Every per-entity operator of a shard indexes its state by the slot this index gives a key, so one
index bounds the state of the whole chain. Two rules free slots (slots are then reused):

* **TTL** (``ttl_ms``, 0 = never): the shard keeps an event-time clock ``W``, the largest event time
  seen. An entity whose last event arrived while ``W`` was ``W_last`` expires once ``W - W_last >
  ttl_ms``: no event of it while the shard's event time moved on by more than the TTL. Measuring
  idleness on the shard clock (not on the entity's own, possibly late, timestamps) keeps expiry in
  access order.
* **Capacity** (``max_entities``): when a new entity arrives and the shard already holds
  ``max_entities``, the least recently seen entity is evicted.

Both rules are defined event by event, in stream order, and :meth:`EntityIndex.admit` applies them
exactly however the stream is cut into batches: a batch is cut into *segments* so that no entity is
evicted between two of its events inside one segment (a gap longer than the TTL, or more distinct
entities than the capacity, starts a new segment). Within a segment every eviction happens before
the segment's rows are processed, and each evicted slot is reset in every operator before reuse, so
results never depend on batch boundaries. An evicted entity that comes back starts from fresh state.

>>> index = EntityIndex(max_entities=2, ttl_ms=0)
>>> keys = np.array(["a", "b", "a", "c", "a", "b"], dtype=object)
>>> [(start, stop, slots.tolist(), evicted) for start, stop, slots, evicted in index.admit(keys, np.arange(6))]
[(0, 3, [0, 1, 0], {}), (3, 5, [1, 0], {'capacity': [1]}), (5, 6, [1], {'capacity': [1]})]
>>> list(index.live), index.evicted  # b, then c, was the least recently seen
(['a', 'b'], {'ttl': 0, 'capacity': 2})
"""
from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Any
from collections.abc import Iterator

import numpy as np

from kernels.state import Stateful

NEVER = -(2**62)  # the event-time clock before any event


def _first_cut(codes: np.ndarray, clock: np.ndarray, ttl_ms: int, max_entities: int) -> int:
    """The row at which the rows must be cut so that no entity is evicted between two of its rows
    (len(codes) when they need no cut)."""
    n = len(codes)
    cut = n
    first_rows = np.flatnonzero(np.r_[True, np.diff(np.sort(codes)) != 0])  # one per distinct code
    if len(first_rows) > max_entities:
        _, first = np.unique(codes, return_index=True)
        cut = int(np.sort(first)[max_entities])
    if ttl_ms:
        order = np.argsort(codes, kind="stable")
        next_row = np.full(n, n)
        same = codes[order[1:]] == codes[order[:-1]]
        next_row[order[:-1][same]] = order[1:][same]
        # An entity seen at row p expires at the first row whose clock passes clock[p] + ttl.
        expires = np.searchsorted(clock, clock + ttl_ms, side="right")
        early = (expires < n) & (expires <= next_row)
        if early.any():
            cut = min(cut, int(expires[early].min()))
    return max(cut, 1)


class EntityIndex(Stateful):
    """Key to slot for one shard, least recently seen first; see the module docstring."""

    def __init__(self, max_entities: int, ttl_ms: int = 0) -> None:
        if max_entities < 1:
            raise ValueError("max_entities must be at least 1")
        self.max_entities = max_entities
        self.ttl_ms = ttl_ms
        self.live: OrderedDict[str, list[int]] = OrderedDict()  # key -> [slot, clock at its last event]
        self.clock = NEVER
        self.free: list[int] = []  # released slots, reused last-in first-out
        self.next_slot = 0
        self.evicted = {"ttl": 0, "capacity": 0}  # totals, for metrics

    def __len__(self) -> int:
        return len(self.live)

    def admit(self, keys: np.ndarray, ts_ms: np.ndarray) -> Iterator[tuple[int, int, np.ndarray, dict[str, list[int]]]]:
        """Yield ``(start, stop, slots, evicted)`` per segment of the rows: the slot of each row in
        ``[start, stop)`` and the slots freed (by reason) that must be reset before the segment runs.
        Consume each segment before the next one: the index moves on as it yields."""
        if not len(keys):
            return
        _, codes = np.unique(keys, return_inverse=True)
        clock = np.maximum.accumulate(np.maximum(np.asarray(ts_ms, dtype=np.int64), self.clock))
        start = 0
        while start < len(keys):
            stop = start + _first_cut(codes[start:], clock[start:], self.ttl_ms, self.max_entities)
            slots, evicted = self._admit_segment(keys[start:stop], codes[start:stop], clock[start:stop])
            yield start, stop, slots, evicted
            start = stop

    def _admit_segment(self, keys: np.ndarray, codes: np.ndarray, clock: np.ndarray) -> tuple[np.ndarray, dict[str, list[int]]]:
        _, first_rows, inverse = np.unique(codes, return_index=True, return_inverse=True)
        order = np.argsort(first_rows, kind="stable")
        unique_slots = np.empty(len(first_rows), dtype=np.int64)
        evicted: dict[str, list[int]] = {}
        live, touched = self.live, 0  # the last `touched` entries of `live` were seen in this segment
        for u in order.tolist():
            row = int(first_rows[u])
            key, now = keys[row], int(clock[row])
            self._expire(now, len(live) - touched, evicted)
            entry = live.get(key)
            if entry is None:
                if len(live) >= self.max_entities:
                    self._evict_oldest("capacity", evicted)
                slot = self.free.pop() if self.free else self._new_slot()
                entry = live[key] = [slot, now]
            else:
                live.move_to_end(key)
            touched += 1
            unique_slots[u] = entry[0]
        # Entities outside the segment that expire by its end (a valid segment lets none of its own expire).
        self._expire(int(clock[-1]), len(live) - touched, evicted)
        # The segment's entities go to the back in order of their last event, stamped with its clock.
        last_rows = np.zeros(len(first_rows), dtype=np.int64)
        last_rows[inverse] = np.arange(len(codes))
        for u in np.argsort(last_rows, kind="stable").tolist():
            key = keys[int(last_rows[u])]
            live.move_to_end(key)
            live[key][1] = int(clock[last_rows[u]])
        self.clock = int(clock[-1])
        for reason, slots in evicted.items():
            self.evicted[reason] += len(slots)
        return unique_slots[inverse], evicted

    def _new_slot(self) -> int:
        self.next_slot += 1
        return self.next_slot - 1

    def _expire(self, now: int, untouched: int, evicted: dict[str, list[int]]) -> None:
        if not self.ttl_ms:
            return
        live = self.live
        while untouched and now - next(iter(live.values()))[1] > self.ttl_ms:
            self._evict_oldest("ttl", evicted)
            untouched -= 1

    def _evict_oldest(self, reason: str, evicted: dict[str, list[int]]) -> None:
        _, (slot, _) = self.live.popitem(last=False)
        self.free.append(slot)
        evicted.setdefault(reason, []).append(slot)

    @property
    def capacity(self) -> int:
        """Slots ever handed out: every slot is below it, and it never exceeds ``max_entities``."""
        return self.next_slot

    def snapshot(self) -> dict[str, Any]:
        return {
            "keys": list(self.live),
            "slots": np.array([entry[0] for entry in self.live.values()], dtype=np.int64),
            "seen": np.array([entry[1] for entry in self.live.values()], dtype=np.int64),
            "clock": self.clock,
            "free": np.array(self.free, dtype=np.int64),
            "next_slot": self.next_slot,
            "evicted": dict(self.evicted),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.live = OrderedDict((key, [int(slot), int(seen)]) for key, slot, seen
                                in zip(state["keys"], np.asarray(state["slots"]).tolist(), np.asarray(state["seen"]).tolist()))
        self.clock = int(state["clock"])
        self.free = np.asarray(state["free"], dtype=np.int64).tolist()
        self.next_slot = int(state["next_slot"])
        self.evicted = {reason: int(count) for reason, count in state["evicted"].items()}

    def state_bytes(self) -> int:
        """The map's own memory: the dict, its keys and entries (measured with ``sys.getsizeof``)."""
        if not self.live:
            return sys.getsizeof(self.live)
        entry = sys.getsizeof([0, 0]) + 2 * sys.getsizeof(2**40)
        keys = sum(map(sys.getsizeof, self.live))
        return sys.getsizeof(self.live) + keys + len(self.live) * entry + sys.getsizeof(self.free)


class ModelIndex(Stateful):
    """Model indices for the entity slots that need a model, handed out on first use and taken back on eviction, for
    operators whose per-entity state is large and only some entities use (a decision process among services).

    >>> models = ModelIndex()
    >>> models.assign(np.array([7, 2, 7]))[0].tolist(), models.assign(np.array([2, 5]))
    ([1, 0, 1], (array([0, 2]), array([2])))
    >>> models.release(np.array([7])).tolist(), models.assign(np.array([9]))[0].tolist()  # 9 reuses 7's model
    ([1], [1])
    """

    def __init__(self) -> None:
        self.of_slot = np.full(0, -1, dtype=np.int64)
        self.free: list[int] = []
        self.count = 0  # models ever handed out

    def assign(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model of each slot (new slots get one, a freed model first) and the models just handed out (to be
        reset by the caller)."""
        if len(slots) and slots.max() >= len(self.of_slot):
            self.of_slot = np.r_[self.of_slot, np.full(max(int(slots.max()) + 1, 2 * len(self.of_slot)) - len(self.of_slot),
                                                       -1, dtype=np.int64)]
        missing = np.unique(slots[self.of_slot[slots] < 0])
        reused = min(len(missing), len(self.free))
        fresh = np.r_[np.array(self.free[len(self.free) - reused:][::-1], dtype=np.int64),
                      np.arange(self.count, self.count + len(missing) - reused, dtype=np.int64)]
        del self.free[len(self.free) - reused:]
        self.count += len(missing) - reused
        self.of_slot[missing] = fresh
        return self.of_slot[slots], fresh

    def release(self, slots: np.ndarray) -> np.ndarray:
        """Take back the models of these slots; returns them."""
        slots = slots[slots < len(self.of_slot)]
        freed = self.of_slot[slots][self.of_slot[slots] >= 0]
        self.of_slot[slots] = -1
        self.free.extend(freed.tolist())
        return freed

    def snapshot(self) -> dict[str, Any]:
        return {"of_slot": self.of_slot.copy(), "free": list(self.free), "count": self.count}

    def restore(self, state: dict[str, Any]) -> None:
        self.of_slot = np.array(state["of_slot"], dtype=np.int64)
        self.free = [int(m) for m in state["free"]]
        self.count = int(state["count"])

    def state_bytes(self) -> int:
        return self.of_slot.nbytes + 8 * len(self.free)
