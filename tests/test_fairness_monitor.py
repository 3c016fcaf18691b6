"""The fairness_monitor operator: alerts on real gaps only, and its metrics through the dataflow."""
from datetime import timedelta

import msgspec
import numpy as np
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from operators.batch import Batch
from operators.event import Event, SourcePosition
from operators.fairness_monitor import OPPORTUNITY_SUFFIX, FairnessMonitorOperator, FairnessMonitorParams
from operators.label_join import LabelParams
from operators.registry import OperatorSpec
from pipeline.engine.dataflow import Batching, EntityLimits, build_flow
from pipeline.engine.decode import RecordBatch
from pipeline.engine.metrics import Metrics

START = 1_767_225_600_000
PARAMS = FairnessMonitorParams(groups=["a", "b"], window=500, min_decisions=50, parity_bound=0.1, opportunity_bound=0.1,
                               labels=LabelParams(ttl_seconds=600))


def decision_events(n: int, rates, seed: int, tpr=(0.8, 0.8)) -> list[Event]:
    """A user's model's decisions (field ``approved``) for groups a, b and z (not in the list), and their labels 30
    events later, built so that the true positive rates are ``rates`` and the true-positive rates ``tpr``."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 3, n)
    label = rng.random(n) < 0.4
    rate, hit = np.array([*rates, 0.5])[group], np.array([*tpr, 0.5])[group]
    approved = np.where(label, rng.random(n) < hit, rng.random(n) < (rate - 0.4 * hit) / 0.6)
    events = []
    for i in range(n + 30):
        if i < n:
            events.append(Event("desk", START + i * 1000, {"approved": float(approved[i])}, SourcePosition(file="d", line=i),
                                group="abz"[group[i]], id=f"d{i}"))
        if i >= 30:
            events.append(Event("desk", START + i * 1000, {}, SourcePosition(file="d", line=i), id=f"d{i - 30}",
                                label=int(label[i - 30])))
    return events


def monitor_run(events: list[Event], params: FairnessMonitorParams = PARAMS):
    op = FairnessMonitorOperator("parity", ["approved"], params)
    alerts, columns = [], {}
    for start in range(0, len(events), 200):
        batch = Batch.from_events(events[start:start + 200], numeric=["approved"], text=[])
        alerts += op.process(batch)
        for name, values in batch.scores.items():
            columns.setdefault(name, []).append(values)
    return op, alerts, {name: np.concatenate(parts) for name, parts in columns.items()}


def test_alerts_fire_on_a_gap_over_the_bound_and_rarely_without_one():
    fired = sum(any(a.reason.startswith("demographic-parity") for a in monitor_run(decision_events(3000, (0.6, 0.35), s))[1])
                for s in range(20))
    false = sum(bool(monitor_run(decision_events(3000, (0.45, 0.45), s))[1]) for s in range(20))
    assert fired == 20 and false <= 2  # a 0.25 gap against a 0.1 bound, each time; equal rates, seldom


def test_equal_opportunity_alert_comes_with_the_labels():
    op, alerts, columns = monitor_run(decision_events(4000, (0.5, 0.5), 3, tpr=(0.9, 0.55)))
    kinds = [a.reason.split(" gap")[0] for a in alerts]
    assert "equal-opportunity" in kinds
    first = next(a for a in alerts if a.reason.startswith("equal-opportunity"))
    assert "between a" in first.reason and first.score > 0.1
    opportunity = columns["parity" + OPPORTUNITY_SUFFIX]
    assert abs(opportunity[~np.isnan(opportunity)][-1] - 0.35) < 0.12
    assert op.join.totals["joined"] == 4000


def test_metrics_through_the_dataflow_use_configured_groups_only():
    events = decision_events(3000, (0.6, 0.35), 1)
    payloads = [msgspec.json.encode({"key": e.key, "ts": e.ts_ms, "fields": e.fields, "group": e.group, "id": e.id,
                                     "label": e.label}) for e in events]
    batches = [RecordBatch("d", 0, np.arange(s, min(s + 100, len(payloads))), payloads[s:s + 100])
               for s in range(0, len(payloads), 100)]
    alerts, metrics = [], Metrics()
    run_main(build_flow(source=TestingSource(batches, batch_size=1),
                        operator_specs=[OperatorSpec("fairness_monitor", "parity", ("approved",), PARAMS)],
                        alert_sink=TestingSink(alerts), dead_letter_sink=None, metrics=metrics, shards=4,
                        batching=Batching(128, timedelta(0)), entities=EntityLimits(max_entities=10), max_event_bytes=4096))
    sample = lambda name, **labels: metrics.registry.get_sample_value(name, {"operator": "parity", **labels})  # noqa: E731
    assert [a.kind for a in alerts][:1] == ["fairness"]
    assert sample("vigil_alerts_total", severity="warning") == len(alerts)
    for group in ("a", "b"):
        assert sample("vigil_fairness_window_decisions", group=group, window="parity") == 500
        low, rate, high = (sample("vigil_fairness_positive_ratio", group=group, window="parity", bound=b)
                           for b in ("lower", "estimate", "upper"))
        assert low < rate < high
    gap = {b: sample("vigil_fairness_gap_ratio", gap="parity", bound=b) for b in ("lower", "estimate", "upper")}
    assert gap["lower"] < 0.25 < gap["upper"] and gap["lower"] > 0.1
    assert sample("vigil_fairness_labels_total", outcome="joined") == 3000
    decided = sum(sample("vigil_fairness_decisions_total", group=g, decision=d) for g in "ab" for d in ("positive", "negative"))
    assert decided == sum(e.group in ("a", "b") and e.label is None for e in events)
    exposition = metrics.exposition().decode()
    assert 'group="z"' not in exposition  # groups outside the configured list never become label values


def test_bad_params_name_the_key():
    with pytest.raises(ValueError, match="fields"):
        FairnessMonitorOperator("parity", ["a", "b"], PARAMS)
    with pytest.raises(ValueError, match="groups"):
        FairnessMonitorOperator("parity", ["approved"], FairnessMonitorParams(groups=["a", "a"]))
