"""The largest of d running sums under continual release: MaxSum (its value) and SumSelect (its index).

Selecting the largest of several sums is fundamentally harder under continual release than counting: the error of
every algorithm is about T^(1/3) times the batch error, and simple algorithms match this (Jain, Raskhodnikova,
Sivakumar and Smith, 2023). Two algorithms, and a rule that picks between them before seeing any data:

* **counter-max**: one d-dimensional continual counter (the online Honaker tree, Gaussian noise scaled for a row's
  ℓ2 sensitivity √d), releasing the max (MaxSum) or the argmax (SumSelect) of its noisy sums. Good when d is small;
  error ≤ √(2 V ln(2Td/β)) with V the largest per-step variance (twice that for SumSelect), with probability 1 − β.
* **svt**: the sparse vector technique (Dwork and Roth, 2014, Alg. 1-2): the output changes only when a noisy query
  of the gap (MaxSum: max_j S_j − output; SumSelect: max_j S_j − S_ĵ) crosses a noisy threshold τ; at most k updates;
  the threshold noise is drawn afresh after every update; each update releases a separate noisy value (a discrete
  Laplace draw for MaxSum, report-noisy-max for SumSelect). The parameters follow from (T, d, ε, δ, β, λ): ρ from
  (ε, δ), ε0 = √(2ρ/k) per round, ε1 = (1 − λ)ε0 for the comparison and ε2 = λε0 for the release; with
  A = (2Δ/ε1) ln(3k/β) + (4Δ/ε1) ln(3T/β), R = ln(3k/β)/ε2 (SumSelect: 4 ln(3kd/β)/ε2) and τ = A + R + T/k, the error
  is at most 2A + R + T/k with probability 1 − β; k minimises it. Δ = 1 for MaxSum, 2 for SumSelect.
* **auto**: the smaller of the two bounds (and never worse than the trivial error T).

All noise is exact discrete noise (:mod:`kernels.discrete_noise`), all comparisons are on integers.

>>> selector = max_sum(10_000, 8, epsilon=1.0, delta=1e-6, seed=0)
>>> selector.algorithm, selector.error_bound > 0
('counter', True)
>>> rows = np.zeros((10_000, 8), dtype=np.int64); rows[:, 3] = 1
>>> bool(abs(selector.update_many(rows)[-1] - 10_000) < selector.error_bound)
True

References
----------
Jain, P., Raskhodnikova, S., Sivakumar, S. and Smith, A. (2023). The price of differential privacy under continual
observation. *ICML*.

Dwork, C. and Roth, A. (2014). The algorithmic foundations of differential privacy. *Foundations and Trends in
Theoretical Computer Science* 9(3-4), ch. 3.6.
"""
from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from kernels.discrete_noise import DiscreteGaussian, DiscreteLaplace, RandomWords
from kernels.state import Stateful
from operators.privacy.accounting import NONE, Privacy, concentrated, rho_for
from operators.privacy.counters import BinaryTreeCounter


def svt_parameters(horizon: int, dimensions: int, epsilon: float, delta: float, beta: float = 0.05,
                   split: float = 0.3, select: bool = False) -> dict[str, float]:
    """k (the update cap), τ, the error bound and the per-round budgets of the SVT algorithm (module docstring).

    >>> p = svt_parameters(10 ** 6, 50, 1.0, 1e-6)
    >>> p["cap"], round(p["threshold"]), round(p["bound"])
    (115, 17707, 25027)
    """
    rho = rho_for(epsilon, delta)
    sensitivity = 2.0 if select else 1.0
    k = np.arange(1, min(horizon, 1_000_000) + 1, dtype=np.float64)
    eps0 = np.sqrt(2 * rho / k)
    eps1, eps2 = (1 - split) * eps0, split * eps0
    a = 2 * sensitivity / eps1 * np.log(3 * k / beta) + 4 * sensitivity / eps1 * np.log(3 * horizon / beta)
    r = 4 / eps2 * np.log(3 * k * dimensions / beta) if select else np.log(3 * k / beta) / eps2
    bound = 2 * a + r + horizon / k
    best = int(np.argmin(bound))
    return {"cap": best + 1, "threshold": float(a[best] + r[best] + horizon / k[best]), "bound": float(bound[best]),
            "compare_epsilon": float(eps1[best]), "release_epsilon": float(eps2[best]), "rho": rho,
            "sensitivity": sensitivity}


def counter_bound(horizon: int, dimensions: int, epsilon: float, delta: float, beta: float = 0.05,
                  select: bool = False) -> float:
    """The counter-max error bound: √(2 V ln(2Td/β)), V the Honaker tree's largest per-step variance at ℓ2
    sensitivity √d (twice that for SumSelect)."""
    rho = rho_for(epsilon, delta)
    levels = horizon.bit_length()
    node = levels * dimensions / (2 * rho)
    steps = np.arange(1, horizon + 1)
    variance = sum(((steps >> j) & 1) * (node / (2 - 2.0 ** -j)) for j in range(levels))
    return (2 if select else 1) * math.sqrt(2 * float(variance.max()) * math.log(2 * horizon * dimensions / beta))


@numba.njit(cache=True)
def _svt_steps(rows, sums, state, cap, threshold, thresholds, queries, releases, select, out):  # pragma: no cover
    """SVT over rows: state = [output (MaxSum value or SumSelect index), updates so far]."""
    d = sums.shape[0]
    for i in range(rows.shape[0]):
        top = -(1 << 62)
        for c in range(d):
            sums[c] += rows[i, c]
            top = max(top, sums[c])
        gap = top - (sums[state[0]] if select else state[0])
        r = state[1]
        if r < cap and gap + queries[i] >= threshold + thresholds[r]:
            if select:  # report noisy max
                best, best_value = 0, sums[0] + releases[r * d]
                for c in range(1, d):
                    value = sums[c] + releases[r * d + c]
                    if value > best_value:
                        best, best_value = c, value
                state[0] = best
            else:
                state[0] = top + releases[r * d]
            state[1] = r + 1
        out[i] = state[0]


class Selector(Stateful):
    """MaxSum or SumSelect over d running sums, for ``horizon`` rows (module docstring). ``update_many(rows)`` takes
    rows of d non-negative integers, one person's event changing the rows by at most one in one coordinate or one in
    each (a 0/1 row), and returns the release after each row: the estimate of the largest sum (MaxSum) or the index of
    a large sum (SumSelect)."""

    def __init__(self, horizon: int, dimensions: int, *, epsilon: float, delta: float, beta: float = 0.05,
                 split: float = 0.3, select: bool = False, algorithm: str = "auto", seed: int | None = None) -> None:
        if algorithm not in ("auto", "counter", "svt"):
            raise ValueError(f"unknown algorithm {algorithm!r} (auto, counter or svt)")
        self.horizon, self.dimensions, self.select = horizon, dimensions, select
        self.svt = svt_parameters(horizon, dimensions, epsilon, delta, beta, split, select)
        bounds = {"counter": counter_bound(horizon, dimensions, epsilon, delta, beta, select), "svt": self.svt["bound"]}
        self.algorithm = min(bounds, key=bounds.get) if algorithm == "auto" else algorithm
        self.error_bound = min(bounds[self.algorithm], float(horizon))
        self.privacy = concentrated(self.svt["rho"], delta)
        self.t = 0
        words = RandomWords(seed)
        if self.algorithm == "counter":
            levels = horizon.bit_length()
            noise = DiscreteGaussian(levels * dimensions / (2 * self.svt["rho"]), words)
            self.counter = BinaryTreeCounter(horizon, self.privacy, 1, noise, honaker=True, dimensions=dimensions)
        else:
            cap, eps1, eps2 = self.svt["cap"], self.svt["compare_epsilon"], self.svt["release_epsilon"]
            sensitivity = self.svt["sensitivity"]
            self.threshold = math.ceil(self.svt["threshold"])
            self.query_noise = DiscreteLaplace(4 * sensitivity / eps1, words)
            # One threshold per round (redrawn after every update) and one release per round, drawn ahead.
            self.thresholds = DiscreteLaplace(2 * sensitivity / eps1, words).draw(cap + 1)
            self.releases = DiscreteLaplace((2 if select else 1) / eps2, words).draw(cap * dimensions)
            self.sums = np.zeros(dimensions, dtype=np.int64)
            self.state = np.zeros(2, dtype=np.int64)  # output, updates

    @property
    def updates(self) -> int:
        return int(self.state[1]) if self.algorithm == "svt" else self.t

    @property
    def spent(self) -> Privacy:
        return self.privacy if self.t else NONE

    def update(self, row: np.ndarray) -> float:
        """Add one row; returns the release after it (MaxSum: the estimate; SumSelect: the index, as a float)."""
        return float(self.update_many(np.asarray(row)[None])[0])

    def update_many(self, rows: np.ndarray) -> np.ndarray:
        rows = np.maximum(np.asarray(rows, dtype=np.int64), 0).reshape(-1, self.dimensions)[: max(0, self.horizon - self.t)]
        if self.algorithm == "counter":
            noisy = self.counter.update_many(rows)
            out = (noisy.argmax(axis=1) if self.select else noisy.max(axis=1)).astype(np.float64)
        else:
            out = np.empty(len(rows))
            _svt_steps(rows, self.sums, self.state, self.svt["cap"], self.threshold, self.thresholds,
                       self.query_noise.draw(len(rows)), self.releases, self.select, out)
        self.t += len(rows)
        return out

    def snapshot(self) -> dict[str, Any]:
        if self.algorithm == "counter":
            return {"t": self.t, "counter": self.counter.snapshot()}
        return {"t": self.t, "sums": self.sums.copy(), "state": self.state.copy(), "noise": self.query_noise.state(),
                "thresholds": self.thresholds.copy(), "releases": self.releases.copy()}  # drawn ahead: state too

    def restore(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        if self.algorithm == "counter":
            self.counter.restore(state["counter"])
        else:
            self.sums[...], self.state[...] = state["sums"], state["state"]
            self.query_noise.set_state(state["noise"])
            self.thresholds = np.asarray(state["thresholds"], dtype=np.int64)
            self.releases = np.asarray(state["releases"], dtype=np.int64)

    def state_bytes(self) -> int:
        if self.algorithm == "counter":
            return self.counter.state_bytes()
        return self.sums.nbytes + self.thresholds.nbytes + self.releases.nbytes


def max_sum(horizon: int, dimensions: int, *, epsilon: float, delta: float, beta: float = 0.05, split: float = 0.3,
            algorithm: str = "auto", seed: int | None = None) -> Selector:
    """MaxSum: after each row, an estimate of the largest of the d running sums; ``.error_bound`` holds at 1 − β."""
    return Selector(horizon, dimensions, epsilon=epsilon, delta=delta, beta=beta, split=split, select=False,
                    algorithm=algorithm, seed=seed)


def sum_select(horizon: int, dimensions: int, *, epsilon: float, delta: float, beta: float = 0.05, split: float = 0.3,
               algorithm: str = "auto", seed: int | None = None) -> Selector:
    """SumSelect: after each row, the index of a sum within ``.error_bound`` of the largest, at 1 − β."""
    return Selector(horizon, dimensions, epsilon=epsilon, delta=delta, beta=beta, split=split, select=True,
                    algorithm=algorithm, seed=seed)
