"""Streaming parity monitoring: intervals cover the true gaps on seeded streams, windows slide, groups are bounded."""
import numpy as np

import math

from kernels.parity_monitor import ParityMonitor, crossings, newcombe_interval, wilson_interval, z_value


def decision_stream(rng, n: int, rates=(0.30, 0.45), tpr=(0.6, 0.8), base=0.4):
    """Decisions with known per-group positive rates, and labels such that the true-positive rates are known too."""
    group = rng.integers(0, len(rates), n)
    label = (rng.random(n) < base).astype(np.int64)
    # P(decision | positive) = tpr[g]; P(decision | negative) makes the overall rate rates[g].
    negative_rate = (np.array(rates) - base * np.array(tpr)) / (1 - base)
    decision = np.where(label == 1, rng.random(n) < np.array(tpr)[group], rng.random(n) < negative_rate[group])
    return group, decision.astype(np.int64), label


def test_intervals_cover_the_true_gaps_in_at_least_90_percent_of_seeded_runs():
    covered_parity = covered_opportunity = 0
    runs = 300
    for seed in range(runs):
        monitor = ParityMonitor(groups=2, window=400)
        group, decision, label = decision_stream(np.random.default_rng(seed), 3000)
        for start in range(0, 3000, 250):  # batches, as the pipeline hands them over
            monitor.update(group[start:start + 250], decision[start:start + 250], label[start:start + 250])
        report = monitor.report()
        assert report.counts == (400, 400)
        covered_parity += report.parity_interval[0] <= 0.15 <= report.parity_interval[1]
        covered_opportunity += report.opportunity_interval[0] <= 0.2 <= report.opportunity_interval[1]
    assert covered_parity / runs >= 0.9 and covered_opportunity / runs >= 0.9


def test_windows_slide_and_groups_outside_the_list_are_ignored():
    monitor = ParityMonitor(groups=2, window=100)
    monitor.update(np.zeros(300, dtype=np.int64), np.r_[np.ones(200), np.zeros(100)].astype(np.int64))
    monitor.update(np.array([1, 1, 5, -1]), np.array([1, 0, 1, 1]))
    report = monitor.report()
    assert report.counts == (100, 2) and report.positive_rates == (0.0, 0.5)  # only the last 100 of group 0
    assert report.parity_gap == 0.5 and math.isnan(report.opportunity_gap)  # no labels yet
    assert monitor.state_bytes() == 2 * (2 * 100 + 2 * 2 * 8)  # two windows of int8 per group, two counters each


def test_interval_formulas():
    z = z_value(0.95)
    low, high = wilson_interval(0, 20, z)
    assert abs(low) < 1e-12 and 0.15 < high < 0.17  # Wilson stays informative at 0 successes (0.161)
    assert newcombe_interval(45, 100, 30, 100, z)[0] < 0.15 < newcombe_interval(45, 100, 30, 100, z)[1]


def test_streams_are_independent_and_gaps_are_reported_after_every_observation():
    rng = np.random.default_rng(1)
    group, decision, _ = decision_stream(rng, 2000)
    streams = rng.integers(0, 3, 2000)
    shared = ParityMonitor(groups=2, window=200, min_count=20, monitors=3)
    gaps = shared.observe("parity", group, decision, streams)
    for m in range(3):
        alone = ParityMonitor(groups=2, window=200, min_count=20)
        rows = streams == m
        assert np.array_equal(alone.observe("parity", group[rows], decision[rows]), gaps[rows], equal_nan=True)
        assert shared.report(m).counts == alone.report().counts
        assert shared.report(m).parity_interval == alone.report().parity_interval
    first = np.flatnonzero(~np.isnan(gaps[:, 0]))[0]  # a gap once two groups have 20 decisions in a stream
    assert min(np.bincount(group[:first + 1][streams[:first + 1] == streams[first]], minlength=2)) == 20
    defined = gaps[~np.isnan(gaps[:, 0])]
    assert np.all(defined[:, 1] <= defined[:, 0]) and np.all(defined[:, 0] <= defined[:, 2])


def test_alerts_fire_once_when_the_evidence_exceeds_the_bound_and_rearm_below_it():
    gaps = np.array([0.05, 0.2, 0.25, 0.12, 0.08, 0.3, np.nan, 0.31])
    lower = gaps - 0.1
    alerting = np.zeros(1, dtype=np.bool_)
    assert np.flatnonzero(crossings(gaps, gaps, np.zeros(8, dtype=np.int64), alerting, 0.1)).tolist() == [1, 5]
    alerting[:] = False
    assert np.flatnonzero(crossings(lower, gaps, np.zeros(8, dtype=np.int64), alerting, 0.1)).tolist() == [2, 5]
    assert alerting[0]
