"""The fast outlier operator: detection, warm-up, and the kernel against a scalar reference.

Causality, batch-cut invariance, restore and eviction are checked for every operator in tests/contract."""
import numpy as np
import pytest

from kernels.ewma import RobustEwma, occurrence_rank
from operators.alerting import AlertingParams
from operators.batch import Batch
from operators.event import Event, SourcePosition
from operators.zscore import ZScoreOperator, ZScoreParams


def make_events(values: np.ndarray, keys: list[str]) -> list[Event]:
    return [
        Event(keys[i % len(keys)], i * 1000, {"a": float(row[0]), "b": float(row[1])},
              SourcePosition(topic="t", partition=0, offset=i))
        for i, row in enumerate(values)
    ]


@pytest.fixture
def stream():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(600, 2))
    values[400, 0] += 12.0
    return values, [f"e{i}" for i in range(7)]


def test_spike_is_flagged_and_warmup_is_unscored(stream):
    values, keys = stream
    op = ZScoreOperator("outlier", ["a", "b"], ZScoreParams(warmup=10, device="cpu", alerting=AlertingParams(warmup=20)))
    batch = Batch.from_events(make_events(values, keys))
    alerts = op.process(batch)
    assert [a.source.offset for a in alerts] == [400]
    spike = next(a for a in alerts if a.source.offset == 400)
    assert spike.fields == ["a"] and spike.severity == "critical" and spike.kind == "outlier"
    assert np.isnan(batch.scores["outlier"][: 10 * len(keys)]).all()  # each key's first 10 events


def test_occurrence_rank_orders_repeats():
    assert occurrence_rank(np.array([2, 2, 0, 2, 0])).tolist() == [0, 1, 0, 2, 1]


def test_kernel_matches_a_scalar_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(5, 2, size=300)
    x[200] = 40.0
    kernel = RobustEwma(1, alpha=0.05, clip=3.0, warmup=20, min_std=1e-6, device="cpu")
    got = kernel.score_and_learn(np.zeros(300, dtype=np.int64), x[:, None])[:, 0]
    mean = var = 0.0
    expected = []
    for n, value in enumerate(x):
        std = max(var, 1e-12) ** 0.5
        residual = value - mean
        warm = n >= 20
        expected.append(abs(residual) / std if warm else np.nan)
        if warm:
            residual = min(max(residual, -3 * std), 3 * std)
        weight = max(1 / (n + 1), 0.05)
        mean += weight * residual
        var = (1 - weight) * (var + weight * residual * residual)
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)
    assert got[200] > 10


def test_device_choice_honours_environment(monkeypatch):
    from kernels.device import select_device

    monkeypatch.setenv("VIGIL_DEVICE", "cpu")
    assert select_device("auto").type == "cpu"
    monkeypatch.setenv("VIGIL_DEVICE", "tpu")
    with pytest.raises(ValueError, match="tpu"):
        select_device("auto")
    assert select_device("cpu").type == "cpu"
