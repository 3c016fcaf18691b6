"""The streaming MSS-APRE operator: warm-up, memory, detection, groups, explanations.

Causality, batch-cut invariance, restore and eviction are checked for every operator (and its buffer,
model and scope variants) in tests/contract."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from operators.alerting import AlertingParams
from operators.apre_mss import ApreMssOperator, ApreMssParams, models_bytes_bound
from operators.batch import Batch
from operators.event import Event, SourcePosition
from pipeline.evaluation.tabular import roc_auc

FIELDS = ("f0", "f1", "f2", "f3", "f4")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: extra threads only wait


def params(**overrides) -> ApreMssParams:
    """Small and fast: a 128-event buffer, refits every 96 events, a few epochs."""
    base = dict(buffer_size=128, warmup=64, refit_every=96, epochs=40, refit_epochs=8, k=12, lr=0.01, device="cpu", seed=3)
    return ApreMssParams(**{**base, **overrides})


def low_rank_rows(n: int, seed: int = 0, d: int = len(FIELDS)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)) @ rng.normal(size=(2, d)) + 0.1 * rng.normal(size=(n, d))


def events_of(rows: np.ndarray, *, groups=None, missing: float = 0.0, seed: int = 1) -> list[Event]:
    """Events with the row values; a share ``missing`` lacks a field or has a text value instead."""
    rng = np.random.default_rng(seed)
    events = []
    for i, row in enumerate(rows):
        values: dict = dict(zip(FIELDS, map(float, row)))
        if rng.random() < missing:
            if rng.random() < 0.5:
                del values[FIELDS[i % len(FIELDS)]]
            else:
                values[FIELDS[i % len(FIELDS)]] = "n/a"
        group = None if groups is None else groups[i]
        events.append(Event(f"k{i % 7}", 1_000 * i, values, SourcePosition(file="s", line=i), group=group))
    return events


def batch_of(events: list[Event]) -> Batch:
    return Batch.from_events(events, numeric=FIELDS, text=[])


def run(op: ApreMssOperator, events: list[Event], sizes) -> np.ndarray:
    """Scores of ``events`` fed to ``op`` in consecutive batches of the given sizes (an iterable, cycled)."""
    scores, start = [], 0
    for size in itertools.cycle(sizes):
        if start >= len(events):
            break
        scores.append(op.score(batch_of(events[start : start + size])))
        start += size
    return np.concatenate(scores)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_warmup_scores_nan_and_invalid_events_are_skipped():
    events = events_of(low_rank_rows(300), missing=0.1)
    op = ApreMssOperator("o", FIELDS, params())
    scores = run(op, events, [50])
    valid = np.array([all(isinstance(e.fields.get(f), float) for f in FIELDS) for e in events])
    assert np.isnan(scores[~valid]).all()
    warm = np.flatnonzero(valid)[64:]  # the 65th valid event is the first one scored
    assert np.isnan(scores[np.flatnonzero(valid)[:64]]).all() and np.isfinite(scores[warm]).all()
    model = op.models[None]
    assert model.buffer.seen == valid.sum() and np.isfinite(model.buffer.rows().numpy()).all()
    assert model.fits == 1 + (valid.sum() - 64) // 96


def test_memory_is_constant_once_fit_and_matches_the_formula():
    d, p = len(FIELDS), params(buffer_size=96, warmup=64, refit_every=50)
    op = ApreMssOperator("o", FIELDS, p)
    events = events_of(low_rank_rows(2500))
    sizes = []
    for start in range(0, len(events), 50):
        op.score(batch_of(events[start : start + 50]))
        sizes.append(op.models_bytes())
    model = op.models[None]
    parameters = list(model.model.parameters())
    weights = sum(t.nelement() for t in parameters)
    # buffer (float64) + m reference steps (float32) + weights and two Adam moments (float32)
    # + one Adam step counter per weight tensor (float32) + mean and scale (float64)
    formula = 96 * d * 8 + 1 * 96 * d * 4 + 3 * weights * 4 + 4 * len(parameters) + 2 * d * 8
    assert set(sizes[1:]) == {formula} == {models_bytes_bound(d, p)}
    assert sizes[0] == formula - 2 * weights * 4 - 4 * len(parameters)  # before the first fit: no Adam state yet

    groups = [f"g{i % 5}" for i in range(len(events))]
    grouped_params = params(buffer_size=96, warmup=64, refit_every=50, scope="group", max_groups=3)
    grouped = ApreMssOperator("o", FIELDS, grouped_params)
    run(grouped, events_of(low_rank_rows(2500), groups=groups), [250])
    assert list(grouped.models) == ["g0", "g1", "g2", None]  # g3 and g4 share the shard model
    assert grouped.models_bytes() == 4 * formula == models_bytes_bound(d, grouped_params)


def clustered_stream(n: int = 3000, d: int = 16, seed: int = 0):
    """Rank-2 data in d fields: four Gaussian clusters in the latent plane plus 0.1 noise. Planted outliers:
    3 % off the plane (Gaussian with the data's spread), 2 % of small norm near the empty centre of the
    plane ("false inliers" an autoencoder reconstructs well). Returns rows, labels, and which are small.
    Over seeds 0-3, ROC-AUC: MSS-APRE (k = 16) 0.96, plain APRE 1.00, MSE 0.92 (0.80 on the false inliers)."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]])
    latent = centres[rng.integers(0, 4, n)] + 0.5 * rng.normal(size=(n, 2))
    u = rng.random(n)
    far, small = u < 0.03, (u >= 0.03) & (u < 0.05)
    latent[small] = 0.3 * rng.normal(size=(small.sum(), 2))
    rows = latent @ (rng.normal(size=(2, d)) / np.sqrt(2)) + 0.1 * rng.normal(size=(n, d))
    spread = rows[~far & ~small].std(0)
    rows[far] = rng.normal(size=(far.sum(), d)) * spread
    return rows, (far | small).astype(int), small


def test_detects_planted_outliers_on_a_clustered_low_rank_stream():
    rows, labels, _ = clustered_stream()
    fields = [f"x{j}" for j in range(rows.shape[1])]
    events = [Event("e", 1_000 * i, dict(zip(fields, map(float, row))), SourcePosition(file="s", line=i))
              for i, row in enumerate(rows)]
    # k = 16 of 1024 buffered events: about the authors' share (65 of ~3900 reference points on Optdigits).
    p = ApreMssParams(buffer_size=1024, warmup=512, refit_every=512, epochs=1000, refit_epochs=100, k=16, device="cpu")
    op = ApreMssOperator("o", fields, p)
    scores = np.concatenate([op.score(Batch.from_events(events[i : i + 256])) for i in range(0, len(events), 256)])
    scored = ~np.isnan(scores)
    assert scored.sum() == len(rows) - 512
    assert roc_auc(scores[scored], labels[scored]) >= 0.9


def test_group_scope_keeps_separate_models():
    rng = np.random.default_rng(4)
    n = 600
    latent = rng.normal(size=(n, 1))
    a_rows = latent @ np.array([[1.0, 1.0, 1.0, 1.0, 1.0]]) + 0.05 * rng.normal(size=(n, 5))
    b_rows = latent @ np.array([[1.0, -1.0, 1.0, -1.0, 1.0]]) + 0.05 * rng.normal(size=(n, 5))
    groups = np.where(rng.random(n) < 0.5, "a", "b")
    rows = np.where((groups == "a")[:, None], a_rows, b_rows)
    events = events_of(rows, groups=list(groups))
    p = params(scope="group")
    mixed = ApreMssOperator("o", FIELDS, p)
    scores = run(mixed, events, [37])
    assert list(mixed.models) == [groups[0], {"a": "b", "b": "a"}[groups[0]]]
    for name, model in mixed.models.items():
        assert model.buffer.seen == (groups == name).sum()
        kept = model.buffer.rows().numpy()  # only the group's own events: f1 follows f0 in a, opposes it in b
        assert np.corrcoef(kept[:, 0], kept[:, 1])[0, 1] * (1.0 if name == "a" else -1.0) > 0.99
    # A group's scores do not depend on the other group's events at all.
    only_a = ApreMssOperator("o", FIELDS, p)
    a_events = [e for e in events if e.group == "a"]
    assert same_bits(run(only_a, a_events, [37]), scores[groups == "a"])
    # Shard scope mixes the groups into one model.
    shard = ApreMssOperator("o", FIELDS, params())
    run(shard, events, [37])
    assert list(shard.models) == [None] and shard.models[None].buffer.seen == n


@pytest.mark.parametrize("mean_shift", [True, False])
def test_explain_names_the_largest_per_field_contributions(mean_shift):
    rows = low_rank_rows(600)
    rows[-1] = rows[-2]
    rows[-1, 2] += 25.0  # about 11 standard deviations
    op = ApreMssOperator("o", FIELDS, params(mean_shift=mean_shift, alerting=AlertingParams(warmup=50)))
    batch = batch_of(events_of(rows))
    alerts = op.process(batch)
    last = len(rows) - 1
    assert alerts and alerts[-1].source.line == last
    reason, fields = op.explain(batch, last)
    assert alerts[-1].fields == fields and alerts[-1].reason == reason
    assert reason.startswith(("MSS-APRE" if mean_shift else "APRE") + " score")
    # The per-field contributions add up to the score; the three largest are named, largest first.
    contributions = op._contributions[last]
    assert contributions.sum() == pytest.approx(batch.scores["o"][last], rel=1e-4, abs=1e-3)
    assert fields == [FIELDS[j] for j in np.argsort(-contributions)[:3]]
    assert "f2" in fields and "f2=" in reason
