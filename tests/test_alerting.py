"""Calibrated alerting: p-values, the false-alarm budget, monotone severities, state."""
import json

import numpy as np
import pytest

from conftest import vigil
from operators.alerting import AlertingParams, CalibratedAlerting
from operators.params import ParamError

HOUR_MS = 3_600_000


def judge_stream(params: AlertingParams, scores, gap_ms=HOUR_MS):
    """p-values and level names (None: no alert) of one entity's scores, ``gap_ms`` apart."""
    policy = CalibratedAlerting(params)
    p, levels = policy.judge(np.zeros(len(scores), dtype=np.int64), np.arange(len(scores)) * gap_ms, np.asarray(scores, float))
    return p, [policy.level_names[level] if level >= 0 else None for level in levels]


def test_p_values_of_exchangeable_scores_are_uniform_in_the_body_and_the_tail():
    scores = np.random.default_rng(1).gumbel(size=60_000)
    p, _ = judge_stream(AlertingParams(window=500, warmup=500, tail=20), scores)
    p = p[np.isfinite(p)]
    for level in (0.2, 0.05, 0.01):  # counted
        assert np.mean(p <= level) == pytest.approx(level, rel=0.2), level
    for level in (0.004, 0.001):  # beyond the 20th largest of 500: the exponential tail
        assert level / 2 <= np.mean(p <= level) <= 2 * level, level


def test_severity_is_monotone_in_the_score_and_levels_are_nested():
    rng = np.random.default_rng(2)
    params = AlertingParams(budget_per_day=1.0, window=400, warmup=200)
    policy = CalibratedAlerting(params)
    policy.judge(np.zeros(400, dtype=np.int64), np.arange(400) * HOUR_MS, rng.normal(size=400))
    state = policy.snapshot()
    order = {None: 0, "info": 1, "warning": 2, "critical": 3}
    ranks, p_values = [], []
    for spike in np.linspace(0.0, 8.0, 50):  # each judged against the same history
        fresh = CalibratedAlerting(params)
        fresh.restore(state)
        p, levels = fresh.judge(np.zeros(1, dtype=np.int64), np.array([400 * HOUR_MS]), np.array([spike]))
        ranks.append(order[fresh.level_names[levels[0]] if levels[0] >= 0 else None])
        p_values.append(p[0])
    assert ranks == sorted(ranks) and ranks[0] == 0 and ranks[-1] == 3
    assert p_values == sorted(p_values, reverse=True)


def test_nan_scores_are_skipped_and_warmup_holds_alerts_back():
    scores = [0.0, float("nan"), 1.0, 2.0, 50.0]
    p, levels = judge_stream(AlertingParams(window=20, warmup=3, tail=2), scores)
    assert np.isnan(p[:4]).all() and levels[:4] == [None] * 4  # three judged scores are needed first
    assert levels[4] == "critical"


def test_entities_are_calibrated_separately():
    rng = np.random.default_rng(3)
    slots = np.arange(3000) % 5
    scores = rng.normal(size=3000) * np.array([1, 2, 5, 10, 50])[slots]
    params = AlertingParams(window=300, warmup=100)
    policy = CalibratedAlerting(params)
    p, _ = policy.judge(slots, np.arange(3000) * 60_000, scores)
    # Per-entity scale does not matter: each entity's p-values are equally spread.
    per_entity = [np.nanmean(p[i::5]) for i in range(5)]
    assert max(per_entity) - min(per_entity) < 0.05
    assert policy.state_bytes() == 5 * (300 * 4 + 24)


def test_warmup_shorter_than_the_tail_is_refused():
    with pytest.raises(ParamError, match=r"alerting\.warmup: 10 must be at least alerting\.tail \(20\)"):
        CalibratedAlerting(AlertingParams(warmup=10))


@pytest.mark.parametrize("operator, budget", [("zscore", 0.5), ("zscore", 4.0), ("baseline", 4.0)])
def test_alert_rate_on_a_stream_without_anomalies_follows_the_budget(tmp_path, operator, budget):
    """The real demo pipeline on a stream with no incidents: alerts per entity per day vs the budget. Calibration alone
    (zscore) follows it; the default (baseline) also needs a first crossing of p < 1e-5, so the budget bounds it."""
    vigil("demo", "--run-dir", str(tmp_path), "--no-metrics", "--no-progress", "--seed", "5", "--events", "60000",
          "--set", "demo.entities=30", "--set", "demo.incident_rate=0", "--set", "demo.bad_rate=0",
          "--set", f"operators.0.type={operator}", "--set", f"operators.0.params={{alerting={{budget_per_day={budget}}}}}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert sum(summary["incidents"].values()) == 0
    records = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    judged_days = sum(r["scores"]["outlier.p"] is not None for r in records) / (24 * 60)  # one event a minute
    alerts = sum(summary["alerts"]["outlier"].values())
    low = budget / 2 if operator == "zscore" else 0.0
    assert low <= alerts / judged_days <= budget * (2 if operator == "zscore" else 1), (alerts, judged_days)
