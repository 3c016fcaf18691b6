"""Mean-shift targets for MSS scoring (Tan et al., MSS-PAE).

The reference set is shifted by *blurring* mean shift: at each iteration every reference point moves to
the mean of its k nearest neighbours among the current reference points, itself included. A query
point moves, at iteration t, to the mean of itself and its k - 1 nearest neighbours among the
reference as it was at iteration t - 1, so queries never influence each other or the reference.

Distances are computed in chunks of queries, at most ``max_block`` query-reference pairs at a time,
so memory stays bounded however many points are shifted; the device is that of the tensors passed in.

>>> import torch
>>> reference = torch.tensor([[0.0], [1.0], [3.0], [10.0]], dtype=torch.float64)
>>> shifted_reference, shifted = mean_shift(reference, torch.tensor([[4.0], [-2.0]], dtype=torch.float64), k=2, iterations=3)
>>> shifted_reference.flatten().tolist(), shifted.flatten().tolist()
([0.5, 0.5, 0.875, 2.75], [2.0, 0.125])

References
----------
Tan, X., Yang, J., Chen, J., Rahardja, S. and Rahardja, S. (2025). MSS-PAE: Saving autoencoder-based
outlier detection from unexpected reconstruction. *Pattern Recognition* 163, 111467 (arXiv 2304.00709);
the authors' code: github.com/Ra1demmmm/Autoencoder-based-Outlier-Detection.
"""
from __future__ import annotations

import torch

MAX_BLOCK = 1 << 24  # query-reference distances held at once (128 MiB in float64)


def knn_mean(queries: torch.Tensor, reference: torch.Tensor, k: int, max_block: int = MAX_BLOCK) -> torch.Tensor:
    """For each query row, the mean of its ``k`` nearest reference rows (Euclidean)."""
    if not 1 <= k <= len(reference):
        raise ValueError(f"k = {k} needs 1 <= k <= {len(reference)} reference points")
    means = torch.empty_like(queries)
    reference_norms = (reference**2).sum(-1)
    chunk = max(1, max_block // len(reference))
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk]
        distances = (block**2).sum(-1, keepdim=True) + reference_norms - 2 * block @ reference.T
        nearest = distances.topk(k, dim=1, largest=False).indices
        means[start : start + chunk] = reference[nearest].mean(dim=1)
    return means


def shift_reference(reference: torch.Tensor, k: int, iterations: int, max_block: int = MAX_BLOCK) -> list[torch.Tensor]:
    """The reference before and after each blurring step: ``iterations + 1`` tensors."""
    steps = [reference]
    for _ in range(iterations):
        steps.append(knn_mean(steps[-1], steps[-1], k, max_block))
    return steps


def shift_queries(queries: torch.Tensor, reference_steps: list[torch.Tensor], k: int,
                  max_block: int = MAX_BLOCK) -> torch.Tensor:
    """Queries after ``len(reference_steps) - 1`` iterations (inductive: the reference is not changed)."""
    if k < 2:
        raise ValueError("k must be at least 2 (a point and one neighbour)")
    current = queries
    for reference in reference_steps[:-1]:
        current = (current + (k - 1) * knn_mean(current, reference, k - 1, max_block)) / k
    return current


def mean_shift(reference: torch.Tensor, queries: torch.Tensor, *, k: int, iterations: int,
               max_block: int = MAX_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(shifted reference, shifted queries) after ``iterations`` steps with ``k`` neighbours."""
    steps = shift_reference(reference, k, iterations, max_block)
    return steps[-1], shift_queries(queries, steps, k, max_block)
