"""Exact discrete Laplace and discrete Gaussian noise (Canonne, Kamath and Steinke, 2020), compiled, in integer
arithmetic only, from a stream of random 64-bit words.

Floating-point Laplace or Gaussian noise leaks through the low bits of its output (Mironov, 2012) and through sampling
time; CKS20 samplers use rational parameters and integer arithmetic, so every draw follows the stated distribution
exactly. The algorithms are the paper's: Bernoulli(exp(-γ)) by von Neumann's trick (Alg. 1), the discrete Laplace by
rejection from uniform and geometric parts (Alg. 2), the discrete Gaussian by rejection from a discrete Laplace of
scale ⌊σ⌋ + 1 (Alg. 3). Uniform integers come from the words by rejection (no modulo bias).

Parameters are rationals with power-of-two denominators, rounded *up* (more noise, never less privacy): the Laplace
scale to a multiple of 2^-10, the Gaussian variance to a multiple of 2^-k for the largest k that keeps the
arithmetic within 64 bits. One guard departs from the exact distribution: a Gaussian candidate whose squared distance
would overflow is rejected; :func:`DiscreteGaussian` checks at construction that such candidates have acceptance
probability below exp(-1000), so the departure is below any measurable level.

The words come from :class:`RandomWords`: the operating system's CSPRNG (``os.urandom``) by default, a seeded PCG64
only when a seed is given (tests, reproducible demos). A stream of draws does not depend on how it is requested in
chunks, so a seeded counter gives the same releases however its input is batched.

>>> noise = DiscreteGaussian(4.0, RandomWords(seed=1))
>>> draws = noise.draw(20000)
>>> draws.dtype, bool(abs(draws.mean()) < 0.1), bool(abs(draws.var() / noise.variance - 1) < 0.05)
(dtype('int64'), True, True)

References
----------
Canonne, C. L., Kamath, G. and Steinke, T. (2020). The discrete Gaussian for differential privacy. *NeurIPS*.

Mironov, I. (2012). On significance of the least significant bits for differential privacy. *CCS*.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction

import numba
import numpy as np

LAPLACE_DENOMINATOR = 1 << 10  # the Laplace scale is a multiple of 2^-10
_OVERFLOW = 3_000_000_000  # |a| above this would overflow a² in 64 bits
_MAX_WORD_RUN = 1 << 16  # words per refill


class RandomWords:
    """Random 64-bit words: the OS CSPRNG by default, a seeded PCG64 for tests."""

    def __init__(self, seed: int | None = None) -> None:
        self.seeded = seed is not None
        self._generator = np.random.Generator(np.random.PCG64(seed)) if self.seeded else None

    def words(self, n: int) -> np.ndarray:
        if self._generator is not None:
            return self._generator.integers(0, 2 ** 64, size=n, dtype=np.uint64, endpoint=False)
        return np.frombuffer(os.urandom(8 * n), dtype=np.uint64).copy()

    def state(self) -> dict | None:
        """The seeded generator's state (None for the CSPRNG, which has none to keep)."""
        return None if self._generator is None else self._generator.bit_generator.state

    def set_state(self, state: dict | None) -> None:
        if self._generator is not None and state is not None:
            self._generator.bit_generator.state = state


@numba.njit(cache=True)
def _uniform(n, words, pos):  # pragma: no cover - compiled
    """A uniform integer in [0, n) and the next position, or (-1, pos) when the words run out."""
    un = np.uint64(n)
    floor = (np.uint64(0) - un) % un  # 2^64 mod n: words below it are rejected (no modulo bias)
    while pos < words.shape[0]:
        w = words[pos]
        pos += 1
        if w >= floor:
            return np.int64(w % un), pos
    return np.int64(-1), pos


@numba.njit(cache=True)
def _bernoulli_exp_unit(num, den, words, pos):  # pragma: no cover - compiled
    """Bernoulli(exp(-num/den)) for num/den in [0, 1] (CKS20 Alg. 1); -1 when the words run out."""
    k = 1
    while True:
        if den > (1 << 62) // k:  # den·k would overflow: the loop has run ~20 times, probability < 1/20!
            return np.int64(k % 2), pos
        u, pos = _uniform(den * k, words, pos)
        if u < 0:
            return np.int64(-1), pos
        if u >= num:
            return np.int64(k % 2), pos
        k += 1


@numba.njit(cache=True)
def _bernoulli_exp(num, den, words, pos):  # pragma: no cover - compiled
    """Bernoulli(exp(-num/den)) for any num/den >= 0: exp(-1) coins for the integer part, then the remainder."""
    while num > den:
        b, pos = _bernoulli_exp_unit(1, 1, words, pos)
        if b <= 0:
            return b, pos
        num -= den
    return _bernoulli_exp_unit(num, den, words, pos)


@numba.njit(cache=True)
def _laplace_one(num, den, words, pos):  # pragma: no cover - compiled
    """One discrete Laplace draw with P(x) ∝ exp(-|x| den / num), scale num/den (CKS20 Alg. 2 with t = num, s = den);
    (0, -1) when the words run out."""
    while True:
        u, pos = _uniform(num, words, pos)
        if u < 0:
            return np.int64(0), np.int64(-1)
        d, pos = _bernoulli_exp(u, num, words, pos)
        if d < 0:
            return np.int64(0), np.int64(-1)
        if d == 0:
            continue
        v = 0
        while True:
            b, pos = _bernoulli_exp(1, 1, words, pos)
            if b < 0:
                return np.int64(0), np.int64(-1)
            if b == 0:
                break
            v += 1
        y = (u + num * v) // den  # u + num·v is geometric with ratio exp(-1/num)
        sign, pos = _uniform(2, words, pos)
        if sign < 0:
            return np.int64(0), np.int64(-1)
        if sign == 1 and y == 0:
            continue
        return np.int64(y if sign == 0 else -y), pos


@numba.njit(cache=True)
def _gaussian_one(n, d, t, words, pos):  # pragma: no cover - compiled
    """One discrete Gaussian draw of variance parameter σ² = n/d, from discrete Laplace candidates of scale t = ⌊σ⌋ + 1
    (CKS20 Alg. 3); (0, -1) when the words run out."""
    while True:
        y, pos = _laplace_one(t, 1, words, pos)  # scale t
        if pos < 0:
            return np.int64(0), np.int64(-1)
        a = abs(y) * t * d - n  # (|y| - σ²/t)² / (2σ²) = a² / (2 n d t²)
        if abs(a) > _OVERFLOW:
            continue  # acceptance probability below exp(-1000), checked at construction
        c, pos = _bernoulli_exp(a * a, 2 * n * d * t * t, words, pos)
        if c < 0:
            return np.int64(0), np.int64(-1)
        if c == 1:
            return y, pos


@numba.njit(cache=True)
def _fill(kind, p1, p2, p3, words, out, start):  # pragma: no cover - compiled
    """Draw into out[start:] until it is full or the words run out; returns (filled up to, words used). A draw
    interrupted by the end of the words is not counted and its words are not consumed."""
    pos = 0
    i = start
    while i < out.shape[0]:
        if kind == 0:
            value, new_pos = _laplace_one(p1, p2, words, pos)
        else:
            value, new_pos = _gaussian_one(p1, p2, p3, words, pos)
        if new_pos < 0:
            break
        out[i] = value
        pos = new_pos
        i += 1
    return i, pos


class _DiscreteNoise:
    """A stream of i.i.d. integer noise values from a :class:`RandomWords` source."""

    _kind = 0

    def __init__(self, words: RandomWords, params: tuple[int, int, int]) -> None:
        self.source = words
        self._params = params
        self._words = np.zeros(0, dtype=np.uint64)  # drawn, not consumed yet

    def draw(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            if len(self._words) < 64 * (n - filled) + 256:
                more = min(_MAX_WORD_RUN, max(1024, 64 * (n - filled)))
                self._words = np.concatenate([self._words, self.source.words(more)])
            filled, used = _fill(self._kind, *self._params, self._words, out, filled)
            self._words = self._words[used:]
        return out

    def state(self) -> dict:
        return {"source": self.source.state(), "words": self._words.copy()}

    def set_state(self, state: dict) -> None:
        self.source.set_state(state["source"])
        self._words = np.asarray(state["words"], dtype=np.uint64)


class DiscreteLaplace(_DiscreteNoise):
    """Discrete Laplace noise, P(x) ∝ exp(-|x| / scale) on the integers; ``scale`` is rounded up to a multiple of
    2^-10. ``variance`` is exact: 2 e^(-1/b) / (1 - e^(-1/b))²."""

    _kind = 0

    def __init__(self, scale: float, words: RandomWords) -> None:
        if not scale > 0:
            raise ValueError("the Laplace scale must be positive")
        s = math.ceil(scale * LAPLACE_DENOMINATOR)
        self.scale = Fraction(s, LAPLACE_DENOMINATOR)
        super().__init__(words, (s, LAPLACE_DENOMINATOR, 0))  # scale s / 2^10
        q = math.exp(-1.0 / float(self.scale))
        self.variance = 2.0 * q / (1.0 - q) ** 2


class DiscreteGaussian(_DiscreteNoise):
    """Discrete Gaussian noise, P(x) ∝ exp(-x² / (2σ²)) on the integers; σ² (``sigma2``) is rounded up to a multiple
    of 2^-k, k as large as 64-bit arithmetic allows (up to 10). ``variance`` is the exact variance of the draws
    (slightly below σ²), computed from the pmf."""

    _kind = 1

    def __init__(self, sigma2: float, words: RandomWords) -> None:
        if not 0 < sigma2 < 1e12:
            raise ValueError("the Gaussian variance must be in (0, 1e12)")
        for bits in range(10, -1, -1):
            d = 1 << bits
            n = math.ceil(sigma2 * d)
            t = math.isqrt(n // d) + 1
            # The smallest |a| the guard rejects must have acceptance probability below exp(-1000).
            if _OVERFLOW ** 2 / (2 * n * d * t * t) >= 1000 and 2 * n * d * t * t < (1 << 62):
                break
        else:
            raise ValueError(f"a Gaussian variance of {sigma2:g} is outside the exact sampler's range")
        self.sigma2 = Fraction(n, d)
        super().__init__(words, (n, d, t))
        sigma = math.sqrt(n / d)
        support = np.arange(-math.ceil(40 * sigma) - 1, math.ceil(40 * sigma) + 2, dtype=np.float64)
        weights = np.exp(-support ** 2 / (2 * n / d))
        self.variance = float((weights * support ** 2).sum() / weights.sum())
