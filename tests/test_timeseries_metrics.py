"""PATE, PATE-F1, VUS, point-adjusted F1, ROC-AUC and AP against the reference implementations' values (outlier.md 2.4-2.6)."""
import numpy as np
import pytest

from pipeline.evaluation.timeseries import average_precision, pate, pate_f1, point_adjusted_f1, roc_auc, vus


def arr(ranges, n):
    out = np.zeros(n, dtype=int)
    for start, end in ranges:
        out[start:end + 1] = 1
    return out


Y = arr([(40, 59)], 500)
ONE_BUFFER = dict(big_data=False, include_zero=False)


@pytest.mark.parametrize("prediction, expected", [
    ([(30, 49)], 0.7513087240782763),   # A-F1
    ([(62, 70)], 0.2406169665809769),   # B: post-buffer only
    ([(30, 38)], 0.0),                  # C: pre-buffer only, the event missed
    ([(40, 59)], 1.0),                  # D: perfect
    ([(50, 59)], 0.6666666666666666),   # E: the tail only
    ([(40, 49)], 0.8067940552016986),   # E2: the onset only
])
def test_pate_f1_reference_cases(prediction, expected):
    assert pate_f1(Y, arr(prediction, 500), 20, 20, include_zero=False) == pytest.approx(expected, abs=1e-6)


def series_f():
    t = np.arange(300)
    y = arr([(50, 69), (150, 159)], 300)
    return y, np.exp(-((t - 60) / 8) ** 2) + 0.6 * np.exp(-((t - 162) / 5) ** 2) + 0.05 * np.cos(t / 3)


def test_pate_reference_cases():
    assert pate(Y, arr([(30, 49)], 500).astype(float), 20, 20, **ONE_BUFFER) == pytest.approx(0.7593424904335389, abs=1e-6)
    y, s = series_f()
    assert pate(y, s) == pytest.approx(0.8995277547678322, abs=1e-6)
    assert pate(y, s, 10, 10, **ONE_BUFFER) == pytest.approx(0.8931342192691897, abs=1e-6)
    assert pate(y, s, 20, 20, big_data=False, include_zero=True, splits=4) == pytest.approx(0.8843831590656532, abs=1e-6)
    g = np.random.default_rng(0).random(300) + 0.8 * y
    assert pate(y, g, 10, 10, **ONE_BUFFER) == pytest.approx(0.8456359112061135, abs=1e-6)
    assert pate(y, g) == pytest.approx(0.8858108640182393, abs=1e-6)
    assert pate([0, 1, 0, 1, 0], [0.1, 0.8, 0.1, 0.9, 0.2]) == pytest.approx(1.0, abs=1e-6)  # the README's


def test_point_adjusted_f1_inflates():
    assert point_adjusted_f1(arr([(30, 49)], 500), Y) == pytest.approx(0.8)  # the README's case A
    assert point_adjusted_f1(arr([(59, 59)], 500), Y) == 1.0  # one point of the event: a perfect score


def test_vus_and_point_wise_metrics_reference_values():
    assert vus(Y, arr([(30, 49)], 500).astype(float), 20) == pytest.approx((0.7934081723, 0.7194688227), abs=1e-9)
    y, s = series_f()
    assert vus(y, s, 20) == pytest.approx((0.9848579311, 0.9092496997), abs=1e-9)
    assert roc_auc(y, s) == pytest.approx(0.9750617284, abs=1e-9)
    assert average_precision(y, s) == pytest.approx(0.8099145870, abs=1e-9)
