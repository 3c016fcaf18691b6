"""Adjustable probabilistic reconstruction error (APRE; "WNLL" in MSS-PAE), per sample.

A probabilistic autoencoder's decoder outputs a mean ``mu`` and a raw value ``raw`` per input
dimension; the variance is ``softplus(raw)``. For a target x (the input itself, or its mean-shifted
version under MSS scoring)::

    APRE(x) = alpha * sum_j (x_j - mu_j)^2 / (var_j + 1e-5)  +  beta * sum_j log(var_j + 1e-5)

alpha weights the uncertainty-normalised reconstruction error, beta the log-variance. The authors'
code trains with alpha = beta = 1 (the Gaussian negative log-likelihood up to constants) and applies
the user's weights (defaults 0.5 and 2) only when scoring; so do we.

>>> import torch
>>> x, mu, raw = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.zeros(1, 2)
>>> round(float(apre(x, mu, raw, alpha=1.0, beta=1.0)), 6), round(float(apre(x, mu, raw)), 6)
(-0.01166, -1.105325)

References
----------
Tan, X., Yang, J., Chen, J., Rahardja, S. and Rahardja, S. (2025). MSS-PAE: Saving autoencoder-based
outlier detection from unexpected reconstruction. *Pattern Recognition* 163, 111467 (arXiv 2304.00709);
the authors' code: github.com/Ra1demmmm/Autoencoder-based-Outlier-Detection.
"""
from __future__ import annotations

import torch
from torch.nn.functional import softplus

EPS = 1e-5
SCORE_ALPHA, SCORE_BETA = 0.5, 2.0


def apre(target: torch.Tensor, mu: torch.Tensor, raw: torch.Tensor,
         alpha: float = SCORE_ALPHA, beta: float = SCORE_BETA) -> torch.Tensor:
    """APRE of each row of ``target`` under the predicted ``mu`` and ``softplus(raw)`` variances."""
    variance = softplus(raw) + EPS
    return alpha * ((target - mu) ** 2 / variance).sum(-1) + beta * torch.log(variance).sum(-1)


def squared_error(target: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """The plain autoencoder's score: the sum (not mean) of squared errors per row."""
    return ((target - reconstruction) ** 2).sum(-1)
