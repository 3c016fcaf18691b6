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
