"""APE: anomaly scores for events made of categorical entities (Chen et al., IJCAI 2016; outlier.md §3.5).

The operator's ``fields`` are entity types (e.g. user, process, host). Each event's entities get
embeddings, and the event's score is ``-log P(e) = -(S(e) + c)``, where ``S`` sums learned non-negative
type-pair weights times the dot products of the pair's embeddings (:mod:`kernels.ape`): an event whose
entities are each common but never occur together scores high. One model per shard serves all its keys.

* **Bounded state.** An entity maps to two buckets of its type's table of ``buckets`` rows through a
  stable hash (blake2b) of (type, value), and its embedding is the sum of both rows; the noise marginal
  is a decayed count per bucket. An unbounded stream of new values (session ids) never grows state.
* **Missing values.** A field that is absent or not a string is the type's reserved *missing* entity,
  learned like any other, so an unusual absence scores as an unusual combination.
* **Score-then-learn in fixed blocks.** The stream is cut into blocks of ``minibatch`` events by
  position, not by how batches arrive: every event is scored with the model trained on all complete
  blocks before it, and a block is learned (one NCE step with Adagrad) as soon as its last event was
  scored. Scores are therefore causal and independent of batch boundaries (bit-identical on CPU, where
  the tests check it), and the partly filled block is part of the snapshot. The noise of block ``b``
  is drawn by a generator seeded with (``seed``, ``b``), so no generator state needs saving.
* Scores are NaN until ``warmup`` events were learned. Alerts follow the calibrated false-alarm budget
  (:mod:`operators.alerting`) and name the least compatible pair of types.

>>> from operators.event import Event, SourcePosition
>>> op = ApeOperator.from_config("ape", ["user", "host"], ApeParams(dim=8, buckets=256, warmup=1024, device="cpu"))
>>> pairs = [(f"u{i % 20}", f"h{i % 20 // 10}{i % 3}") for i in range(1500)]  # users 0-9 on h0*, 10-19 on h1*
>>> pairs += [("u3", "h11"), ("u3", "h01")]
>>> events = [Event("s", i, {"user": u, "host": h}, SourcePosition(file="f", line=i)) for i, (u, h) in enumerate(pairs)]
>>> batch = Batch(events)
>>> _ = op.process(batch)
>>> scores = batch.scores["ape"]
>>> bool(scores[-2] > np.nanmax(scores[1024:-2]) > scores[-1])  # u3 on a host of the other group stands out
True
>>> op.explain(batch, len(pairs) - 2)[1]
['user', 'host']
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np

from kernels.ape import ApeModel, HashedMarginal
from operators.alerting import AlertingParams
from operators.base import Batch, ScoringOperator

MISSING = "<missing>"


@dataclass
class ApeParams:
    """``dim``: embedding width; ``buckets``: embedding rows per entity type (the vocabulary bound: more
    buckets, fewer hash collisions); ``noise_per_type``: noise events per observed event and type;
    ``minibatch``: events per learning step; ``lr``: Adagrad learning rate; ``init_scale``: standard
    deviation of the initial embeddings; ``marginal_half_life``: events after which a count in the noise
    marginal weighs half; ``warmup``: events learned before events are scored; ``seed``: initial
    embeddings and noise draws; ``device``: ``auto``, ``cpu`` or ``cuda``; ``alerting``: the false-alarm
    budget and severity levels (:class:`operators.alerting.AlertingParams`)."""

    dim: int = field(default=16, metadata={"min": 1})
    buckets: int = field(default=8192, metadata={"min": 2})
    noise_per_type: int = field(default=3, metadata={"min": 1})
    minibatch: int = field(default=256, metadata={"min": 1})
    lr: float = field(default=0.1, metadata={"min": 1e-9})
    init_scale: float = field(default=0.1, metadata={"min": 0.0})
    marginal_half_life: float = field(default=100_000.0, metadata={"min": 1.0})
    warmup: int = field(default=2000, metadata={"min": 0})
    seed: int = field(default=0, metadata={"min": 0})
    device: str = "auto"
    alerting: AlertingParams = field(default_factory=AlertingParams)


def entity_buckets(type_name: str, value: Any, buckets: int) -> tuple[int, int]:
    """Two bucket indices of an entity, stable across processes (unlike Python's salted ``hash``).

    >>> entity_buckets("user", "alice", 1024), entity_buckets("user", 3.0, 1024) == entity_buckets("user", None, 1024)
    ((942, 454), True)
    """
    key = b"\x01" + f"{type_name}\x1f{value}".encode() if isinstance(value, str) else b"\x00" + type_name.encode()
    digest = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")
    return (digest & 0xFFFFFFFF) % buckets, (digest >> 32) % buckets


class ApeOperator(ScoringOperator):
    Params: ClassVar[type] = ApeParams

    def __init__(self, name: str, fields: Sequence[str], params: ApeParams) -> None:
        super().__init__(name, fields, params)
        n_types = len(self.fields)
        self.model = ApeModel(n_types, params.buckets, params.dim, lr=params.lr, init_scale=params.init_scale,
                              seed=params.seed, device=params.device)
        self.marginal = HashedMarginal(n_types, params.buckets, params.marginal_half_life)
        self.pending = np.zeros((params.minibatch, n_types, 2), dtype=np.int64)  # the block being filled
        self.n_pending = 0
        self.learned = 0
        self.pairs = [(i, j) for i in range(n_types) for j in range(i + 1, n_types)]  # kernel's pair order
        self._pair_terms = np.empty((0, len(self.pairs)))  # per row of the batch being processed

    def _entity_ids(self, batch: Batch) -> np.ndarray:
        ids = np.empty((len(batch), len(self.fields), 2), dtype=np.int64)
        seen: dict[tuple[int, Any], tuple[int, int]] = {}  # values repeat within a batch
        for row, event in enumerate(batch.events):
            for t, type_name in enumerate(self.fields):
                value = event.fields.get(type_name)
                value = value if isinstance(value, str) else None
                buckets = seen.get((t, value))
                if buckets is None:
                    buckets = seen[(t, value)] = entity_buckets(type_name, value, self.params.buckets)
                ids[row, t] = buckets
        return ids

    def score(self, batch: Batch) -> np.ndarray:
        ids = self._entity_ids(batch)
        scores = np.full(len(ids), np.nan)
        self._pair_terms = np.empty((len(ids), len(self.pairs)))
        start = 0
        while start < len(ids):  # segments end where a block is complete
            stop = min(len(ids), start + self.params.minibatch - self.n_pending)
            segment = ids[start:stop]
            segment_scores, self._pair_terms[start:stop] = self.model.score(segment)
            if self.learned >= self.params.warmup:
                scores[start:stop] = segment_scores
            self.pending[self.n_pending : self.n_pending + len(segment)] = segment
            self.n_pending += len(segment)
            if self.n_pending == self.params.minibatch:
                self._learn_block()
            start = stop
        return scores

    def _learn_block(self) -> None:
        block = self.pending
        self.marginal.update(block)
        rng = np.random.default_rng([self.params.seed, self.learned // self.params.minibatch])
        noise, log_q_noise = self.marginal.sample(rng, len(block), self.params.noise_per_type)
        self.model.nce_step(block, self.marginal.log_q(block), noise, log_q_noise)
        self.learned += len(block)
        self.n_pending = 0

    def explain(self, batch: Batch, row: int) -> tuple[str, list[str]]:
        terms = self._pair_terms[row]
        weakest = int(np.argmin(terms))
        a, b = (self.fields[t] for t in self.pairs[weakest])
        fields = batch.events[row].fields
        shown = [value if isinstance(value, str) else MISSING for value in (fields.get(a), fields.get(b))]
        score = batch.scores[self.name][row]
        return (f"{a}={shown[0]} and {b}={shown[1]} are the least compatible pair of the event "
                f"(pair term {terms[weakest]:.2f}, -log P {score:.2f})", [a, b])

    def scorer_state(self) -> dict[str, Any]:
        return {
            "learned": self.learned,
            "pending": self.pending[: self.n_pending].copy(),
            "counts": self.marginal.counts.copy(),
            "second": self.marginal.second.copy(),
            **self.model.state(),
        }

    def load_scorer_state(self, state: dict[str, Any]) -> None:
        self.learned = int(state["learned"])
        pending = np.asarray(state["pending"], dtype=np.int64).reshape(-1, len(self.fields), 2)
        self.n_pending = len(pending)
        self.pending[: self.n_pending] = pending
        self.marginal.counts = np.asarray(state["counts"], dtype=np.float64).reshape(self.marginal.counts.shape).copy()
        self.marginal.second = np.asarray(state["second"], dtype=np.int32).reshape(self.marginal.second.shape).copy()
        self.model.load_state(state)

    def scorer_bytes(self) -> int:
        return self.model.nbytes() + self.marginal.nbytes() + self.pending.nbytes
