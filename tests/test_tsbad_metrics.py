"""TSB-AD 1.5's VUS-PR and sliding window (``vus_pr``, ``sliding_window``) against values TSB-AD computed; the full
comparison with the package itself is ``python -m bench.tsbad_crosscheck`` (isolated environment, not needed here)."""
import numpy as np
import pytest

from pipeline.evaluation.timeseries import autocorrelation, sliding_window, vus_pr


def events(ranges, n):
    out = np.zeros(n, dtype=int)
    for start, end in ranges:
        out[start:end + 1] = 1
    return out


SPIKY = np.abs(np.sin(np.arange(300) / 7.0))
SPIKY[105] = 2


# Expected values: TSB-AD 1.5, TSB_AD.evaluation.basic_metrics.generate_curve(labels, score, window, version="opt",
# thre=250)[-1], the VUS-PR of get_metrics(score, labels, slidingWindow=window) (numpy 1.24.4, bench/tsbad.py's env).
@pytest.mark.parametrize("labels, score, window, expected", [
    (events([(50, 59)], 200), np.r_[np.zeros(45), np.ones(13), np.zeros(142)], 20, 0.8203411900972998),
    (events([(50, 59)], 200), np.r_[np.zeros(45), np.ones(13), np.zeros(142)], 0, 0.5023076923076923),
    (events([(0, 4), (90, 99)], 100), np.arange(100) / 100.0, 10, 0.4605065744185122),  # events at both ends
    (events([(100, 109), (118, 124)], 300), SPIKY, 25, 0.22373872389590246),  # widened events merge
    (events([(100, 109), (118, 124)], 300), SPIKY, 7, 0.1866105568358924),  # they stay apart
])
def test_vus_pr_matches_tsb_ad(labels, score, window, expected):
    assert vus_pr(labels, score, window) == pytest.approx(expected, abs=1e-9)


def test_vus_pr_needs_an_event():
    with pytest.raises(ValueError, match="labelled"):
        vus_pr(np.zeros(50), np.random.default_rng(0).random(50), 10)


# Expected values: TSB-AD 1.5, TSB_AD.utils.slidingWindows.find_length_rank(values, rank=rank).
@pytest.mark.parametrize("rank, expected", [(1, 50), (2, 100), (3, 150), (0, 1)])
def test_sliding_window_of_a_sine(rank, expected):
    assert sliding_window(np.sin(2 * np.pi * np.arange(1000) / 50), rank) == expected


def test_sliding_window_fallback():
    # No autocorrelation peak at all (a trend; a constant series, NaN correlation): TSB-AD's default, 125.
    assert sliding_window(np.arange(1000.0)) == 125
    assert sliding_window(np.ones(300)) == 125
    # White noise is not the fallback: its autocorrelation has spurious local maxima, and TSB-AD takes the highest
    # (find_length_rank(np.random.default_rng(0).normal(size=2000), rank=1) == 188).
    assert sliding_window(np.random.default_rng(0).normal(size=2000)) == 188


def test_sliding_window_reads_the_first_channel():
    sine = np.sin(2 * np.pi * np.arange(1000) / 50)
    assert sliding_window(np.column_stack([sine, np.random.default_rng(1).normal(size=1000)])) == 50


def test_autocorrelation_is_the_sample_acf():
    values = np.random.default_rng(2).normal(size=300)
    centred = values - values.mean()
    direct = np.array([centred[k:] @ centred[:300 - k] for k in range(11)]) / (centred @ centred)
    assert np.allclose(autocorrelation(values, 10), direct, atol=1e-12)
