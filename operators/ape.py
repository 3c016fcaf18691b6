"""APE: anomaly scores for events made of categorical entities (Chen et al., IJCAI 2016).

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
>>> batch = Batch.from_events(events, numeric=[], text=["user", "host"])
>>> _ = op.process(batch)
>>> scores = batch.scores["ape"]
>>> bool(scores[-2] > np.nanmax(scores[1024:-2]) > scores[-1])  # u3 on a host of the other group stands out
True
>>> op.explain(batch, len(pairs) - 2)[1]
['user', 'host']

References
----------
Chen, T., Tang, L.-A., Sun, Y., Chen, Z. and Zhang, K. (2016). Entity embedding-based anomaly detection
for heterogeneous categorical events. *IJCAI*, 1396-1403.

Gutmann, M. and Hyvärinen, A. (2010). Noise-contrastive estimation: a new estimation principle for
unnormalized statistical models. *AISTATS*, 297-304.

Duchi, J., Hazan, E. and Singer, Y. (2011). Adaptive subgradient methods for online learning and
stochastic optimization. *JMLR* 12, 2121-2159.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar
from collections.abc import Sequence

import numpy as np

from kernels.ape import ApeModel, HashedMarginal
from operators.alerting import AlertingParams
from operators.base import ScoringOperator
from operators.batch import Batch
from operators.guardrails import GuardrailParams
from operators.params import DEVICE_PATTERN, param

MISSING = "<missing>"


@dataclass
class ApeParams:
    """Parameters of :class:`ApeOperator`."""

    dim: int = param(16, "embedding width", min=1, max=4096)
    buckets: int = param(8192, "embedding rows per entity type: the vocabulary bound (more buckets, fewer collisions)",
                         min=2, max=2**26)
    noise_per_type: int = param(3, "noise events per observed event and type", min=1, max=1000)
    minibatch: int = param(256, "events per learning step", min=1, unit="events")
    lr: float = param(0.1, "Adagrad learning rate", min=1e-9)
    init_scale: float = param(0.1, "standard deviation of the initial embeddings", min=0.0)
    marginal_half_life: float = param(100_000.0, "events after which a count in the noise marginal weighs half",
                                      min=1.0, unit="events")
    warmup: int = param(2000, "events learned before events are scored", min=0, unit="events")
    seed: int = param(0, "seed of the initial embeddings and the noise draws", min=0)
    device: str = param("auto", "where the kernel runs: auto, cpu, cuda or cuda:N", pattern=DEVICE_PATTERN)
    alerting: AlertingParams = param(AlertingParams(), "the false-alarm budget and severity levels")
    guardrails: GuardrailParams = param(GuardrailParams(), "direction, minimum deviation and valid range of an alert")


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

    @classmethod
    def contract_cases(cls) -> list[tuple[list[str], ApeParams]]:
        return [(["c0", "c1", "c2"], ApeParams(dim=4, buckets=64, minibatch=32, warmup=64, device="cpu",
                                               alerting=AlertingParams(window=50, warmup=10, tail=5)))]

    @property
    def numeric_inputs(self) -> tuple[str, ...]:
        return ()

    @property
    def text_inputs(self) -> tuple[str, ...]:
        return self.fields

    def _entity_ids(self, batch: Batch) -> np.ndarray:
        ids = np.empty((len(batch), len(self.fields), 2), dtype=np.int64)
        for t, type_name in enumerate(self.fields):
            values = batch.text(type_name).tolist()  # None where missing or not a string
            buckets = {value: entity_buckets(type_name, value, self.params.buckets) for value in dict.fromkeys(values)}
            ids[:, t] = np.array([buckets[value] for value in values], dtype=np.int64).reshape(len(values), 2)
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
        shown = [value if value is not None else MISSING for value in (batch.text(a)[row], batch.text(b)[row])]
        score = batch.scores[self.name][row]
        return (f"{a}={shown[0]} and {b}={shown[1]} are the least compatible pair of the event "
                f"(pair term {terms[weakest]:.2f}, -log P {score:.2f})", [a, b])

    def snapshot(self) -> dict[str, Any]:
        return {
            **super().snapshot(),
            "learned": self.learned,
            "pending": self.pending[: self.n_pending].copy(),
            "marginal": self.marginal.snapshot(),
            "model": self.model.snapshot(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.learned = int(state["learned"])
        pending = np.asarray(state["pending"], dtype=np.int64).reshape(-1, len(self.fields), 2)
        self.n_pending = len(pending)
        self.pending[: self.n_pending] = pending
        self.marginal.restore(state["marginal"])
        self.model.restore(state["model"])

    def state_bytes(self) -> int:
        return super().state_bytes() + self.model.state_bytes() + self.marginal.state_bytes() + self.pending.nbytes
