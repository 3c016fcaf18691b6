"""`vigil evaluate tabular`: loaders, metrics and the label-free protocol on real files."""
import json

import numpy as np
import pytest
from conftest import REPO, vigil

from pipeline.evaluate import Protocol, average_precision, evaluate, load_table, roc_auc

ODDS = REPO.parent / "shared" / "data" / "odds"


def planted(tmp_path, suffix):
    """200 rows from one Gaussian, 10 planted far away (label 1)."""
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(200, 6)), rng.normal(6.0, 1.0, size=(10, 6))]
    y = np.r_[np.zeros(200, int), np.ones(10, int)]
    path = tmp_path / f"planted{suffix}"
    if suffix == ".npz":
        np.savez(path, X=X, y=y)
    else:
        np.savetxt(path, np.c_[X, y], delimiter=",", header=",".join([*(f"f{i}" for i in range(6)), "label"]), comments="")
    return path, X, y


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_tables_load_and_planted_outliers_rank_first(tmp_path, suffix):
    path, X, y = planted(tmp_path, suffix)
    loaded_X, loaded_y = load_table(path)
    assert np.allclose(loaded_X, X) and (loaded_y == y).all()
    for detector in ("apre-mss", "apre", "mse-ae", "zscore", "river-hst"):
        result = evaluate(loaded_X, loaded_y, detector, Protocol(epochs=100, k=10, seeds=(0, 1)))
        assert result["roc_auc"] > 0.9, (detector, result["roc_auc"])


def test_metrics_against_hand_computed_values():
    scores, labels = np.array([0.9, 0.8, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0, 0])
    assert roc_auc(scores, labels) == pytest.approx((3 + 2.5) / 6)  # the tie at 0.8 counts one half
    assert average_precision(scores, labels) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_cli_prints_json_for_an_odds_file():
    path = ODDS / "wbc.mat"
    assert path.exists(), f"{path} is missing: the shared development data must sit beside the checkout"
    result = json.loads(vigil("evaluate", "tabular", "--data", str(path), "--detector", "zscore", "--seeds", "0", "--json").stdout)
    assert result["rows"] == 378 and result["outliers"] == 21
    assert 0.5 < result["roc_auc"] <= 1 and 0 < result["average_precision"] <= 1
