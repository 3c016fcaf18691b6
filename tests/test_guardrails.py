"""Guardrails on outlier operators: direction, minimum deviations and the valid range, on real operators and arrays.

zscore brings its own expected values (its running means); knn_rshash, hst and metric_stream expose none, so
the guardrails keep their own reference. Outputs compared are the published columns, bit for bit, and the alerts.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from kernels.ewma import RobustEwma
from operator_runs import is_plain, run_operator
from operators.alerting import AlertingParams
from operators.ape import ApeOperator, ApeParams
from operators.batch import P_VALUE_SUFFIX, Batch
from operators.entities import EntityIndex
from operators.event import Alert, Event, SourcePosition
from operators.guardrails import GuardrailParams, Guardrails
from operators.hst import HalfSpaceTreesOperator, HalfSpaceTreesParams
from operators.knn_ensemble import KnnEnsembleOperator, KnnEnsembleParams
from operators.metric_stream import MetricStreamOperator, MetricStreamParams
from operators.params import ParamError
from operators.registry import OperatorChain
from operators.zscore import ZScoreOperator, ZScoreParams

ALERTING = AlertingParams(window=200, warmup=100, tail=10)
T0 = 1_767_225_600_000


def make(kind: str, fields: list[str], guardrails: GuardrailParams | None = None, alerting: AlertingParams = ALERTING):
    """A real operator of ``kind`` with cheap params; ``guardrails`` None leaves the Params' default untouched."""
    extra = {} if guardrails is None else {"guardrails": guardrails}
    if kind == "zscore":
        return ZScoreOperator("op", fields, ZScoreParams(alerting=alerting, **extra))
    if kind == "knn_rshash":
        return KnnEnsembleOperator("op", fields, KnnEnsembleParams(k=10, window=256, block=64, warmup=64, components=20,
                                                                   alerting=alerting, **extra))
    if kind == "hst":
        return HalfSpaceTreesOperator("op", fields, HalfSpaceTreesParams(n_trees=5, height=5, window_size=50,
                                                                         alerting=alerting, **extra))
    if kind == "metric_stream":
        return MetricStreamOperator("op", fields, MetricStreamParams(alerting=alerting, **extra))
    raise AssertionError(kind)


def events_of(rows: np.ndarray, fields: list[str], entities: int = 3) -> list[Event]:
    """One event per row of ``rows``, entities taking turns, a minute apart."""
    return [Event(f"h{i % entities}", T0 + i * 60_000, dict(zip(fields, map(float, row))),
                  SourcePosition(topic="t", partition=0, offset=i)) for i, row in enumerate(rows)]


def run(op, events: list[Event], sizes=(64,), chain: OperatorChain | None = None) -> tuple[np.ndarray, np.ndarray, list[Alert]]:
    """Raw scores, p-values and alerts of ``events`` in batches of the given sizes (cycled), through a chain with its
    entity index as a shard runs it (``chain``: that one, already holding ``op``)."""
    chain = chain or OperatorChain([op], EntityIndex(1000))
    scores, p_values, alerts, start = [], [], [], 0
    for size in itertools.cycle(sizes):
        if start >= len(events):
            break
        found, batch = chain.process_batch(events[start : start + size])
        alerts += found
        scores.append(batch.scores[op.name])
        p_values.append(batch.scores[f"{op.name}{P_VALUE_SUFFIX}"])
        start += size
    return np.concatenate(scores), np.concatenate(p_values), alerts


def offsets(alerts: list[Alert]) -> set[int]:
    return {a.source.offset for a in alerts}


# ---- direction ----

DIPS, SPIKES = [900, 904, 908], [1800, 1804, 1808]  # one of each per entity (three take turns), a window apart


@pytest.fixture(scope="module")
def dips_and_spikes() -> list[Event]:
    rng = np.random.default_rng(0)
    cpu = 50.0 + rng.normal(size=2100)  # one level: knn_rshash's model is the shard's, not the entity's
    cpu[DIPS] -= 12.0
    cpu[SPIKES] += 12.0
    cpu[SPIKES[2]] += 8.0  # beyond the range the tests set
    return events_of(cpu[:, None], ["cpu"])


@pytest.mark.parametrize("kind", ["zscore", "knn_rshash", "hst"])
def test_direction_up_suppresses_a_dip_and_keeps_a_spike(kind, dips_and_spikes):
    scores, p_values, alerts = run(make(kind, ["cpu"]), dips_and_spikes)
    dips, spikes = set(DIPS) & offsets(alerts), set(SPIKES) & offsets(alerts)
    assert len(dips) >= 2 and len(spikes) >= 2  # both are rare (hst's saturating score misses one spike)

    up_scores, up_p, up_alerts = run(make(kind, ["cpu"], GuardrailParams(direction="up")), dips_and_spikes)
    assert not set(DIPS) & offsets(up_alerts)
    kept = {a.source.offset: a for a in alerts if a.source.offset in SPIKES}
    assert {a.source.offset: a for a in up_alerts if a.source.offset in SPIKES} == kept  # same alert, same severity
    assert up_scores.tobytes() == scores.tobytes()  # raw scores are left as they are
    assert (up_p[DIPS] == 1.0).all() and up_p[SPIKES].tobytes() == p_values[SPIKES].tobytes()

    _, down_p, down_alerts = run(make(kind, ["cpu"], GuardrailParams(direction="down")), dips_and_spikes)
    assert dips <= offsets(down_alerts) and not set(SPIKES) & offsets(down_alerts)
    assert (down_p[SPIKES] == 1.0).all()


# ---- minimum deviations ----

SMALL, LARGE = [300, 600, 900], 1150  # rare but tiny (0.5 on 100), and large (5): a calibration window apart


@pytest.fixture(scope="module")
def quiet() -> list[Event]:
    rng = np.random.default_rng(1)
    value = 100.0 + 0.01 * rng.normal(size=1200)
    value[SMALL] += 0.5  # 50 standard deviations: calibration calls it rare
    value[LARGE] += 5.0
    return events_of(value[:, None], ["latency"], entities=1)


@pytest.mark.parametrize("kind", ["zscore", "knn_rshash"])
@pytest.mark.parametrize("guardrails,small_alerts", [
    (GuardrailParams(), True),
    (GuardrailParams(min_deviation=0.1), True),  # 0.5 is enough
    (GuardrailParams(min_deviation=1.0), False),
    (GuardrailParams(min_relative_deviation=0.01), False),  # 1 % of 100
    (GuardrailParams(min_relative_deviation=0.001), True),  # 0.1 % of 100 = 0.1
    (GuardrailParams(min_deviation=0.1, min_relative_deviation=0.01), False),  # both must hold
    (GuardrailParams(direction="down", min_deviation=0.1), False),  # the right size, the wrong way
])
def test_min_deviation_suppresses_small_but_rare_deviations_of_a_quiet_series(kind, guardrails, small_alerts, quiet):
    _, p_values, alerts = run(make(kind, ["latency"], guardrails), quiet)
    assert (set(SMALL) <= offsets(alerts)) is small_alerts
    assert (set(SMALL) & offsets(alerts) == set()) is not small_alerts
    assert (LARGE in offsets(alerts)) is (guardrails.direction != "down")
    if not small_alerts:
        assert (p_values[SMALL] == 1.0).all()


def test_a_row_passes_when_some_field_deviates_the_right_way_by_both_minimums():
    guard = Guardrails(GuardrailParams(direction="up", min_deviation=1.0, min_relative_deviation=0.1), ["a", "b"],
                       own_reference=False)
    expected = np.array([[10.0, 100.0]] * 6 + [[np.nan, 100.0]])
    values = np.array([
        [12.0, 100.0],  # a: +2, 20 %: passes
        [10.0, 115.0],  # b: +15, 15 %: passes
        [10.5, 105.0],  # a: +0.5 (too small), b: +5 (5 %, too small)
        [8.0, 80.0],  # both down
        [10.0, 100.0],  # no deviation at all
        [np.nan, 100.0],  # a missing
        [99.0, 100.0],  # a's expected value unknown: it cannot carry the alert
    ])
    assert guard.failing(values, expected).tolist() == [False, False, True, True, True, True, True]
    down = Guardrails(GuardrailParams(direction="down"), ["a", "b"], own_reference=False)
    assert down.failing(values, expected).tolist() == [True, True, True, False, True, True, True]


def test_zscore_expects_its_running_mean_before_each_row_learns(dips_and_spikes):
    op = make("zscore", ["cpu"], GuardrailParams(direction="up"))
    batch = Batch.from_events(dips_and_spikes[:400], numeric=["cpu"], slots=np.arange(400) % 3)
    op.process(batch)
    twin = RobustEwma(1, warmup=op.params.warmup)
    before = []
    for row in range(400):
        count = twin.count[row % 3, 0] if row % 3 < twin.capacity else 0
        before.append(twin.mean[row % 3, 0] if count >= op.params.warmup else np.nan)
        twin.score_and_learn(np.array([row % 3]), batch.column("cpu")[row : row + 1, None])
    assert op.expected(batch)[:, 0].tobytes() == np.array(before).tobytes()
    assert np.isnan(before[:90]).all() and not np.isnan(before[90:]).any()


# ---- range ----

def test_range_alerts_at_the_top_severity_even_while_warming_up():
    alerting = AlertingParams(levels={"page": 50.0, "note": 1.0})  # the top level is the rarest, whatever its name
    op = make("zscore", ["cpu", "mem"], GuardrailParams(range=[0.0, 100.0]), alerting=alerting)
    rows = np.array([[50.0, 40.0], [51.0, 41.0], [150.0, 40.0], [52.0, -3.5], [np.nan, 40.0], [120.0, 101.0]])
    scores, alerts = run_operator(op, events_of(rows, ["cpu", "mem"], entities=1), sizes=(64,))
    assert [(a.source.offset, a.severity, a.reason, a.fields) for a in alerts] == [
        (2, "page", "cpu=150 is outside its valid range [0, 100]", ["cpu"]),
        (3, "page", "mem=-3.5 is outside its valid range [0, 100]", ["mem"]),
        (5, "page", "cpu=120 is outside its valid range [0, 100]; mem=101 is outside its valid range [0, 100]",
         ["cpu", "mem"]),
    ]
    assert all(a.p_value is None and a.score == 0.0 for a in alerts)  # not scored nor judged yet
    assert np.isnan(scores).all()  # warming up: no score, yet the impossible values alert


def test_a_range_alert_replaces_the_calibrated_one_and_keeps_its_p_value(dips_and_spikes):
    _, p_values, alerts = run(make("zscore", ["cpu"]), dips_and_spikes)
    guarded = make("zscore", ["cpu"], GuardrailParams(direction="down", range=[0.0, 66.0]))
    _, guarded_p, guarded_alerts = run(guarded, dips_and_spikes)
    spike = next(a for a in guarded_alerts if a.source.offset == SPIKES[2])
    value = dips_and_spikes[SPIKES[2]].fields["cpu"]
    assert (spike.severity, spike.reason) == ("critical", f"cpu={value:g} is outside its valid range [0, 66]")
    assert spike.p_value == p_values[SPIKES[2]] and guarded_p[SPIKES[2]] == p_values[SPIKES[2]]  # not suppressed
    assert len([a for a in guarded_alerts if a.source.offset == SPIKES[2]]) == 1
    assert not set(SPIKES[:2]) & offsets(guarded_alerts)  # in range and upwards: down suppresses them


# ---- defaults ----

@pytest.mark.parametrize("kind", ["zscore", "knn_rshash", "hst", "metric_stream"])
def test_default_guardrails_change_nothing_and_build_nothing(kind, dips_and_spikes):
    plain, explicit = make(kind, ["cpu"]), make(kind, ["cpu"], GuardrailParams())
    inert = make(kind, ["cpu"], GuardrailParams(range=[-1e12, 1e12]))  # active, never triggered
    outputs = [run(op, dips_and_spikes) for op in (plain, explicit, inert)]
    for scores, p_values, alerts in outputs[1:]:
        assert scores.tobytes() == outputs[0][0].tobytes() and p_values.tobytes() == outputs[0][1].tobytes()
        assert alerts == outputs[0][2]
    assert outputs[0][2], "the stream must alert"
    assert plain.guardrails is None and explicit.guardrails is None and inert.guardrails is not None
    assert "guardrails" not in plain.snapshot() and "guardrails" not in inert.snapshot()  # a range needs no state
    assert plain.state_bytes() == explicit.state_bytes() == inert.state_bytes()


# ---- state ----

GUARDED = {
    "zscore": GuardrailParams(direction="up", min_relative_deviation=0.05, range=[0.0, 66.0]),
    "knn_rshash": GuardrailParams(direction="up", min_deviation=2.0, range=[0.0, 66.0]),
}


@pytest.mark.parametrize("kind", sorted(GUARDED))
@pytest.mark.parametrize("cut", [40, 1000])
def test_snapshot_and_restore_mid_stream_continue_identically(kind, cut, dips_and_spikes):
    events = dips_and_spikes
    guarded = GUARDED[kind]
    _, _, unguarded_alerts = run(make(kind, ["cpu"]), events, sizes=(50,))
    whole = run(make(kind, ["cpu"], guarded), events, sizes=(50,))
    assert whole[2] != unguarded_alerts  # the guardrails matter on this stream

    live = make(kind, ["cpu"], guarded)
    live_chain = OperatorChain([live], EntityIndex(1000))
    head = run(live, events[:cut], sizes=(50,), chain=live_chain)
    state = live_chain.snapshot()
    assert is_plain(state)
    assert ("guardrails" in state["operators"]["op"]) is (kind == "knn_rshash")  # only without a level model of its own
    run(live, events[cut:], sizes=(50,), chain=live_chain)  # the snapshot must not follow the live operator
    restored = make(kind, ["cpu"], guarded)
    restored_chain = OperatorChain([restored], EntityIndex(1000))
    restored_chain.restore(state)
    tail = run(restored, events[cut:], sizes=(50,), chain=restored_chain)
    for column in (0, 1):
        assert np.concatenate([head[column], tail[column]]).tobytes() == whole[column].tobytes()
    assert head[2] + tail[2] == whole[2]
    assert restored.state_bytes() == live.state_bytes()


def test_the_own_reference_is_per_entity_and_forgets_an_evicted_one():
    rng = np.random.default_rng(2)
    levels = np.tile([50.0, 60.0, 70.0], 100)
    op = make("knn_rshash", ["cpu"], GUARDED["knn_rshash"])
    run(op, events_of((levels + rng.normal(size=300))[:, None], ["cpu"]))
    reference = op.guardrails.reference
    assert np.allclose(reference.mean[:3, 0], [50.0, 60.0, 70.0], atol=1.0)  # each entity's own level
    before = op.state_bytes()
    op.evict(np.array([1]))
    assert reference.count[1, 0] == 0 and reference.count[0, 0] == 100 and op.state_bytes() == before
    assert op.guardrails.reference_expected(np.array([1, 0]), np.array([[60.0], [50.0]]))[0, 0] != \
        op.guardrails.reference_expected(np.array([1]), np.array([[60.0]]))[0, 0]  # NaN: it warms up again


def test_restoring_a_snapshot_taken_without_guardrails_starts_the_reference_afresh(dips_and_spikes):
    old = make("knn_rshash", ["cpu"])
    run(old, dips_and_spikes[:300])
    op = make("knn_rshash", ["cpu"], GUARDED["knn_rshash"])
    op.restore(old.snapshot())
    assert op.guardrails.reference.count.sum() == 0
    assert op.snapshot()["alerting"]["count"].tobytes() == old.snapshot()["alerting"]["count"].tobytes()


# ---- batch boundaries ----

@pytest.mark.parametrize("kind", ["zscore", "knn_rshash", "hst", "metric_stream"])
def test_alerts_do_not_depend_on_batch_boundaries(kind, dips_and_spikes):
    events = dips_and_spikes[:1860]
    guardrails = GuardrailParams(direction="up", min_deviation=1.5, min_relative_deviation=0.02, range=[0.0, 66.0])
    one = run(make(kind, ["cpu"], guardrails), events, sizes=(len(events),))
    assert one[2], "the stream must alert"
    for sizes in ((1,), (7,), (1, 2, 3, 50, 97)):
        scores, p_values, alerts = run(make(kind, ["cpu"], guardrails), events, sizes=sizes)
        assert scores.tobytes() == one[0].tobytes() and p_values.tobytes() == one[1].tobytes(), sizes
        assert alerts == one[2], sizes


# ---- bad values ----

@pytest.mark.parametrize("guardrails,key", [
    (GuardrailParams(direction="sideways"), "guardrails.direction"),
    (GuardrailParams(min_deviation=-1.0), "guardrails.min_deviation"),
    (GuardrailParams(min_relative_deviation=float("nan")), "guardrails.min_relative_deviation"),
    (GuardrailParams(range=[1.0]), "guardrails.range"),
    (GuardrailParams(range=[5.0, 1.0]), "guardrails.range"),
    (GuardrailParams(range=[1.0, 1.0]), "guardrails.range"),
    (GuardrailParams(range=[0.0, float("inf")]), "guardrails.range"),
    (GuardrailParams(range=["low", "high"]), "guardrails.range"),
])
def test_bad_values_raise_a_param_error_naming_the_key(guardrails, key):
    with pytest.raises(ParamError) as error:
        make("zscore", ["cpu"], guardrails)
    assert error.value.key == key


def test_guardrails_on_an_operator_without_numeric_fields_are_an_error():
    params = ApeParams(dim=4, buckets=64, minibatch=32, warmup=64, device="cpu")
    ApeOperator("ape", ["c0", "c1"], params)  # the defaults are fine
    with pytest.raises(ParamError) as error:
        ApeOperator("ape", ["c0", "c1"], ApeParams(dim=4, buckets=64, device="cpu", guardrails=GuardrailParams(range=[0, 1])))
    assert error.value.key == "guardrails"


def test_config_check_names_the_bad_guardrail_key(tmp_path, capsys):
    from pipeline.cli import main

    path = tmp_path / "vigil.toml"
    path.write_text('[source]\ntype = "file"\npath = "e.jsonl"\n'
                    '[[operators]]\nname = "a"\ntype = "zscore"\nfields = ["cpu"]\n'
                    '[operators.params.guardrails]\ndirection = "sideways"\n'
                    '[[operators]]\nname = "b"\ntype = "knn_rshash"\nfields = ["cpu"]\n'
                    '[operators.params.guardrails]\nrange = [5.0, 1.0]\nmin_deviation = 2\n')
    assert main(["config", "check", str(path)]) == 2
    errors = capsys.readouterr().err
    assert "operators[0].params.guardrails.direction: 'sideways' is not allowed" in errors
    assert "operators[1].params.guardrails.range: [5.0, 1.0] must be [low, high] with low < high" in errors
