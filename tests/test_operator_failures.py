"""An operator that raises: its batch's events are dead-lettered with the reason, the shard goes on with consistent
state, and too many failures in a row stop the run with a clear error."""
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

import msgspec
import numpy as np
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from operators.base import Operator
from operators.batch import Batch
from operators.event import Alert
from operators.params import param
from operators.registry import OperatorChain, OperatorFailure, OperatorFailuresExceeded, OperatorSpec, _OperatorTypes
from operators.zscore import ZScoreParams
from pipeline.engine.dataflow import Batching, EntityLimits, build_flow
from pipeline.engine.decode import RecordBatch
from pipeline.engine.metrics import Metrics
from pipeline.engine.resources import exception_chain

POISON = 666.0


@dataclass
class FlakyParams:
    poison: float = param(POISON, "a batch holding this value makes the operator raise")


class FlakyOperator(Operator):
    """Counts the rows it has seen (shard-wide state) and raises on a batch that holds the poison value, after
    half-updating its count (the kind of inconsistency a bug leaves behind)."""

    kind: ClassVar[str] = "outlier"
    Params: ClassVar[type] = FlakyParams

    def __init__(self, name, fields, params) -> None:
        super().__init__(name, fields, params)
        self.rows_seen = 0
        self.evicted: list[int] = []

    @classmethod
    def contract_cases(cls):
        return [(["x0"], FlakyParams())]

    def process(self, batch: Batch) -> list[Alert]:
        values = batch.matrix(self.fields)
        self.rows_seen += len(batch) // 2
        if (values == self.params.poison).any():
            raise ValueError("poisoned batch")
        self.rows_seen += len(batch) - len(batch) // 2
        return []

    def evict(self, slots: np.ndarray) -> None:
        self.evicted.extend(slots.tolist())

    def snapshot(self) -> dict[str, Any]:
        return {"rows_seen": self.rows_seen}

    def restore(self, state: dict[str, Any]) -> None:
        self.rows_seen = int(state["rows_seen"])

    def state_bytes(self) -> int:
        return 8


@pytest.fixture(autouse=True)
def flaky_type(monkeypatch):
    monkeypatch.setitem(_OperatorTypes._PATHS, "flaky", f"{__name__}:FlakyOperator")


SPECS = [OperatorSpec("zscore", "outlier", ("cpu",), ZScoreParams(warmup=5)),
         OperatorSpec("flaky", "flaky", ("cpu",), FlakyParams())]


def payloads(poisoned: set[int], n: int = 400) -> list[bytes]:
    return [msgspec.json.encode({"key": f"host-{i % 4}", "ts": 1_767_225_600_000 + i * 1000,
                                 "fields": {"cpu": POISON if i in poisoned else 50.0 + i % 3}}) for i in range(n)]


def run_flow(poisoned: set[int], max_operator_failures: int = 10):
    out = payloads(poisoned)
    records = [RecordBatch("m", 0, np.arange(start, min(start + 20, len(out))), out[start:start + 20])
               for start in range(0, len(out), 20)]
    scored, dead, metrics = [], [], Metrics()
    flow = build_flow(source=TestingSource(records, batch_size=1), operator_specs=SPECS, alert_sink=None,
                      dead_letter_sink=TestingSink(dead), scores_sink=TestingSink(scored), metrics=metrics, shards=1,
                      batching=Batching(20, timedelta(0)), entities=EntityLimits(100), max_event_bytes=4096,
                      max_operator_failures=max_operator_failures)
    run_main(flow)
    return scored, dead, metrics


def test_a_failing_batch_is_dead_lettered_and_the_shard_goes_on():
    scored, dead, metrics = run_flow(poisoned={45, 250})
    failed = sorted(d.source.offset for d in dead)
    assert failed == list(range(40, 60)) + list(range(240, 260))  # exactly the two poisoned batches, nothing else
    assert sorted(s.source.offset for s in scored) == sorted(set(range(400)) - set(failed))  # the others were scored
    letter = next(d for d in dead if d.source.offset == 45)
    assert letter.reason == "operator_error" and letter.detail == "flaky: ValueError: poisoned batch"
    assert msgspec.json.decode(letter.original_bytes()) == {"key": "host-1", "ts": "2026-01-01T00:00:45.000Z",
                                                           "fields": {"cpu": POISON}}
    registry = metrics.registry
    assert registry.get_sample_value("vigil_operator_failures_total", {"operator": "flaky"}) == 2
    assert registry.get_sample_value("vigil_events_invalid_total", {"reason": "operator_error"}) == 40


def test_consecutive_failures_stop_the_run_with_a_clear_error():
    with pytest.raises(Exception) as caught:
        run_flow(poisoned={5, 25, 45}, max_operator_failures=3)
    stopping = [e for e in exception_chain(caught.value) if isinstance(e, OperatorFailuresExceeded)]  # what `vigil run` logs
    assert [str(e) for e in stopping] == ["operator 'flaky' failed on 3 consecutive batches "
                                          "(pipeline.max_operator_failures); last error: ValueError: poisoned batch"]
    assert run_flow(poisoned={5, 45}, max_operator_failures=2)[1]  # two failures, but not in a row: the run goes on


def test_the_failing_operator_is_left_consistent():
    chain = OperatorChain.build(SPECS, max_entities=100)
    keys = np.array([f"host-{i % 4}" for i in range(20)], dtype=object)
    clean = Batch(keys, np.zeros(20, dtype=np.int64), np.arange(20) * 1000, np.full(20, "m", dtype=object),
                  np.zeros(20, dtype=np.int64), np.arange(20), numeric={"cpu": np.full(20, 50.0)})
    chain.run(clean)
    zscore, flaky = chain.operators
    before = zscore.snapshot()
    poisoned = clean.take(np.arange(20))
    poisoned.numeric["cpu"][3] = POISON
    with pytest.raises(OperatorFailure) as caught:
        chain.run(poisoned)
    assert caught.value.operator == "flaky" and caught.value.first_row == 0
    # Shard-wide state is rebuilt afresh (no half-counted batch); the operators before it finished the batch.
    assert chain.operators[1] is not flaky and chain.operators[1].rows_seen == 0
    assert chain.operators[0] is zscore and zscore.snapshot()["ewma"]["count"].sum() > before["ewma"]["count"].sum()


def test_an_operator_with_per_entity_state_forgets_the_failed_batch_entities(monkeypatch):
    monkeypatch.setattr(FlakyOperator, "entity_state", True)
    chain = OperatorChain.build(SPECS, max_entities=100)
    keys = np.array(["a", "b", "a", "c"], dtype=object)
    batch = Batch(keys, np.zeros(4, dtype=np.int64), np.arange(4) * 1000, np.full(4, "m", dtype=object),
                  np.zeros(4, dtype=np.int64), np.arange(4), numeric={"cpu": np.array([1.0, POISON, 2.0, 3.0])})
    flaky = chain.operators[1]
    with pytest.raises(OperatorFailure):
        chain.run(batch)
    assert chain.operators[1] is flaky and sorted(flaky.evicted) == sorted(set(batch.slots.tolist())) and len(flaky.evicted) == 3
