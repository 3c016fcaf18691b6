"""The dataflow, run in-process with Bytewax's testing runner on a small stream with known output."""
from datetime import timedelta

import msgspec
import numpy as np
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from operators.alerting import AlertingParams
from operators.drift import DriftParams
from operators.batch import Batch
from operators.event import SourcePosition, alert_id
from operators.registry import OperatorChain, OperatorSpec
from operators.zscore import ZScoreParams
from pipeline.engine.dataflow import Batching, EntityLimits, ShardLogic, build_flow, shard_of
from pipeline.engine.decode import DeadLetter, RecordBatch, decode_batch, decode_event
from pipeline.engine.metrics import Metrics

SPECS = [
    OperatorSpec("zscore", "outlier", ("cpu",), ZScoreParams(warmup=20, alerting=AlertingParams(warmup=20))),
    OperatorSpec("drift", "drift", ("cpu",), DriftParams(detector="page_hinkley", detector_params={"threshold": 30.0})),
]


def payloads() -> list[bytes]:
    out = []
    for i in range(300):
        key = f"host-{i % 3}"
        value = 50.0 + (i % 2)                       # steady, tiny wiggle
        if i == 200:
            value = 90.0                              # one spike on host-2
        if key == "host-1" and i >= 240:
            value = 80.0                              # host-1 shifts level
        payload = msgspec.json.encode({"key": key, "ts": 1_767_225_600_000 + i * 1000, "fields": {"cpu": value}})
        out.append(payload)
    out[150] = b'{"key": "host-0", "ts": 1, "fields": {"cpu": 1e999}}'
    out[151] = b"not json"
    return out


def record_batches(size: int = 37) -> list[RecordBatch]:
    """The payloads of topic m, partition 0, read ``size`` at a time."""
    out = payloads()
    return [RecordBatch("m", 0, np.arange(start, min(start + size, len(out))), out[start : start + size])
            for start in range(0, len(out), size)]


ROOMY = EntityLimits(max_entities=100)  # every host keeps its state


def run_flow(batching: Batching, shards: int = 2, entities: EntityLimits = ROOMY, incidents: list | None = None):
    alerts, dead = [], []
    metrics = Metrics()
    flow = build_flow(
        source=TestingSource(record_batches(), batch_size=1),
        operator_specs=SPECS,
        alert_sink=TestingSink(alerts),
        dead_letter_sink=TestingSink(dead),
        incident_sink=None if incidents is None else TestingSink(incidents),
        incident_quiet_ms=10_000,
        metrics=metrics,
        shards=shards,
        batching=batching,
        entities=entities,
        max_event_bytes=4096,
    )
    run_main(flow)
    return alerts, dead, metrics


@pytest.mark.parametrize("batching", [Batching(16, timedelta(milliseconds=50)), Batching(1000, timedelta(0))])
def test_known_output(batching):
    alerts, dead, metrics = run_flow(batching)
    outlier = sorted((a.source.offset, a.key) for a in alerts if a.operator == "outlier")
    assert outlier[0] == (200, "host-2")
    assert {key for _, key in outlier[1:]} == {"host-1"} and outlier[1][0] == 241  # first host-1 event after the shift
    drift = sorted((a.source.offset, a.key) for a in alerts if a.operator == "drift")
    assert drift == [(200, "host-2"), (244, "host-1")]  # Page-Hinkley: the spike's jump, then the shift
    spike = next(a for a in alerts if a.source.offset == 200)
    assert spike.id == alert_id(SourcePosition(topic="m", partition=0, offset=200), "outlier")
    assert spike.ts == "2026-01-01T00:03:20.000Z" and spike.severity == "critical"

    assert sorted((d.source.offset, d.reason) for d in dead) == [(150, "non_finite"), (151, "bad_json")]
    sample = metrics.registry.get_sample_value
    assert sample("vigil_events_total", {"outcome": "valid"}) == 298
    assert sample("vigil_events_total", {"outcome": "invalid"}) == 2
    assert sample("vigil_alerts_total", {"operator": "outlier", "severity": "critical"}) >= 1
    assert sample("vigil_operator_state_bytes", {"operator": "outlier"}) > 0
    assert sample("vigil_drift_total", {"operator": "drift", "field": "cpu"}) == len(drift)
    assert sample("vigil_batch_size_sum") == 298


def test_alerts_become_incidents_that_resolve_in_event_time_whatever_the_batching():
    found = []
    for batching in (Batching(16, timedelta(milliseconds=50)), Batching(1000, timedelta(0)), Batching(1, timedelta(0))):
        incidents = []
        alerts, _, metrics = run_flow(batching, incidents=incidents)
        found.append(sorted(incidents, key=lambda i: (i.opened, i.id, i.state, i.alerts)))
    assert found[0] == found[1] == found[2]
    outlier = [(i.key, i.state, i.opened, i.resolved) for i in found[0] if i.operator == "outlier"]
    assert ("host-2", "resolved", "2026-01-01T00:03:20.000Z", "2026-01-01T00:03:30.000Z") in outlier  # the spike
    assert ("host-1", "opened", "2026-01-01T00:04:01.000Z", None) in outlier  # the shift's first alert
    host_1 = [i for i in found[0] if i.key == "host-1" and i.operator == "outlier"]
    host_1_alerts = [a for a in alerts if a.key == "host-1" and a.operator == "outlier"]
    assert len(host_1_alerts) > len({i.id for i in host_1})  # alerts grouped: fewer incidents than alerts
    sample = metrics.registry.get_sample_value
    assert sample("vigil_incidents_total", {"operator": "outlier", "state": "opened"}) == len(
        {i.id for i in found[0] if i.operator == "outlier"})


def test_open_incidents_are_in_the_shard_snapshot_and_resume():
    def logic(state=None):
        return ShardLogic(OperatorChain.build(SPECS, max_entities=100), Batching(1000, timedelta(0)), Metrics(), state,
                          incident_quiet_ms=3_600_000)

    batches = [decode_batch(records, ["cpu"], [], 4096)[0] for records in record_batches(size=30)]
    first = logic()
    before = [item for batch in batches[:9] for item in first.on_batch([batch])[0]]
    state = first.snapshot()
    assert len(state["incidents"]["open"]) >= 2  # host-2's spike and host-1's shift, open for an hour
    resumed = logic(state)
    assert resumed.incidents.snapshot() == state["incidents"]
    after = [item for batch in batches[9:] for item in resumed.on_batch([batch])[0]]
    uninterrupted = logic()
    whole = [item for batch in batches for item in uninterrupted.on_batch([batch])[0]]
    assert before + after == whole


def test_flow_output_equals_operator_chain_per_shard():
    """The engine adds routing and batching only: alerts equal the chains run directly per shard."""
    alerts, _, _ = run_flow(Batching(16, timedelta(milliseconds=50)), shards=2)
    chains = {s: OperatorChain.build(SPECS, max_entities=100) for s in range(2)}
    expected = []
    for offset, payload in enumerate(payloads()):
        event = decode_event(payload, SourcePosition(topic="m", partition=0, offset=offset), 4096)
        if not isinstance(event, DeadLetter):
            expected += chains[shard_of(event.key, 2)].process([event])
    key = lambda a: (a.source.offset, a.operator)  # noqa: E731
    assert sorted(alerts, key=key) == sorted(expected, key=key)


def test_shard_logic_snapshot_is_plain_data_and_resumes():
    logic = ShardLogic(OperatorChain.build(SPECS, max_entities=100), Batching(1000, timedelta(seconds=10)), Metrics(), None)
    batches = [decode_batch(records, ["cpu"], [], 4096)[0] for records in record_batches(size=30)[:4]]
    logic.on_batch(batches[:2])
    logic.on_eof()
    logic.on_batch(batches[2:])            # stays pending: max size and wait not reached
    assert logic.notify_at() is not None
    state = logic.snapshot()
    assert sum(len(part["keys"]) for part in state["pending"]) == 60 and isinstance(state["pending"][0]["keys"], list)
    resumed = ShardLogic(OperatorChain.build(SPECS, max_entities=100), Batching(1000, timedelta(seconds=10)), Metrics(), state)
    assert resumed.pending_rows == logic.pending_rows == 60
    assert list(resumed.on_eof()[0]) == list(logic.on_eof()[0])


def test_entity_limits_evict_and_metrics_count_it():
    """One shard holding at most 2 of the 3 hosts, which take turns: every event of a host finds it evicted."""
    _, _, metrics = run_flow(Batching(16, timedelta(milliseconds=50)), shards=1, entities=EntityLimits(max_entities=2))
    sample = metrics.registry.get_sample_value
    assert sample("vigil_entities") == 2
    # Every event but the first two evicts a host, except host-2's at offset 152, which follows its own at 149
    # (the records at 150 and 151 are dead letters).
    assert sample("vigil_entities_evicted_total", {"reason": "capacity"}) == 298 - 2 - 1
    assert sample("vigil_entities_evicted_total", {"reason": "ttl"}) == 0
    _, _, metrics = run_flow(Batching(16, timedelta(milliseconds=50)), shards=1,
                             entities=EntityLimits(max_entities=100, ttl_ms=500))  # events 1 s apart
    # Each event finds every other host idle for over 500 ms: all but the last event's host end up evicted.
    assert metrics.registry.get_sample_value("vigil_entities_evicted_total", {"reason": "ttl"}) == 298 - 1
    assert metrics.registry.get_sample_value("vigil_entities") == 1


def test_batches_grow_under_load_and_shrink_when_idle():
    metrics = Metrics()
    logic = ShardLogic(OperatorChain.build(SPECS, max_entities=100), Batching(2048, timedelta(milliseconds=50)),
                       metrics, None)
    rows = decode_batch(record_batches(size=300)[0], ["cpu"], [], 4096)[0]
    many = Batch.concat([rows] * 20)  # 6,000 rows at once: every batch fills its target
    logic.on_batch([many])
    sizes = [512, 1024, 2048, 2048]  # 368 rows stay pending
    assert logic.target == 2048 and metrics.registry.get_sample_value("vigil_batch_size_count") == 4
    assert metrics.registry.get_sample_value("vigil_batch_size_sum") == sum(sizes)
    logic.on_notify()  # the wait ended: the rest leaves, and less than half a target leaves the target halved
    assert logic.pending_rows == 0 and logic.target == 1024
    for _ in range(7):  # sparse input: ten rows per wait
        logic.on_batch([rows.rows(0, 10)])
        logic.on_notify()
    assert logic.target == 16
    assert metrics.registry.get_sample_value("vigil_batch_wait_seconds_count") == 4 + 1 + 7
