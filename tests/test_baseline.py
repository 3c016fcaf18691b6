"""The default outlier operator (operators/baseline.py) and its kernels (kernels/baseline.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from kernels.baseline import FirstCrossing, LongMemoryReference, chi2_quantile, neglog10_chi2
from operators.alerting import AlertingParams
from operators.baseline import BaselineOperator, BaselineParams
from operators.batch import FILE_PARTITION, Batch
from operators.guardrails import GuardrailParams
from operators.zscore import ZScoreOperator, ZScoreParams

MINUTE_MS = 60_000


def batch_of(values: np.ndarray, names: list[str], start: int = 0, key: str = "host-1") -> Batch:
    n = len(values)
    rows = np.arange(start, start + n, dtype=np.int64)
    return Batch(np.full(n, key, dtype=object), np.zeros(n, dtype=np.int64), rows * MINUTE_MS,
                 np.full(n, "f", dtype=object), np.full(n, FILE_PARTITION, dtype=np.int64), rows,
                 numeric={name: values[:, j] for j, name in enumerate(names)})


def correlated(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    load = rng.normal(size=n)
    return np.c_[50 + 10 * load, 200 + 20 * load + 2 * rng.normal(size=n), 5 + rng.normal(size=n)]


@pytest.mark.parametrize("d", [1, 2, 7])
def test_the_reference_precision_is_the_inverse_of_the_shrunk_covariance(d):
    rows = np.random.default_rng(d).normal(size=(640, d)) @ np.random.default_rng(9).normal(size=(d, d))
    reference = LongMemoryReference(d, shrinkage=0.01)
    reference.score_and_learn(np.zeros(640, dtype=np.int64), np.arange(640), rows)
    cov = reference.cov[0]
    expected = np.linalg.inv(cov + 0.01 * np.diag(np.diag(cov)) + 1e-12 * np.eye(d))
    np.testing.assert_allclose(reference.precision[0], expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("d", [1, 4, 19, 38])
def test_the_chi_square_surprise_is_close_to_the_exact_tail(d):
    for m in (d * 2.0, d * 4.0, d + 10 * np.sqrt(d)):
        exact = -np.log10(stats.chi2.sf(m, d))
        assert neglog10_chi2(m, d) == pytest.approx(exact, rel=0.1, abs=0.05)
    assert chi2_quantile(1e-3, d) == pytest.approx(stats.chi2.isf(1e-3, d), rel=0.05)


def test_a_long_incident_keeps_scoring_where_a_fast_z_score_has_absorbed_it():
    normal, names = correlated(9000), ["cpu", "requests", "errors"]
    incident = correlated(600, seed=1) + [40.0, 80.0, 4.0]  # four standard deviations on every field, ten hours
    late = slice(240, 360)  # the fifth and sixth hours
    scores = {}
    for operator in (BaselineOperator.from_config("b", names, BaselineParams()),
                     ZScoreOperator.from_config("z", names, ZScoreParams())):
        operator.process(batch_of(normal, names))
        batch = batch_of(incident, names, start=9000)
        operator.process(batch)
        scores[operator.name] = np.median(batch.scores[operator.name][late])
    assert scores["b"] > 2.5  # p < 0.003 hours in: still away from the long-run reference
    assert scores["z"] < 1.5  # about one standard deviation: the fast reference has moved to the incident


def test_a_change_that_lasts_becomes_the_new_level():
    names = ["cpu", "requests", "errors"]
    operator = BaselineOperator.from_config("b", names, BaselineParams(rebaseline_seconds=6 * 3600.0))
    operator.process(batch_of(correlated(9000), names))
    shifted = batch_of(correlated(1200, seed=2) + [40.0, 80.0, 4.0], names, start=9000)
    operator.process(shifted)
    scores = shifted.scores["b"]
    assert np.median(scores[:300]) > 3  # the first five hours: the shift is anomalous
    assert np.median(scores[400:]) < 1.5  # six hours of event time on, it is the reference
    assert operator.long.streak_start[0] == -1


def test_fields_that_break_their_relationship_are_named_and_ranked_first():
    names = ["cpu", "requests", "errors"]
    operator = BaselineOperator.from_config("b", names, BaselineParams(alerting=AlertingParams(warmup=100)))
    operator.process(batch_of(correlated(3000), names))
    odd = np.array([[60.0, 180.0, 5.0]])  # cpu one std up while requests are one std down
    batch = batch_of(odd, names, start=3000)
    alerts = operator.process(batch)
    contributions = operator.field_contributions(batch)[0]
    assert set(np.argsort(-contributions)[:2]) == {0, 1}
    assert contributions[2] < 0.2 * contributions[:2].min()
    assert [sorted(alert.fields) for alert in alerts] == [["cpu", "requests"]]
    assert "long-run level and relationships" in alerts[0].reason


def test_the_alert_column_crosses_once_per_burst_while_the_score_stays_high():
    names = ["cpu", "requests", "errors"]
    operator = BaselineOperator.from_config("b", names, BaselineParams())
    operator.process(batch_of(correlated(3000), names))
    burst = batch_of(correlated(60, seed=3) + [60.0, 120.0, 6.0], names, start=3000)
    operator.process(burst)
    gated = burst.scores["b.alert"]
    assert gated[0] > 0.5
    assert np.count_nonzero(gated >= BaselineParams().alert_threshold) <= 4  # a few first crossings, not sixty
    assert (burst.scores["b"] > 5).all()  # while the score stays high


def test_a_spike_on_a_daily_cycle_alerts_on_narrow_events():
    rng = np.random.default_rng(4)
    t = np.arange(4000)
    cycle = 5 * np.sin(2 * np.pi * t / 1440)
    rows = np.c_[50 + cycle + rng.normal(size=4000), 100 + 2 * cycle + 2 * rng.normal(size=4000)]
    rows[3500, 0] += 9.0  # nine standard deviations, inside the day's range
    names = ["cpu", "latency_ms"]
    operator = BaselineOperator.from_config("b", names, BaselineParams())
    alerts = operator.process(batch_of(rows, names))
    spike_alerts = [a for a in alerts if a.source.line == 3500]
    assert spike_alerts and spike_alerts[0].fields == ["cpu"]
    assert len(alerts) <= 8  # 2.8 days at a budget of one per day: the gates keep it lower


def test_one_field_alerts_through_its_pattern_detector_once_for_a_new_range():
    rng = np.random.default_rng(1)
    values = np.r_[20 + rng.uniform(-1, 1, size=700), 45.0, 20 + rng.uniform(-1, 1, size=50)][:, None]
    operator = BaselineOperator.from_config("b", ["cpu"], BaselineParams())
    alerts = operator.process(batch_of(values, ["cpu"]))
    assert [(a.source.line, a.fields) for a in alerts] == [(700, ["cpu"])]
    assert "unlike its stream's history" in alerts[0].reason


def test_without_per_field_parts_one_field_alerts_through_the_long_reference():
    rng = np.random.default_rng(1)
    values = np.r_[20 + rng.normal(size=1500), 45.0, 20 + rng.normal(size=50)][:, None]
    operator = BaselineOperator.from_config("b", ["cpu"], BaselineParams(per_field_max_fields=0))
    alerts = operator.process(batch_of(values, ["cpu"]))
    assert [a.source.line for a in alerts] == [1500]


def test_a_row_with_a_missing_field_is_not_scored_by_the_long_reference_nor_learned():
    reference = LongMemoryReference(2)
    rows = np.random.default_rng(0).normal(size=(100, 2))
    rows[50, 1] = np.nan
    surprise, residual = reference.score_and_learn(np.zeros(100, dtype=np.int64), np.arange(100), rows)
    assert np.isnan(surprise[50]) and np.isnan(residual[50]).all()
    assert reference.count[0] == 99


def test_the_gate_emits_only_above_each_of_its_recent_surprises():
    gate = FirstCrossing(refractory=2, saturation=10.0)
    gated = gate.gate(np.array([0, 0, 0, 1, 0], dtype=np.int64), np.array([5.0, 3.0, 4.0, 1.0, 30.0]))
    assert gated.tolist() == [0.5, 0.0, 0.0, 0.1, 1.0]


def test_wide_events_run_without_the_per_field_parts():
    names = [f"m{i}" for i in range(19)]
    operator = BaselineOperator.from_config("b", names, BaselineParams())
    assert operator.patterns is None and operator.fast is None
    assert set(operator.snapshot()) == {"alerting", "long", "gate_long"}


def test_guardrails_compare_with_the_long_reference_mean():
    names = ["cpu", "requests", "errors"]
    rows = np.r_[correlated(3000), [[0.0, 0.0, 5.0]], correlated(50, seed=5), [[100.0, 400.0, 5.0]]]
    alerted = {}
    for direction in ("both", "up"):
        operator = BaselineOperator.from_config("b", names, BaselineParams(guardrails=GuardrailParams(
            direction=direction, min_deviation=5.0)))
        batch = batch_of(rows, names)
        alerted[direction] = {a.source.line for a in operator.process(batch)}
        expected = operator.expected(batch)
        assert expected[2000] == pytest.approx([50.0, 200.0, 5.0], abs=1.5)
    assert {3000, 3051} <= alerted["both"]
    assert 3000 not in alerted["up"] and 3051 in alerted["up"]  # the dip is not what this user pages on


def test_a_value_outside_its_valid_range_alerts_at_the_top_severity():
    names = ["cpu", "requests", "errors"]
    rows = np.r_[correlated(40), [[350.0, 200.0, 5.0]]]
    operator = BaselineOperator.from_config("b", names, BaselineParams(guardrails=GuardrailParams(range=[0.0, 300.0])))
    alerts = operator.process(batch_of(rows, names))
    assert [(a.source.line, a.severity, a.reason) for a in alerts] == [
        (40, "critical", "cpu=350 is outside its valid range [0, 300]")]


def test_the_default_detector_of_vigil_evaluate_nab_scores_at_least_66_6_on_the_development_files():
    from conftest import REPO, vigil

    nab = REPO.parent / "shared" / "data" / "nab"
    report = json.loads(vigil("evaluate", "nab", "--data-dir", str(nab / "data"), "--windows",
                              str(nab / "labels" / "combined_windows.json"), "--json").stdout)
    assert report["detector"] == "baseline" and len(report["files"]) == 35
    assert round(report["profiles"]["standard"]["score"], 2) >= 66.6
