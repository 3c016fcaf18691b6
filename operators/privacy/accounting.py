"""Privacy parameters and their conversions: pure ε-DP, ρ-zCDP and (ε, δ)-DP.

A mechanism's cost is a :class:`Privacy`: ``rho`` for zero-concentrated DP (Gaussian noise), ``epsilon`` for pure DP
(Laplace noise; ε-DP implies ε²/2-zCDP), and the (ε, δ) it implies for a reference δ. zCDP composes by adding ρ, pure DP
by adding ε. The conversion from ρ-zCDP to (ε, δ) is the standard one, ε = ρ + 2√(ρ ln(1/δ)) (Bun and Steinke, 2016,
Prop. 1.3), and its inverse gives the ρ a target (ε, δ) allows; tests compare both with OpenDP's.

>>> round(rho_for(1.0, 1e-6), 5)
0.01747
>>> round(epsilon_for(rho_for(1.0, 1e-6), 1e-6), 12)
1.0

References
----------
Bun, M. and Steinke, T. (2016). Concentrated differential privacy: simplifications, extensions, and lower bounds.
*TCC*.
"""
from __future__ import annotations

import math
from typing import NamedTuple


def epsilon_for(rho: float, delta: float) -> float:
    """The ε of (ε, δ)-DP that ρ-zCDP implies."""
    return rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta))


def rho_for(epsilon: float, delta: float) -> float:
    """The largest ρ whose zCDP implies (ε, δ)-DP by :func:`epsilon_for`."""
    log = math.log(1.0 / delta)
    return (math.sqrt(log + epsilon) - math.sqrt(log)) ** 2


class Privacy(NamedTuple):
    """A privacy cost: ``rho`` (zCDP; for pure DP, ε²/2), ``epsilon`` (pure DP, or None for Gaussian mechanisms), and
    ``delta`` with the ε it implies (``approx_epsilon``) when a δ was given."""

    rho: float
    epsilon: float | None = None
    delta: float | None = None

    @property
    def approx_epsilon(self) -> float | None:
        if self.epsilon is not None and self.delta in (None, 0.0):
            return self.epsilon
        return None if not self.delta else epsilon_for(self.rho, self.delta)

    def __float__(self) -> float:
        """ε for a pure-DP cost, ρ otherwise."""
        return self.epsilon if self.epsilon is not None else self.rho

    def compose(self, other: Privacy) -> Privacy:
        """The cost of both mechanisms run on the same data."""
        epsilon = None if self.epsilon is None or other.epsilon is None else self.epsilon + other.epsilon
        return Privacy(self.rho + other.rho, epsilon, self.delta or other.delta)


NONE = Privacy(0.0, 0.0)


def pure(epsilon: float) -> Privacy:
    return Privacy(epsilon * epsilon / 2.0, epsilon)


def concentrated(rho: float, delta: float | None = None) -> Privacy:
    return Privacy(rho, None, delta)
