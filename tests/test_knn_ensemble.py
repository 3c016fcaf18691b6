"""The kNN + RS-Hash ensemble: past-only surprises by hand, batch-cut invariance with snapshots, missing values."""
import math

import numpy as np
import pytest

from kernels.knn import KnnDistance
from kernels.knn_ensemble import TAIL, KnnSubspaceEnsemble, _past_surprise


def surprise_by_hand(scores: np.ndarray, size: int) -> np.ndarray:
    out, past = np.full(len(scores), np.nan), []
    for i, value in enumerate(scores):
        history = np.array(past[-size:])
        if len(history) and not math.isnan(value):
            p = ((history > value).sum() + 0.5 * (history == value).sum()) / len(history)
            top = np.sort(history)[-min(TAIL, len(history)):]
            if (history >= value).sum() < len(top) and value > top[0]:
                excess = (top - top[0]).mean()
                p = len(top) / len(history) * math.exp(-(value - top[0]) / excess) if excess else 0.5 / len(history)
            out[i] = -math.log(p)
        if not math.isnan(value):
            past.append(value)
    return out


def test_surprise_equals_the_definition():
    rng = np.random.default_rng(3)
    scores = np.r_[rng.exponential(size=400), [9.0, np.nan], rng.integers(0, 4, 300).astype(float), [50.0]]
    size = 150
    ring, ordered, out = np.zeros(size), np.zeros(size), np.empty(len(scores))
    stored = _past_surprise(scores, ring, ordered, 0, True, out)
    assert stored == len(scores) - 1
    np.testing.assert_allclose(out, surprise_by_hand(scores, size), rtol=1e-12)
    assert out[400] > 9 and out[-1] > 5  # beyond the largest past score: a fitted tail, or half a past score


@pytest.fixture
def rows():
    rng = np.random.default_rng(4)
    data = rng.normal(size=(1200, 4)) * [1.0, 10.0, 0.1, 1.0]
    data[[500, 1100]] += 8.0
    return data


def make():
    return KnnSubspaceEnsemble(4, k=7, window=200, block=50, components=20, seed=5)


def test_scores_do_not_depend_on_batch_cuts_or_snapshots(rows):
    whole = make().score_and_learn(rows)
    detector, parts = make(), []
    cuts = np.r_[0, np.sort(np.random.default_rng(1).choice(np.arange(1, len(rows)), 40, replace=False)), len(rows)]
    for a, b in zip(cuts[:-1], cuts[1:]):
        parts.append(detector.score_and_learn(rows[a:b]))
        restored = make()
        restored.restore(detector.snapshot())
        detector = restored
    assert np.concatenate(parts).tobytes() == whole.tobytes()


def test_planted_outliers_top_the_scores_and_the_knn_member_is_kept(rows):
    detector = make()
    scores = detector.score_and_learn(rows)
    assert set(np.argsort(-np.nan_to_num(scores[300:], nan=-1))[:2] + 300) == {500, 1100}
    assert np.isnan(scores[0]) and 0.5 < np.median(scores[300:]) < 1.5  # about 1 on normal rows
    knn = KnnDistance(4, k=7, window=200, block=50).score_and_learn(rows)
    assert np.array_equal(np.sort(detector.histories[0]), np.sort(knn[-200:]))  # the member's last 200 distances


def test_score_only_learns_nothing(rows):
    detector = make()
    detector.score_and_learn(rows[:600])
    before = detector.snapshot()
    first, second = detector.score_only(rows[600:700]), detector.score_only(rows[600:700])
    assert first.tobytes() == second.tobytes()
    after = detector.snapshot()
    assert all(np.array_equal(np.asarray(before[key]), np.asarray(after[key])) for key in ("ring", "histories"))


def test_rows_with_missing_values_score_nan_and_are_not_learned(rows):
    holes = rows.copy()
    holes[[100, 700], 1] = np.nan
    kept = np.isfinite(holes).all(axis=1)
    a = make().score_and_learn(holes)
    b = make().score_and_learn(rows[kept])
    assert np.isnan(a[~kept]).all() and a[kept].tobytes() == b.tobytes()


def test_a_block_longer_than_the_window_is_refused_with_its_key():
    from operators.knn_ensemble import KnnEnsembleOperator, KnnEnsembleParams
    from operators.params import ParamError

    with pytest.raises(ValueError, match="block must not exceed window"):
        KnnSubspaceEnsemble(3, window=100, block=200)
    with pytest.raises(ParamError, match="block"):
        KnnEnsembleOperator("scores", ["a", "b"], KnnEnsembleParams(window=100, block=200))
