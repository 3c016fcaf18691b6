"""Differential privacy under continual observation: continual-release counters, private selection of the largest of
several sums, and the privacy budget ledger (see each module)."""
from operators.privacy.accounting import Privacy, epsilon_for, rho_for
from operators.privacy.counters import MECHANISMS, ContinualCounter, continual_counter
from operators.privacy.selection import Selector, max_sum, sum_select

__all__ = ["MECHANISMS", "ContinualCounter", "Privacy", "Selector", "continual_counter", "epsilon_for", "max_sum", "rho_for",
           "sum_select"]
