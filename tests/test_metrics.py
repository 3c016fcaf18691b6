"""Batched histogram observations give what per-value observations give."""
import numpy as np
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.utils import floatToGoString

from pipeline.engine.metrics import LAG_BUCKETS, observe_many


def test_observe_many_equals_observing_each_value():
    values = np.r_[np.random.default_rng(0).exponential(100.0, size=5000), LAG_BUCKETS[:5], 0.0, 1e9]
    one, many = CollectorRegistry(), CollectorRegistry()
    each = Histogram("lag_seconds", "x", buckets=LAG_BUCKETS, registry=one)
    batched = Histogram("lag_seconds", "x", buckets=LAG_BUCKETS, registry=many)
    for value in values.tolist():
        each.observe(value)
    observe_many(batched, values[:100])
    observe_many(batched, values[100:])
    observe_many(batched, np.empty(0))
    for bound in [*map(floatToGoString, LAG_BUCKETS), "+Inf"]:
        expected = one.get_sample_value("lag_seconds_bucket", {"le": bound})
        assert expected is not None and expected == many.get_sample_value("lag_seconds_bucket", {"le": bound}), bound
    assert one.get_sample_value("lag_seconds_count") == many.get_sample_value("lag_seconds_count") == len(values)
    assert abs(one.get_sample_value("lag_seconds_sum") - many.get_sample_value("lag_seconds_sum")) < 1e-6 * values.sum()


def test_published_scores_and_p_values_go_to_their_histograms_without_missing_values():
    from pipeline.engine.metrics import Metrics

    metrics = Metrics()
    metrics.report_scores({"outlier": np.array([0.2, np.nan, 3.5, 12.0]),
                           "outlier.p": np.array([np.nan, np.nan, 0.003, 0.0002]),
                           "beats": np.array([np.nan, 0.7, np.nan, np.nan])})

    def sample(name: str, **labels) -> float:
        return metrics.registry.get_sample_value(name, labels)

    assert sample("vigil_score_count", operator="outlier") == 3
    assert sample("vigil_score_bucket", operator="outlier", le="0.5") == 1
    assert sample("vigil_score_bucket", operator="outlier", le="4.0") == 2
    assert sample("vigil_score_count", operator="beats") == 1
    assert sample("vigil_score_p_value_count", operator="outlier") == 2
    assert sample("vigil_score_p_value_bucket", operator="outlier", le="0.0005") == 1
    assert sample("vigil_score_count", operator="outlier.p") is None
