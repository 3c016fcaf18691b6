"""Continual-release counters: after every input, a differentially private estimate of the running sum.

Inputs are non-negative integers (others are rounded, negative ones raised to 0). ``sensitivity`` is how much one
person's event can change one step's input (1 for counting events; the privacy holds for neighbouring streams whose
inputs differ by at most that much at one step: event-level privacy). Every counter runs for a fixed horizon T; after
T steps it repeats its last release (post-processing: no further cost). Noise is exact discrete Laplace or discrete
Gaussian (:mod:`kernels.discrete_noise`); each noisy measurement is made once and reused.

* ``binary-laplace`` / ``binary-gaussian``: the binary tree mechanism (Dwork, Naor, Pitassi and Rothblum, 2010; Chan,
  Shi and Song, 2011). Levels L = ⌊log2 T⌋ + 1; a node at level j sums 2^j consecutive inputs and is noised once when
  complete; the release at t sums the p(t) = popcount(t) nodes of t's dyadic decomposition. Laplace of scale
  L·Δ/ε (ε-DP) or Gaussian of variance L·Δ²/(2ρ) (ρ-zCDP) per node. Var(t) = p(t) · node variance.
* ``honaker``: the same tree, each completed node re-estimated online from its own noisy sum and its two children's
  estimates with the minimum-variance weights (Honaker, 2015, in its online form): a node at height h has variance
  σ²/(2 − 2^−h). Same privacy as the tree.
* ``smooth``: the smooth binary mechanism (Andersson and Pagh, 2023): inputs on the leaves of Hamming weight h/2 of a
  depth-h tree (h the smallest even depth with C(h, h/2) > T), the release at t sums the h/2 left siblings on the path
  to the next leaf; each left node is noised with variance h·Δ²/(4ρ). Var(t) = h² Δ²/(8ρ) at every t.
* ``sqrt``: the square-root factorisation of the prefix-sum matrix A = C·C, c_0 = 1, c_k = c_(k−1)·(2k − 1)/(2k)
  (Fichtenberger, Henzinger and Upadhyay, 2023; Henzinger, Upadhyay and Upadhyay, 2023). The measurement is
  C̃x + z with C̃ the factor's coefficients rounded to a dyadic grid 2^−q (so the measurement lies on a lattice and the
  exact discrete Gaussian applies; q as fine as the sampler's range allows) and z of variance Δ²·s̃(T)/(2ρ),
  s̃(T) = Σ_(k<T) c̃_k²; the release is B(C̃x + z) with B = A·C̃^−1 (post-processing), so its error is Bz and
  Var(t) = σ² Σ_(k<t) b_k² ≈ s(T)·s(t)/(2ρ). O(T) memory; blocks of steps and FFTs (:class:`SqrtCounter`).

Each counter exposes :meth:`~ContinualCounter.variance` (exact, from the discrete noise's own variance) and
:attr:`~ContinualCounter.spent`.

>>> counter = continual_counter("binary-gaussian", 1024, rho=0.5, seed=0)
>>> releases = [counter.update(1) for _ in range(100)]
>>> round(counter.variance(100), 2), counter.variance(64) < counter.variance(63)  # popcount 3 against 6 nodes
(33.0, True)

References
----------
Dwork, C., Naor, M., Pitassi, T. and Rothblum, G. N. (2010). Differential privacy under continual observation. *STOC*.

Chan, T.-H. H., Shi, E. and Song, D. (2011). Private and continual release of statistics. *ACM TISSEC* 14(3).

Honaker, J. (2015). Efficient use of differentially private binary trees. *TPDP*.

Andersson, J. D. and Pagh, R. (2023). A smooth binary mechanism for efficient private continual observation. *NeurIPS*.

Fichtenberger, H., Henzinger, M. and Upadhyay, J. (2023). Constant matters: fine-grained error bound on differentially
private continual observation. *ICML*.

Henzinger, M., Upadhyay, J. and Upadhyay, S. (2023). Almost tight error bounds on differentially private continual
counting. *SODA*.
"""
from __future__ import annotations

import functools
import math
from abc import abstractmethod
from typing import Any

import numba
import numpy as np

from kernels.discrete_noise import DiscreteGaussian, DiscreteLaplace, RandomWords
from kernels.state import Stateful
from operators.privacy.accounting import NONE, Privacy, concentrated, pure, rho_for

MECHANISMS = ("binary-laplace", "binary-gaussian", "honaker", "smooth", "sqrt")
SQRT_MAX_LATTICE_SIGMA = 4096.0  # the sqrt counter's noise, on its lattice, stays within the exact sampler's range


class ContinualCounter(Stateful):
    """Running sums released after every input, for ``horizon`` inputs (module docstring)."""

    mechanism: str

    def __init__(self, horizon: int, privacy: Privacy, sensitivity: int) -> None:
        if horizon < 1 or sensitivity < 1:
            raise ValueError("horizon and sensitivity must be at least 1")
        self.horizon, self.privacy, self.sensitivity = horizon, privacy, sensitivity
        self.t = 0
        self.last = 0.0

    @property
    def spent(self) -> Privacy:
        """The privacy this counter has spent: all of it from the first release on (every input can reach releases
        up to the horizon), none before."""
        return self.privacy if self.t else NONE

    @property
    def exhausted(self) -> bool:
        return self.t >= self.horizon

    def update(self, x: float) -> float:
        """Add one input; returns the release after it."""
        return float(self.update_many(np.array([x]))[0])

    def update_many(self, xs: np.ndarray) -> np.ndarray:
        """Add inputs in order; returns the release after each (past the horizon, the last release repeated)."""
        xs = np.maximum(np.rint(np.asarray(xs, dtype=np.float64)), 0).astype(np.int64)
        room = max(0, self.horizon - self.t)
        out = np.empty(xs.shape)
        out[:] = self.last
        if room and len(xs):
            n = min(room, len(xs))
            out[:n] = self._releases(xs[:n])
            self.t += n
            self.last = out[n - 1].copy() if out.ndim > 1 else float(out[n - 1])
            out[n:] = self.last
        return out

    @abstractmethod
    def _releases(self, xs: np.ndarray) -> np.ndarray:
        """Releases after each of ``xs`` (clipped integers, within the horizon)."""

    @abstractmethod
    def variance(self, t: int) -> float:
        """The exact variance of the release after input ``t`` (1-based)."""

    def snapshot(self) -> dict[str, Any]:
        return {"t": self.t, "last": np.copy(self.last) if np.ndim(self.last) else self.last}

    def restore(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.last = np.asarray(state["last"], dtype=np.float64) if np.ndim(state["last"]) else float(state["last"])


@numba.njit(cache=True)
def _tree_steps(xs, t0, partial, estimate, previous, weights, noise, out):  # pragma: no cover - compiled
    """Binary tree steps over rows of d inputs (d counters sharing the tree's shape); ``weights[j]`` is the weight of a
    level-j node's own noisy sum against its children's estimates (1 for the plain tree). Returns the noise values used
    (d per node)."""
    levels, d = partial.shape
    k = 0
    for i in range(xs.shape[0]):
        t = t0 + i + 1
        complete = 0
        while complete < levels and t % (1 << complete) == 0:
            complete += 1
        for j in range(levels):
            for c in range(d):
                partial[j, c] += xs[i, c]
        for j in range(complete):  # levels 0 .. complete - 1 finish a node at t
            for c in range(d):
                value = partial[j, c] + noise[k] * 1.0
                k += 1
                partial[j, c] = 0
                if j > 0 and weights[j] < 1.0:  # children: the last two completed nodes of level j - 1
                    value = weights[j] * value + (1.0 - weights[j]) * (previous[j - 1, c] + estimate[j - 1, c])
                previous[j, c] = estimate[j, c]
                estimate[j, c] = value
        for c in range(d):
            total = 0.0
            for j in range(levels):
                if (t >> j) & 1:
                    total += estimate[j, c]
            out[i, c] = total
    return k


class _NoisePool:
    """Noise drawn ahead and used in order, so that the releases do not depend on how the input is batched."""

    def __init__(self, noise: DiscreteGaussian | DiscreteLaplace) -> None:
        self.noise = noise
        self.pool = np.zeros(0, dtype=np.int64)

    def ensure(self, n: int) -> np.ndarray:
        if len(self.pool) < n:
            self.pool = np.concatenate([self.pool, self.noise.draw(max(n - len(self.pool), 64))])
        return self.pool

    def consume(self, n: int) -> None:
        self.pool = self.pool[n:]

    def snapshot(self) -> dict:
        return {"pool": self.pool.copy(), "noise": self.noise.state()}

    def restore(self, state: dict) -> None:
        self.pool = np.asarray(state["pool"], dtype=np.int64)
        self.noise.set_state(state["noise"])


class BinaryTreeCounter(ContinualCounter):
    """The binary tree mechanism, plain or with Honaker's online re-estimation (module docstring)."""

    def __init__(self, horizon: int, privacy: Privacy, sensitivity: int, noise: DiscreteGaussian | DiscreteLaplace,
                 *, honaker: bool = False, dimensions: int = 1) -> None:
        super().__init__(horizon, privacy, sensitivity)
        self.dimensions = dimensions
        self.mechanism = "honaker" if honaker else f"binary-{'laplace' if isinstance(noise, DiscreteLaplace) else 'gaussian'}"
        self.levels = horizon.bit_length()
        self.pool = _NoisePool(noise)
        heights = np.arange(self.levels)
        self.weights = 1.0 / (2.0 - 2.0 ** -heights) if honaker else np.ones(self.levels)
        self.node_variance = noise.variance * self.weights  # of a node's estimate at each height
        self.partial = np.zeros((self.levels, dimensions), dtype=np.int64)
        self.estimate = np.zeros((self.levels, dimensions))
        self.previous = np.zeros((self.levels, dimensions))

    def _releases(self, xs: np.ndarray) -> np.ndarray:
        rows = xs.reshape(len(xs), self.dimensions)
        nodes = sum((self.t + len(xs)) // (1 << j) - self.t // (1 << j) for j in range(self.levels))
        out = np.empty((len(xs), self.dimensions))
        used = _tree_steps(rows, self.t, self.partial, self.estimate, self.previous, self.weights,
                           self.pool.ensure(nodes * self.dimensions), out)
        self.pool.consume(used)
        return out.reshape(xs.shape)

    def variance(self, t: int) -> float:
        return float(sum(self.node_variance[j] for j in range(self.levels) if (t >> j) & 1))

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "partial": self.partial.copy(), "estimate": self.estimate.copy(),
                "previous": self.previous.copy(), "pool": self.pool.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.partial[...], self.estimate[...], self.previous[...] = state["partial"], state["estimate"], state["previous"]
        self.pool.restore(state["pool"])

    def state_bytes(self) -> int:
        return self.partial.nbytes + self.estimate.nbytes + self.previous.nbytes + self.pool.pool.nbytes


def smooth_depth(horizon: int) -> int:
    """h: the smallest even depth with C(h, h/2) > T.

    >>> smooth_depth(1024), smooth_depth(65536)
    (14, 20)
    """
    h = 2
    while math.comb(h, h // 2) <= horizon:
        h += 2
    return h


@numba.njit(cache=True)
def _next_balanced(x):  # pragma: no cover - compiled
    """The next larger integer with the same number of set bits (Gosper's hack)."""
    c = x & -x
    r = x + c
    return (((r ^ x) >> 2) // c) | r


@numba.njit(cache=True)
def _smooth_steps(xs, h, leaf, sums, noisy, node_id, noise, out):  # pragma: no cover - compiled
    """Smooth binary steps from the leaf of the next input; returns (steps done, noise used, leaf)."""
    k = 0
    for i in range(xs.shape[0]):
        following = _next_balanced(leaf)
        needed = h + h // 2  # at most: the finished left nodes, then the empty left siblings of the query
        if k + needed > noise.shape[0]:
            return i, k, leaf
        for depth in range(1, h + 1):
            sums[depth] += xs[i]
        # Nodes on the leaf's path below the first bit where the next leaf differs are finished.
        first = h - 1
        while ((leaf ^ following) >> first) & 1 == 0:
            first -= 1
        for depth in range(h - first, h + 1):  # depths whose prefix changes
            prefix = leaf >> (h - depth)
            if prefix & 1 == 0:  # a left child: the only nodes any release reads
                noisy[depth] = sums[depth] + noise[k] * 1.0
                node_id[depth] = prefix
                k += 1
            sums[depth] = 0
        # The release: the left siblings at the 1-bits of the next leaf (all inputs so far lie in them).
        total = 0.0
        for depth in range(1, h + 1):
            prefix = following >> (h - depth)
            if prefix & 1:
                sibling = prefix ^ 1
                if node_id[depth] != sibling:  # a left subtree that held no leaf: noised now, empty
                    noisy[depth] = noise[k] * 1.0
                    node_id[depth] = sibling
                    k += 1
                total += noisy[depth]
        out[i] = total
        leaf = following
    return xs.shape[0], k, leaf


class SmoothBinaryCounter(ContinualCounter):
    mechanism = "smooth"

    def __init__(self, horizon: int, privacy: Privacy, sensitivity: int, noise: DiscreteGaussian) -> None:
        super().__init__(horizon, privacy, sensitivity)
        self.depth = smooth_depth(horizon)
        self.pool = _NoisePool(noise)
        self.node_variance = noise.variance
        self.leaf = (1 << (self.depth // 2)) - 1  # the first balanced leaf holds the first input
        self.sums = np.zeros(self.depth + 1, dtype=np.int64)
        self.noisy = np.zeros(self.depth + 1)
        self.node_id = np.full(self.depth + 1, -1, dtype=np.int64)

    def _releases(self, xs: np.ndarray) -> np.ndarray:
        out = np.empty(len(xs))
        done = 0
        while done < len(xs):
            noise = self.pool.ensure(4 * (len(xs) - done) + 2 * self.depth)  # enough for most batches; else the loop goes on
            steps, used, self.leaf = _smooth_steps(xs[done:], self.depth, self.leaf, self.sums, self.noisy,
                                                   self.node_id, noise, out[done:])
            self.pool.consume(used)
            done += steps
        return out

    def variance(self, t: int) -> float:
        return self.depth // 2 * self.node_variance

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "leaf": self.leaf, "sums": self.sums.copy(), "noisy": self.noisy.copy(),
                "node_id": self.node_id.copy(), "pool": self.pool.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.leaf = int(state["leaf"])
        self.sums[...], self.noisy[...], self.node_id[...] = state["sums"], state["noisy"], state["node_id"]
        self.pool.restore(state["pool"])

    def state_bytes(self) -> int:
        return self.sums.nbytes + self.noisy.nbytes + self.node_id.nbytes + self.pool.pool.nbytes


def sqrt_coefficients(n: int) -> np.ndarray:
    """c_0 .. c_(n−1) of the square root of the prefix-sum matrix: c_k = binom(2k, k) / 4^k.

    >>> sqrt_coefficients(4).tolist()
    [1.0, 0.5, 0.375, 0.3125]
    """
    k = np.arange(1, n)
    return np.r_[1.0, np.cumprod((2 * k - 1) / (2 * k))]


def _convolve(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """The first n terms of the convolution of a and b (FFT)."""
    size = 1 << max(1, (len(a) + len(b) - 1).bit_length())
    return np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(b, size), size)[:n]


def series_inverse(c: np.ndarray) -> np.ndarray:
    """The first len(c) coefficients of 1 / c(x) (c_0 = 1), by Newton's iteration with FFT products."""
    n = len(c)
    d = np.array([1.0 / c[0]])
    while len(d) < n:
        m = min(2 * len(d), n)
        correction = _convolve(d, _convolve(c[:m], d, m), m)
        d = 2 * np.r_[d, np.zeros(m - len(d))] - correction
    return d


@functools.lru_cache(maxsize=8)
def _sqrt_factor(horizon: int, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """C̃ (the factor's coefficients on the dyadic grid 2^−grid) and B = A·C̃^−1 as Toeplitz coefficients, shared by
    the counters of the same horizon and grid (read-only)."""
    scale = float(1 << grid)
    factor = np.maximum(np.rint(sqrt_coefficients(horizon) * scale), 0) / scale
    release = np.cumsum(series_inverse(factor))
    factor.flags.writeable = release.flags.writeable = False
    return factor, release


@numba.njit(cache=True)
def _sqrt_block_steps(xs, t0, block_start, inputs, measured, z, factor, release, carried, grid, out):  # pragma: no cover
    """Steps t0 .. t0 + len(xs) − 1 of one block: the measurement (C̃x)_t + z_t and the release (B·measurements)_t, each
    the carried contribution of the completed blocks plus a direct sum over this block's steps so far."""
    for i in range(xs.shape[0]):
        t = t0 + i
        inputs[t] = xs[i]
        exact = carried[0, t]
        for k in range(block_start, t + 1):
            exact += factor[t - k] * inputs[k]
        measured[t] = np.rint(exact * grid) / grid + z[t]  # C̃x is on the grid: rounding removes the FFT's error
        total = carried[1, t]
        for k in range(block_start, t + 1):
            total += release[t - k] * measured[k]
        out[i] = total


class SqrtCounter(ContinualCounter):
    """The square-root factorisation counter (module docstring). Its two running products (C̃x, and B applied to the
    measurements) are computed in blocks of ``BLOCK`` steps: a step sums its own block directly, and a block's
    contribution to all later steps is added by one FFT when the block completes. The blocks are fixed on the
    timeline, so every release is computed the same way however the input is batched; O(T) memory,
    O(BLOCK + T log T / BLOCK) time per step."""

    mechanism = "sqrt"
    BLOCK = 512

    def __init__(self, horizon: int, rho: float, sensitivity: int, words: RandomWords, delta: float | None = None) -> None:
        super().__init__(horizon, concentrated(rho, delta), sensitivity)
        sigma = sensitivity * math.sqrt(float(np.sum(sqrt_coefficients(horizon) ** 2)) / (2 * rho))
        self.grid = max(0, min(30, int(math.floor(math.log2(SQRT_MAX_LATTICE_SIGMA / sigma)))))
        self.factor, self.release = _sqrt_factor(horizon, self.grid)
        scale = float(1 << self.grid)
        sensitivity2 = (sensitivity * scale) ** 2 * float(np.sum(self.factor ** 2))  # of the measurement, on the lattice
        self.noise = DiscreteGaussian(sensitivity2 / (2 * rho), words)
        self.z = self.noise.draw(horizon) / scale  # one noise value per measurement, drawn once
        self.unit_variance = self.noise.variance / scale ** 2
        self.cumulative = np.cumsum(self.release ** 2)
        self.inputs = np.zeros(horizon, dtype=np.int64)
        self.measured = np.zeros(horizon)
        self.carried = np.zeros((2, horizon))  # completed blocks' contributions: to C̃x, and to the releases

    def _releases(self, xs: np.ndarray) -> np.ndarray:
        out = np.empty(len(xs))
        done = 0
        while done < len(xs):
            t = self.t + done
            block_start = t - t % self.BLOCK
            take = min(len(xs) - done, block_start + self.BLOCK - t)
            _sqrt_block_steps(xs[done:done + take], t, block_start, self.inputs, self.measured, self.z, self.factor,
                              self.release, self.carried, float(1 << self.grid), out[done:done + take])
            done += take
            if (t + take) % self.BLOCK == 0:
                self._carry(block_start, t + take)
        return out

    def _carry(self, start: int, stop: int) -> None:
        """Add a completed block's contributions to every later step."""
        later = self.horizon - stop
        if later > 0:
            span = self.horizon - start
            block = self.inputs[start:stop].astype(np.float64)
            self.carried[0, stop:] += _convolve(self.factor[:span], block, span)[stop - start:]
            self.carried[1, stop:] += _convolve(self.release[:span], self.measured[start:stop], span)[stop - start:]

    def variance(self, t: int) -> float:
        return float(self.unit_variance * self.cumulative[t - 1])

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "inputs": self.inputs[: self.t].copy(), "z": self.z.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.z = np.asarray(state["z"], dtype=np.float64)
        replay, self.t = np.asarray(state["inputs"], dtype=np.int64), 0
        self.carried[...] = 0.0
        self._releases(replay)  # the measurements and carried sums again, computed as before
        self.t = len(replay)

    def state_bytes(self) -> int:
        return self.inputs.nbytes + self.z.nbytes + self.measured.nbytes + self.cumulative.nbytes + self.carried.nbytes


def continual_counter(mechanism: str, horizon: int, *, epsilon: float | None = None, rho: float | None = None,
                      delta: float | None = None, seed: int | None = None, sensitivity: int = 1) -> ContinualCounter:
    """A continual counter: ``binary-laplace`` takes ``epsilon`` (pure DP); the Gaussian ones (``binary-gaussian``,
    ``honaker``, ``smooth``, ``sqrt``) take ``rho`` (zCDP), or ``epsilon`` and ``delta`` (converted to the largest ρ that
    implies them). ``honaker`` with ``epsilon`` alone uses Laplace noise. ``seed`` makes the noise reproducible (tests
    only: without it the noise comes from the OS CSPRNG)."""
    if mechanism not in MECHANISMS:
        raise ValueError(f"unknown mechanism {mechanism!r} (one of {', '.join(MECHANISMS)})")
    words = RandomWords(seed)
    laplace = mechanism == "binary-laplace" or (mechanism == "honaker" and rho is None and delta is None)
    if laplace:
        if epsilon is None or epsilon <= 0:
            raise ValueError(f"{mechanism} needs epsilon > 0")
        levels = horizon.bit_length()
        noise: DiscreteLaplace | DiscreteGaussian = DiscreteLaplace(levels * sensitivity / epsilon, words)
        return BinaryTreeCounter(horizon, pure(epsilon), sensitivity, noise, honaker=mechanism == "honaker")
    if rho is None:
        if epsilon is None or not delta:
            raise ValueError(f"{mechanism} needs rho, or epsilon and delta")
        rho = rho_for(epsilon, delta)
    if rho <= 0:
        raise ValueError("rho must be positive")
    privacy = concentrated(rho, delta)
    if mechanism == "sqrt":
        return SqrtCounter(horizon, rho, sensitivity, words, delta)
    if mechanism == "smooth":
        depth = smooth_depth(horizon)
        return SmoothBinaryCounter(horizon, privacy, sensitivity, DiscreteGaussian(depth * sensitivity ** 2 / (4 * rho), words))
    levels = horizon.bit_length()
    return BinaryTreeCounter(horizon, privacy, sensitivity, DiscreteGaussian(levels * sensitivity ** 2 / (2 * rho), words),
                             honaker=mechanism == "honaker")
