"""Aranyani: online group-fair learning with soft oblique decision forests, as one compiled loop over a stream.

The model (Basu Roy Chowdhury et al., 2024) is an ensemble of ``T`` soft oblique trees of depth ``h``. Internal node
``i`` of tree ``t`` (heap order, root 0, children ``2i + 1`` left and ``2i + 2`` right) routes left with probability
``n_ti(x) = sigmoid(w_ti · x + b_ti)``; a leaf is reached with the product of ``n`` (left) or ``1 - n`` (right) along
its path; each leaf holds class logits ``θ_tl`` and the tree outputs ``Σ_l μ_tl(x) softmax(θ_tl)``; the forest averages
its trees. Parameters are held by role: node weights ``W`` [T, nodes, d], node biases ``b`` [T, nodes], leaf logits
``θ`` [T, leaves, classes].

Training is prequential, one instance at a time: predict with the current parameters, then take one Adam step on the
cross-entropy of that instance plus, for node parameters, a demographic-parity term computed from running aggregates
only. Node outputs depend on their own parameters alone (parameter isolation), so for each group ``a`` the loop keeps
its count ``N_a``, the running sum of node outputs ``S_a`` and the running means of node-output gradients
``G_a = mean ∇n`` (``∇_w n = n (1 - n) x``, ``∇_b n = n (1 - n)``): the node-level parity gap
``F_ti = S_1 / N_1 - S_0 / N_0`` and its gradient ``λ φ(F_ti) (G_1 - G_0)`` need no stored samples and no extra
passes. ``φ`` is the derivative of the Huber-smoothed ``|F|`` with threshold ``δ``: ``F`` inside ``|F| < δ``, and, as
in the authors' code, ``sign(F)`` outside (a tail slope of 1, not the textbook ``δ``: the penalty keeps pulling gaps
well above ``δ`` towards it with unit weight). Leaves get no fairness gradient, the fairness term waits until both
groups have been seen, and ``λ = 0`` is plain online training. The aggregated gradients are those of the parameters
in force when each instance arrived, as in the paper. With k > 2 groups the penalty is the mean over the k (k - 1) / 2
pairs of groups of the pair's node-level gaps (pairwise rather than one-vs-rest: each pair's gap is a plain difference
of two groups' running means, so its gradient still comes from the per-group aggregates alone, and two groups give
exactly the paper's term). :class:`ForestBank` trains many independent models (one per entity) in one loop.

Written as a numba loop with the gradients in closed form (the model has a few hundred parameters, so per-instance
torch calls would cost far more than the arithmetic); ``tests/test_aranyani.py`` checks the forward pass, the
gradients and the Adam steps against torch autograd.

>>> import numpy as np
>>> forest = ObliqueForest(features=2, trees=2, depth=3, seed=0)
>>> forest.node_weight.shape, forest.leaf_logits.shape
((2, 7, 2), (2, 8, 2))
>>> learner = FairLearner(forest, fairness=1.0)
>>> x = np.random.default_rng(0).normal(size=(200, 2)); y = (x[:, 0] > 0).astype(np.int64)
>>> predictions = learner.learn(x, y, groups=(x[:, 1] > 0).astype(np.int64))
>>> predictions.shape, learner.counts.tolist()
((200,), [103, 97])

References
----------
Basu Roy Chowdhury, S., Monath, N., Beirami, A., Kidambi, R., Dubey, A., Ahmed, A. and Chaturvedi, S. (2024).
Enhancing group fairness in online settings using oblique decision forests. *ICLR*.

Kingma, D. P. and Ba, J. (2015). Adam: a method for stochastic optimization. *ICLR* (:mod:`kernels.adam`).
"""
from __future__ import annotations

import math

import numba
import numpy as np

from kernels.adam import BETAS_EPS, adam_step
from kernels.state import SlotArrays, Stateful, tensor_bytes

HUBER_DELTA = 0.01


def leaf_paths(depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Per leaf, its ``depth`` ancestors (root first) and whether the path goes left at each.

    >>> ancestors, left = leaf_paths(2)
    >>> ancestors.tolist(), left.tolist()
    ([[0, 1], [0, 1], [0, 2], [0, 2]], [[True, True], [True, False], [False, True], [False, False]])
    """
    nodes, leaves = 2 ** depth - 1, 2 ** depth
    ancestors = np.zeros((leaves, depth), dtype=np.int64)
    left = np.zeros((leaves, depth), dtype=np.bool_)
    for leaf in range(leaves):
        index = nodes + leaf
        for level in range(depth - 1, -1, -1):
            parent = (index - 1) // 2
            ancestors[leaf, level], left[leaf, level] = parent, index == 2 * parent + 1
            index = parent
    return ancestors, left


class ObliqueForest(Stateful):
    """The parameters of ``trees`` soft oblique trees of depth ``depth`` over ``features`` inputs: node weights and
    biases drawn from N(0, 1), leaf logits from U[0, 1), as in the authors' code."""

    def __init__(self, features: int, classes: int = 2, trees: int = 3, depth: int = 4, seed: int = 0) -> None:
        if depth < 1 or trees < 1 or classes < 2:
            raise ValueError("need depth >= 1, trees >= 1 and classes >= 2")
        rng = np.random.default_rng(seed)
        nodes, leaves = 2 ** depth - 1, 2 ** depth
        self.node_weight = rng.standard_normal((trees, nodes, features))
        self.node_bias = rng.standard_normal((trees, nodes))
        self.leaf_logits = rng.random((trees, leaves, classes))
        self.ancestors, self.left = leaf_paths(depth)

    def parameters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.node_weight, self.node_bias, self.leaf_logits

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Node outputs n [rows, trees, nodes], leaf reach probabilities μ [rows, trees, leaves] and class probabilities
        [rows, classes], computed by the same compiled code the learners train with."""
        return _forward_rows(np.ascontiguousarray(x, dtype=np.float64), *self.parameters(), self.ancestors, self.left)

    def node_outputs(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[0]

    def leaf_probabilities(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[1]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[2]

    def snapshot(self) -> dict[str, np.ndarray]:
        return {"node_weight": self.node_weight.copy(), "node_bias": self.node_bias.copy(),
                "leaf_logits": self.leaf_logits.copy()}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        for name in ("node_weight", "node_bias", "leaf_logits"):
            getattr(self, name)[...] = state[name]

    def state_bytes(self) -> int:
        return tensor_bytes(self.parameters())


@numba.njit(cache=True)
def fairness_gradients(sums, counts, grad_weight, grad_bias, fairness, delta):  # pragma: no cover - compiled
    """λ / P Σ_{a<b} φ(F_ab) (G_b - G_a) for node weights and biases, over the P = k (k - 1) / 2 pairs of the k groups,
    from the groups' aggregates; a pair counts once both of its groups have been seen (zeros before, or when λ = 0).
    With two groups it is λ φ(F) (G_1 - G_0)."""
    groups, trees, nodes, features = grad_weight.shape[0], grad_weight.shape[1], grad_weight.shape[2], grad_weight.shape[3]
    out_weight = np.zeros((trees, nodes, features))
    out_bias = np.zeros((trees, nodes))
    if fairness == 0.0:
        return out_weight, out_bias
    scale = fairness / (groups * (groups - 1) / 2)
    for a in range(groups):
        for b in range(a + 1, groups):
            if counts[a] == 0 or counts[b] == 0:
                continue
            for t in range(trees):
                for i in range(nodes):
                    gap = sums[b, t, i] / counts[b] - sums[a, t, i] / counts[a]
                    slope = scale * (gap if abs(gap) < delta else (1.0 if gap > 0 else -1.0))
                    for j in range(features):
                        out_weight[t, i, j] += slope * (grad_weight[b, t, i, j] - grad_weight[a, t, i, j])
                    out_bias[t, i] += slope * (grad_bias[b, t, i] - grad_bias[a, t, i])
    return out_weight, out_bias


@numba.njit(cache=True)
def _node_outputs(x, weight, bias):  # pragma: no cover - compiled
    trees, nodes, features = weight.shape
    n = np.empty((trees, nodes))
    for t in range(trees):
        for i in range(nodes):
            z = bias[t, i]
            for j in range(features):
                z += weight[t, i, j] * x[j]
            n[t, i] = 1.0 / (1.0 + math.exp(-z))
    return n


@numba.njit(cache=True)
def _forest_output(n, logits, ancestors, left):  # pragma: no cover - compiled
    """Leaf reach probabilities μ, leaf class distributions p and the forest's class probabilities f."""
    trees, leaves, classes, depth = logits.shape[0], logits.shape[1], logits.shape[2], ancestors.shape[1]
    mu = np.ones((trees, leaves))
    for t in range(trees):
        for leaf in range(leaves):
            for level in range(depth):
                node = ancestors[leaf, level]
                mu[t, leaf] *= n[t, node] if left[leaf, level] else 1.0 - n[t, node]
    p = np.empty((trees, leaves, classes))
    for t in range(trees):
        for leaf in range(leaves):
            top = logits[t, leaf, 0]
            for k in range(1, classes):
                top = max(top, logits[t, leaf, k])
            total = 0.0
            for k in range(classes):
                p[t, leaf, k] = math.exp(logits[t, leaf, k] - top)
                total += p[t, leaf, k]
            for k in range(classes):
                p[t, leaf, k] /= total
    f = np.zeros(classes)
    for t in range(trees):
        for leaf in range(leaves):
            for k in range(classes):
                f[k] += mu[t, leaf] * p[t, leaf, k]
    for k in range(classes):
        f[k] /= trees
    return mu, p, f


@numba.njit(cache=True)
def _forward_rows(x, weight, bias, logits, ancestors, left):  # pragma: no cover - compiled
    rows, trees, nodes, leaves = x.shape[0], weight.shape[0], weight.shape[1], logits.shape[1]
    n_all = np.empty((rows, trees, nodes))
    mu_all = np.empty((rows, trees, leaves))
    f_all = np.empty((rows, logits.shape[2]))
    for row in range(rows):
        n = _node_outputs(x[row], weight, bias)
        mu, _, f = _forest_output(n, logits, ancestors, left)
        n_all[row], mu_all[row], f_all[row] = n, mu, f
    return n_all, mu_all, f_all


@numba.njit(cache=True)
def _cross_entropy_gradients(x, label, n, mu, p, f, ancestors, left):  # pragma: no cover - compiled
    """Gradients of -log f[label] for node weights, node biases and leaf logits, in closed form."""
    trees, nodes, features = n.shape[0], n.shape[1], x.shape[0]
    leaves, classes, depth = p.shape[1], p.shape[2], ancestors.shape[1]
    scale = -1.0 / (f[label] * trees)
    g_logits = np.empty((trees, leaves, classes))
    g_n = np.zeros((trees, nodes))
    for t in range(trees):
        for leaf in range(leaves):
            for k in range(classes):
                indicator = 1.0 if k == label else 0.0
                g_logits[t, leaf, k] = scale * mu[t, leaf] * p[t, leaf, label] * (indicator - p[t, leaf, k])
            g_mu = scale * p[t, leaf, label]
            for level in range(depth):
                others = 1.0
                for other in range(depth):
                    if other != level:
                        node = ancestors[leaf, other]
                        others *= n[t, node] if left[leaf, other] else 1.0 - n[t, node]
                g_n[t, ancestors[leaf, level]] += g_mu * (others if left[leaf, level] else -others)
    g_weight = np.empty((trees, nodes, features))
    g_bias = np.empty((trees, nodes))
    for t in range(trees):
        for i in range(nodes):
            slope = n[t, i] * (1.0 - n[t, i])
            g_bias[t, i] = g_n[t, i] * slope
            for j in range(features):
                g_weight[t, i, j] = g_n[t, i] * slope * x[j]
    return g_weight, g_bias, g_logits


@numba.njit(cache=True)
def _predict(x, weight, bias, logits, ancestors, left, row, predictions):  # pragma: no cover - compiled
    """Forward pass of one row with the current parameters; records its prediction."""
    n = _node_outputs(x, weight, bias)
    mu, p, f = _forest_output(n, logits, ancestors, left)
    best = 0
    for k in range(f.shape[0]):
        if f[k] > f[best]:
            best = k
    predictions[row] = best
    return n, mu, p, f


@numba.njit(cache=True)
def _adam_all(weight, bias, logits, g_weight, g_bias, g_logits, moments, steps, lr, beta1, beta2, eps):  # pragma: no cover
    steps[0] += 1
    correction1, correction2 = 1.0 - beta1 ** steps[0], 1.0 - beta2 ** steps[0]
    adam_step(weight, g_weight, moments[0], moments[1], lr, beta1, beta2, eps, correction1, correction2)
    adam_step(bias, g_bias, moments[2], moments[3], lr, beta1, beta2, eps, correction1, correction2)
    adam_step(logits, g_logits, moments[4], moments[5], lr, beta1, beta2, eps, correction1, correction2)


@numba.njit(cache=True)
def _learn(x, y, groups, models, weight, bias, logits, ancestors, left, moments, steps, counts, sums, grad_weight,
           grad_bias, fairness, delta, lr, beta1, beta2, eps, predictions):  # pragma: no cover - compiled
    """Row by row, on model ``models[row]`` of the bank (every array has the models as its first axis)."""
    trees, nodes, features = weight.shape[1], weight.shape[2], weight.shape[3]
    for row in range(x.shape[0]):
        m = models[row]
        # The prediction comes before any update.
        n, mu, p, f = _predict(x[row], weight[m], bias[m], logits[m], ancestors, left, row, predictions)
        label, group = y[row], groups[row]
        if label < 0:
            continue  # no label yet: predict only
        g_weight, g_bias, g_logits = _cross_entropy_gradients(x[row], label, n, mu, p, f, ancestors, left)
        # Group aggregates, then the fairness gradient from them alone.
        if 0 <= group < counts.shape[1]:
            counts[m, group] += 1
            inverse = 1.0 / counts[m, group]
            for t in range(trees):
                for i in range(nodes):
                    slope = n[t, i] * (1.0 - n[t, i])
                    sums[m, group, t, i] += n[t, i]
                    grad_bias[m, group, t, i] += (slope - grad_bias[m, group, t, i]) * inverse
                    for j in range(features):
                        grad_weight[m, group, t, i, j] += (slope * x[row, j] - grad_weight[m, group, t, i, j]) * inverse
        fair_weight, fair_bias = fairness_gradients(sums[m], counts[m], grad_weight[m], grad_bias[m], fairness, delta)
        g_weight += fair_weight
        g_bias += fair_bias
        _adam_all(weight[m], bias[m], logits[m], g_weight, g_bias, g_logits,
                  (moments[0][m], moments[1][m], moments[2][m], moments[3][m], moments[4][m], moments[5][m]),
                  steps[m:m + 1], lr, beta1, beta2, eps)


@numba.njit(cache=True)
def _learn_with_reservoirs(x, y, groups, weight, bias, logits, ancestors, left, moments, steps, reservoirs, filled,
                           seen, draws, fairness, lr, beta1, beta2, eps, predictions):  # pragma: no cover - compiled
    """The storage-based baseline: a reservoir of past inputs per group, and at every step the penalty
    λ Σ |mean n(reservoir 1) - mean n(reservoir 0)| recomputed on them with the current parameters."""
    trees, nodes, features = weight.shape
    capacity = reservoirs.shape[1]
    for row in range(x.shape[0]):
        n, mu, p, f = _predict(x[row], weight, bias, logits, ancestors, left, row, predictions)
        label, group = y[row], groups[row]
        if label < 0:
            continue
        g_weight, g_bias, g_logits = _cross_entropy_gradients(x[row], label, n, mu, p, f, ancestors, left)
        if group == 0 or group == 1:  # reservoir sampling (Vitter's algorithm R) with pre-drawn uniforms
            seen[group] += 1
            if filled[group] < capacity:
                reservoirs[group, filled[group]] = x[row]
                filled[group] += 1
            else:
                slot = int(draws[row] * seen[group])
                if slot < capacity:
                    reservoirs[group, slot] = x[row]
        if fairness > 0.0 and filled[0] > 0 and filled[1] > 0:
            means = np.zeros((2, trees, nodes))
            mean_weight = np.zeros((2, trees, nodes, features))
            mean_bias = np.zeros((2, trees, nodes))
            for g in range(2):
                for r in range(filled[g]):
                    stored = _node_outputs(reservoirs[g, r], weight, bias)
                    for t in range(trees):
                        for i in range(nodes):
                            slope = stored[t, i] * (1.0 - stored[t, i]) / filled[g]
                            means[g, t, i] += stored[t, i] / filled[g]
                            mean_bias[g, t, i] += slope
                            for j in range(features):
                                mean_weight[g, t, i, j] += slope * reservoirs[g, r, j]
            for t in range(trees):
                for i in range(nodes):
                    sign = 1.0 if means[1, t, i] > means[0, t, i] else -1.0
                    g_bias[t, i] += fairness * sign * (mean_bias[1, t, i] - mean_bias[0, t, i])
                    for j in range(features):
                        g_weight[t, i, j] += fairness * sign * (mean_weight[1, t, i, j] - mean_weight[0, t, i, j])
        _adam_all(weight, bias, logits, g_weight, g_bias, g_logits, moments, steps, lr, beta1, beta2, eps)


class ForestBank(SlotArrays, Stateful):
    """Independent Aranyani learners over the same inputs, one per model index (an entity's, in an operator), trained by
    one compiled loop: :meth:`learn` takes each row's model. Every model starts from the same seeded parameters (those
    of ``ObliqueForest(features, 2, trees, depth, seed)``), so a model's results do not depend on its index or on the
    other models.

    Parameters
    ----------
    features
        Inputs per row.
    groups
        k, the number of protected groups (indices ``0 .. k - 1``). The fairness term is the mean of the node-level
        parity penalties over the k (k - 1) / 2 pairs of groups (pairwise gaps; one pair, the paper's term, when k = 2).
    trees, depth
        T trees of depth h (the authors' defaults: 3 and 4).
    fairness
        λ, the weight of the node-level demographic-parity penalty; 0 is plain online training.
    learning_rate
        Adam's step size (the authors': 2e-3).
    delta
        Huber threshold δ of the penalty.
    seed
        Seed of the initial parameters.
    models
        Models allocated at first (:meth:`resize` adds more).
    """

    def __init__(self, features: int, *, groups: int = 2, trees: int = 3, depth: int = 4, fairness: float = 0.0,
                 learning_rate: float = 2e-3, delta: float = HUBER_DELTA, seed: int = 0, models: int = 1) -> None:
        if groups < 2:
            raise ValueError("need at least 2 groups")
        self.initial = ObliqueForest(features, 2, trees, depth, seed)
        self.groups, self.fairness, self.learning_rate, self.delta = groups, float(fairness), float(learning_rate), delta
        self._allocate(models)

    def _allocate(self, models: int) -> None:
        forest = self.initial
        self.parameters = [np.repeat(p[None], models, axis=0) for p in forest.parameters()]
        self.moments = [np.zeros_like(p) for p in self.parameters for _ in range(2)]
        self.steps = np.zeros(models, dtype=np.int64)
        trees, nodes, features = forest.node_weight.shape
        self.group_counts = np.zeros((models, self.groups), dtype=np.int64)
        self.group_sums = np.zeros((models, self.groups, trees, nodes))
        self.group_grad_weight = np.zeros((models, self.groups, trees, nodes, features))
        self.group_grad_bias = np.zeros((models, self.groups, trees, nodes))

    _STATE = ("parameters", "moments", "steps", "group_counts", "group_sums", "group_grad_weight", "group_grad_bias")

    def _arrays(self) -> list[np.ndarray]:
        return [*self.parameters, *self.moments, self.steps, self.group_counts, self.group_sums, self.group_grad_weight,
                self.group_grad_bias]

    models = SlotArrays.slots

    def learn(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray, models: np.ndarray | None = None) -> np.ndarray:
        """The prediction for each row (made before learning from it) by model ``models[row]`` (default 0); rows with
        ``y < 0`` are predicted only, rows with a group outside ``0 .. k - 1`` learn without entering the fairness
        aggregates."""
        n = len(x)
        models = np.zeros(n, dtype=np.int64) if models is None else np.ascontiguousarray(models, dtype=np.int64)
        predictions = np.empty(n, dtype=np.int64)
        _learn(np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(y, dtype=np.int64),
               np.ascontiguousarray(groups, dtype=np.int64), models, *self.parameters, self.initial.ancestors,
               self.initial.left, tuple(self.moments), self.steps, self.group_counts, self.group_sums,
               self.group_grad_weight, self.group_grad_bias, self.fairness, self.delta, self.learning_rate, *BETAS_EPS,
               predictions)
        return predictions

    def reset(self, models: np.ndarray) -> None:
        """Models back to their initial state."""
        super().reset(models)
        for mine, initial in zip(self.parameters, self.initial.parameters()):
            mine[models] = initial

    def snapshot(self) -> dict:
        return {"parameters": [p.copy() for p in self.parameters], "moments": [m.copy() for m in self.moments],
                **{name: getattr(self, name).copy() for name in self._STATE[2:]}}

    def restore(self, state: dict) -> None:
        self._allocate(len(state["steps"]))
        for mine, saved in zip(self._arrays(), [*state["parameters"], *state["moments"],
                                                *(state[name] for name in self._STATE[2:])]):
            mine[...] = saved

    def state_bytes(self) -> int:
        return tensor_bytes(self._arrays())


class FairLearner(ForestBank):
    """Prequential Aranyani training of one ``forest`` (updated in place): :meth:`learn` predicts each row, then learns
    from it. Parameters as in :class:`ForestBank`; ``counts``, ``sums``, ``grad_weight`` and ``grad_bias`` are the
    per-group aggregates (count, running sum of node outputs, running means of node-output gradients)."""

    def __init__(self, forest: ObliqueForest, fairness: float = 0.0, learning_rate: float = 2e-3,
                 delta: float = HUBER_DELTA, groups: int = 2) -> None:
        self.forest = forest
        super().__init__(forest.node_weight.shape[2], groups=groups, trees=forest.node_weight.shape[0],
                         depth=forest.ancestors.shape[1], fairness=fairness, learning_rate=learning_rate, delta=delta)

    def _allocate(self, models: int) -> None:
        super()._allocate(models)
        self.parameters = [p[None] for p in self.forest.parameters()]  # views: training updates the forest itself

    counts = property(lambda self: self.group_counts[0])
    sums = property(lambda self: self.group_sums[0])
    grad_weight = property(lambda self: self.group_grad_weight[0])
    grad_bias = property(lambda self: self.group_grad_bias[0])

    def fairness_gradients(self) -> tuple[np.ndarray, np.ndarray]:
        """The fairness gradient the next update would add, for node weights and biases."""
        return fairness_gradients(self.sums, self.counts, self.grad_weight, self.grad_bias, self.fairness, self.delta)


class ReservoirFairLearner(FairLearner):
    """The storage-based baseline Aranyani avoids: the same forest and cross-entropy steps, but the parity penalty
    ``λ Σ |F|`` is recomputed at every step, with the current parameters, over a reservoir of up to ``capacity``
    past inputs per group (Vitter's algorithm R): ``2 · capacity`` extra forward and gradient passes per instance.

    >>> learner = ReservoirFairLearner(ObliqueForest(features=2, seed=0), fairness=1.0, capacity=10)
    >>> x = np.random.default_rng(0).normal(size=(50, 2))
    >>> _ = learner.learn(x, (x[:, 0] > 0).astype(np.int64), (x[:, 1] > 0).astype(np.int64))
    >>> learner.filled.tolist()
    [10, 10]
    """

    def __init__(self, forest: ObliqueForest, fairness: float = 0.0, learning_rate: float = 2e-3, *,
                 capacity: int = 100, seed: int = 0) -> None:
        super().__init__(forest, fairness, learning_rate)
        self.reservoirs = np.zeros((2, capacity, forest.node_weight.shape[2]))
        self.filled = np.zeros(2, dtype=np.int64)
        self.seen = np.zeros(2, dtype=np.int64)
        self.rng = np.random.default_rng(seed)

    def learn(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
        predictions = np.empty(len(x), dtype=np.int64)
        _learn_with_reservoirs(np.ascontiguousarray(x, dtype=np.float64), np.ascontiguousarray(y, dtype=np.int64),
                               np.ascontiguousarray(groups, dtype=np.int64), *self.forest.parameters(),
                               self.forest.ancestors, self.forest.left, tuple(m[0] for m in self.moments), self.steps,
                               self.reservoirs, self.filled, self.seen, self.rng.random(len(predictions)),
                               self.fairness, self.learning_rate, *BETAS_EPS, predictions)
        return predictions

    def snapshot(self) -> dict:
        return {**super().snapshot(), "reservoirs": self.reservoirs.copy(), "filled": self.filled.copy(),
                "seen": self.seen.copy(), "rng": self.rng.bit_generator.state}

    def restore(self, state: dict) -> None:
        super().restore(state)
        for name in ("reservoirs", "filled", "seen"):
            getattr(self, name)[...] = state[name]
        self.rng.bit_generator.state = state["rng"]

    def state_bytes(self) -> int:
        return super().state_bytes() + self.reservoirs.nbytes
