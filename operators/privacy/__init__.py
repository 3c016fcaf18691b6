"""Differential privacy under continual observation: continual-release counters, private selection of the largest of
several sums, and the privacy budget ledger (see each module)."""
from operators.privacy.accounting import Privacy, epsilon_for, rho_for
from operators.privacy.counters import MECHANISMS, ContinualCounter, continual_counter

__all__ = ["MECHANISMS", "ContinualCounter", "Privacy", "continual_counter", "epsilon_for", "rho_for"]
