"""The contract every registered operator type passes, run over all of them (like river's check_estimator).

Each operator type supplies cheap fields and params (``contract_cases``); every check runs each case inside an
``OperatorChain`` (which owns the shard's entity index) over one multi-entity stream with numeric fields
``x0..x2``, text fields ``c0..c2``, groups, ids, delayed labels, gaps and spikes. Outputs compared are every published score
column (bit for bit, NaN included) and the alerts.
"""
from __future__ import annotations

import itertools

import msgspec
import numpy as np
import pytest

from operator_runs import is_plain
from operators.batch import Batch
from operators.event import Alert, Event, SourcePosition
from operators.registry import OPERATOR_TYPES, OperatorChain, OperatorSpec

TYPES = sorted(OPERATOR_TYPES)
CASES = [f"{name}-{i}" for name in TYPES for i in range(len(OPERATOR_TYPES[name].contract_cases()))]
N = 600


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: extra threads only wait


def stream(n: int = N, *, entities: int = 12, seed: int = 0, first: int = 0, keys=None) -> list[Event]:
    """Entities on their own scales with spikes, level shifts, missing and text values, structured categories, groups,
    event ids and delayed labels."""
    rng = np.random.default_rng(seed)
    label_rng = np.random.default_rng(seed + 1000)  # its own stream: the fields stay those of earlier versions
    decided: dict[str, list[tuple[str, int]]] = {}
    events = []
    for i in range(first, first + n):
        e = int(rng.integers(entities)) if keys is None else None
        key = f"e{e}" if keys is None else keys[i - first]
        level = 10.0 * (e or 0)
        x = level + rng.normal(size=3) * (1 + (e or 0) % 3)
        if rng.random() < 0.03:
            x[0] += 30.0
        if i >= first + n // 2 and (e or 0) % 4 == 0:  # a level shift for some entities: drift
            x[:2] += (25.0, 15.0)
        fields: dict = {"x0": float(x[0]), "x1": float(x[1]), "x2": float(x[2] + x[0])}
        dept = int(rng.integers(3))
        fields |= {"c0": f"u{dept}-{rng.integers(4)}", "c1": f"h{dept}-{rng.integers(2)}", "c2": f"p{rng.integers(3)}"}
        roll = rng.random()
        if roll < 0.03:
            del fields["x1"]
        elif roll < 0.05:
            fields["x2"] = "n/a"
        elif roll < 0.06:
            del fields["c1"]
        group = ("g0", "g1", None)[i % 3]
        # Decisions with ids; some events carry the label of an earlier decision of their entity, a few their own label.
        waiting = decided.setdefault(key, [])
        event_id, label, roll = f"r{i}", None, label_rng.random()
        if roll < 0.35 and waiting:
            event_id, label = waiting.pop(int(label_rng.integers(len(waiting))))
        elif roll < 0.43:
            event_id, label = None, int(x[0] + 0.5 * x[1] > level)
        else:
            waiting.append((event_id, int(x[0] + 0.5 * x[1] > level + (1.0 if group == "g1" else 0.0))))
        events.append(Event(key, 1_767_225_600_000 + i * 1000, fields, SourcePosition(topic="t", partition=0, offset=i),
                            group=group, id=event_id, label=label))
    return events


def chain_of(case: str, *, max_entities: int = 1000, ttl_ms: int = 0) -> OperatorChain:
    type_name, index = case.rsplit("-", 1)
    fields, params = OPERATOR_TYPES[type_name].contract_cases()[int(index)]
    return OperatorChain.build([OperatorSpec(type_name, "op", tuple(fields), params)], max_entities=max_entities, ttl_ms=ttl_ms)


def run(chain: OperatorChain, events: list[Event], sizes=(64,)) -> tuple[dict[str, np.ndarray], list[Alert]]:
    """Published columns (concatenated over batches) and alerts of ``events`` in batches of the given sizes (cycled)."""
    columns: dict[str, list[np.ndarray]] = {}
    alerts: list[Alert] = []
    start = 0
    for size in itertools.cycle(sizes):
        if start >= len(events):
            break
        found, batch = chain.process_batch(events[start : start + size])
        alerts += found
        for name, values in batch.scores.items():
            columns.setdefault(name, []).append(values)
        for name, band in batch.bands.items():  # the expected bands obey the same contract as the scores
            for part in ("expected", "lower", "upper"):
                columns.setdefault(f"band:{name}.{part}", []).append(getattr(band, part))
        start += size
    return {name: np.concatenate(parts) for name, parts in columns.items()}, alerts


def assert_same(a: tuple, b: tuple, rows: slice = slice(None)) -> None:
    (scores_a, alerts_a), (scores_b, alerts_b) = a, b
    assert scores_a.keys() == scores_b.keys()
    for name in scores_a:
        assert scores_a[name][rows].tobytes() == scores_b[name][rows].tobytes(), name
    assert alerts_a == alerts_b


def test_every_registered_type_is_covered():
    assert TYPES == ["ape", "apre_mss", "baseline", "cnn", "dp_count", "drift", "fair_decision", "fairness_monitor", "hst", "knn",
                     "knn_rshash", "metric_stream", "zscore"]
    assert len(CASES) >= len(TYPES)


@pytest.mark.parametrize("case", CASES)
def test_outputs_are_causal(case):
    events = stream()
    baseline = run(chain_of(case), events)
    other = stream(seed=99)
    for t in (150, 333):
        changed = run(chain_of(case), events[: t + 1] + [
            Event(e.key, e.ts_ms, o.fields, e.source, group=e.group) for e, o in zip(events[t + 1 :], other[t + 1 :])])
        for name in baseline[0]:
            assert changed[0][name][: t + 1].tobytes() == baseline[0][name][: t + 1].tobytes(), name
        assert [a for a in changed[1] if a.source.offset <= t] == [a for a in baseline[1] if a.source.offset <= t]
    assert baseline[1] or baseline[0], "the stream must make the operator publish or alert something"


BANDED = [case for case in CASES if case.rsplit("-", 1)[0] in ("baseline", "metric_stream", "zscore")]


def test_operators_with_a_level_model_publish_a_band():
    assert {case for case in CASES if "band:op.expected" in run(chain_of(case), stream()[:200])[0]} == set(BANDED)


@pytest.mark.parametrize("case", BANDED)
def test_the_band_holds_the_normal_values(case):
    events = stream()
    columns, _ = run(chain_of(case), events)
    fields = [name for name in ("x0", "x1", "x2") if name in chain_of(case).operators[0].numeric_inputs]
    values = np.array([[e.fields.get(name) if isinstance(e.fields.get(name), float) else np.nan for name in fields]
                       for e in events])
    expected, lower, upper = (columns[f"band:op.{part}"] for part in ("expected", "lower", "upper"))
    known = np.isfinite(expected) & np.isfinite(values)
    assert known.mean() > 0.5, "the band must be known once the operator is warm"
    assert np.all(lower[known] <= expected[known]) and np.all(expected[known] <= upper[known])
    inside = (lower[known] <= values[known]) & (values[known] <= upper[known])
    # Spikes (3 %) and the level shift of a quarter of the entities in the second half fall outside; the rest inside.
    assert inside.mean() >= 0.75, inside.mean()


@pytest.mark.parametrize("case", CASES)
def test_outputs_do_not_depend_on_batch_boundaries(case):
    events = stream()
    reference = run(chain_of(case), events, sizes=(1,))
    for sizes in ((7,), (64,), (N,), (1, 2, 3, 50, 97)):
        assert_same(run(chain_of(case), events, sizes=sizes), reference)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cut", [40, 337])
def test_snapshot_is_plain_data_and_restore_continues_identically(case, cut):
    events = stream()
    whole = run(chain_of(case), events, sizes=(50,))

    live = chain_of(case)
    head = run(live, events[:cut], sizes=(50,))
    state = live.snapshot()
    assert is_plain(state)
    tail_live = run(live, events[cut:], sizes=(50,))  # the snapshot must not follow the live operator
    restored = chain_of(case)
    restored.restore(state)
    tail_restored = run(restored, events[cut:], sizes=(50,))
    assert_same(tail_restored, tail_live)
    joined = ({name: np.concatenate([head[0][name], tail_live[0][name]]) for name in head[0]}, head[1] + tail_live[1])
    assert_same(joined, whole)
    # Sizes of Python-object state (river trees and detectors) are sizeof estimates that depend on how objects were built.
    assert 0.5 <= restored.state_bytes() / live.state_bytes() <= 2.0


@pytest.mark.parametrize("case", CASES)
def test_same_seed_same_outputs(case):
    events = stream()
    assert_same(run(chain_of(case), events), run(chain_of(case), events))


RETURN = 440  # the row at which "back" returns


def returning_entity_stream(rename_early: bool) -> list[Event]:
    """Entity "back" appears, then 40 others (one after another), then "back" again, 1 s apart;
    with ``rename_early`` its early events belong to another entity, so its return is its first appearance."""
    keys = ["back"] * 120 + [f"other-{i // 8}" for i in range(320)] + ["back"] * 120
    events = stream(len(keys), keys=keys, seed=5)
    if rename_early:  # after drawing the stream, so that both versions carry the same ids and labels
        events[:120] = [msgspec.structs.replace(event, key="early") for event in events[:120]]
    return events


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rule", ["capacity", "ttl"])
def test_an_evicted_entity_returns_with_fresh_state(case, rule):
    # capacity: at most 5 entities per shard; ttl: 20 s of event time without an event (others keep the clock moving).
    bounded = dict(max_entities=5) if rule == "capacity" else dict(max_entities=1000, ttl_ms=20_000)
    chain = chain_of(case, **bounded)
    evicted = run(chain, returning_entity_stream(rename_early=False))
    assert chain.entities.evicted[rule] > 0 and "back" in chain.entities.live
    fresh_chain = chain_of(case)
    fresh = run(fresh_chain, returning_entity_stream(rename_early=True))
    back = slice(RETURN, None)
    if OPERATOR_TYPES[case.rsplit("-", 1)[0]].durable:
        # A privacy ledger outlives the entity on purpose: the returning entity gets fresh counters in a new epoch, and
        # pays for it on top of what it spent before its eviction.
        evicted_op, fresh_op = chain.operators[0], fresh_chain.operators[0]
        assert evicted_op.streams["back"].epoch == 1 and fresh_op.streams["back"].epoch == 0
        assert evicted_op.ledger.spent("back") == pytest.approx(2 * fresh_op.ledger.spent("back"))
        return
    assert_same((evicted[0], [a for a in evicted[1] if a.source.offset >= RETURN]),
                (fresh[0], [a for a in fresh[1] if a.source.offset >= RETURN]), back)
    kept = run(chain_of(case), returning_entity_stream(rename_early=False))  # without eviction "back" remembers
    assert any(kept[0][name][back].tobytes() != fresh[0][name][back].tobytes() for name in kept[0]) or \
        [a for a in kept[1] if a.source.offset >= RETURN] != [a for a in fresh[1] if a.source.offset >= RETURN]


@pytest.mark.parametrize("case", CASES)
def test_entity_cap_bounds_the_state(case):
    keys = [f"k{i // 6}" for i in range(1800)]  # 300 entities, one after another
    events = stream(len(keys), keys=keys, seed=6)
    capped, uncapped = chain_of(case, max_entities=20), chain_of(case)
    run(capped, events)
    run(uncapped, events)
    assert len(capped.entities) == 20 and len(uncapped.entities) == 300
    assert capped.entities.capacity == 20
    assert capped.state_bytes() < uncapped.state_bytes()
    assert capped.state_bytes() == pytest.approx(run_size(case, events[-20 * 6 :]), rel=0.5)


def run_size(case: str, events: list[Event]) -> int:
    chain = chain_of(case)
    run(chain, events)
    return chain.state_bytes()


def test_a_batch_exposes_columns_only():
    batch = Batch.from_events(stream(20))
    assert not hasattr(batch, "events")
    for name, value in vars(batch).items():
        columns = value.values() if isinstance(value, dict) else [value]
        assert all(isinstance(column, np.ndarray) for column in columns), name
