"""The drift wrapper alarms exactly where river's detectors do, and survives snapshot and restore."""
import random

import numpy as np
import pytest
from river import drift

from kernels.adwin import AdwinBank
from kernels.page_hinkley import PageHinkleyBank
from operator_runs import is_plain, run_operator
from operators.batch import Batch
from operators.drift import DriftOperator, DriftParams
from operators.event import Event, SourcePosition
from operators.params import ParamError

# river's documented stream: 1000 draws from {0, 1}, then 1000 from 4..7.
rng = random.Random(12345)
STREAM = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)

CASES = [
    ("adwin", {}, drift.ADWIN),
    ("kswin", {"alpha": 1e-4, "seed": 42}, drift.KSWIN),
    ("page_hinkley", {}, drift.PageHinkley),
]


def river_alarms(factory, params) -> list[int]:
    detector = factory(**params)
    alarms = []
    for i, value in enumerate(STREAM):
        detector.update(value)
        if detector.drift_detected:
            alarms.append(i)
    return alarms


def events(key: str = "k") -> list[Event]:
    return [Event(key, i, {"x": float(v)}, SourcePosition(topic="t", partition=0, offset=i)) for i, v in enumerate(STREAM)]


def wrapper_alarms(operator: DriftOperator, evs: list[Event], batch_size: int) -> list[int]:
    return [a.source.offset for a in run_operator(operator, evs, (batch_size,))[1]]


@pytest.mark.parametrize("name,params,factory", CASES)
def test_wrapper_alarms_at_the_same_index_as_river(name, params, factory):
    expected = river_alarms(factory, params)
    assert expected, "the seeded stream must make river alarm"
    operator = DriftOperator("drift", ["x"], DriftParams(detector=name, detector_params=params))
    assert wrapper_alarms(operator, events(), batch_size=128) == expected


def test_documented_first_alarm_indices():
    assert river_alarms(drift.ADWIN, {})[0] == 1023
    assert river_alarms(drift.KSWIN, {"alpha": 1e-4, "seed": 42})[0] == 1016
    assert river_alarms(drift.PageHinkley, {})[0] == 1006


@pytest.mark.parametrize("name,params,factory", CASES)
def test_every_detector_type_snapshots_as_plain_data_and_keeps_its_alarm_indices(name, params, factory):
    """river keeps ADWIN's buckets in a native helper, KSWIN's window in a deque with a seeded generator:
    their plain snapshots must carry all of it."""
    evs = events()
    first = DriftOperator("drift", ["x"], DriftParams(detector=name, detector_params=params))
    before = [a.source.offset for a in first.process(Batch.from_events(evs[:1010]))]
    state = first.snapshot()
    assert is_plain(state)
    resumed = DriftOperator("drift", ["x"], DriftParams(detector=name, detector_params=params))
    resumed.restore(state)
    tail = Batch.from_events(evs[1010:])  # one entity: slot 0 in both batches
    assert before + [a.source.offset for a in resumed.process(tail)] == river_alarms(factory, params)


def test_entities_have_independent_detectors_and_one_alert_per_event():
    evs = events("a")[:1100] + events("b")[:900]
    operator = DriftOperator("drift", ["x", "y"], DriftParams(detector="page_hinkley"))
    for e in evs:
        e.fields["y"] = e.fields["x"]
    alerts = operator.process(Batch.from_events(evs))
    assert {a.key for a in alerts} == {"a"}
    assert all(a.fields == ["x", "y"] and a.score == 2.0 for a in alerts)
    assert len({a.id for a in alerts}) == len(alerts)


def test_unknown_detector_parameters_are_refused_with_their_key():
    with pytest.raises(ParamError, match=r"detector_params\.delt: unknown adwin parameter"):
        DriftOperator("drift", ["x"], DriftParams(detector="adwin", detector_params={"delt": 0.1}))


BANK_CASES = [
    (AdwinBank, drift.ADWIN, {}),
    (AdwinBank, drift.ADWIN, {"clock": 1, "delta": 0.05}),
    (AdwinBank, drift.ADWIN, {"max_buckets": 2, "clock": 4, "min_window_length": 20, "grace_period": 100}),
    (PageHinkleyBank, drift.PageHinkley, {}),
    (PageHinkleyBank, drift.PageHinkley, {"threshold": 5.0, "min_instances": 10}),
    (PageHinkleyBank, drift.PageHinkley, {"mode": "down", "threshold": 10.0, "alpha": 0.99}),
]


@pytest.mark.parametrize("bank_class,river_class,params", BANK_CASES)
def test_compiled_detectors_alarm_exactly_where_river_does_on_interleaved_streams(bank_class, river_class, params):
    """Five interleaved streams with level shifts, a variance change and a skewed stretch, fed in odd-sized
    batches, with a snapshot and restore half-way: every alarm at river's index (ADWIN's window grows through
    many bucket levels on the way)."""
    rng = np.random.default_rng(7)
    n, streams = 12_000, 5
    values = np.concatenate([rng.normal(0, 1, n // 4), rng.normal(0.5, 1, n // 4), rng.exponential(1, n // 4),
                             rng.normal(3, 2, n // 4)])
    detectors = rng.integers(0, streams, n)
    references = [river_class(**params) for _ in range(streams)]
    expected = []
    for i, (d, x) in enumerate(zip(detectors.tolist(), values.tolist())):
        references[d].update(x)
        if references[d].drift_detected:
            expected.append(i)
    assert len(expected) >= 5
    bank, got = bank_class(**params), []
    for start in range(0, n, 997):
        if start == 5982:
            resumed = bank_class(**params)
            resumed.restore(bank.snapshot())
            bank = resumed
        got += (start + np.flatnonzero(bank.update(detectors[start:start + 997], values[start:start + 997]))).tolist()
    assert got == expected
    if bank_class is AdwinBank:
        assert [bank.window_width(d) for d in range(streams)] == [r.width for r in references]
