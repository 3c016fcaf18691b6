"""A bounded buffer of rows: a uniform reservoir sample (Algorithm R) or a sliding window.

The buffer holds at most ``capacity`` rows of width ``d`` in a tensor allocated once, on the device it
is given, so its memory is fixed from the start. Rows are added in stream order, a block at a time:

* ``window``: row t (0-based, counting every row ever added) goes to slot ``t % capacity``, so the
  buffer holds the last ``capacity`` rows;
* ``reservoir`` (Vitter's Algorithm R): the first ``capacity`` rows fill the slots in order; row
  t >= capacity draws u ~ U[0, 1) and replaces slot ``floor(u * (t + 1))`` when that is below
  ``capacity``, so every row seen so far is in the buffer with the same probability.

Exactly one uniform is drawn per row past the capacity, from a seeded ``numpy`` Generator, so the
buffer's contents (and slot order) depend only on the rows and their order, never on how they were
cut into blocks. When a block writes one slot several times the last write wins, as it would row by
row. The state is plain data: the filled rows, the row count and the Generator's ``bit_generator.state``.

>>> import numpy as np
>>> buffer = ReferenceBuffer(capacity=3, d=1, policy="window", seed=0)
>>> buffer.add(np.arange(5.0)[:, None])
>>> buffer.rows().flatten().tolist(), buffer.seen
([3.0, 4.0, 2.0], 5)
>>> one, two = ReferenceBuffer(4, 1, "reservoir", seed=7), ReferenceBuffer(4, 1, "reservoir", seed=7)
>>> one.add(np.arange(100.0)[:, None])
>>> for start in range(0, 100, 9):
...     two.add(np.arange(start, min(start + 9, 100), dtype=float)[:, None])
>>> one.rows().flatten().tolist() == two.rows().flatten().tolist()
True
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kernels.device import to_device
from kernels.state import Stateful

POLICIES = ("reservoir", "window")


class ReferenceBuffer(Stateful):
    """``capacity`` rows of width ``d`` (``dtype``, on ``device``), filled by ``policy``."""

    def __init__(self, capacity: int, d: int, policy: str, seed: Any, *, dtype: torch.dtype = torch.float64,
                 device: torch.device | str = "cpu") -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown buffer policy {policy!r}: use {' or '.join(POLICIES)}")
        if capacity < 1:
            raise ValueError("the buffer needs a capacity of at least one row")
        self.capacity = capacity
        self.policy = policy
        self.data = torch.zeros(capacity, d, dtype=dtype, device=device)
        self.seen = 0  # rows ever added
        self.rng = np.random.default_rng(seed)

    @property
    def filled(self) -> int:
        return min(self.seen, self.capacity)

    def rows(self) -> torch.Tensor:
        """The filled rows, in slot order (a view)."""
        return self.data[: self.filled]

    def slots(self, n: int) -> np.ndarray:
        """The slot each of the next ``n`` rows goes to (-1: not kept), advancing the generator."""
        t = np.arange(self.seen, self.seen + n, dtype=np.int64)
        if self.policy == "window":
            return t % self.capacity
        slots = t.copy()
        late = t >= self.capacity
        drawn = int(late.sum())
        if drawn:
            j = np.floor(self.rng.random(drawn) * (t[late] + 1)).astype(np.int64)
            slots[late] = np.where(j < self.capacity, j, -1)
        return slots

    def add(self, rows: np.ndarray | torch.Tensor) -> None:
        """Add ``rows`` (n x d) in order."""
        n = len(rows)
        if n == 0:
            return
        slots = self.slots(n)
        kept = np.flatnonzero(slots >= 0)
        # The last write to a slot wins: keep each slot's last occurrence.
        reversed_slots = slots[kept][::-1]
        unique_slots, first_in_reversed = np.unique(reversed_slots, return_index=True)
        sources = kept[::-1][first_in_reversed]
        if len(sources):
            values = torch.as_tensor(rows)[torch.from_numpy(sources)]
            device = self.data.device
            self.data[to_device(unique_slots, device)] = to_device(values, device).to(self.data.dtype)
        self.seen += n

    def state_bytes(self) -> int:
        return self.data.element_size() * self.data.nelement()

    def snapshot(self) -> dict[str, Any]:
        """Plain data: the filled rows (a copy), the row count and the generator state."""
        return {"rows": self.rows().cpu().numpy().copy(), "seen": self.seen, "rng": self.rng.bit_generator.state}

    def restore(self, state: dict[str, Any]) -> None:
        rows = np.asarray(state["rows"])
        self.seen = int(state["seen"])
        if len(rows) != self.filled:
            raise ValueError(f"buffer state has {len(rows)} rows, expected {self.filled}")
        self.data.zero_()
        self.data[: len(rows)] = torch.tensor(rows, dtype=self.data.dtype, device=self.data.device)
        self.rng.bit_generator.state = state["rng"]
