"""Batched robust EWMA z-scores for many entities at once.

Each (entity slot, field) keeps an exponentially weighted mean and variance. For an observation x the
score is ``|x - mean| / sqrt(var + eps)``, computed *before* x updates the state (score-then-learn).
Updates are winsorised: once warm, a residual is clipped to ``clip`` standard deviations before it
moves the state, so a single spike barely disturbs the baseline while a level shift is still absorbed
over time. Until an entity has seen ``1 / alpha`` values the weight is ``1 / (n + 1)``, which makes the
first estimates exact running means and variances.

A batch may hold several events of one entity. They are processed in *rounds*: round r takes the r-th
event of every entity present, so every round is one vectorised step over distinct slots and each
entity still sees its events in order. Only element-wise arithmetic and ``sqrt`` (both correctly
rounded) are used, so results do not depend on how events were grouped into batches.

>>> import numpy as np
>>> kernel = RobustEwma(n_fields=1, alpha=0.1, clip=3.0, warmup=3)
>>> scores = kernel.score_and_learn(np.array([0, 0, 0, 0, 0]), np.array([[1.0], [2.0], [1.0], [2.0], [9.0]]))
>>> bool(np.isnan(scores[:3, 0]).all()), float(scores[4, 0])  # mean 1.5, std 0.5 before the 9
(True, 15.0)
"""
from __future__ import annotations

import numpy as np
import torch

from kernels.device import select_device
from kernels.profiling import timed
from kernels.state import Stateful, tensor_bytes


def occurrence_rank(slots: np.ndarray) -> np.ndarray:
    """Position of each element among the earlier elements with the same slot.

    >>> occurrence_rank(np.array([4, 1, 4, 4, 1])).tolist()
    [0, 0, 1, 2, 1]
    """
    order = np.argsort(slots, kind="stable")
    sorted_slots = slots[order]
    starts = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(slots)]))
    ranks = np.empty(len(slots), dtype=np.int64)
    ranks[order] = np.arange(len(slots)) - group_start
    return ranks


class RobustEwma(Stateful):
    """State tensors ``mean``, ``var`` and ``count`` of shape (slots, fields) on one device; ``rows`` slots in use."""

    kernel_name = "robust_ewma"

    def __init__(
        self,
        n_fields: int,
        *,
        alpha: float = 0.02,
        clip: float = 3.0,
        warmup: int = 30,
        min_std: float = 1e-6,
        device: str | None = None,
        capacity: int = 64,
    ) -> None:
        self.n_fields = n_fields
        self.alpha = alpha
        self.clip = clip
        self.warmup = warmup
        self.min_var = min_std * min_std
        self.device = select_device(device)
        self.mean = torch.zeros((capacity, n_fields), dtype=torch.float64, device=self.device)
        self.var = torch.zeros_like(self.mean)
        self.count = torch.zeros_like(self.mean)
        self.rows = 0

    @property
    def capacity(self) -> int:
        return self.mean.shape[0]

    def ensure_capacity(self, n_slots: int) -> None:
        if n_slots <= self.capacity:
            return
        new_capacity = max(n_slots, 2 * self.capacity)
        pad = new_capacity - self.capacity
        zeros = torch.zeros((pad, self.n_fields), dtype=torch.float64, device=self.device)
        self.mean = torch.cat([self.mean, zeros])
        self.var = torch.cat([self.var, zeros])
        self.count = torch.cat([self.count, zeros])

    def score_and_learn(self, slots: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Absolute z-score per (event, field), NaN where missing or not warm yet; then learn."""
        if len(slots):
            self.ensure_capacity(int(slots.max()) + 1)
            self.rows = max(self.rows, int(slots.max()) + 1)
        scores = np.full(values.shape, np.nan)
        if len(slots) == 0:
            return scores
        with timed(self.kernel_name, self.device.type):
            ranks = occurrence_rank(slots)
            slot_t = torch.as_tensor(slots, device=self.device)
            value_t = torch.as_tensor(values, dtype=torch.float64, device=self.device)
            out = torch.full(value_t.shape, float("nan"), dtype=torch.float64, device=self.device)
            for rank in range(int(ranks.max()) + 1):
                rows = torch.as_tensor(np.flatnonzero(ranks == rank), device=self.device)
                out[rows] = self._step(slot_t[rows], value_t[rows])
            scores[:] = out.cpu().numpy()
        return scores

    def _step(self, slots: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean, var, count = self.mean[slots], self.var[slots], self.count[slots]
        observed = ~torch.isnan(x)
        warm = observed & (count >= self.warmup)
        std = torch.sqrt(torch.clamp(var, min=self.min_var))
        residual = torch.where(observed, x - mean, torch.zeros_like(x))
        z = torch.where(warm, residual.abs() / std, torch.full_like(x, float("nan")))
        bound = self.clip * std
        residual = torch.where(warm, torch.maximum(torch.minimum(residual, bound), -bound), residual)
        weight = torch.clamp(1.0 / (count + 1.0), min=self.alpha)
        self.mean[slots] = mean + weight * residual
        self.var[slots] = torch.where(observed, (1.0 - weight) * (var + weight * residual * residual), var)
        self.count[slots] = count + observed.to(count.dtype)
        return z

    def evict(self, slots: np.ndarray) -> None:
        """Reset these slots to the state of a slot never seen."""
        index = torch.as_tensor(slots[slots < self.capacity], device=self.device)
        for tensor in (self.mean, self.var, self.count):
            tensor[index] = 0.0

    def snapshot(self) -> dict[str, np.ndarray]:
        """The rows in use as plain arrays."""
        return {name: getattr(self, name)[: self.rows].cpu().numpy().copy() for name in ("mean", "var", "count")}

    def restore(self, state: dict[str, np.ndarray]) -> None:
        n_slots = len(state["mean"])
        self.ensure_capacity(n_slots)
        self.rows = n_slots
        for name in ("mean", "var", "count"):
            getattr(self, name)[:n_slots] = torch.as_tensor(
                np.asarray(state[name], dtype=np.float64).reshape(n_slots, self.n_fields), device=self.device
            )

    def state_bytes(self) -> int:
        """The allocated state tensors (they grow to the number of slots in use, doubling)."""
        return tensor_bytes((self.mean, self.var, self.count))
