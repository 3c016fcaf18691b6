"""The metric-stream detector: what each part catches, silence where nothing happens, and its NAB figure.

Causality, batch-cut invariance, restore and eviction are checked for every operator in tests/contract."""
import json
from pathlib import Path

import numpy as np

from conftest import vigil

from kernels.metric_stream import REASONS, MetricStreamDetector, MetricStreamSettings

FIVE_MINUTES = 300_000
NAB = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"


def run(values, ts=None):
    detector = MetricStreamDetector(MetricStreamSettings())
    ts = np.arange(len(values), dtype=np.int64) * FIVE_MINUTES if ts is None else ts
    scores, reasons, _ = detector.score_and_learn(np.zeros(len(values), dtype=np.int64), ts, np.asarray(values)[:, None])
    return scores[:, 0], reasons[:, 0]


def daily(days: int, rng) -> np.ndarray:
    t = np.arange(days * 288)
    return 50 + 20 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 0.5, size=len(t))


def test_a_value_normal_for_the_day_but_not_for_the_hour_is_caught_by_the_daily_profile():
    """The series stops following its day and holds its level, inside its range and without a jump."""
    rng = np.random.default_rng(0)
    values = daily(10, rng)
    start = 9 * 288 + 36
    values[start:start + 72] = values[start]
    scores, reasons = run(values)
    hit = np.flatnonzero(scores[start:start + 72] > 0.5)
    assert len(hit) and REASONS[reasons[start + hit[0]]] == "daily profile"
    assert scores[288 * 3:start].max() < scores[start:start + 72].max()


def test_quiet_series_stay_silent_and_a_spike_is_one_emission():
    rng = np.random.default_rng(1)
    flat = np.full(3000, 7.0)
    assert run(flat)[0].max() < 0.01  # constant: nothing to predict wrongly
    values = 10 + rng.normal(size=3000)
    values[2000:2005] = 30.0  # a burst
    scores, reasons = run(values)
    assert np.count_nonzero(scores[2000:2120] > 0.9) == 1 and REASONS[reasons[2000]] == "new range"
    early = np.flatnonzero(scores[:2000] > 0.9)  # noise's own records beyond the range so far: rarer as it grows
    assert len(early) <= 3 and {REASONS[r] for r in reasons[early]} == {"new range"}
    assert scores[2120:].max() < 0.9


def test_missing_values_are_skipped_not_learned():
    rng = np.random.default_rng(2)
    values = 10 + rng.normal(size=1200)
    holes = values.copy()
    holes[[500, 700]] = np.nan
    ts = np.arange(len(values), dtype=np.int64) * FIVE_MINUTES
    kept = np.isfinite(holes)
    a, _ = run(values[kept], ts[kept])
    b, _ = run(holes, ts)
    assert np.isnan(b[[500, 700]]).all()
    assert np.array_equal(a, b[kept])


def test_a_new_shape_inside_the_range_is_a_new_pattern():
    """Spikes every 60 values, then every 12: no value is new, the shape is."""
    values = np.zeros(4000)
    values[::60] = 10.0
    values[3000::12] = 10.0
    scores, reasons = run(values)
    assert scores[:3000].max() < 0.5
    first = 3000 + int(np.flatnonzero(scores[3000:] > 0.5)[0])
    assert REASONS[reasons[first]] == "new pattern" and first < 3100


def test_vigil_evaluate_nab_on_the_development_split():
    """The acceptance figure: metric_stream (and the default, baseline, whose one-field alerts are its gated surprise),
    threshold optimised on the 35 files, at least 66.6 on the standard profile (67.03 today; all three profiles pinned
    so that a change shows)."""
    result = vigil("evaluate", "nab", "--data-dir", str(NAB / "data"), "--windows", str(NAB / "labels" / "combined_windows.json"),
                   "--detector", "metric_stream", "--json")
    report = json.loads(result.stdout)
    assert report["detector"] == "metric_stream" and len(report["files"]) == 35
    profiles = {name: round(p["score"], 2) for name, p in report["profiles"].items()}
    assert profiles["standard"] >= 66.6
    assert profiles == {"standard": 67.03, "reward_low_FP_rate": 60.85, "reward_low_FN_rate": 71.36}
