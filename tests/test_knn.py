"""The streaming kNN distance: a brute-force reference row by row, batch-cut invariance, snapshots, missing values."""
import numpy as np
import pytest

from kernels.knn import KnnDistance


def brute_force(rows: np.ndarray, k: int, window: int, block: int, min_std: float = 1e-6) -> np.ndarray:
    """Row t against rows max(0, t - window) .. t - 1, in units of the standard deviations of rows before its block
    (blocks end at 1, 2, 4, ... up to ``block`` rows, then every ``block``)."""
    out = np.full(len(rows), np.nan)
    for t in range(1, len(rows)):
        start = t // block * block if t >= block else 1 << (t.bit_length() - 1)
        before_block = rows[:start]
        std = before_block.std(axis=0) if len(before_block) else np.ones(rows.shape[1])
        std = np.where(std > min_std, std, 1.0)
        distances = np.sqrt((((rows[max(0, t - window):t] - rows[t]) / std) ** 2).sum(axis=1))
        out[t] = np.sort(distances)[:k].mean()
    return out


@pytest.fixture
def rows():
    rng = np.random.default_rng(4)
    data = rng.normal(size=(700, 3)) * [1.0, 10.0, 0.1]
    data[[300, 650]] += 8.0
    data[400:420, 2] = 0.0  # a constant stretch
    return data


def test_equals_a_brute_force_reference(rows):
    got = KnnDistance(3, k=7, window=150, block=64).score_and_learn(rows)
    assert np.isnan(got[0])
    np.testing.assert_allclose(got[1:], brute_force(rows, 7, 150, 64)[1:], rtol=1e-12)


def test_scores_do_not_depend_on_batch_cuts_or_snapshots(rows):
    whole = KnnDistance(3, k=7, window=150, block=64).score_and_learn(rows)
    detector, parts = KnnDistance(3, k=7, window=150, block=64), []
    cuts = np.r_[0, np.sort(np.random.default_rng(1).choice(np.arange(1, 700), 30, replace=False)), 700]
    for a, b in zip(cuts[:-1], cuts[1:]):
        parts.append(detector.score_and_learn(rows[a:b]))
        restored = KnnDistance(3, k=7, window=150, block=64)
        restored.restore(detector.snapshot())
        detector = restored
    assert np.concatenate(parts).tobytes() == whole.tobytes()


def test_rows_with_missing_values_score_nan_and_are_not_learned(rows):
    holes = rows.copy()
    holes[[100, 200], 1] = np.nan
    kept = np.isfinite(holes).all(axis=1)
    a = KnnDistance(3, k=7, window=150, block=64).score_and_learn(holes)
    b = KnnDistance(3, k=7, window=150, block=64).score_and_learn(rows[kept])
    assert np.isnan(a[~kept]).all() and a[kept].tobytes() == b.tobytes()
