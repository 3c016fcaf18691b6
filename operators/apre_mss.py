"""Streaming MSS-APRE outlier scoring: a probabilistic autoencoder and mean-shift targets, refit online.

The method is MSS-PAE (Tan et al., references below): a probabilistic autoencoder f outputs
a mean and a variance per field, and an event x scores

    APRE_{alpha,beta}( f(x_std), x_MS )

where ``x_std`` is x z-scored and ``x_MS`` is ``x_std`` after ``iterations`` steps of inductive mean
shift towards its k nearest reference points (:func:`kernels.mean_shift.shift_queries`). Outliers the
autoencoder reconstructs too well (small-norm "false inliers") move far under mean shift, so their
error against ``x_MS`` is large. ``mean_shift = false`` scores against ``x_std`` (plain APRE) and
``probabilistic = false`` uses the plain autoencoder and the summed squared error (the MSE baseline).

Streaming design, per *model* (one per shard, or one per event group with ``scope = "group"``):

* a bounded reference buffer (:class:`kernels.reservoir.ReferenceBuffer`: a seeded reservoir sample or
  a sliding window of ``buffer_size`` events) is both the training set and the mean-shift reference;
* the first ``warmup`` valid events only fill the buffer (they score NaN); then the model is fit, and
  refit after every further ``refit_every`` events. A fit freezes, until the next one, the buffer's
  mean and standard deviation (+1e-5) used for z-scoring and the blurred reference set
  (:func:`kernels.mean_shift.shift_reference` of the z-scored buffer);
* score-then-learn, with refits at event *counts*: a batch is cut at refit points, events up to a refit
  point are scored by the current model and then added to the buffer, the model is refit, and scoring
  goes on. So an event's score depends only on the events before it (no look-ahead), and on nothing
  about how the stream was cut into batches;
* events are scored in blocks of a fixed ``SCORE_BLOCK`` rows (the last block padded), so every
  computation has the same shape whatever the batch size and scores are bit-identical however the
  stream is cut (matrix products may round differently for different shapes);
* an event with a missing, non-numeric or non-finite field scores NaN, is not added to the buffer and
  does not count towards warm-up or refits.

Bit-identity holds on one device with one thread count (both choose the floating-point kernels).

Choosing k: mean shift also pulls *normal* events at the edge of the data towards denser regions, and a
well-trained model predicts small variances there, so with k large relative to the buffer such events
score high. The authors' k = 65 was tuned for about 3900 reference points (1.7 %); with a smaller buffer
scale k down (k = 16 for 1024 events scored ROC-AUC 0.96 on the clustered stream of the tests, k = 65
0.89, where plain APRE scored 1.0). Mean shift pays off on outliers the autoencoder reconstructs well.

Memory per model is fixed once it has been fit (see :meth:`ApreMssOperator.models_bytes`).

Normal events below lie on a circle (in four correlated fields); the last one lies inside it, in the
plane the autoencoder reconstructs well (a "false inlier"). Mean-shift scoring ranks it near the top,
plain APRE among ordinary events:

>>> from operators.event import Event, SourcePosition
>>> rng = np.random.default_rng(0)
>>> c, s = np.cos(angle := rng.uniform(0, 2 * np.pi, 600)), np.sin(angle)
>>> rows = np.column_stack([c, s, c + s, c - s]) + 0.05 * rng.normal(size=(600, 4))
>>> rows = np.vstack([rows, [0.5, 0.0, 0.5, 0.5]])
>>> batch = Batch.from_events([Event("h", i, dict(zip("abcd", map(float, row))), SourcePosition(file="f", line=i))
...                             for i, row in enumerate(rows)])
>>> def scores(**variant):
...     params = ApreMssParams(buffer_size=256, warmup=256, refit_every=128, epochs=300, refit_epochs=30,
...                            k=16, lr=0.01, device="cpu", **variant)
...     return ApreMssOperator.from_config("outlier", list("abcd"), params).score(batch)
>>> mss, plain = scores(), scores(mean_shift=False)
>>> int(np.isnan(mss).sum())  # warm-up
256
>>> share_above = lambda score: float(np.mean(score[256:-1] > score[-1]))
>>> share_above(mss) < 0.02, share_above(plain) > 0.3
(True, True)

References
----------
Tan, X., Yang, J., Chen, J., Rahardja, S. and Rahardja, S. (2025). MSS-PAE: Saving autoencoder-based
outlier detection from unexpected reconstruction. *Pattern Recognition* 163, 111467 (arXiv 2304.00709).

Yang, J., Rahardja, S. and Fränti, P. (2018). Mean-shift outlier detection. *FSDM*.

Comaniciu, D. and Meer, P. (2002). Mean shift: a robust approach toward feature space analysis. *IEEE
TPAMI* 24(5), 603-619.

Vitter, J. S. (1985). Random sampling with a reservoir. *ACM TOMS* 11(1), 37-57.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Literal
from collections.abc import Sequence

import numpy as np
import torch

from kernels.apre import EPS, apre, squared_error
from kernels.autoencoder import AutoEncoder
from kernels.device import select_device, to_device
from kernels.mean_shift import shift_queries, shift_reference
from kernels.profiling import timed
from kernels.reservoir import ReferenceBuffer
from kernels.state import Stateful, tensor_bytes
from operators.alerting import AlertingParams
from operators.base import ScoringOperator
from operators.batch import Batch
from operators.guardrails import GuardrailParams
from operators.params import DEVICE_PATTERN, param

SCORE_BLOCK = 64  # rows per scoring call; a multiple of 64 keeps element-wise kernels free of scalar tails
TOP_FIELDS = 3  # fields named by explain()


@dataclass
class ApreMssParams:
    """Parameters of :class:`ApreMssOperator`."""

    scope: Literal["shard", "group"] = param(
        "shard", "shard: one model for the operator's shard; group: one model per event group (events without a "
                 "group use the shard model)", choices=("shard", "group"))
    max_groups: int = param(64, "with scope = group, at most this many group models, given to the first groups seen; "
                                "later groups use the shard model (models are never evicted)", min=0, max=100_000)
    buffer: Literal["reservoir", "window"] = param(
        "reservoir", "reservoir: a seeded uniform sample of every event seen; window: the last buffer_size events",
        choices=("reservoir", "window"))
    buffer_size: int = param(2048, "events in the reference buffer (the training set and mean-shift reference)",
                             min=2, max=10_000_000, unit="events")
    warmup: int = param(512, "valid events before the first fit; they score NaN", min=2, unit="events")
    refit_every: int = param(1024, "valid events between refits; 0 never refits after the first fit", min=0, unit="events")
    epochs: int = param(1000, "full-batch Adam epochs of the first fit", min=0, max=1_000_000)
    refit_epochs: int = param(100, "epochs of each later refit, warm-started from the current weights and Adam moments; "
                                   "0 refits only the z-scoring and the reference set", min=0, max=1_000_000)
    lr: float = param(1e-3, "Adam's learning rate (the authors'), constant", min=0.0, max=10.0)
    k: int = param(32, "mean-shift neighbours (the point and k - 1 reference points), capped at the buffer's events "
                       "at fit time; 32 of 2048 is about the authors' share", min=2)
    iterations: int = param(1, "mean-shift steps m", min=1, max=100)
    alpha: float = param(0.5, "APRE weight of the normalised error when scoring (training uses 1)", min=0.0)
    beta: float = param(2.0, "APRE weight of the log-variance when scoring (training uses 1)", min=0.0)
    probabilistic: bool = param(True, "false: the plain autoencoder and the squared error (the MSE baseline)")
    mean_shift: bool = param(True, "false: score against the event itself (plain APRE, or plain MSE)")
    seed: int = param(0, "seeds model initialisation and the reservoir; group models derive theirs from it", min=0)
    device: str = param("auto", "where the model runs: auto, cpu, cuda or cuda:N", pattern=DEVICE_PATTERN)
    alerting: AlertingParams = param(AlertingParams(), "the false-alarm budget and severity levels")
    guardrails: GuardrailParams = param(GuardrailParams(), "direction, minimum deviation and valid range of an alert")


class ApreMssModel(Stateful):
    """One model: reference buffer, autoencoder, Adam, frozen z-scoring and mean-shift reference.

    ``process(x)`` scores the rows of ``x`` (all finite) in order, learning from them and refitting at
    refit points; it returns scores, per-field contributions and the model's expectation per field.
    """

    def __init__(self, d: int, params: ApreMssParams, device: torch.device, seed: int) -> None:
        self.d, self.params, self.device = d, params, device
        self.buffer = ReferenceBuffer(params.buffer_size, d, params.buffer, seed, device=device)
        with torch.random.fork_rng(devices=[]):  # the authors' default init, seeded without touching global RNGs
            torch.default_generator.manual_seed(seed)
            self.model = AutoEncoder(d, params.probabilistic)
        self.model.to(device).eval()
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=params.lr)
        self.fits = 0
        self.last_fit = 0  # buffer.seen at the last fit
        self.k = 0  # neighbours used since the last fit
        self.mean = torch.zeros(d, dtype=torch.float64, device=device)
        self.scale = torch.ones(d, dtype=torch.float64, device=device)  # std + EPS
        # Blurred reference, steps 0..m-1 (shift_queries never reads step m); rows [:reference_rows] are in use.
        steps = params.iterations if params.mean_shift else 0
        self.steps = torch.zeros(steps, params.buffer_size, d, dtype=torch.float32, device=device)
        self.reference_rows = 0

    @property
    def next_fit(self) -> int | None:
        """Valid-event count at which the next fit happens (None: never)."""
        if not self.fits:
            return self.params.warmup
        return self.last_fit + self.params.refit_every if self.params.refit_every else None

    def process(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(x)
        scores = np.full(n, np.nan)
        contributions = np.full((n, self.d), np.nan)
        expected = np.full((n, self.d), np.nan)
        start = 0
        while start < n:
            next_fit = self.next_fit
            stop = n if next_fit is None else min(n, start + next_fit - self.buffer.seen)
            chunk = x[start:stop]
            if self.fits:
                scores[start:stop], contributions[start:stop], expected[start:stop] = self._score(chunk)
            self.buffer.add(chunk)
            if self.buffer.seen == next_fit:
                self.fit()
            start = stop
        return scores, contributions, expected

    def _score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        p = self.params
        with timed("apre_mss_score", self.device.type), torch.no_grad():
            raw_x = to_device(x, self.device, torch.float64)
            standardised = ((raw_x - self.mean) / self.scale).float()
            reference = [step[: self.reference_rows] for step in self.steps]
            outputs = []
            for start in range(0, len(x), SCORE_BLOCK):
                rows = standardised[start : start + SCORE_BLOCK]
                block = rows.new_zeros(SCORE_BLOCK, self.d)  # a fresh, fixed-shape block: same arithmetic for every row
                block[: len(rows)] = rows
                mu, raw = self.model(block)
                # shift_queries reads every reference step but the last, so None stands in for step m.
                target = shift_queries(block, [*reference, None], self.k) if p.mean_shift else block
                if raw is None:
                    score = squared_error(target, mu)
                    per_field = (target - mu) ** 2
                else:
                    score = apre(target, mu, raw, p.alpha, p.beta)
                    variance = torch.nn.functional.softplus(raw) + EPS
                    per_field = p.alpha * (target - mu) ** 2 / variance + p.beta * torch.log(variance)
                outputs.append(torch.cat([score[:, None].double(), per_field.double(), mu.double()], dim=1)[: len(rows)])
            out = torch.cat(outputs).cpu().numpy()
        expected = out[:, 1 + self.d :] * self.scale.cpu().numpy() + self.mean.cpu().numpy()
        return out[:, 0], out[:, 1 : 1 + self.d], expected

    def fit(self) -> None:
        """Refreeze z-scoring and the reference on the buffer, then train (warm start)."""
        p = self.params
        with timed("apre_mss_fit", self.device.type):
            data = self.buffer.rows()
            n = len(data)
            self.mean = data.mean(0)
            self.scale = data.std(0, correction=0) + EPS
            standardised = ((data - self.mean) / self.scale).float()
            self.k = min(p.k, n)
            if p.mean_shift:
                steps = shift_reference(standardised, self.k, p.iterations - 1)
                self.steps.zero_()
                for index, step in enumerate(steps):
                    self.steps[index, :n] = step
                self.reference_rows = n
            epochs = p.epochs if not self.fits else p.refit_epochs
            self.model.train()
            for _ in range(epochs):
                self.optimiser.zero_grad()
                self.model.training_loss(standardised).backward()
                self.optimiser.step()
            self.model.eval()
            self.fits += 1
            self.last_fit = self.buffer.seen

    def state_bytes(self) -> int:
        """Buffer, reference steps, parameters, optimiser state and z-scoring, as held now."""
        optimiser_tensors = [v for state in self.optimiser.state.values() for v in state.values() if torch.is_tensor(v)]
        return (self.buffer.state_bytes() + tensor_bytes([self.steps, self.mean, self.scale])
                + tensor_bytes(self.model.parameters()) + tensor_bytes(optimiser_tensors))

    def snapshot(self) -> dict[str, Any]:
        copy = lambda t: t.detach().cpu().numpy().copy()  # noqa: E731 - never a view of live tensors
        optimiser_state = self.optimiser.state_dict()["state"]
        return {
            "buffer": self.buffer.snapshot(),
            "fits": self.fits,
            "last_fit": self.last_fit,
            "k": self.k,
            "mean": copy(self.mean),
            "scale": copy(self.scale),
            "reference_rows": self.reference_rows,
            "steps": copy(self.steps[:, : self.reference_rows]),
            "parameters": {name: copy(value) for name, value in self.model.state_dict().items()},
            "adam": [
                {"step": float(s["step"]), "exp_avg": copy(s["exp_avg"]), "exp_avg_sq": copy(s["exp_avg_sq"])}
                for _, s in sorted(optimiser_state.items())
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        tensor = lambda a, dtype: torch.tensor(np.asarray(a), dtype=dtype, device=self.device)  # noqa: E731 - a copy
        self.buffer.restore(state["buffer"])
        self.fits, self.last_fit, self.k = int(state["fits"]), int(state["last_fit"]), int(state["k"])
        self.mean, self.scale = tensor(state["mean"], torch.float64), tensor(state["scale"], torch.float64)
        self.reference_rows = int(state["reference_rows"])
        self.steps.zero_()
        if self.reference_rows:
            self.steps[:, : self.reference_rows] = tensor(state["steps"], torch.float32)
        self.model.load_state_dict({name: tensor(value, torch.float32) for name, value in state["parameters"].items()})
        optimiser_state = self.optimiser.state_dict()
        optimiser_state["state"] = {
            index: {"step": torch.tensor(s["step"], dtype=torch.float32),
                    "exp_avg": tensor(s["exp_avg"], torch.float32), "exp_avg_sq": tensor(s["exp_avg_sq"], torch.float32)}
            for index, s in enumerate(state["adam"])
        }
        self.optimiser.load_state_dict(optimiser_state)


def _model_seed(seed: int, group: str | None) -> int:
    """The shard model uses ``seed``; a group model a 63-bit seed derived from ``seed`` and its name."""
    if group is None:
        return seed
    words = np.random.SeedSequence([seed & (2**64 - 1), zlib.crc32(group.encode())]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


class ApreMssOperator(ScoringOperator):
    """MSS-APRE scores per event, one model per shard or per group (module docstring)."""

    Params: ClassVar[type] = ApreMssParams

    def __init__(self, name: str, fields: Sequence[str], params: ApreMssParams) -> None:
        super().__init__(name, fields, params)
        if not self.fields:
            raise ValueError(f"operator {name!r} needs at least one field")
        self.device = select_device(params.device)
        self.models: dict[str | None, ApreMssModel] = {}  # None: the shard model; in creation order
        self._contributions = np.empty((0, len(self.fields)))
        self._expected = np.empty((0, len(self.fields)))

    @classmethod
    def contract_cases(cls) -> list[tuple[list[str], ApreMssParams]]:
        fields, small = ["x0", "x1", "x2"], dict(buffer_size=64, warmup=32, refit_every=48, epochs=10, refit_epochs=2, k=8,
                                                  lr=0.01, device="cpu", alerting=AlertingParams(window=50, warmup=10, tail=5))
        return [(fields, ApreMssParams(**small)),
                (fields, ApreMssParams(**small, buffer="window", probabilistic=False, iterations=2)),
                (fields, ApreMssParams(**small, mean_shift=False, scope="group", max_groups=1))]

    @property
    def variant(self) -> str:
        p = self.params
        return ("MSS-" if p.mean_shift else "") + ("APRE" if p.probabilistic else "MSE")

    def _model_key(self, group: str | None) -> str | None:
        """The model an event of ``group`` goes to: its group's, or the shard model (None)."""
        if self.params.scope != "group" or group is None:
            return None
        if group in self.models:
            return group
        group_models = len(self.models) - (None in self.models)
        return group if group_models < self.params.max_groups else None

    def _model(self, key: str | None) -> ApreMssModel:
        model = self.models.get(key)
        if model is None:
            model = self.models[key] = ApreMssModel(len(self.fields), self.params, self.device,
                                                    _model_seed(self.params.seed, key))
        return model

    def score(self, batch: Batch) -> np.ndarray:
        x = batch.matrix(self.fields)
        n, d = x.shape
        scores = np.full(n, np.nan)
        self._contributions = np.full((n, d), np.nan)
        self._expected = np.full((n, d), np.nan)
        valid = np.isfinite(x).all(axis=1)
        rows_of: dict[str | None, list[int]] = {}
        groups = batch.group
        for row in np.flatnonzero(valid).tolist():  # in stream order, so group models go to the first groups seen
            key = self._model_key(groups[row])
            self._model(key)
            rows_of.setdefault(key, []).append(row)
        for key, rows in rows_of.items():
            scores[rows], self._contributions[rows], self._expected[rows] = self.models[key].process(x[rows])
        return scores

    def explain(self, batch: Batch, row: int) -> tuple[str, list[str]]:
        contributions = self._contributions[row]
        order = np.argsort(-contributions, kind="stable")[: min(TOP_FIELDS, len(self.fields))]
        names = [self.fields[j] for j in order]
        parts = [f"{self.fields[j]}={batch.column(self.fields[j])[row]:g} (expected about {self._expected[row, j]:.3g}, "
                 f"contributes {contributions[j]:.3g})" for j in order]
        score = batch.scores[self.name][row]
        return f"{self.variant} score {score:.3g}; largest per-field contributions: {', '.join(parts)}", names

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "models": [{"group": key, **model.snapshot()} for key, model in self.models.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.models = {}
        for entry in state["models"]:
            self._model(entry["group"]).restore(entry)

    def state_bytes(self) -> int:
        return super().state_bytes() + self.models_bytes()

    def models_bytes(self) -> int:
        """Per model, once fit: ``buffer_size*d*8`` (buffer, float64) + ``m*buffer_size*d*4`` (reference steps,
        float32; 0 without mean shift) + ``3*P*4`` (parameters and two Adam moments, float32) + ``4*T`` (Adam
        step counters, T parameter tensors) + ``2*d*8`` (z-scoring); before its first fit, no Adam state."""
        return sum(model.state_bytes() for model in self.models.values())


def models_bytes_bound(d: int, params: ApreMssParams) -> int:
    """The most :meth:`ApreMssOperator.models_bytes` can reach for ``d`` fields (``max_groups + 1`` models
    with group scope, one with shard scope)."""
    with torch.random.fork_rng(devices=[]):
        model = AutoEncoder(d, params.probabilistic)
    parameters = sum(p.nelement() for p in model.parameters())
    tensors = len(list(model.parameters()))
    steps = params.iterations if params.mean_shift else 0
    per_model = params.buffer_size * d * 8 + steps * params.buffer_size * d * 4 + 3 * parameters * 4 + 4 * tensors + 2 * d * 8
    return per_model * (params.max_groups + 1 if params.scope == "group" else 1)

