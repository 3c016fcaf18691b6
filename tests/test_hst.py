"""Half-Space Trees outlier operator: river-exact scores, entity independence, explanations, memory, parameters.

Causality, batch-cut invariance, restore and eviction are checked for every operator in tests/contract."""
import gc
import math
import tracemalloc

import numpy as np
import pytest
from river.anomaly import HalfSpaceTrees

from operators.alerting import AlertingParams
from operator_runs import run_operator
from operators.batch import Batch
from operators.event import Event, SourcePosition
from operators.hst import HalfSpaceTreesOperator, HalfSpaceTreesParams, entity_seed
from operators.params import ParamError

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
    return run_operator(HalfSpaceTreesOperator.from_config("hst", fields, params), events, (batch_size,))[0]


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
            models[e.key] = HalfSpaceTrees(n_trees=params.n_trees, height=params.height, window_size=params.window_size,
                                           seed=seed)
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
    bad = [i for i, e in enumerate(events)
           if not all(isinstance(e.fields.get(f), (int, float)) and math.isfinite(e.fields[f]) for f in FIELDS)]
    assert bad and np.isnan(scores[bad]).all()
    clean = [e for i, e in enumerate(events) if i not in set(bad)]
    kept = np.delete(scores, bad)
    np.testing.assert_array_equal(operator_scores(clean, params), kept)  # dropping them changes nothing else


# ---- 2. restore ----

def test_restore_refuses_other_fields_or_tree_shape():
    op = HalfSpaceTreesOperator.from_config("hst", FIELDS, small())
    op.process(Batch.from_events(make_stream(200)))
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
    op.process(Batch.from_events(make_stream(300)))
    thresholds = {e.key: e.model.trees[0].threshold for e in op.entities.values()}
    assert len(set(thresholds.values())) == len(thresholds)


# ---- explanation, memory, parameters ----

def test_spike_scores_high_and_explanation_names_its_field():
    rng = np.random.default_rng(5)
    rows = rng.normal([50.0, 20.0, 3.0], [5.0, 2.0, 0.5], size=(2000, 3))
    rows[1900, 1] = 32.0  # six standard deviations, b only
    events = [Event("h", i * 60_000, dict(zip(FIELDS, map(float, row))), SourcePosition(topic="m", partition=0, offset=i))
              for i, row in enumerate(rows)]
    op = HalfSpaceTreesOperator.from_config("hst", FIELDS, HalfSpaceTreesParams())  # river's tree sizes, learned limits
    batch = Batch.from_events(events)
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
    assert op.trees_bytes() < 1000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        op.score(Batch.from_events(events))
        op.score(Batch.from_events([], numeric=FIELDS, text=[]))  # drops the per-row records of the batch
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    estimate = op.trees_bytes()
    assert 0.8 * traced <= estimate <= 1.05 * traced, (estimate, traced)


def test_invalid_parameters_are_rejected_with_their_key():
    with pytest.raises(ParamError, match=r"limits\.z: given for a field the operator does not read"):
        HalfSpaceTreesOperator.from_config("hst", ["a"], small(limits={"z": [0.0, 1.0]}))
    with pytest.raises(ParamError, match=r"limits\.a: must be \[low, high\] with finite low < high"):
        HalfSpaceTreesOperator.from_config("hst", ["a"], small(limits={"a": [1.0, 1.0]}))
    with pytest.raises(ParamError, match="order: 'whenever' is not allowed"):
        HalfSpaceTreesOperator.from_config("hst", ["a"], small(order="whenever"))
    with pytest.raises(ParamError, match="window_size: 0 is out of range"):
        HalfSpaceTreesOperator.from_config("hst", ["a"], small(window_size=0))
