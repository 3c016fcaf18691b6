"""Streaming CNN inference per entity (StreamiNNC), batched across entities in one executor call per step round.

Each entity is a stream whose samples are the configured fields (one channel each) of its events, in stream order.
A stream steps when it has ``step`` new samples: the executor (:class:`kernels.streaminnc.StreamingCNN`) computes
only those samples' share of the feature extractor and recomputes the head over the last ``window`` samples. The
head's output, through ``activation``, gives the score of the event that completed the step (the others get none),
published as the operator's column, and a score of at least ``threshold`` raises an alert. A stream is scored once
its window and the feature extractor's receptive field behind it hold its own samples (before that the window still
holds the zeros a fresh stream starts from, which no model was trained on).

Within a micro-batch the steps are taken in rounds: round ``r`` steps every entity that completes its ``r``-th step in
the batch, all together, so entities arriving at different rates each step when they have ``step`` samples, and a
batch of thousands of entities costs a handful of executor calls. The executor runs in fixed blocks of streams
(``block``), so an entity's arithmetic, and its scores bit for bit, do not depend on which entities share its round.
Rows with a missing channel are not samples. The model file (an architecture spec and a state dict) is loaded with
``torch.load(weights_only=True)`` (:mod:`kernels.cnn_model`).

>>> import tempfile, pathlib, torch
>>> from kernels.cnn_model import FORMAT, build_modules, save_model
>>> spec = {"format": FORMAT, "channels": 1, "window": 8, "step": 4, "outputs": ["score"],
...         "features": [{"type": "conv", "in": 1, "out": 2, "kernel": 3, "padding": "causal"}, {"type": "relu"}],
...         "head": [{"type": "global_avgpool"}, {"type": "linear", "in": 2, "out": 1}]}
>>> path = str(pathlib.Path(tempfile.mkdtemp()) / "m.pt")
>>> save_model(path, spec, *build_modules(spec))
>>> from operators.event import Event, SourcePosition
>>> op = CnnOperator("beats", ["x"], CnnParams(model=path, window=8, step=4, output=0, activation="none"))
>>> batch = Batch.from_events([Event("a", i, {"x": float(i)}, SourcePosition(file="f", line=i)) for i in range(20)])
>>> _ = op.process(batch)
>>> np.flatnonzero(~np.isnan(batch.scores["beats"])).tolist()  # where steps complete, once 8 + 3 samples are in
[11, 15, 19]

References
----------
Kechris, C., Dan, J., Miranda, J. and Atienza, D. (2025). Don't think it twice: exploit shift invariance for
efficient online streaming inference of CNNs. *AAAI* 39. arXiv:2408.03223.
"""
from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal
from collections.abc import Sequence

import numpy as np
import torch

from kernels.cnn_model import load_model
from kernels.streaminnc import StreamingCNN, receptive_field
from operators.base import Operator
from operators.batch import Batch
from operators.event import Alert
from operators.params import DEVICE_PATTERN, ParamError, param

BLOCK = 64  # streams per executor call (padded): fixed shapes keep every stream's arithmetic batch-independent


@dataclass
class CnnParams:
    """Parameters of :class:`CnnOperator`."""

    model: str = param("", "model file: architecture spec and state dict (relative to the config file; "
                           "vigil:<path> is inside the installed pipeline package)", unit="path")
    window: int = param(64, "L: samples in the window the head sees", min=2, unit="samples")
    step: int = param(16, "S: new samples per step (a multiple of the model's pooling factor)", min=1, unit="samples")
    mode: Literal["exact", "approximate", "full"] = param(
        "exact", "exact (buffered streaming), approximate (no buffers) or full (recompute each window)",
        choices=("exact", "approximate", "full"))
    output: int = param(1, "which of the head's outputs is the score", min=0)
    activation: Literal["softmax", "sigmoid", "none"] = param(
        "softmax", "applied to the head's outputs before the score is read", choices=("softmax", "sigmoid", "none"))
    threshold: float = param(0.5, "alert when the score is at least this")
    severity: str = param("warning", "severity of the alerts")
    device: str = param("auto", "auto (CUDA if available), cpu, cuda or cuda:N", pattern=DEVICE_PATTERN)


class CnnOperator(Operator):
    kind: ClassVar[str] = "cnn"
    publishes: ClassVar[tuple[str, ...]] = ("",)
    Params: ClassVar[type] = CnnParams

    def __init__(self, name: str, fields: Sequence[str], params: CnnParams) -> None:
        super().__init__(name, fields, params)
        if not params.model:
            raise ParamError("model", "required: the path of a model file")
        try:
            model = load_model(params.model)
        except ValueError as error:
            raise ParamError("model", str(error)) from None
        if model.spec.get("channels") != len(self.fields):
            raise ParamError("model", f"the model reads {model.spec.get('channels')} channels, the operator has "
                                      f"{len(self.fields)} fields")
        try:
            self.cnn = StreamingCNN(model.features, model.head, params.window, params.step, mode=params.mode,
                                    streams=BLOCK, device=params.device)
            probe = self.cnn.step(torch.zeros(1, len(self.fields), params.step), slots=[0])
        except (ValueError, RuntimeError) as error:
            raise ParamError("window" if str(error).startswith("window") else "step",
                             f"the model does not run with window {params.window} and step {params.step}: "
                             f"{str(error).splitlines()[0]}") from None
        if not 0 <= params.output < probe.shape[-1]:
            raise ParamError("output", f"the head has {probe.shape[-1]} outputs (0 to {probe.shape[-1] - 1})")
        self.cnn.reset()
        # A stream is scored once its window and the receptive field behind it hold its own samples.
        self.warmup = -(-(params.window + receptive_field(model.features)) // params.step) * params.step
        self.pending = np.zeros((0, len(self.fields), params.step), dtype=np.float32)  # per slot: samples not stepped
        self.seen = np.zeros(0, dtype=np.int64)  # per slot: samples so far

    @classmethod
    def contract_cases(cls) -> list[tuple[list[str], CnnParams]]:
        path = _contract_model()
        return [(["x0", "x1"], CnnParams(model=path, window=16, step=4, threshold=0.5)),
                (["x0", "x1"], CnnParams(model=path, window=16, step=4, mode="full", activation="sigmoid"))]

    def _ensure_slots(self, slots: int) -> None:
        if slots > len(self.seen):
            grown = max(slots, 2 * len(self.seen), BLOCK)
            self.pending = np.concatenate([self.pending, np.zeros((grown - len(self.pending), *self.pending.shape[1:]),
                                                                  dtype=np.float32)])
            self.seen = np.concatenate([self.seen, np.zeros(grown - len(self.seen), dtype=np.int64)])
        if slots > self.cnn.streams:
            self.cnn.resize(max(slots, 2 * self.cnn.streams))

    def process(self, batch: Batch) -> list[Alert]:
        step = self.params.step
        values = batch.matrix(self.fields)
        rows = np.flatnonzero(~np.isnan(values).any(axis=1))
        scores = np.full(len(batch), np.nan)
        batch.scores[self.name] = scores
        if not len(rows):
            return []
        slots = batch.slots[rows]
        self._ensure_slots(int(slots.max()) + 1)
        # Each sample's place in its stream: its chunk (round) in this batch and its column in that chunk.
        order = np.argsort(slots, kind="stable")
        sorted_slots = slots[order]
        starts = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1]])
        counts = np.diff(np.r_[starts, len(order)])
        position = np.empty(len(rows), dtype=np.int64)  # the sample's index in its stream
        position[order] = self.seen[sorted_slots] + np.arange(len(order)) - np.repeat(starts, counts)
        rounds, columns = position // step - self.seen[slots] // step, position % step
        for round_index in range(int(rounds.max()) + 1):
            members = np.flatnonzero(rounds == round_index)  # at most one sample per stream and column
            self.pending[slots[members], :, columns[members]] = values[rows[members]]
            complete = members[columns[members] == step - 1]
            if len(complete):
                stepped = self._step(self.pending[slots[complete]], slots[complete])
                warm = position[complete] + 1 >= self.warmup
                scores[rows[complete[warm]]] = stepped[warm]
        self.seen[sorted_slots[starts]] += counts
        return self._alerts(batch, scores)

    def _step(self, chunk: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """Score of each stream in ``slots`` after stepping it with its chunk, in blocks of ``BLOCK`` streams."""
        outputs = []
        for start in range(0, len(slots), BLOCK):
            part, ids = chunk[start:start + BLOCK], slots[start:start + BLOCK]
            head = self.cnn.step(part, slots=ids, block=BLOCK)
            # The activation too runs on a full block: vectorised code treats a tensor's tail elements differently.
            head = torch.cat([head, head.new_zeros(BLOCK - len(head), *head.shape[1:])])
            if self.params.activation == "softmax":
                head = torch.softmax(head, dim=-1)
            elif self.params.activation == "sigmoid":
                head = torch.sigmoid(head)
            outputs.append(head[: len(ids), self.params.output].double().cpu().numpy())
        return np.concatenate(outputs)

    def _alerts(self, batch: Batch, scores: np.ndarray) -> list[Alert]:
        raised = np.flatnonzero(scores >= self.params.threshold)
        return [self.alert(batch, row, score=float(scores[row]), severity=self.params.severity,
                           reason=f"{self.name}: CNN score {scores[row]:.3f} over its last {self.params.window} "
                                  f"samples is at least {self.params.threshold:g}", fields=list(self.fields))
                for row in raised.tolist()]

    def evict(self, slots: np.ndarray) -> None:
        slots = slots[slots < len(self.seen)]
        self.seen[slots] = 0
        self.pending[slots] = 0.0
        self.cnn.reset(slots[slots < self.cnn.streams])

    def snapshot(self) -> dict[str, Any]:
        used = len(self.seen)
        return {"seen": self.seen.copy(), "pending": self.pending.copy(),
                "streams": {name: tensor[:used].cpu().numpy().copy() for name, tensor in self.cnn.state.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        self.seen = np.array(state["seen"], dtype=np.int64)
        self.pending = np.array(state["pending"], dtype=np.float32).reshape(len(self.seen), len(self.fields), -1)
        self.cnn.resize(max(len(self.seen), BLOCK))
        for name, array in state["streams"].items():
            self.cnn.state[name][: len(array)] = torch.as_tensor(array, device=self.cnn.device)

    def state_bytes(self) -> int:
        return self.cnn.state_bytes() + self.pending.nbytes + self.seen.nbytes


@functools.lru_cache(maxsize=1)
def _contract_model() -> str:
    """A small seeded two-channel model (causal and "same" convolutions, pooling, BatchNorm) for the contract suite,
    written once per process to a temporary file."""
    from kernels.cnn_model import FORMAT, build_modules, save_model

    spec = {"format": FORMAT, "channels": 2, "window": 16, "step": 4, "outputs": ["normal", "abnormal"],
            "features": [{"type": "conv", "in": 2, "out": 4, "kernel": 3, "dilation": 2, "padding": "causal"},
                         {"type": "batchnorm", "channels": 4}, {"type": "relu"}, {"type": "maxpool", "size": 2},
                         {"type": "conv", "in": 4, "out": 4, "kernel": 3, "padding": "same"}, {"type": "tanh"}],
            "head": [{"type": "flatten"}, {"type": "linear", "in": 32, "out": 2}]}
    torch.manual_seed(0)
    features, head = build_modules(spec)
    path = Path(tempfile.mkdtemp(prefix="vigil-cnn-")) / "contract.pt"
    save_model(path, spec, features, head)
    return str(path)
