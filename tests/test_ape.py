"""APE on categorical event streams: planted combinations, bounded memory, seeds, missing values.

Causality, batch-cut invariance, restore and eviction are checked for every operator in tests/contract."""
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from operators.alerting import AlertingParams
from operators.ape import ApeOperator, ApeParams
from operator_runs import run_operator
from operators.batch import Batch
from operators.event import Event, SourcePosition
from pipeline.evaluation.tabular import roc_auc

FIELDS = ["user", "host", "process"]
DEPARTMENTS = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small tensors: extra threads only wait


def skewed(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """Zipf-like choices: a few entities do most of the work, as in real logs."""
    weights = 1.0 / np.arange(1, size + 1)
    return rng.choice(size, size=n, p=weights / weights.sum())


def department_stream(n: int, seed: int, *, planted_after: int, planted_rate: float = 0.02,
                      sessions: bool = False) -> tuple[list[Event], np.ndarray]:
    """Users work on their department's hosts and processes (or shared ones). A planted event puts a user
    on a host of another department: both entities are common, their combination never happens."""
    rng = np.random.default_rng(seed)
    dept = rng.integers(DEPARTMENTS, size=n)
    planted = (np.arange(n) >= planted_after) & (rng.random(n) < planted_rate)
    host_dept = np.where(planted, (dept + rng.integers(1, DEPARTMENTS, size=n)) % DEPARTMENTS, dept)
    user, host, process = skewed(rng, 12, n), skewed(rng, 4, n), skewed(rng, 3, n)
    shared = rng.random(n) < 0.3
    events = []
    for i in range(n):
        fields = {"user": f"u{dept[i]}-{user[i]}", "host": f"h{host_dept[i]}-{host[i]}",
                  "process": f"shared-{process[i] % 2}" if shared[i] else f"p{dept[i]}-{process[i]}"}
        if sessions:
            fields["session"] = f"s{seed}-{i}"  # a brand-new value on every event
        events.append(Event("logs", i * 1000, fields, SourcePosition(topic="logs", partition=0, offset=i)))
    return events, planted.astype(int)


def ape(params: ApeParams, fields=FIELDS) -> ApeOperator:
    return ApeOperator("ape", fields, params)


def run(op: ApeOperator, events: list[Event], batch_size: int = 512) -> tuple[np.ndarray, list]:
    """Scores and alerts of ``op`` on ``events`` processed in batches of ``batch_size``."""
    return run_operator(op, events, (batch_size,))


def frequency_scores(events: list[Event], fields=FIELDS) -> np.ndarray:
    """A frequency-only baseline: -sum log of each entity's smoothed frequency so far."""
    counts = {name: Counter() for name in fields}
    scores = np.empty(len(events))
    for i, event in enumerate(events):
        scores[i] = -sum(np.log((counts[name][event.fields[name]] + 1) / (i + 1)) for name in fields)
        for name in fields:
            counts[name][event.fields[name]] += 1
    return scores


def test_planted_combinations_rank_above_normal_events():
    events, planted = department_stream(8000, seed=1, planted_after=2000)
    # One key and one event a second: a budget of 864 a day alerts at p <= 1 %.
    params = ApeParams(device="cpu", alerting=AlertingParams(budget_per_day=864.0, warmup=100))
    op = ape(params)
    scores, alerts = run(op, events)
    assert np.isnan(scores[:2048]).all() and not np.isnan(scores[2048:]).any()  # warm-up: 8 blocks of 256
    judged = slice(2048, None)
    assert roc_auc(scores[judged], planted[judged]) >= 0.9
    assert roc_auc(frequency_scores(events)[judged], planted[judged]) < 0.65  # each entity alone is common
    flagged = planted[[alert.source.offset for alert in alerts]]
    assert flagged.mean() >= 0.8 and flagged.sum() >= 0.5 * planted.sum()  # precision and recall of alerts
    batch = Batch.from_events(events[-512:], numeric=[], text=FIELDS)
    op.process(batch)
    explained = [op.explain(batch, row)[1] for row in np.flatnonzero(planted[-512:])]
    assert sum("host" in fields for fields in explained) >= 0.9 * len(explained)


def test_memory_is_bounded_under_an_unbounded_vocabulary():
    events, planted = department_stream(30_000, seed=2, planted_after=2000, sessions=True)
    fields = [*FIELDS, "session"]
    op = ape(ApeParams(device="cpu"), fields)
    run(op, events[:1000])
    bytes_after_1k = op.state_bytes()
    scores, _ = run(op, events[1000:])
    assert op.state_bytes() == bytes_after_1k
    later = slice(10_000 - 1000, None)
    assert roc_auc(scores[later], planted[1000:][later]) >= 0.9
    pair_weights = dict(zip(op.pairs, op.model.w.numpy()))
    session = fields.index("session")
    assert max(w for pair, w in pair_weights.items() if session in pair) < min(
        w for pair, w in pair_weights.items() if session not in pair)  # session ids carry no information


SMALL = ApeParams(dim=8, buckets=512, minibatch=128, warmup=512, device="cpu")


@pytest.fixture(scope="module")
def small_stream():
    return department_stream(2000, seed=3, planted_after=600)[0]


def test_another_seed_gives_other_scores(small_stream):
    first = run(ape(SMALL), small_stream)[0]
    reseeded = run(ape(replace(SMALL, seed=1)), small_stream)[0]
    assert not np.array_equal(np.nan_to_num(reseeded), np.nan_to_num(first))


def test_missing_and_non_string_values_are_the_reserved_missing_entity(small_stream):
    op = ape(SMALL)
    run(op, small_stream)
    probe = [Event("k", 0, {"user": "u0-0", "process": "p0-0"}, SourcePosition(file="f", line=0)),
             Event("k", 0, {"user": "u0-0", "host": 7.0, "process": "p0-0"}, SourcePosition(file="f", line=1))]
    batch = Batch.from_events(probe, numeric=[], text=FIELDS)
    scores = op.score(batch)
    batch.scores["ape"] = scores
    assert scores[0] == scores[1] and np.isfinite(scores[0])
    reason, fields = op.explain(batch, 0)
    assert "host" not in fields or "host=<missing>" in reason


def test_one_entity_type_is_rejected():
    with pytest.raises(ValueError, match="two entity types"):
        ape(ApeParams(device="cpu"), ["user"])
