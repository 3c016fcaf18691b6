"""MaxSum and SumSelect: SVT's update cap, error bounds and budget on independent, staircase and adaptive streams,
and the regime rule (tests T5 and T6 of the research note, sized for CI; full sizes in bench/bench_privacy.py)."""
import math

import numpy as np
import pytest

from operators.privacy import max_sum, rho_for, sum_select
from operators.privacy.selection import counter_bound, svt_parameters

T5 = 100_000
D = 50


def test_svt_parameters_and_budget_arithmetic():
    for horizon, cap, threshold, bound in ((10 ** 5, 27, 7455, 10521), (10 ** 6, 115, 17707, 25027)):
        p = svt_parameters(horizon, D, 1.0, 1e-6)
        assert (p["cap"], round(p["threshold"]), round(p["bound"])) == (cap, threshold, bound)
        eps0 = p["compare_epsilon"] + p["release_epsilon"]
        assert p["cap"] * eps0 ** 2 / 2 <= rho_for(1.0, 1e-6) * (1 + 1e-12)  # k rounds of eps0-DP compose to rho
    assert rho_for(1.0, 1e-6) == pytest.approx(0.01747, abs=1e-5)


def independent(rng, horizon):
    rates = rng.uniform(0.05, 0.6, D)
    return (rng.random((horizon, D)) < rates).astype(np.int64)


def staircase(rng, horizon):
    rows = (rng.random((horizon, D)) < 0.3).astype(np.int64)
    rows[:, int(rng.integers(D))] = 1  # one column grows every step: m_t = t
    return rows


def errors(selector, rows):
    out = selector.update_many(rows)
    sums = np.cumsum(rows, axis=0)
    best = sums.max(axis=1)
    if selector.select:
        return best - sums[np.arange(len(rows)), out.astype(int)]
    return np.abs(out - best)


@pytest.mark.parametrize("stream", [independent, staircase])
@pytest.mark.parametrize("select", [False, True])
def test_svt_keeps_its_cap_and_error_bound(stream, select):
    make = sum_select if select else max_sum
    within, runs = 0, 20
    for seed in range(runs):
        selector = make(T5, D, epsilon=1.0, delta=1e-6, algorithm="svt", seed=seed)
        worst = errors(selector, stream(np.random.default_rng(seed), T5)).max()
        assert selector.updates <= selector.svt["cap"]
        within += worst <= selector.error_bound
    assert within >= 0.95 * runs


def test_an_adaptive_adversary_does_not_break_the_bounds():
    """Each row feeds a 1 to a column the last release did not pick (SumSelect) or, while MaxSum's output lags, to the
    current leader: the stream reads the mechanism's outputs."""
    horizon = 20_000
    for select in (False, True):
        for seed in range(5):
            rng = np.random.default_rng(seed)
            selector = (sum_select if select else max_sum)(horizon, D, epsilon=1.0, delta=1e-6, algorithm="svt", seed=seed)
            sums, last, worst = np.zeros(D, dtype=np.int64), 0.0, 0.0
            for _ in range(horizon):
                row = (rng.random(D) < 0.1).astype(np.int64)
                row[(int(last) + 1) % D if select else (int(sums.argmax()) if last < sums.max() else int(rng.integers(D)))] = 1
                last = float(selector.update_many(row[None])[0])
                sums += row
                worst = max(worst, sums.max() - sums[int(last)] if select else abs(last - sums.max()))
            assert selector.updates <= selector.svt["cap"] and worst <= selector.error_bound


def test_the_regime_rule_picks_counter_max_where_its_bound_is_smaller():
    horizon = 2 ** 16
    svt = svt_parameters(horizon, 16, 1.0, 1e-6)
    assert (svt["cap"], round(svt["threshold"]), round(svt["bound"])) == (21, 6332, 8959)
    for d in (16, 64, 256):
        selector = max_sum(horizon, d, epsilon=1.0, delta=1e-6)
        assert selector.algorithm == "counter" and selector.error_bound < svt["bound"]
    assert max_sum(2 ** 16, 100_000, epsilon=1.0, delta=1e-6).algorithm == "svt"  # huge d: the sparse vector wins
    assert max_sum(50, 10, epsilon=0.01, delta=1e-6).error_bound <= 50  # never worse than the trivial error


def test_counter_max_noise_stays_under_its_bound_and_grows_like_sqrt_d():
    horizon, medians = 4096, []
    for d in (16, 64):
        worst = []
        for seed in range(8):
            selector = max_sum(horizon, d, epsilon=1.0, delta=1e-6, algorithm="counter", seed=seed)
            noisy = selector.counter.update_many(np.zeros((horizon, d), dtype=np.int64))
            worst.append(np.abs(noisy).max())
        assert np.mean(np.array(worst) <= counter_bound(horizon, d, 1.0, 1e-6)) >= 0.95
        medians.append(np.median(worst))
    assert 1.8 <= medians[1] / medians[0] <= 2.5  # sqrt(4) = 2, times a slowly growing union-bound factor
    assert math.isfinite(medians[0])


def test_a_restored_selector_continues_exactly_as_the_original():
    rows = independent(np.random.default_rng(3), 6000)
    for algorithm in ("svt", "counter"):
        original = sum_select(6000, D, epsilon=1.0, delta=1e-6, algorithm=algorithm, seed=5)
        original.update_many(rows[:2500])
        restored = sum_select(6000, D, epsilon=1.0, delta=1e-6, algorithm=algorithm, seed=6)  # other noise...
        restored.restore(original.snapshot())  # ...replaced by the original's, drawn-ahead noise included
        assert np.array_equal(restored.update_many(rows[2500:]), original.update_many(rows[2500:]))
        assert restored.updates == original.updates


def test_each_update_uses_a_fresh_threshold():
    """Instrumented: round r compares against the r-th threshold draw, so after an update the next comparison uses
    another one. With every threshold after the first made unreachable, exactly one update can happen."""
    rows = staircase(np.random.default_rng(4), 20_000)
    selector = max_sum(20_000, D, epsilon=1.0, delta=1e-6, algorithm="svt", seed=1)
    selector.thresholds = np.r_[selector.thresholds[:1], np.full(len(selector.thresholds) - 1, 1 << 40)]
    selector.update_many(rows)
    assert selector.updates == 1
    fresh = max_sum(20_000, D, epsilon=1.0, delta=1e-6, algorithm="svt", seed=1)
    fresh.update_many(rows)
    assert fresh.updates > 1 and len(set(fresh.thresholds[:fresh.updates + 1].tolist())) > 1
