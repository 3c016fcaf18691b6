"""RS-Hash grid counts: exact against counting by hand while rows join and leave, and the paper's draws."""
import numpy as np
import pytest

from kernels.subspace_hash import SubspaceGridCounts


def test_counts_equal_a_recount_of_the_window_while_rows_join_and_leave():
    rng = np.random.default_rng(1)
    rows = np.round(rng.normal(size=(2500, 5)), 1)  # coarse values: many shared cells, many deletions
    window = 300
    grids = SubspaceGridCounts(5, window, components=30, seed=3)
    grids.reset(rows[:window])
    rarity = grids.rarity(rows[window:], rows[:-window], np.ones(len(rows) - window, dtype=bool), learn=True)
    keys = grids.cell_keys(rows)
    for t in range(window, len(rows), 53):
        counts = (keys[t - window:t] == keys[t]).sum(axis=0)
        assert rarity[t - window] == pytest.approx(-np.mean(np.log2(1 + counts)), rel=1e-12)
    final = np.sort(grids.counts[grids.counts > 0])
    recount = np.sort(np.concatenate([np.unique(keys[-window:, g], return_counts=True)[1] for g in range(30)]))
    assert np.array_equal(final, recount)  # no stale or lost cell after 2,200 deletions


def test_a_row_rare_in_one_field_is_rarer_than_typical_rows():
    rng = np.random.default_rng(0)
    grids = SubspaceGridCounts(6, 1000, seed=0)
    grids.reset(rng.normal(size=(1000, 6)))
    typical = grids.rarity(rng.normal(size=(200, 6)))
    odd = np.zeros((1, 6))
    odd[0, 4] = 6.0
    assert grids.rarity(odd)[0] > np.quantile(typical, 0.99)


def test_draws_follow_the_paper():
    grids = SubspaceGridCounts(40, 1000, components=500, seed=2)
    s = 1000
    assert ((grids.widths > 1 / np.sqrt(s)) & (grids.widths < 1 - 1 / np.sqrt(s))).all()
    log_s = np.log(s) / np.log(np.maximum(2.0, 1 / grids.widths))
    assert (grids.lengths <= np.floor(log_s)).all() and (grids.lengths >= 1).all()
    assert ((grids.shifts >= 0) & (grids.shifts < grids.widths[:, None])).all()
    for g, r in enumerate(grids.lengths):
        assert len(set(grids.dims[g, :r])) == r  # fields without replacement
