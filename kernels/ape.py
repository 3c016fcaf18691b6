"""APE math: hashed entity embeddings, pairwise event compatibility, NCE steps with Adagrad.

An event is one entity per type; an entity is given by two bucket indices of its type's table (two
stable hashes, :mod:`operators.ape`), and its embedding is the sum of those two rows, so two entities
that collide in one bucket still differ in the other. For types i < j the compatibility is

    S(e) = sum_{i<j} w_ij * (u_i . u_j),    w_ij >= 0,    score(e) = -(S(e) + c) = -log P(e),

with a learned log-partition constant c. :class:`ApeModel` learns by noise-contrastive estimation with
context-dependent noise: every observed event is contrasted with ``noise_per_type`` copies per type in
which that type's entity is replaced by a draw from the type's marginal ``q`` (:class:`HashedMarginal`),
the logit being ``S + c - log(noise_per_type * q(replaced entity))``. The optimiser is Adagrad written
out, updating only the rows a step touched, so its whole state (accumulated squared gradients) is plain
arrays and a restored model continues bit-identically.

>>> import numpy as np
>>> model = ApeModel(n_types=3, buckets=64, dim=4, seed=0, device="cpu")
>>> marginal = HashedMarginal(n_types=3, buckets=64, half_life=1000.0)
>>> seen = np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 10], [11, 12]]] * 8)  # two kinds of event
>>> for step in range(30):
...     marginal.update(seen)
...     noise, log_q_noise = marginal.sample(np.random.default_rng(step), rows=len(seen), per_type=2)
...     loss = model.nce_step(seen, marginal.log_q(seen), noise, log_q_noise)
>>> scores, pair_terms = model.score(np.array([[[1, 2], [3, 4], [5, 6]], [[1, 2], [9, 10], [5, 6]]]))
>>> bool(scores[1] > scores[0] + 1.0), pair_terms.shape  # a mix never seen is much less probable
(True, (2, 3))
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch.nn.functional import softplus

from kernels.device import select_device, to_device
from kernels.profiling import timed
from kernels.state import Stateful, tensor_bytes

ADAGRAD_EPS = 1e-10
FORGOTTEN = 1e-12  # a count decayed below this is treated as never seen


class HashedMarginal(Stateful):
    """Per-type exponentially decayed counts of each first bucket, plus the second bucket seen last there.

    A bucket stands for the entity that last hashed to it, so noise draws are real (first, second)
    bucket pairs, ``q`` is exactly the distribution they are drawn from, and memory is fixed whatever
    the vocabulary. Counts halve every ``half_life`` events; a bucket unseen for about 40 half-lives
    is forgotten (its count drops to zero instead of lingering as a slow subnormal float).
    """

    def __init__(self, n_types: int, buckets: int, half_life: float) -> None:
        self.half_life = half_life
        self.counts = np.zeros((n_types, buckets))
        self.second = np.zeros((n_types, buckets), dtype=np.int32)

    def update(self, ids: np.ndarray) -> None:
        """Decay by ``len(ids)`` events, then count ``ids`` (events, types, 2)."""
        self.counts *= 0.5 ** (len(ids) / self.half_life)
        self.counts[self.counts < FORGOTTEN] = 0.0
        for t in range(self.counts.shape[0]):
            np.add.at(self.counts[t], ids[:, t, 0], 1.0)
            self.second[t, ids[:, t, 0]] = ids[:, t, 1]

    def log_q(self, ids: np.ndarray) -> np.ndarray:
        """log q of every entity of ``ids``: shape (events, types)."""
        totals = self.counts.sum(axis=1)
        rows = np.arange(self.counts.shape[0])
        return np.log(self.counts[rows, ids[..., 0]] / totals)

    def sample(self, rng: np.random.Generator, rows: int, per_type: int) -> tuple[np.ndarray, np.ndarray]:
        """``per_type`` draws per row and type: bucket pairs (rows, types, per_type, 2) and their log q."""
        n_types, buckets = self.counts.shape
        noise = np.empty((rows, n_types, per_type, 2), dtype=np.int64)
        log_q = np.empty((rows, n_types, per_type))
        for t in range(n_types):
            cdf = np.cumsum(self.counts[t])
            drawn = np.minimum(np.searchsorted(cdf, rng.random((rows, per_type)) * cdf[-1], side="right"), buckets - 1)
            noise[:, t, :, 0], noise[:, t, :, 1] = drawn, self.second[t, drawn]
            log_q[:, t] = np.log(self.counts[t, drawn] / cdf[-1])
        return noise, log_q

    def snapshot(self) -> dict[str, Any]:
        return {"counts": self.counts.copy(), "second": self.second.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        self.counts = np.asarray(state["counts"], dtype=np.float64).reshape(self.counts.shape).copy()
        self.second = np.asarray(state["second"], dtype=np.int32).reshape(self.second.shape).copy()

    def state_bytes(self) -> int:
        return self.counts.nbytes + self.second.nbytes


class ApeModel(Stateful):
    """Embedding tables (types, buckets, dim), pair weights ``w``, constant ``c`` and their Adagrad sums.

    Before the first step ``c`` is set to the block's mean log-likelihood under independent marginals,
    where S = 0 puts it, so the embeddings need not carry the log-partition (they otherwise do, slowly,
    and an uninformative type such as a session id then keeps a large weight).
    """

    kernel_name = "ape"

    def __init__(self, n_types: int, buckets: int, dim: int, *, lr: float = 0.1, init_scale: float = 0.1,
                 seed: int = 0, device: str | None = None) -> None:
        if n_types < 2:
            raise ValueError("APE needs at least two entity types")
        self.lr = lr
        self.device = select_device(device)
        generator = torch.Generator().manual_seed(seed)  # on CPU, so every device starts from the same tables
        tables = torch.randn((n_types * buckets, dim), generator=generator) * init_scale
        self.tables = tables.to(self.device)
        self.pair_i, self.pair_j = (index.to(self.device) for index in torch.triu_indices(n_types, n_types, 1))
        self.w = torch.ones(len(self.pair_i), dtype=torch.float32, device=self.device)
        self.c = torch.zeros(1, dtype=torch.float32, device=self.device)
        self.tables_sq = torch.zeros_like(self.tables)
        self.w_sq = torch.zeros_like(self.w)
        self.c_sq = torch.zeros_like(self.c)
        self.steps = 0
        self.offsets = torch.arange(n_types, device=self.device).view(1, n_types, 1) * buckets

    def _pair_terms(self, rows: torch.Tensor, inverse: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """w_ij (u_i . u_j) per event and type pair; ``rows[inverse]`` has shape (events, types, 2, dim)."""
        # index_select, not rows[inverse]: its backward (index_add) accumulates in a fixed order on CPU,
        # where advanced indexing's (index_put with accumulate) varies with threads and breaks determinism.
        u = rows.index_select(0, inverse.reshape(-1)).view(*inverse.shape, -1).sum(dim=-2)
        return (u[:, self.pair_i] * u[:, self.pair_j]).sum(dim=-1) * w

    def score(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-(S + c) per event of ``ids`` (events, types, 2), and the pair terms of S (events, pairs)."""
        with timed(self.kernel_name, self.device.type), torch.no_grad():
            flat = to_device(ids, self.device) + self.offsets
            terms = self._pair_terms(self.tables, flat, self.w)
            scores = -(terms.sum(dim=-1) + self.c)
            return scores.cpu().numpy().astype(np.float64), terms.cpu().numpy().astype(np.float64)

    def nce_step(self, ids: np.ndarray, log_q: np.ndarray, noise: np.ndarray, log_q_noise: np.ndarray) -> float:
        """One Adagrad step on the NCE loss of ``ids`` (events, types, 2) against ``noise``.

        ``noise`` (events, types, k, 2) holds the replacement entities per type, ``log_q`` (events, types)
        and ``log_q_noise`` (events, types, k) their log marginals. Returns the mean loss per event.
        """
        n, n_types, k = noise.shape[:3]
        corrupted = np.broadcast_to(ids[:, None, None], (n, n_types, k, n_types, 2)).copy()
        for t in range(n_types):
            corrupted[:, t, :, t] = noise[:, t]
        events = np.concatenate([ids, corrupted.reshape(-1, n_types, 2)])
        with timed(self.kernel_name, self.device.type):
            flat = to_device(events, self.device) + self.offsets
            touched, inverse = torch.unique(flat, return_inverse=True)
            if self.steps == 0:  # see the class docstring
                self.c.fill_(float(log_q.sum(axis=1).mean()))
            rows = self.tables[touched].requires_grad_()
            w, c = self.w.clone().requires_grad_(), self.c.clone().requires_grad_()
            logits = self._pair_terms(rows, inverse, w).sum(dim=-1) + c - math.log(k)
            true_logits = logits[:n, None] - to_device(log_q, self.device, torch.float32)
            noise_logits = logits[n:].view(n, n_types, k) - to_device(log_q_noise, self.device, torch.float32)
            loss = (softplus(-true_logits).sum() + softplus(noise_logits).sum()) / n
            loss.backward()
            with torch.no_grad():
                self.tables[touched] = self._adagrad(rows, rows.grad, self.tables_sq, touched)
                self.w = self._adagrad(w, w.grad, self.w_sq).clamp_(min=0.0)  # w_ij >= 0
                self.c = self._adagrad(c, c.grad, self.c_sq)
        self.steps += 1
        return float(loss.detach())

    def _adagrad(self, value: torch.Tensor, grad: torch.Tensor, sq: torch.Tensor,
                 index: torch.Tensor | None = None) -> torch.Tensor:
        """The updated value; the squared-gradient sum ``sq`` (at ``index`` when given) is updated in place."""
        if index is None:
            sq += grad * grad
            total = sq
        else:
            total = sq[index] + grad * grad
            sq[index] = total
        return value.detach() - self.lr * grad / (total.sqrt() + ADAGRAD_EPS)

    def snapshot(self) -> dict[str, Any]:
        names = ("tables", "tables_sq", "w", "w_sq", "c", "c_sq")
        return {"steps": self.steps, **{name: getattr(self, name).cpu().numpy().copy() for name in names}}

    def restore(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        for name, current in self.snapshot().items():
            if name != "steps":
                value = np.asarray(state[name], dtype=np.float32).reshape(current.shape)
                setattr(self, name, torch.as_tensor(value, device=self.device).clone())

    def state_bytes(self) -> int:
        return tensor_bytes((self.tables, self.tables_sq, self.w, self.w_sq, self.c, self.c_sq))
