"""The fast outlier operator: causality, batch independence, snapshot and restore."""
import numpy as np
import pytest

from kernels.ewma import RobustEwma, occurrence_rank
from operators.alerting import AlertingParams
from operators.base import Batch
from operators.event import Event, SourcePosition
from operators.zscore import ZScoreOperator, ZScoreParams


def make_events(values: np.ndarray, keys: list[str]) -> list[Event]:
    return [
        Event(keys[i % len(keys)], i * 1000, {"a": float(row[0]), "b": float(row[1])}, SourcePosition(topic="t", partition=0, offset=i))
        for i, row in enumerate(values)
    ]


def scores_of(events: list[Event], batch_size: int) -> np.ndarray:
    op = ZScoreOperator("outlier", ["a", "b"], ZScoreParams(warmup=10, device="cpu"))
    out = []
    for start in range(0, len(events), batch_size):
        batch = Batch(events[start : start + batch_size])
        op.process(batch)
        out.append(batch.scores["outlier"])
    return np.concatenate(out)


@pytest.fixture
def stream():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(600, 2))
    values[400, 0] += 12.0
    return values, [f"e{i}" for i in range(7)]


def test_changing_events_after_t_never_changes_scores_up_to_t(stream):
    values, keys = stream
    baseline = scores_of(make_events(values, keys), batch_size=64)
    for t in (50, 257, 399, 400):
        changed = values.copy()
        changed[t + 1 :] = np.random.default_rng(t).normal(50, 30, size=changed[t + 1 :].shape)
        altered = scores_of(make_events(changed, keys), batch_size=64)
        np.testing.assert_array_equal(altered[: t + 1], baseline[: t + 1])
        assert not np.allclose(np.nan_to_num(altered[t + 1 :]), np.nan_to_num(baseline[t + 1 :]))


def test_scores_do_not_depend_on_batch_composition(stream):
    values, keys = stream
    events = make_events(values, keys)
    reference = scores_of(events, batch_size=1)
    for size in (7, 64, 600):
        np.testing.assert_array_equal(scores_of(events, batch_size=size), reference)


def test_spike_is_flagged_and_warmup_is_unscored(stream):
    values, keys = stream
    op = ZScoreOperator("outlier", ["a", "b"], ZScoreParams(warmup=10, device="cpu", alerting=AlertingParams(warmup=20)))
    batch = Batch(make_events(values, keys))
    alerts = op.process(batch)
    assert [a.source.offset for a in alerts] == [400]
    spike = next(a for a in alerts if a.source.offset == 400)
    assert spike.fields == ["a"] and spike.severity == "critical" and spike.kind == "outlier"
    assert np.isnan(batch.scores["outlier"][: 10 * len(keys)]).all()  # each key's first 10 events


def test_snapshot_restore_continues_identically(stream):
    values, keys = stream
    events = make_events(values, keys)
    whole = ZScoreOperator("o", ["a", "b"], ZScoreParams(device="cpu"))
    first = ZScoreOperator("o", ["a", "b"], ZScoreParams(device="cpu"))
    first.process(Batch(events[:300]))
    state = first.snapshot()
    assert set(state["scorer"]) == {"keys", "mean", "var", "count"} and all(isinstance(k, str) for k in state["scorer"]["keys"])
    assert set(state["alerting"]) == {"keys", "scores", "count", "last_ts", "mean_gap_ms"}
    resumed = ZScoreOperator("o", ["a", "b"], ZScoreParams(device="cpu"))
    resumed.restore(state)
    whole.process(Batch(events[:300]))
    tail_whole, tail_resumed = Batch(events[300:]), Batch(events[300:])
    assert whole.process(tail_whole) == resumed.process(tail_resumed)
    np.testing.assert_array_equal(tail_whole.scores["o"], tail_resumed.scores["o"])


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
