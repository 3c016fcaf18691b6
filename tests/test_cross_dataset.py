"""The cross-dataset evaluation: its loaders on the shared data, its NAB adapter against nab.py, the leave-one-dataset-out
threshold and the root-cause hit rate on hand cases whose answers are known, the baselines against brute force, and
the CLI's one-line error."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import vigil
from pipeline.evaluation import nab
from pipeline.evaluation.cross_dataset import (Dataset, Detector, LabelledSeries, Scores, asd_univariate, choose_threshold,
                                               curve_at, evaluate, hit_rate, load_asd, load_demo, load_nab, nab_series,
                                               pad_detection, plain, render, rolling_zscore, run_operator, train_zscore)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: the evaluation tests read the shared development data")
    return path


@pytest.fixture(scope="module")
def asd() -> Dataset:
    return load_asd(need(DATA / "asd"))


def test_asd_loads_twelve_servers_with_their_segments(asd):
    assert [s.name for s in asd.series] == [f"omi-{i}" for i in range(1, 13)]
    for series in asd.series:
        # omi-12's train file holds 7,291 rows, not the 8,640 of the others (so does InterFusion's pickle).
        assert series.train.shape == (7291 if series.name == "omi-12" else 8640, 19) and len(series.fields) == 19
        assert series.test.shape == (4320, 19)
        assert series.labels.shape == (4320,) and set(np.unique(series.labels)) == {0, 1}
        covered = np.zeros(4320, dtype=bool)
        for start, end, _ in series.segments:
            covered[start:end + 1] = True
        assert np.array_equal(covered, series.labels == 1)  # the labels are exactly the interpretation segments
        stamps = np.r_[series.train_ts_ms, series.ts_ms]
        assert np.all(np.diff(stamps) == 300_000)  # the test part continues the train part, 5 minutes apart
    assert asd.series[0].segments[0] == (760, 765, frozenset({3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18}))


def test_asd_univariate_splits_the_metrics_labelled_by_their_segments(asd):
    split = asd_univariate(asd)
    expected = sum(1 for server in asd.series for j in range(19)
                   if any(j in metrics for _, _, metrics in server.segments) and np.ptp(server.test[:, j]) > 0)
    assert len(split.series) == expected and 0 < expected < 12 * 19
    first = split.series[0]
    server = asd.series[0]
    j = server.fields.index(first.name.split("/")[1])
    assert first.test.shape == (4320, 1) and first.train.shape == (8640, 1)
    assert np.array_equal(first.test[:, 0], server.test[:, j])
    rows = np.zeros(4320, dtype=np.int8)
    for start, end, metrics in server.segments:
        if j in metrics:
            rows[start:end + 1] = 1
    assert np.array_equal(first.labels, rows) and all(s.labels.any() for s in split.series)


def test_nab_loader_labels_the_rows_inside_the_windows():
    names = ["realKnownCause/nyc_taxi.csv", "artificialNoAnomaly/art_daily_no_noise.csv"]
    dataset = load_nab(need(DATA / "nab"), names)
    assert sorted(s.name for s in dataset.series) == sorted(names)
    for series in dataset.series:
        n = len(series.test)
        assert series.test.shape == (n, 1) and series.reference_rows == nab.probation(n) and series.train is None
        assert int(series.labels.sum()) == sum(right - left + 1 for left, right in series.windows)
        assert np.all(np.diff(series.ts_ms) > 0)
    taxi = next(s for s in dataset.series if s.name == names[0])
    assert len(taxi.windows) == 5 and taxi.labels[taxi.windows[0][0]] == 1


def test_the_window_adapter_gives_nab_py_the_same_corpus():
    """NAB windows turned into labels and back through the label runs: the same windows, the same sweep."""
    corpus = nab.load_corpus(need(DATA / "nab" / "data"), DATA / "nab" / "labels" / "combined_windows.json")
    original = next(s for s in corpus if s.name == "realKnownCause/machine_temperature_system_failure.csv")
    labels = np.zeros(len(original.values), dtype=np.int8)
    for left, right in original.windows:
        labels[left:right + 1] = 1
    series = LabelledSeries("m", original.timestamps.astype("datetime64[ms]").astype(np.int64), original.values[:, None],
                            labels, ("value",))
    adapted, pad = nab_series(series)
    assert pad == 0 and adapted.windows == original.windows and len(adapted.values) == len(original.values)
    scores = nab.windowed_gaussian(original.values)
    for got, want in zip(nab.sweep([adapted], [scores]), nab.sweep([original], [scores])):
        assert np.array_equal(got, want)


def test_a_train_part_puts_the_probation_on_the_warm_up():
    n_train, n = 2000, 1000
    labels = np.zeros(n, dtype=np.int8)
    labels[10:20] = 1  # inside the test part's own probationary rows: still scored
    stamps = np.arange(n_train + n, dtype=np.int64) * 60_000
    series = LabelledSeries("s", stamps[n_train:], np.zeros((n, 1)), labels, ("x",), np.ones((n_train, 1)), stamps[:n_train])
    adapted, pad = nab_series(series)
    assert pad == 750 and adapted.windows == [(760, 769)] and nab.probation(len(adapted.values)) <= pad
    detection = np.zeros(n)
    detection[10] = 1.0
    assert nab.score_at([adapted], [pad_detection(detection, pad)], 0.5) == pytest.approx(100.0)


def _spikes(n: int, hit: float, decoy: float) -> LabelledSeries:
    """A series with one window at rows 1000..1049 whose first row scores ``hit``, and two decoys outside it."""
    labels = np.zeros(n, dtype=np.int8)
    labels[1000:1050] = 1
    score = np.zeros(n)
    score[1000], score[[500, 1500]] = hit, decoy
    return LabelledSeries(f"hit {hit}, decoy {decoy}", np.arange(n, dtype=np.int64) * 60_000, score[:, None], labels, ("x",))


def test_leave_one_dataset_out_chooses_on_the_others():
    """asd and nab want a threshold in (0.6, 0.8], demo in (0.5, 0.68]: held out, demo gets the others' choice (its
    hit of 0.68 falls below it), asd gets the overlap of nab's and demo's, where both are perfect."""
    datasets = [Dataset("asd", [_spikes(2000, 0.8, 0.6)] * 2), Dataset("nab", [_spikes(2000, 0.8, 0.6)]),
                Dataset("demo", [_spikes(2000, 0.68, 0.5)])]
    own = Detector("own", "baseline", lambda d: [Scores(s.test[:, 0], s.test[:, 0]) for s in d.series], "the score")
    results = evaluate(datasets, [own])
    rows = results["nab"]["own"]
    assert rows["demo"]["chosen_on"] == ["asd", "nab"] and 0.6 < rows["demo"]["lodo_threshold"] <= 0.8
    assert rows["demo"]["lodo"] == pytest.approx(0.0) and rows["demo"]["in_sample"] == pytest.approx(100.0)
    assert rows["asd"]["chosen_on"] == ["nab", "demo"] and 0.6 < rows["asd"]["lodo_threshold"] <= 0.68
    assert rows["asd"]["lodo"] == pytest.approx(100.0) and rows["asd"]["lodo_mean_on_others"] == pytest.approx(100.0)
    assert results["vus_pr"]["own"]["asd"] > 0 and results["rank_vus_pr"]["own"]["mean"] == 1.0
    page = render(plain(results))
    assert "## Table 3: NAB score" in page and "| own | 100.0 (0.6" in page


def test_the_threshold_is_the_middle_of_the_best_plateau_and_curves_read_like_score_at():
    corpus = [_spikes(2000, 0.8, 0.6)]
    scores = [corpus[0].test[:, 0]]
    adapted = [nab_series(corpus[0])[0]]
    levels, raw = nab.sweep(adapted, scores)
    curve = (levels, nab.normalised(raw, adapted))
    grid = np.linspace(0, 1, 401)
    assert np.allclose(curve_at(curve, grid), [nab.score_at(adapted, scores, t) for t in grid])
    threshold, best = choose_threshold([curve], grid)
    assert best == pytest.approx(100.0) and threshold == pytest.approx(0.7, abs=0.005)


def test_hit_rate_on_a_hand_case():
    scores = np.array([[4.0, 2.0, 3.0, 1.0],   # ranks 0, 2, 1, 3
                       [3.0, 4.0, 1.0, 2.0],   # ranks 1, 0, 3, 2
                       [0.0, 0.0, 0.0, 0.0],
                       [1.0, 0.0, 0.0, 0.5]])  # ranks 0, 3, ...
    segments = [(0, 1, frozenset({0, 1})), (3, 3, frozenset({3})), (2, 2, frozenset())]
    assert hit_rate(scores, segments, 1.0) == (pytest.approx((0.75 + 0.0) / 2), 2)  # row 0: half of {0, 1}; row 1: all
    assert hit_rate(scores, segments, 1.5) == (pytest.approx((1.0 + 0.0) / 2), 2)  # top 3 of 4, and ⌊1.5⌋ = 1


def test_baselines_against_brute_force():
    rng = np.random.default_rng(3)
    n_train, n = 50, 400
    stamps = np.cumsum(rng.integers(1, 3_000_000, n_train + n)).astype(np.int64)  # irregular, about 30 per day
    values = rng.normal(size=(n_train + n, 2)) * [1.0, 100.0] + [5.0, 1e4]
    series = LabelledSeries("s", stamps[n_train:], values[n_train:], np.zeros(n, dtype=np.int8), ("a", "b"),
                            values[:n_train], stamps[:n_train])
    rolling = rolling_zscore(series)
    for row in (0, 17, 399):
        i = n_train + row
        past = values[(stamps >= stamps[i] - 86_400_000) & (np.arange(len(values)) < i)]
        assert rolling.ranking[row] == pytest.approx((np.abs(values[i] - past.mean(0)) / past.std(0)).max(), rel=1e-6)
    trained = train_zscore(series)
    z = np.abs(values[n_train:] - values[:n_train].mean(0)) / values[:n_train].std(0)
    assert np.allclose(trained.ranking, z.max(axis=1)) and np.array_equal(trained.ranking, trained.detection)


def test_an_operator_warms_up_on_the_train_part_and_its_alerts_name_test_rows():
    rng = np.random.default_rng(0)
    n_train, n = 2000, 600
    values = 10 + rng.normal(size=(n_train + n, 1))
    values[n_train + 300] = 40.0
    stamps = np.arange(n_train + n, dtype=np.int64) * 300_000
    series = LabelledSeries("s", stamps[n_train:], values[n_train:], np.zeros(n, dtype=np.int8), ("x",),
                            values[:n_train], stamps[:n_train])
    out = run_operator(series, "zscore")
    assert out.ranking.shape == out.detection.shape == (n,) and np.isfinite(out.ranking).all()
    assert 300 in out.alerts.tolist() and out.alerts.min() >= 0 and out.alerts.max() < n
    assert int(np.argmax(out.ranking)) == 300 and 0.0 <= out.detection.min() and out.detection.max() <= 1.0


def test_the_demo_becomes_one_labelled_series_per_entity():
    from pipeline.demo.synthetic import FIELDS, SyntheticStream

    stream = SyntheticStream(events=6000, entities=3, seed=7, bad_rate=0.01)
    dataset = load_demo(stream, FIELDS)
    assert [s.name for s in dataset.series] == stream.keys and "payloads skipped" in dataset.notes[0]
    for series in dataset.series:
        assert series.test.shape[1] == 4 and len(series.test) <= 2000 and np.all(np.diff(series.ts_ms) > 0)
        for incident in (i for i in stream.incidents if i.key == series.name):
            inside = (series.ts_ms >= incident.start_ms) & (series.ts_ms <= incident.end_ms)
            assert series.labels[inside].all()
    assert sum(len(s.test) for s in dataset.series) < 6000  # malformed payloads were skipped


def test_a_missing_data_directory_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "no-data"
    result = vigil("evaluate", "cross-dataset", "--data", str(missing), "--datasets", "asd,nab", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {missing}")
