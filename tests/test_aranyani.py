"""Aranyani's forest and online fair learner against torch autograd and batch statistics (the issue's acceptance)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from kernels.aranyani import HUBER_DELTA, FairLearner, ForestBank, ObliqueForest, ReservoirFairLearner, leaf_paths
from pipeline.evaluation.fairness import encode_table, evaluate_method, read_table


def torch_parts(forest: ObliqueForest):
    return [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in forest.parameters()]


def torch_forward(weight, bias, logits, x, depth):
    """The forest in torch, written from the definition: node outputs, path products, averaged leaf softmaxes."""
    n = torch.sigmoid(torch.einsum("tnd,bd->btn", weight, x) + bias)
    ancestors, left = leaf_paths(depth)
    mu = torch.stack([torch.stack([n[:, :, node] if is_left else 1 - n[:, :, node]
                                   for node, is_left in zip(path.tolist(), goes_left.tolist())]).prod(dim=0)
                      for path, goes_left in zip(ancestors, left)], dim=-1)
    return n, mu, torch.einsum("btl,tlk->bk", mu, torch.softmax(logits, dim=-1)) / weight.shape[0]


@pytest.mark.parametrize("depth", [2, 3, 4, 5])
def test_tree_semantics_for_random_parameters(depth):
    forest = ObliqueForest(features=5, classes=3, trees=3, depth=depth, seed=depth)
    x = np.random.default_rng(depth).normal(size=(64, 5))
    assert forest.node_weight.shape == (3, 2 ** depth - 1, 5) and forest.leaf_logits.shape == (3, 2 ** depth, 3)
    mu = forest.leaf_probabilities(x)
    n = forest.node_outputs(x)
    for leaf in range(2 ** depth):  # walk down from the root to the leaf, multiplying as we go
        expected, node = np.ones((64, 3)), 0
        for bit in format(leaf, f"0{depth}b"):
            expected *= n[:, :, node] if bit == "0" else 1 - n[:, :, node]
            node = 2 * node + (1 if bit == "0" else 2)
        assert np.allclose(mu[:, :, leaf], expected, atol=1e-6)
    assert np.allclose(mu.sum(axis=-1), 1.0, atol=1e-6)
    proba = forest.predict_proba(x)
    assert np.all(proba >= 0) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    _, _, reference = torch_forward(*torch_parts(forest), torch.tensor(x), depth)
    assert np.allclose(proba, reference.detach().numpy(), atol=1e-12)


def test_parameter_isolation():
    forest = ObliqueForest(features=4, trees=2, depth=3, seed=1)
    x = torch.tensor(np.random.default_rng(1).normal(size=(1, 4)))
    weight, bias, logits = torch_parts(forest)
    n, _, _ = torch_forward(weight, bias, logits, x, 3)
    n.sum().backward()  # one backward pass of the sum of all node outputs...
    value = n.detach()[0]
    for t in range(2):
        for i in range(7):  # ...gives each node's own gradient, n (1 - n) x and n (1 - n)
            slope = float(value[t, i] * (1 - value[t, i]))
            assert torch.allclose(weight.grad[t, i], slope * x[0], atol=1e-6)
            assert abs(float(bias.grad[t, i]) - slope) <= 1e-6
    changed = ObliqueForest(features=4, trees=2, depth=3, seed=1)
    changed.node_weight[0, 1:] += 3.0  # every node of tree 0 but the root, and all of tree 1's biases
    changed.node_bias[1] -= 2.0
    before, after = forest.node_outputs(x.numpy()), changed.node_outputs(x.numpy())
    assert before[0, 0, 0] == after[0, 0, 0] and np.all(before[0, 0, 1:] != after[0, 0, 1:])


def frozen_learner(fairness: float = 10.0):
    forest = ObliqueForest(features=3, trees=2, depth=3, seed=2)
    return forest, FairLearner(forest, fairness=fairness, learning_rate=0.0)  # Adam steps of size 0: frozen


def test_streamed_aggregates_equal_batch_means_with_frozen_parameters():
    forest, learner = frozen_learner()
    rng = np.random.default_rng(3)
    x, y, groups = rng.normal(size=(500, 3)), rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    size = learner.state_bytes()
    learner.learn(x, y, groups)
    n = forest.node_outputs(x)
    for group in (0, 1):
        rows = groups == group
        slope = n[rows] * (1 - n[rows])
        assert learner.counts[group] == rows.sum()
        assert np.allclose(learner.sums[group] / rows.sum(), n[rows].mean(axis=0), atol=1e-5)
        assert np.allclose(learner.grad_bias[group], slope.mean(axis=0), atol=1e-5)
        assert np.allclose(learner.grad_weight[group], np.einsum("btn,bd->tnd", slope, x[rows]) / rows.sum(), atol=1e-5)
    learner.learn(*(rng.normal(size=(2000, 3)), rng.integers(0, 2, 2000), rng.integers(0, 2, 2000)))
    assert learner.state_bytes() == size


def huber(gap: torch.Tensor, delta: float) -> torch.Tensor:
    """Huber-smoothed |F| with a tail slope of 1 (the module docstring): continuous at |F| = δ."""
    return torch.where(gap.abs() < delta, gap ** 2 / 2, gap.abs() - delta + delta ** 2 / 2)


@pytest.mark.parametrize("fairness", [0.5, 10.0])
def test_online_fairness_gradient_equals_autograd_over_all_samples(fairness):
    forest, learner = frozen_learner(fairness)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 3))
    groups = (x[:, 0] + rng.normal(size=300) > 0).astype(np.int64)  # group tied to the inputs: real gaps
    learner.learn(x, rng.integers(0, 2, 300), groups)
    weight, bias, logits = torch_parts(forest)
    n, _, _ = torch_forward(weight, bias, logits, torch.tensor(x), 3)
    gap = n[torch.tensor(groups == 1)].mean(dim=0) - n[torch.tensor(groups == 0)].mean(dim=0)
    (fairness * huber(gap, HUBER_DELTA).sum()).backward()
    online_weight, online_bias = learner.fairness_gradients()
    assert np.allclose(online_weight, weight.grad.numpy(), atol=1e-9)
    assert np.allclose(online_bias, bias.grad.numpy(), atol=1e-9)
    assert logits.grad is None or not logits.grad.any()  # leaves get no fairness gradient


def test_lambda_zero_is_plain_online_cross_entropy_training_predicting_first():
    forest = ObliqueForest(features=4, trees=3, depth=4, seed=5)
    weight, bias, logits = torch_parts(forest)
    learner = FairLearner(forest, fairness=0.0)
    optimiser = torch.optim.Adam([weight, bias, logits], lr=2e-3)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] - x[:, 1] > 0).astype(np.int64)
    groups = rng.integers(0, 2, 300)
    expected = []
    for row in range(300):
        _, _, proba = torch_forward(weight, bias, logits, torch.tensor(x[row:row + 1]), 4)
        expected.append(int(proba.argmax()))  # predicted before the update
        optimiser.zero_grad()
        torch.nn.functional.nll_loss(torch.log(proba), torch.tensor(y[row:row + 1])).backward()
        optimiser.step()
    assert learner.learn(x, y, groups).tolist() == expected
    for mine, reference in zip(forest.parameters(), (weight, bias, logits)):
        assert np.allclose(mine, reference.detach().numpy(), atol=1e-9)


def test_snapshot_restore_continues_identically():
    rng = np.random.default_rng(6)
    x, y, groups = rng.normal(size=(400, 3)), rng.integers(0, 2, 400), rng.integers(0, 2, 400)
    one = FairLearner(ObliqueForest(features=3, seed=7), fairness=5.0)
    one.learn(x[:200], y[:200], groups[:200])
    two = FairLearner(ObliqueForest(features=3, seed=99), fairness=5.0)
    two.restore(one.snapshot())
    assert one.learn(x[200:], y[200:], groups[200:]).tolist() == two.learn(x[200:], y[200:], groups[200:]).tolist()
    assert np.array_equal(one.forest.node_weight, two.forest.node_weight)


ADULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "adult" / "adult.csv"


def test_on_adult_lambda_10_halves_demographic_parity_for_at_most_5_points_of_accuracy():
    """The issue's check, mean of seeds 0-2, protected attribute sex, label Salary, time-averaged prequential metrics
    (measured: accuracy 0.812 and parity 0.158 at λ = 0, 0.774 and 0.036 at λ = 10)."""
    x, y, groups = encode_table(read_table(ADULT), "sex", "Salary")
    plain, fair = ({key: np.mean([evaluate_method("aranyani", x, y, groups, seed, fairness)[key] for seed in range(3)])
                    for key in ("accuracy", "demographic_parity")} for fairness in (0.0, 10.0))
    assert fair["demographic_parity"] <= plain["demographic_parity"] / 2
    assert fair["accuracy"] >= plain["accuracy"] - 0.05


def test_the_reservoir_baseline_is_plain_training_at_lambda_zero_and_keeps_bounded_reservoirs():
    rng = np.random.default_rng(8)
    x, y, groups = rng.normal(size=(500, 3)), rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    plain = FairLearner(ObliqueForest(features=3, seed=1), fairness=0.0)
    stored = ReservoirFairLearner(ObliqueForest(features=3, seed=1), fairness=0.0, capacity=20)
    assert plain.learn(x, y, groups).tolist() == stored.learn(x, y, groups).tolist()
    assert np.array_equal(plain.forest.node_weight, stored.forest.node_weight)
    assert stored.filled.tolist() == [20, 20] and stored.seen.tolist() == [int((groups == 0).sum()), int(groups.sum())]
    kept = {tuple(row) for row in stored.reservoirs.reshape(-1, 3)}
    assert kept <= {tuple(row) for row in x}  # reservoirs hold past inputs only


def test_more_than_two_groups_use_the_mean_of_pairwise_gaps_and_match_autograd():
    forest = ObliqueForest(features=3, trees=2, depth=3, seed=3)
    learner = FairLearner(forest, fairness=4.0, learning_rate=0.0, groups=3)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(400, 3))
    groups = np.digitize(x[:, 1] + rng.normal(size=400), [-0.5, 0.5])  # three groups tied to the inputs
    learner.learn(x, rng.integers(0, 2, 400), groups)
    weight, bias, logits = torch_parts(forest)
    n, _, _ = torch_forward(weight, bias, logits, torch.tensor(x), 3)
    means = [n[torch.tensor(groups == g)].mean(dim=0) for g in range(3)]
    pairs = [(a, b) for a in range(3) for b in range(a + 1, 3)]
    (4.0 * sum(huber(means[b] - means[a], HUBER_DELTA).sum() for a, b in pairs) / len(pairs)).backward()
    online_weight, online_bias = learner.fairness_gradients()
    assert np.allclose(online_weight, weight.grad.numpy(), atol=1e-9)
    assert np.allclose(online_bias, bias.grad.numpy(), atol=1e-9)


def test_a_bank_trains_each_model_as_if_alone_and_reset_models_start_over():
    rng = np.random.default_rng(10)
    x, y, groups = rng.normal(size=(600, 3)), rng.integers(0, 2, 600), rng.integers(0, 2, 600)
    models = rng.integers(0, 3, 600)
    bank = ForestBank(3, fairness=5.0, seed=4, models=3)
    predictions = bank.learn(x, y, groups, models)
    for m in range(3):
        alone = ForestBank(3, fairness=5.0, seed=4)
        rows = models == m
        assert alone.learn(x[rows], y[rows], groups[rows]).tolist() == predictions[rows].tolist()
        assert np.array_equal(alone.parameters[0][0], bank.parameters[0][m])
    bank.reset(np.array([1]))
    bank.resize(5)
    first = ForestBank(3, fairness=5.0, seed=4).learn(x[:50], y[:50], groups[:50])
    for m in (1, 4):  # reset, and allocated by the resize: both start from the initial parameters
        assert bank.learn(x[:50], y[:50], groups[:50], np.full(50, m)).tolist() == first.tolist()
    assert bank.models == 5
