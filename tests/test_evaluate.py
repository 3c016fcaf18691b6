"""`vigil evaluate tabular`: loaders, metrics, the split and both protocols on real files."""
import json

import numpy as np
import pytest
import torch
from conftest import REPO, vigil

from pipeline.evaluation.tabular import (PREQUENTIAL, AuthorsProtocol, Prequential, Protocol, all_k_targets,
                                         average_precision, evaluate, evaluate_label_free, evaluate_prequential,
                                         label_free_test_scores, load_table, roc_auc, standardise, stratified_split)

ODDS = REPO.parent / "shared" / "data" / "odds"
DETECTORS = ("knn-rshash", "knn", "iforest", "xstream", "loda", "rshash", "apre-mss", "apre", "mse-ae", "zscore",
             "river-hst")


def odds(name):
    path = ODDS / f"{name}.mat"
    assert path.exists(), f"{path} is missing: the shared development data must sit beside the checkout"
    return path


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


def test_the_command_line_offers_every_detector():
    from pipeline.cli import TABULAR_DETECTORS
    from pipeline.evaluation.tabular import DETECTORS as REGISTERED

    assert TABULAR_DETECTORS == list(REGISTERED) and set(DETECTORS) == set(REGISTERED)
    assert set(PREQUENTIAL) == set(REGISTERED) - {"apre-mss", "apre", "mse-ae"}


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_tables_load_and_planted_outliers_rank_first(tmp_path, suffix):
    path, X, y = planted(tmp_path, suffix)
    loaded_X, loaded_y = load_table(path)
    assert np.allclose(loaded_X, X) and (loaded_y == y).all()
    results = evaluate_label_free(loaded_X, loaded_y, list(DETECTORS), Protocol(epochs=100, k=10, seeds=(0, 1)))
    for detector, result in results.items():
        assert result["protocol"] == "label-free" and not result["label_tuned"]
        assert result["roc_auc"] > 0.9, (detector, result["roc_auc"])


def test_metrics_against_hand_computed_values():
    scores, labels = np.array([0.9, 0.8, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0, 0])
    assert roc_auc(scores, labels) == pytest.approx((3 + 2.5) / 6)  # the tie at 0.8 counts one half
    assert average_precision(scores, labels) == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_split_is_stratified_deterministic_and_disjoint():
    _, y = load_table(odds("optdigits"))  # 5066 inliers, 150 outliers
    split = stratified_split(y)
    parts = [split.train, split.valid, split.test]
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))  # disjoint and complete
    # Each class split on its own: positions < 0.5 n train, < 0.75 n valid, the rest test.
    assert [int((y[part] == 0).sum()) for part in parts] == [2533, 1267, 1266]
    assert [int(y[part].sum()) for part in parts] == [75, 38, 37]
    again = stratified_split(y, 42)
    assert all((a == b).all() for a, b in zip(parts, [again.train, again.valid, again.test]))
    other = stratified_split(y, 43)
    assert not (other.test == split.test).all()
    assert (split.fit == np.r_[split.train, split.valid]).all()
    # Standardisation uses train ∪ valid only.
    X = np.random.default_rng(1).normal(size=(len(y), 3))
    Z = standardise(X, split)
    assert np.allclose(Z[split.fit].mean(0), 0) and not np.allclose(Z[split.test].mean(0), 0)


def test_label_free_scores_never_read_test_labels(tmp_path):
    _, X, y = planted(tmp_path, ".npz")
    split = stratified_split(y)
    shuffled = y.copy()
    shuffled[split.test] = np.random.default_rng(3).permutation(y[split.test])[::-1]
    assert (shuffled[split.test] != y[split.test]).any()
    protocol = Protocol(epochs=20, k=10, seeds=(0, 1))
    one = evaluate_label_free(X, y, list(DETECTORS), protocol, split=split, keep_scores=True)
    two = evaluate_label_free(X, shuffled, list(DETECTORS), protocol, split=split, keep_scores=True)
    for detector in DETECTORS:
        for a, b in zip(one[detector]["per_seed"], two[detector]["per_seed"]):
            assert a["test_scores"] == b["test_scores"], detector
    # The scoring function has no label argument at all.
    scores = label_free_test_scores(X, split, ["zscore"], protocol)
    assert [len(run) for run in scores["zscore"]] == [len(split.test)] * 2


def test_all_k_targets_match_the_mean_shift_kernels():
    from kernels.mean_shift import shift_queries, shift_reference

    rng = np.random.default_rng(2)
    fit, test = rng.normal(size=(60, 4)), rng.normal(size=(15, 4))
    valid_rows = np.arange(40, 60)
    ks = [2, 3, 10, 59]
    for iterations in (1, 2):
        valid_targets, test_targets = all_k_targets(fit, valid_rows, test, ks, iterations)
        for i, k in enumerate(ks):
            steps = shift_reference(torch.tensor(fit), k, iterations)
            assert torch.allclose(valid_targets[i], steps[-1][valid_rows].float(), atol=1e-6)
            assert torch.allclose(test_targets[i], shift_queries(torch.tensor(test), steps, k).float(), atol=1e-6)


def test_authors_protocol_is_label_tuned_and_picks_k_in_range(tmp_path):
    _, X, y = planted(tmp_path, ".npz")
    protocol = AuthorsProtocol(epochs=12, seeds=(0, 1, 2), k_seeds=(0, 5), k_max=30, eval_every=4)
    result = evaluate(X, y, "apre-mss", protocol)
    assert result["label_tuned"] and "label-tuned" in result["protocol"] and "label-tuned" in result["note"]
    assert 2 <= result["k"] <= 30 and result["k_range"] == [2, 30]
    assert result["selected_seed"] in (0, 1, 2) and result["selected_epoch"] in (4, 8, 12)
    assert result["validation_roc_auc"] == max(run["validation_roc_auc"] for run in result["per_seed"])
    assert 0 <= result["roc_auc"] <= 1 and "without_mss" in result
    plain = evaluate(X, y, "mse-ae", protocol)
    assert plain["k"] is None and plain["label_tuned"]
    with pytest.raises(ValueError, match="autoencoders"):
        evaluate(X, y, "zscore", protocol)


def test_authors_last_epoch_equals_the_label_free_model(tmp_path):
    """With one evaluation (the last epoch), the tracked model is the label-free one."""
    _, X, y = planted(tmp_path, ".npz")
    tuned = evaluate(X, y, "apre", AuthorsProtocol(epochs=15, seeds=(3,), eval_every=15))
    free = evaluate(X, y, "apre", Protocol(epochs=15, seeds=(3,)))
    assert tuned["selected_epoch"] == 15
    assert tuned["roc_auc"] == pytest.approx(free["roc_auc"])
    assert tuned["average_precision"] == pytest.approx(free["average_precision"])


def test_cli_prints_json_for_an_odds_file():
    path = odds("wbc")
    output = vigil("evaluate", "tabular", "--data", str(path), "--detector", "zscore", "--seeds", "0", "--json").stdout
    result = json.loads(output)
    assert result["rows"] == 378 and result["outliers"] == 21 and result["protocol"] == "label-free"
    assert result["split"] == {"train": 190, "valid": 94, "test": 94, "test_outliers": 5}
    assert 0.5 < result["roc_auc"] <= 1 and 0 < result["average_precision"] <= 1 and len(result["per_seed"]) == 1
    result = json.loads(vigil("evaluate", "tabular", "--data", str(path), "--detector", "apre-mss", "--epochs", "6",
                              "--seeds", "0,1", "--json").stdout)
    assert result["k"] == 65 and result["epochs"] == 6 and [run["seed"] for run in result["per_seed"]] == [0, 1]


def test_cli_authors_protocol_says_label_tuned():
    path = odds("wbc")
    args = ["evaluate", "tabular", "--data", str(path), "--detector", "apre-mss", "--protocol", "authors", "--epochs", "6",
            "--eval-every", "3", "--seeds", "0,1", "--k-max", "20"]
    result = json.loads(vigil(*args, "--json").stdout)
    assert result["label_tuned"] and "label-tuned" in result["protocol"]
    assert 2 <= result["k"] <= 20 and 0 <= result["roc_auc"] <= 1 and 0 <= result["average_precision"] <= 1
    assert "LABEL-TUNED" in vigil(*args).stdout
    authors = vigil("evaluate", "tabular", "--data", str(path), "--detector", "zscore", "--protocol", "authors", check=False)
    assert authors.returncode == 2


def test_default_detector_and_the_iforest_baseline_print_json():
    path = odds("wbc")
    default = json.loads(vigil("evaluate", "tabular", "--data", str(path), "--json").stdout)
    iforest = json.loads(vigil("evaluate", "tabular", "--data", str(path), "--detector", "iforest", "--json").stdout)
    assert default["detector"] == "knn-rshash" and iforest["detector"] == "iforest"
    for result in (default, iforest):
        assert 0.85 < result["roc_auc"] <= 1 and 0 < result["average_precision"] <= 1 and len(result["per_seed"]) == 5


@pytest.mark.parametrize("detector", sorted(PREQUENTIAL))
def test_prequential_scores_each_row_from_earlier_rows_only(detector):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(900, 4))
    X[500] = 8.0
    changed = X.copy()
    changed[600:] = rng.normal(5.0, 3.0, size=(300, 4))
    run = PREQUENTIAL[detector]
    a, b = run(X, 180, 0, Prequential()), run(changed, 180, 0, Prequential())
    assert np.array_equal(a[180:600], b[180:600])  # rows before 600 never see the rows after it
    assert a[500] >= np.quantile(a[180:], 0.95)  # the far row ranks near the top


def test_prequential_protocol_on_an_odds_file():
    X, y = load_table(odds("wbc"))
    results = evaluate_prequential(X, y, sorted(PREQUENTIAL), Prequential(seeds=(0, 1)))
    for name, result in results.items():
        assert result["protocol"] == "prequential" and not result["label_tuned"] and result["warmup_rows"] == 76
        assert 0.85 < result["roc_auc"] <= 1, name
    output = vigil("evaluate", "tabular", "--data", str(odds("wbc")), "--protocol", "prequential", "--seeds", "0").stdout
    assert "knn-rshash on" in output and "prequential, scored after 76 warm-up rows, 1 orders" in output
