"""One Adam step on a flat view of a parameter array, compiled, with torch.optim.Adam's arithmetic (no weight decay).

For the per-instance learners that run as numba loops (Aranyani and its baselines), where an optimiser object per
step would cost more than the model's arithmetic.

>>> import numpy as np
>>> param, grad = np.array([1.0]), np.array([0.5])
>>> first, second = np.zeros(1), np.zeros(1)
>>> adam_step(param, grad, first, second, 0.1, 0.9, 0.999, 1e-8, 1 - 0.9, 1 - 0.999)
>>> round(float(param[0]), 6)  # the first step moves by the learning rate
0.9

References
----------
Kingma, D. P. and Ba, J. (2015). Adam: a method for stochastic optimization. *ICLR*.
"""
from __future__ import annotations

import math

import numba

BETAS_EPS = (0.9, 0.999, 1e-8)  # torch.optim.Adam's defaults


@numba.njit(cache=True)
def adam_step(param, grad, first, second, lr, beta1, beta2, eps, correction1, correction2):  # pragma: no cover
    """``param -= lr / correction1 · m / (sqrt(v) / sqrt(correction2) + eps)`` element-wise, after updating the
    moments ``first`` (m) and ``second`` (v) in place; ``correction`` = 1 - beta ** step."""
    flat_p, flat_g, flat_m, flat_v = param.ravel(), grad.ravel(), first.ravel(), second.ravel()
    for k in range(flat_p.shape[0]):
        flat_m[k] = beta1 * flat_m[k] + (1.0 - beta1) * flat_g[k]
        flat_v[k] = beta2 * flat_v[k] + (1.0 - beta2) * flat_g[k] * flat_g[k]
        flat_p[k] -= (lr / correction1) * flat_m[k] / (math.sqrt(flat_v[k]) / math.sqrt(correction2) + eps)
