"""The fair_decision operator through the dataflow: decisions now, labels later (some past the TTL, some never)."""
from datetime import timedelta

import msgspec
import numpy as np
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from kernels.aranyani import ForestBank
from kernels.standardise import RunningStandardiser
from operators.fair_decision import FairDecisionOperator, FairDecisionParams
from operators.label_join import LabelParams
from operators.params import ParamError
from operators.registry import OperatorSpec
from pipeline.engine.dataflow import Batching, EntityLimits, build_flow
from pipeline.engine.decode import RecordBatch
from pipeline.engine.metrics import Metrics

TTL_S = 200
START = 1_767_225_600_000
PARAMS = FairDecisionParams(groups=["a", "b"], fairness=10.0, labels=LabelParams(ttl_seconds=TTL_S, max_pending=400))


def applications(n: int, seed: int = 0):
    """Decisions of two desks one second apart, and their labels: most within the TTL, some after it, some never."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    group = rng.integers(0, 2, n)
    x[:, 0] -= 0.8 * group  # group b has lower incomes...
    label = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.normal(size=n) > 0).astype(int)  # ...and so fewer positive labels
    delay = np.where(rng.random(n) < 0.8, rng.integers(1, 150, n), rng.integers(TTL_S + 50, TTL_S + 250, n))
    never = rng.random(n) < 0.1
    records = []
    for i in range(n):
        desk = f"desk-{i % 2}"
        records.append((START + i * 1000, 0, {"key": desk, "ts": START + i * 1000, "id": f"app-{i}", "group": "ab"[group[i]],
                                              "fields": {"income": float(x[i, 0]), "debt": float(x[i, 1])}}))
        if not never[i]:
            ts = START + (i + int(delay[i])) * 1000
            records.append((ts, 1, {"key": desk, "ts": ts, "id": f"app-{i}", "label": str(label[i]), "fields": {}}))
    records.sort(key=lambda r: (r[0], r[1]))
    return [msgspec.json.encode(event) for _, _, event in records], x, group, label, delay, never


def run(payloads, batching: Batching, params: FairDecisionParams = PARAMS):
    scored, metrics = [], Metrics()
    batches = [RecordBatch("apps", 0, np.arange(start, min(start + 50, len(payloads))), payloads[start:start + 50])
               for start in range(0, len(payloads), 50)]
    flow = build_flow(source=TestingSource(batches, batch_size=1),
                      operator_specs=[OperatorSpec("fair_decision", "credit", ("income", "debt"), params)],
                      alert_sink=None, dead_letter_sink=None, scores_sink=TestingSink(scored), metrics=metrics, shards=2,
                      batching=batching, entities=EntityLimits(max_entities=100), max_event_bytes=4096)
    run_main(flow)
    return scored, metrics


def reference(x, group, label, delay, never, ttl_s=TTL_S):
    """Each desk's decisions from the training pairs the stream defines: a label joins its decision when it arrives
    within the TTL; the forest learns from joined pairs in arrival order and decides with what it has learned so far."""
    n, decisions = len(x), {}
    for desk in (0, 1):
        apps = np.arange(desk, n, 2)
        inputs = np.column_stack([x[apps], group[apps] == 0, group[apps] == 1])  # the fields, then the group one-hot
        scaled = RunningStandardiser(4).transform(inputs)
        events = [(START + i * 1000, 0, k) for k, i in enumerate(apps)]
        events += [(START + (i + int(delay[i])) * 1000, 1, k) for k, i in enumerate(apps) if not never[i] and delay[i] <= ttl_s]
        events.sort()
        rows = [k for _, _, k in events]
        targets = [label[apps[k]] if kind else -1 for _, kind, k in events]
        forest = ForestBank(4, fairness=10.0, seed=0)
        predictions = forest.learn(scaled[rows], np.array(targets), group[apps][rows])
        for (_, kind, k), prediction in zip(events, predictions):
            if not kind:
                decisions[f"app-{apps[k]}"] = float(prediction)
    return decisions


@pytest.mark.parametrize("batching", [Batching(64, timedelta(milliseconds=20)), Batching(1000, timedelta(0))])
def test_delayed_labels_train_exactly_the_joined_pairs_and_count_late_and_never(batching):
    n = 3000
    payloads, x, group, label, delay, never = applications(n)
    scored, metrics = run(payloads, batching)
    decisions = {event.id: event.scores["credit"] for event in scored if event.scores["credit"] is not None}
    assert decisions == reference(x, group, label, delay, never)  # every decision, made before its label, as expected
    assert {event.id for event in scored if event.scores["credit"] is None} == {f"app-{i}" for i in np.flatnonzero(~never)}

    sample = lambda name, **labels: metrics.registry.get_sample_value(name, {"operator": "credit", **labels})  # noqa: E731
    on_time, late = ~never & (delay <= TTL_S), ~never & (delay > TTL_S)
    assert sample("vigil_fairness_labels_total", outcome="joined") == on_time.sum()
    assert sample("vigil_fairness_labels_total", outcome="late") == late.sum()
    # Unlabelled decisions stop waiting once the clock (the last event of their desk) passes their TTL.
    last = {desk: max(START + (i + (0 if never[i] else int(delay[i]))) * 1000 for i in range(desk, n, 2)) for desk in (0, 1)}
    expired = [last[i % 2] - (START + i * 1000) > TTL_S * 1000 for i in range(n)]
    waiting = ~on_time & ~np.array(expired)
    assert sample("vigil_fairness_labels_total", outcome="never") == (~on_time & np.array(expired)).sum()
    assert sample("vigil_fairness_pending_decisions") == waiting.sum()
    # Training on the late labels too would have given other decisions: the check sees which pairs were joined.
    assert decisions != reference(x, group, label, delay, never, ttl_s=10 * TTL_S)


def test_state_stays_bounded_as_the_stream_grows():
    small = FairDecisionParams(groups=["a", "b"], labels=LabelParams(ttl_seconds=TTL_S, max_pending=50))
    sizes = []
    for n in (1000, 4000):
        payloads = applications(n, seed=1)[0]
        _, metrics = run(payloads, Batching(256, timedelta(0)), small)
        sizes.append(metrics.registry.get_sample_value("vigil_operator_state_bytes", {"operator": "credit"}))
        assert metrics.registry.get_sample_value("vigil_fairness_pending_decisions", {"operator": "credit"}) <= 2 * 50
    assert sizes[1] <= 1.05 * sizes[0]


def test_bad_params_name_the_key():
    with pytest.raises(ParamError, match="groups"):
        FairDecisionOperator("credit", ["income"], FairDecisionParams(groups=["a"]))
    with pytest.raises(ParamError, match="fields"):
        FairDecisionOperator("credit", [], FairDecisionParams(groups=["a", "b"]))
