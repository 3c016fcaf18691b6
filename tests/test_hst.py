"""Half-Space Trees outlier operator: river-exact scores, causality, snapshot and restore, entity independence."""
import gc
import math
import tracemalloc

import numpy as np
import pytest
from river.anomaly import HalfSpaceTrees

from operators.alerting import AlertingParams
from operators.base import Batch
from operators.event import Event, SourcePosition
from operators.hst import HalfSpaceTreesOperator, HalfSpaceTreesParams, entity_seed

FIELDS = ["a", "b", "c"]
TOY = [0.5, 0.45, 0.43, 0.44, 0.445, 0.45, 0.0]  # river 0.26.1, anomaly.HalfSpaceTrees docstring
TOY_SCORES = [0.107, 0.071, 0.107, 0.107, 0.107, 0.071, 0.853]


def small(**overrides) -> HalfSpaceTreesParams:
    params = dict(n_trees=5, height=4, window_size=20, seed=7, alerting=AlertingParams(window=100, warmup=30))
    params.update(overrides)
    return HalfSpaceTreesParams(**params)


def make_stream(n: int = 900, keys: int = 5, seed: int = 0) -> list[Event]:
    """Events of several entities on different scales, with gaps: absent fields, text, NaN and infinity."""
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        k = int(rng.integers(keys))
        fields = {"a": float(rng.normal(10 * k, 1 + k)), "b": float(rng.gamma(2.0, 50.0)), "c": int(rng.integers(0, 5))}
        roll = rng.random()
        if roll < 0.02:
            del fields["b"]
        elif roll < 0.03:
            fields["a"] = "n/a"
        elif roll < 0.035:
            fields["c"] = math.nan
        elif roll < 0.04:
            fields["b"] = math.inf
        elif roll < 0.05:
            fields["a"] += 40.0 * (1 + k)  # a spike
        events.append(Event(f"k{k}", i * 1000, fields, SourcePosition(topic="t", partition=0, offset=i)))
    return events


def operator_scores(events: list[Event], params: HalfSpaceTreesParams, batch_size: int = 64, fields=FIELDS) -> np.ndarray:
    op = HalfSpaceTreesOperator.from_config("hst", fields, params)
    out = []
    for start in range(0, len(events), batch_size):
        batch = Batch(events[start : start + batch_size])
        op.process(batch)
        out.append(batch.scores["hst"])
    return np.concatenate(out) if out else np.empty(0)


def river_scores(events: list[Event], params: HalfSpaceTreesParams, fields=FIELDS) -> np.ndarray:
    """The documented semantics, computed with plain river models and no operator code (except the seed).

    Pass 1 finds each key's limits (given ones, or its first window's range widened by the margin).
    Pass 2 feeds one river HalfSpaceTrees per key, built up front, with the scaled usable events.
    """
    usable = [
        all(e.fields.get(f).__class__ in (int, float) and math.isfinite(e.fields[f]) for f in fields) for e in events
    ]
    first_window: dict[str, list[list[float]]] = {}
    for e, ok in zip(events, usable):
        if ok:
            first_window.setdefault(e.key, [])
            if len(first_window[e.key]) < params.window_size:
                first_window[e.key].append([float(e.fields[f]) for f in fields])
    limits = {}
    for key, rows in first_window.items():
        bounds = []
        for col, name in enumerate(fields):
            if name in params.limits:
                bounds.append(tuple(params.limits[name]))
                continue
            values = [row[col] for row in rows]
            low, high = min(values), max(values)
            pad = params.limits_margin * (high - low) if high > low else 0.5 * (abs(low) or 1.0)
            bounds.append((low - pad, high + pad))
        limits[key] = bounds
    models = {}
    scores = np.full(len(events), np.nan)
    for i, (e, ok) in enumerate(zip(events, usable)):
        if not ok:
            continue
        if e.key not in models:
            seed = entity_seed(params.seed, e.key) if params.per_entity_seed else params.seed
            models[e.key] = HalfSpaceTrees(n_trees=params.n_trees, height=params.height, window_size=params.window_size, seed=seed)
        model = models[e.key]
        x = {f: (e.fields[f] - low) / (high - low) for f, (low, high) in zip(fields, limits[e.key])}
        if params.order == "learn_then_score":
            model.learn_one(x)
        if not model._first_window:  # river's placeholder 0 is NaN in the operator
            scores[i] = model.score_one(x)
        if params.order == "score_then_learn":
            model.learn_one(x)
    return scores


def toy_events(values) -> list[Event]:
    return [Event("only", i, {"x": v}, SourcePosition(file="toy", line=i)) for i, v in enumerate(values)]


TOY_PARAMS = dict(n_trees=5, height=3, window_size=3, seed=42, per_entity_seed=False, limits={"x": [0.0, 1.0]})


# ---- 1. river's documented example, and bit-exactness against plain river ----

def test_reproduces_river_documented_example_bit_for_bit():
    params = HalfSpaceTreesParams(**TOY_PARAMS, order="learn_then_score")
    scores = operator_scores(toy_events(TOY[:3] + TOY), params, fields=["x"])

    hst = HalfSpaceTrees(n_trees=5, height=3, window_size=3, seed=42)  # the docstring, verbatim
    for x in TOY[:3]:
        hst.learn_one({"x": x})
    expected = []
    for x in TOY:
        hst.learn_one({"x": x})
        expected.append(hst.score_one({"x": x}))

    assert [round(s, 3) for s in scores[3:].tolist()] == TOY_SCORES
    assert [float.hex(s) for s in scores[3:].tolist()] == [float.hex(s) for s in expected]
    assert np.isnan(scores[:2]).all()  # river's first window is not complete yet: its placeholder 0 is NaN here


def test_toy_in_causal_order_matches_river_score_then_learn():
    params = HalfSpaceTreesParams(**TOY_PARAMS)  # order defaults to score_then_learn
    scores = operator_scores(toy_events(TOY[:3] + TOY), params, fields=["x"])
    hst = HalfSpaceTrees(n_trees=5, height=3, window_size=3, seed=42)
    expected = []
    for x in TOY[:3] + TOY:
        expected.append(hst.score_one({"x": x}) if not hst._first_window else math.nan)
        hst.learn_one({"x": x})
    np.testing.assert_array_equal(scores, expected)
    assert np.isnan(scores[:3]).all() and scores[-1] > 0.5


@pytest.mark.parametrize("overrides", [
    {},
    {"order": "learn_then_score"},
    {"per_entity_seed": False, "limits_margin": 0.0},
    {"limits": {"b": [0.0, 400.0], "c": [0, 4]}},
    {"limits": {"a": [-10.0, 60.0], "b": [0.0, 400.0], "c": [0.0, 4.0]}, "order": "learn_then_score"},
])
def test_operator_equals_plain_river_per_entity(overrides):
    events = make_stream()
    params = small(**overrides)
    got = operator_scores(events, params)
    expected = river_scores(events, params)
    np.testing.assert_array_equal(got, expected)  # bit for bit, NaN in the same places
    assert np.isfinite(got).sum() > 600


def test_unusable_events_score_nan_and_are_not_learned():
    events = make_stream(400)
    params = small()
    scores = operator_scores(events, params)
    bad = [i for i, e in enumerate(events) if not all(isinstance(e.fields.get(f), (int, float)) and math.isfinite(e.fields[f]) for f in FIELDS)]
    assert bad and np.isnan(scores[bad]).all()
    clean = [e for i, e in enumerate(events) if i not in set(bad)]
    kept = np.delete(scores, bad)
    np.testing.assert_array_equal(operator_scores(clean, params), kept)  # dropping them changes nothing else


# ---- 2. causality and batch boundaries ----

def test_changing_events_after_t_never_changes_scores_up_to_t():
    events = make_stream()
    params = small()
    baseline = operator_scores(events, params)
    for t in (10, 150, 437, 800):
        changed = events[: t + 1] + make_stream(len(events) - t - 1, seed=t + 1)
        altered = operator_scores(changed, params)
        np.testing.assert_array_equal(altered[: t + 1], baseline[: t + 1])
        assert not np.array_equal(altered[t + 1 :], baseline[t + 1 :], equal_nan=True)


def test_scores_do_not_depend_on_batch_boundaries():
    events = make_stream(500)
    params = small()
    reference = operator_scores(events, params, batch_size=1)
    for size in (7, 64, 500):
        np.testing.assert_array_equal(operator_scores(events, params, batch_size=size), reference)


# ---- 3. snapshot and restore ----

def plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biuf"
    return value is None or isinstance(value, (bool, int, float, str, bytes))


@pytest.mark.parametrize("overrides", [{}, {"order": "learn_then_score"}, {"limits": {"a": [-10.0, 60.0], "b": [0.0, 400.0], "c": [0.0, 4.0]}}])
def test_snapshot_restore_continues_bit_identically(overrides):
    events = make_stream(900, keys=5)
    late = [Event("late", 10_000 + i, {"a": 1.0 + i, "b": 2.0, "c": 3}, SourcePosition(topic="t", partition=1, offset=i)) for i in range(30)]
    head = events[:500] + late[:7]  # "late" has fewer than window_size events at the snapshot
    tail = [e for pair in zip(events[500:], late[7:] + [None] * 400) for e in pair if e is not None]
    params = small(**overrides)

    whole = HalfSpaceTreesOperator.from_config("hst", FIELDS, params)
    first = HalfSpaceTreesOperator.from_config("hst", FIELDS, params)
    whole.process(Batch(head))
    first.process(Batch(head))
    state = first.snapshot()
    assert plain(state)
    scorer = state["scorer"]
    if not params.limits:
        assert "late" in scorer["pending_keys"] and "late" not in scorer["keys"]  # its trees are not built yet
    resumed = HalfSpaceTreesOperator.from_config("hst", FIELDS, params)
    resumed.restore(state)
    again = resumed.snapshot()["scorer"]
    for name, value in scorer.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(again[name], value)
        elif name == "pending":
            assert all(np.array_equal(x, y) for x, y in zip(again[name], value)) and len(again[name]) == len(value)
        else:
            assert again[name] == value

    for start in range(0, len(tail), 97):
        batch_whole, batch_resumed = Batch(tail[start : start + 97]), Batch(tail[start : start + 97])
        assert whole.process(batch_whole) == resumed.process(batch_resumed)
        np.testing.assert_array_equal(batch_resumed.scores["hst"], batch_whole.scores["hst"])
        np.testing.assert_array_equal(batch_resumed.scores["hst.p"], batch_whole.scores["hst.p"])
    late_rows = [i for i, e in enumerate(tail) if e.key == "late"]
    assert np.isfinite(operator_scores(head + tail, params, batch_size=10_000)[len(head) + late_rows[-1]])


def test_restore_refuses_other_fields_or_tree_shape():
    op = HalfSpaceTreesOperator.from_config("hst", FIELDS, small())
    op.process(Batch(make_stream(200)))
    state = op.snapshot()
    with pytest.raises(ValueError, match="fields"):
        HalfSpaceTreesOperator.from_config("hst", ["a", "b"], small()).restore(state)
    with pytest.raises(ValueError, match="height"):
        HalfSpaceTreesOperator.from_config("hst", FIELDS, small(height=5)).restore(state)


# ---- 4. entities are independent ----

def test_entities_do_not_influence_each_other():
    events = make_stream(900, keys=4)
    params = small()
    for key in ("k0", "k3"):
        rows = [i for i, e in enumerate(events) if e.key == key]
        alone = operator_scores([events[i] for i in rows], params)
        mixed = operator_scores(events, params)[rows]
        np.testing.assert_array_equal(alone, mixed)
        other = make_stream(900, keys=4, seed=99)
        others_changed = [e if e.key == key else Event(e.key, e.ts_ms, other[i].fields, e.source) for i, e in enumerate(events)]
        np.testing.assert_array_equal(operator_scores(others_changed, params)[rows], alone)


def test_per_entity_seeds_differ_and_are_stable():
    assert entity_seed(7, "k0") != entity_seed(7, "k1") and entity_seed(7, "k0") == entity_seed(7, "k0")
    op = HalfSpaceTreesOperator.from_config("hst", FIELDS, small())
    op.process(Batch(make_stream(300)))
    thresholds = {key: e.model.trees[0].threshold for key, e in op.entities.items()}
    assert len(set(thresholds.values())) == len(thresholds)


# ---- explanation, memory, parameters ----

def test_spike_scores_high_and_explanation_names_its_field():
    rng = np.random.default_rng(5)
    rows = rng.normal([50.0, 20.0, 3.0], [5.0, 2.0, 0.5], size=(2000, 3))
    rows[1900, 1] = 32.0  # six standard deviations, b only
    events = [Event("h", i * 60_000, dict(zip(FIELDS, map(float, row))), SourcePosition(topic="m", partition=0, offset=i))
              for i, row in enumerate(rows)]
    op = HalfSpaceTreesOperator.from_config("hst", FIELDS, HalfSpaceTreesParams())  # river's tree sizes, learned limits
    batch = Batch(events)
    op.process(batch)
    scores = batch.scores["hst"]
    assert np.isnan(scores[:250]).all() and np.isfinite(scores[250:]).all()
    assert scores[1900] >= np.percentile(scores[250:], 99.5)
    reason, fields = op.explain(batch, 1900)
    assert fields == ["b"] and reason.startswith("a=47.071, b=32, c=2.96645 lies where") and "isolated by b in" in reason


def test_scorer_bytes_tracks_the_real_memory():
    params = small(n_trees=10, height=6, window_size=50)
    events = make_stream(1500, keys=12)
    op = HalfSpaceTreesOperator.from_config("hst", FIELDS, params)
    assert op.scorer_bytes() < 1000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        op.score(Batch(events))
        op.score(Batch([]))  # drops the per-row records of the batch
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    estimate = op.scorer_bytes()
    assert 0.8 * traced <= estimate <= 1.05 * traced, (estimate, traced)


def test_invalid_parameters_are_rejected():
    with pytest.raises(ValueError, match="does not read"):
        HalfSpaceTreesOperator.from_config("hst", ["a"], small(limits={"z": [0.0, 1.0]}))
    with pytest.raises(ValueError, match="low < high"):
        HalfSpaceTreesOperator.from_config("hst", ["a"], small(limits={"a": [1.0, 1.0]}))
    with pytest.raises(ValueError, match="order"):
        HalfSpaceTreesOperator.from_config("hst", ["a"], small(order="whenever"))
    with pytest.raises(ValueError, match="window_size"):
        HalfSpaceTreesOperator.from_config("hst", ["a"], small(window_size=0))
