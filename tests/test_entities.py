"""The entity index applies its eviction rules event by event, however the stream is cut into batches."""
from collections import OrderedDict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.entities import EntityIndex


def reference(keys, ts, max_entities, ttl_ms):
    """The rules of operators.entities, one event at a time: for each event, whether its entity starts fresh."""
    live: OrderedDict = OrderedDict()  # key -> clock at its last event
    clock, fresh = -(2**62), []
    for key, t in zip(keys, ts):
        clock = max(clock, t)
        while ttl_ms and live and clock - next(iter(live.values())) > ttl_ms:
            live.popitem(last=False)
        if key in live:
            live.move_to_end(key)
            fresh.append(False)
        else:
            if len(live) >= max_entities:
                live.popitem(last=False)
            fresh.append(True)
        live[key] = clock
    return fresh, list(live)


def batched(keys, ts, max_entities, ttl_ms, cuts):
    """Fresh flags from the index: a row is fresh when its slot was new or evicted before its segment."""
    index = EntityIndex(max_entities, ttl_ms)
    owner: dict[int, str] = {}  # slot -> key holding it
    fresh = []
    bounds = [0, *sorted(set(cuts)), len(keys)]
    for lo, hi in zip(bounds, bounds[1:]):
        if lo == hi:
            continue
        for start, stop, slots, evicted in index.admit(np.array(keys[lo:hi], dtype=object), np.array(ts[lo:hi])):
            for slot in (s for freed in evicted.values() for s in freed):
                owner.pop(slot, None)
            seen_here = set()
            for key, slot in zip(keys[lo + start : lo + stop], slots.tolist()):
                fresh.append(key not in seen_here and owner.get(slot) != key)
                owner[slot] = key
                seen_here.add(key)
    assert len(index) <= max_entities and index.capacity <= max_entities
    return fresh, list(index.live)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 7), st.integers(-5, 30)), min_size=1, max_size=80),
    st.integers(1, 5),
    st.sampled_from([0, 10, 40]),
    st.lists(st.integers(0, 80), max_size=6),
)
def test_batched_admission_equals_the_event_by_event_rules(events, max_entities, ttl_ms, cuts):
    keys = [f"k{k}" for k, _ in events]
    ts, t = [], 0
    for _, step in events:  # event time mostly moves forward, sometimes back (late events)
        t += step
        ts.append(t)
    cuts = [c for c in cuts if c < len(keys)]
    assert batched(keys, ts, max_entities, ttl_ms, cuts) == reference(keys, ts, max_entities, ttl_ms)


def test_snapshot_restores_the_order_and_the_clock():
    index = EntityIndex(3, ttl_ms=100)
    list(index.admit(np.array(["a", "b", "c", "a"], dtype=object), np.array([0, 10, 20, 30])))
    copy = EntityIndex(3, ttl_ms=100)
    copy.restore(index.snapshot())
    assert list(copy.live) == ["b", "c", "a"] and copy.clock == 30
    later = np.array(["d", "b"], dtype=object), np.array([125, 126])
    assert [(s.tolist(), e) for *_, s, e in index.admit(*later)] == [(s.tolist(), e) for *_, s, e in copy.admit(*later)]
